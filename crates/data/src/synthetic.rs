//! `synthetic`: random images for benchmarks and smoke tests, no files needed.
//!
//! Each class has a fixed random mean image; an example is its class mean plus noise, so a model
//! can learn the task (a smoke test can check the loss falls) while nothing is read from disk.

use ringsam_rng::Rng;

use crate::{Dataset, Split};

/// `n` images of `size × size × channels` in `classes` classes, deterministic in `seed` and split.
pub fn synthetic(split: Split, n: usize, size: usize, channels: usize, classes: usize, seed: u64) -> Dataset {
    let len = size * size * channels;
    let means: Vec<Vec<f32>> = (0..classes)
        .map(|c| {
            let mut r = Rng::stream(seed, 0, c as u64);
            (0..len).map(|_| r.uniform_in(48.0, 208.0)).collect()
        })
        .collect();
    let mut rng = Rng::stream(seed, if split == Split::Train { 1 } else { 2 }, u64::MAX);
    let mut pixels = Vec::with_capacity(n * len);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.below(classes as u64) as usize;
        labels.push(c as u32);
        pixels.extend(means[c].iter().map(|&m| (m + 40.0 * rng.normal()).clamp(0.0, 255.0) as u8));
    }
    Dataset { name: "synthetic".into(), pixels, labels, height: size, width: size, channels, num_classes: classes }
}
