//! The reference's basic augmentation and batch-level Cutout (sam_jax/datasets/augmentation.py).
//!
//! - basic: random horizontal flip, then 4-pixel REFLECT padding, then a random crop back to the
//!   original size — per image, on u8 pixels, before normalisation;
//! - cutout: after normalisation, ONE centre per batch (every image gets the same hole), a square
//!   of `length` (16) centred there, clipped at the borders, filled with 0 (= the channel mean).
//!
//! TensorFlow's `REFLECT` mirrors without repeating the edge: index −1 reads index 1.

use ringsam_rng::Rng;

/// Reflect an index into `[0, n)` the way `tf.pad(mode='REFLECT')` does (edge not repeated).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

/// Flip (probability ½), reflect-pad by `pad`, crop `h × w` at a random offset: `img` → `out`,
/// both HWC u8 of the same shape. `flip = false` skips the flip (digits are not mirror-symmetric).
#[allow(clippy::too_many_arguments)]
pub fn flip_pad_crop(out: &mut [u8], img: &[u8], h: usize, w: usize, c: usize, pad: usize, flip: bool, rng: &mut Rng) {
    let mirrored = flip && rng.uniform() < 0.5;
    let oy = rng.below(2 * pad as u64 + 1) as isize - pad as isize;
    let ox = rng.below(2 * pad as u64 + 1) as isize - pad as isize;
    for y in 0..h {
        let sy = reflect(y as isize + oy, h);
        for x in 0..w {
            // The crop indexes the padded, already flipped image.
            let px = reflect(x as isize + ox, w);
            let sx = if mirrored { w - 1 - px } else { px };
            out[(y * w + x) * c..][..c].copy_from_slice(&img[(sy * w + sx) * c..][..c]);
        }
    }
}

/// Batch-level Cutout on a normalised `(C, N, H, W)` batch: one centre for the whole batch.
pub fn cutout_batch(images: &mut [f32], n: usize, c: usize, h: usize, w: usize, length: usize, rng: &mut Rng) {
    let cy = rng.below(h as u64) as isize;
    let cx = rng.below(w as u64) as isize;
    let half = (length / 2) as isize;
    let (y0, y1) = ((cy - half).max(0) as usize, ((cy + half).min(h as isize)) as usize);
    let (x0, x1) = ((cx - half).max(0) as usize, ((cx + half).min(w as isize)) as usize);
    for plane in images[..c * n * h * w].chunks_mut(h * w) {
        for y in y0..y1 {
            plane[y * w + x0..y * w + x1].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_tensorflow() {
        // tf.pad([0,1,2,3], [[2,2]], 'REFLECT') = [2,1,0,1,2,3,2,1]
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }

    #[test]
    fn crop_without_offset_or_flip_is_identity() {
        let img: Vec<u8> = (0..4 * 4 * 3).map(|v| v as u8).collect();
        let mut out = vec![0; img.len()];
        flip_pad_crop(&mut out, &img, 4, 4, 3, 0, false, &mut Rng::new(1));
        assert_eq!(out, img);
    }

    #[test]
    fn cutout_is_one_square_for_the_whole_batch() {
        let (n, c, h, w) = (3, 2, 8, 8);
        let mut x = vec![1.0f32; c * n * h * w];
        cutout_batch(&mut x, n, c, h, w, 4, &mut Rng::new(5));
        let zeros_per_plane: Vec<usize> = x.chunks(h * w).map(|p| p.iter().filter(|&&v| v == 0.0).count()).collect();
        assert!(zeros_per_plane.iter().all(|&z| z == zeros_per_plane[0] && z > 0 && z <= 16), "{zeros_per_plane:?}");
        let first: Vec<bool> = x[..h * w].iter().map(|&v| v == 0.0).collect();
        assert!(x.chunks(h * w).all(|p| p.iter().map(|&v| v == 0.0).collect::<Vec<_>>() == first));
    }
}
