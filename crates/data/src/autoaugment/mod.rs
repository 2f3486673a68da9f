//! AutoAugment and RandAugment as the reference applies them (its autoaugment/ package, forked
//! from tensorflow/tpu): u8 image operations ([`ops`], [`geometry`]) and the policies with their
//! level → argument mapping ([`policies`]).
//!
//! Where they run: CIFAR and SVHN `autoaugment` apply the dataset's policy to the u8 image before
//! the basic flip/pad/crop (`aa-only`: without it); ImageNet `autoaugment` applies RandAugment
//! to the cropped, resized image before the flip. Both happen per image in the loaders, keyed by
//! the image's place in the epoch, so results do not depend on threads or replicas.

pub mod geometry;
pub mod ops;
pub mod policies;

pub use policies::{Op, SubPolicy, autoaugment, policy_for, randaugment};

use ringsam_rng::Rng;

/// The per-image u8 augmentation a loader applies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Augment {
    /// Nothing.
    #[default]
    None,
    /// An AutoAugment policy.
    AutoAugment(&'static [SubPolicy]),
    /// RandAugment with `layers` ops at `magnitude`.
    RandAugment {
        /// Ops per image.
        layers: usize,
        /// Shared magnitude.
        magnitude: f64,
    },
}

impl Augment {
    /// From `bench loader --augment`: `none`, `autoaugment` (the ImageNet policy), `randaugment`
    /// (the reference's N = 2, M = 9).
    pub fn parse(s: &str) -> Result<Augment, String> {
        match s {
            "none" => Ok(Augment::None),
            "autoaugment" => Ok(Augment::AutoAugment(policies::IMAGENET)),
            "randaugment" => Ok(Augment::RandAugment { layers: 2, magnitude: 9.0 }),
            other => Err(format!("augmentation {other:?}: expected none, autoaugment or randaugment")),
        }
    }

    /// Applies it to the `h × w` RGB image.
    pub fn apply(&self, img: &mut Vec<u8>, h: usize, w: usize, rng: &mut Rng) {
        match *self {
            Augment::None => {}
            Augment::AutoAugment(policy) => autoaugment(policy, img, h, w, rng),
            Augment::RandAugment { layers, magnitude } => randaugment(layers, magnitude, img, h, w, rng),
        }
    }
}
