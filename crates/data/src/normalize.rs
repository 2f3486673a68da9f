//! Per-channel normalisation: `x/255` then `(x − mean)/std`, with the constants the reference
//! uses (sam_jax/datasets/dataset_source.py).

/// Per-channel mean and standard deviation on the `[0, 1]` scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// The constants for a dataset name.
    pub fn for_dataset(name: &str) -> Normalization {
        let n = |mean: &[f32], std: &[f32]| Normalization { mean: mean.to_vec(), std: std.to_vec() };
        match name {
            "cifar10" => n(&[0.491_399_68, 0.482_158_41, 0.446_530_9], &[0.247_032_23, 0.243_485_13, 0.261_587_84]),
            "cifar100" => n(&[0.507_075_16, 0.486_548_87, 0.440_917_84], &[0.267_334_29, 0.256_438_46, 0.276_150_47]),
            "svhn" => n(&[0.430_909_66, 0.430_242_8, 0.446_343_57], &[0.197_591_92, 0.200_290_82, 0.198_111_32]),
            // The reference uses MNIST's statistics for Fashion-MNIST; kept for fidelity.
            "fashion_mnist" => n(&[0.1307], &[0.3081]),
            // Ours: mean and standard deviation of the digits training split (see the test).
            "digits" => n(&[DIGITS_MEAN], &[DIGITS_STD]),
            // A user's own images (arrays, image folders) are mostly finetuned from ImageNet
            // checkpoints: they are scaled as those were trained.
            "imagenet" | "imagefolder" | "arrays" => n(&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225]),
            _ => n(&[0.5, 0.5, 0.5], &[0.25, 0.25, 0.25]),
        }
    }

    /// These constants for images of `channels` channels: gray images of a dataset whose constants
    /// are per colour (a user's arrays) take their means.
    pub fn for_channels(self, channels: usize) -> Normalization {
        if channels != 1 || self.mean.len() == 1 {
            return self;
        }
        let avg = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        Normalization { mean: vec![avg(&self.mean)], std: vec![avg(&self.std)] }
    }

    /// `(mean, 1/std)` for channel `c` on the u8 scale: `(v − mean)·inv` normalises a pixel `v`.
    pub fn u8_affine(&self, c: usize) -> (f32, f32) {
        (self.mean[c] * 255.0, 1.0 / (self.std[c] * 255.0))
    }

    /// Channel `ch` of an interleaved image of `channels` channels on the 0–255 scale (u8 pixels
    /// or floats), normalised into the plane `dst`.
    pub fn plane<T: Copy + Into<f32>>(&self, ch: usize, hwc: &[T], channels: usize, dst: &mut [f32]) {
        let (mean, inv) = self.u8_affine(ch);
        for (d, &v) in dst.iter_mut().zip(hwc.iter().skip(ch).step_by(channels)) {
            *d = (v.into() - mean) * inv;
        }
    }
}

/// Mean of the digits training split on the [0, 1] scale.
pub const DIGITS_MEAN: f32 = 0.305_86;
/// Standard deviation of the digits training split on the [0, 1] scale.
pub const DIGITS_STD: f32 = 0.376_07;

#[cfg(test)]
mod tests {
    #[test]
    fn digits_constants_match_the_training_split() {
        let d = crate::digits::load_digits(crate::Split::Train).unwrap();
        let xs: Vec<f64> = d.pixels.iter().map(|&v| v as f64 / 255.0).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let s = (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!((m - super::DIGITS_MEAN as f64).abs() < 5e-4 && (s - super::DIGITS_STD as f64).abs() < 5e-4, "mean {m} std {s}");
    }
}
