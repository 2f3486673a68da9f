//! The reference's AutoAugment policies and RandAugment, and the level → argument mapping
//! (autoaugment/policies.py and autoaugment.py of google-research/sam).
//!
//! A policy is a list of sub-policies of two `(op, probability, level)` steps; AutoAugment picks
//! one sub-policy uniformly per image and applies each step with its probability. RandAugment
//! applies `layers` ops drawn uniformly from sixteen, each always (the reference samples a
//! probability for each layer and never uses it), all at magnitude `M`.
//!
//! Levels run 0–10. The constants for translate and Cutout are ImageNet-scale for every dataset,
//! as the reference has them: AutoAugment translate 250 px and Cutout pad 100; RandAugment 100 and
//! 40. On a 32-pixel CIFAR or SVHN image a translate at level ≥ 2 moves the picture out of the
//! frame (all grey) and a Cutout at level ≥ 2 greys most of it: that is the reference's
//! behaviour, reproduced on purpose.
//!
//! The tables were produced from the reference's file (tests/fixtures/make_autoaugment_policies.py
//! dumps it to JSON) and a test compares them entry by entry.

use ringsam_rng::Rng;

use super::geometry;
use super::ops;

/// An operation of the policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Per-channel stretch to 0–255.
    AutoContrast,
    /// Per-channel histogram equalisation.
    Equalize,
    /// 255 − x.
    Invert,
    /// ±level·3°.
    Rotate,
    /// int(level·0.4) bits.
    Posterize,
    /// Threshold int(level·25.6).
    Solarize,
    /// + int(level·11) below 128.
    SolarizeAdd,
    /// Saturation, factor level·0.18 + 0.1.
    Color,
    /// Contrast, same factor.
    Contrast,
    /// Brightness, same factor.
    Brightness,
    /// Sharpness, same factor.
    Sharpness,
    /// ±level·0.03.
    ShearX,
    /// ±level·0.03.
    ShearY,
    /// ±level/10 · translate constant, in pixels.
    TranslateX,
    /// ±level/10 · translate constant.
    TranslateY,
    /// A grey square of side 2·int(level/10 · cutout constant).
    Cutout,
}

use Op::*;

/// One sub-policy: two steps of (op, probability, level).
pub type SubPolicy = [(Op, f32, u8); 2];

/// The reference's `HParams`: the pixel scale of translate and Cutout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HParams {
    /// Cutout's half-side at level 10.
    pub cutout_const: f64,
    /// Translation at level 10.
    pub translate_const: f64,
}

/// AutoAugment's constants (`distort_image_with_autoaugment`).
pub const AUTOAUGMENT_HPARAMS: HParams = HParams { cutout_const: 100.0, translate_const: 250.0 };
/// RandAugment's constants (`distort_image_with_randaugment`).
pub const RANDAUGMENT_HPARAMS: HParams = HParams { cutout_const: 40.0, translate_const: 100.0 };

/// RandAugment's sixteen ops, in the reference's order.
pub const RANDAUGMENT_OPS: [Op; 16] = [
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Cutout,
    SolarizeAdd,
];

const MAX_LEVEL: f64 = 10.0;

/// A random sign, as `_randomly_negate_tensor` (positive with probability ½).
fn signed(v: f64, rng: &mut Rng) -> f64 {
    if rng.uniform() < 0.5 { v } else { -v }
}

/// Applies `op` at `level` to the `h × w` RGB image `img` (the reference's `level_to_arg` and
/// the op), drawing signs and Cutout's centre from `rng`.
pub fn apply(op: Op, level: f64, hp: HParams, img: &mut Vec<u8>, h: usize, w: usize, rng: &mut Rng) {
    let l = level / MAX_LEVEL;
    let enhance = l * 1.8 + 0.1;
    match op {
        AutoContrast => ops::autocontrast(img),
        Equalize => ops::equalize(img),
        Invert => ops::invert(img),
        Rotate => *img = geometry::rotate(img, h, w, signed(l * 30.0, rng) as f32),
        Posterize => ops::posterize(img, (l * 4.0) as u32),
        Solarize => ops::solarize(img, (l * 256.0) as i32),
        SolarizeAdd => ops::solarize_add(img, (l * 110.0) as i32),
        Color => ops::color(img, enhance),
        Contrast => ops::contrast(img, h, w, enhance),
        Brightness => ops::brightness(img, enhance),
        Sharpness => ops::sharpness(img, h, w, enhance),
        ShearX => *img = geometry::shear_x(img, h, w, signed(l * 0.3, rng) as f32),
        ShearY => *img = geometry::shear_y(img, h, w, signed(l * 0.3, rng) as f32),
        TranslateX => *img = geometry::translate_x(img, h, w, signed(l * hp.translate_const, rng) as f32),
        TranslateY => *img = geometry::translate_y(img, h, w, signed(l * hp.translate_const, rng) as f32),
        Cutout => {
            let pad = (l * hp.cutout_const) as usize;
            let (cy, cx) = (rng.below(h as u64) as usize, rng.below(w as u64) as usize);
            ops::cutout_at(img, h, w, cy, cx, pad);
        }
    }
}

/// AutoAugment: one sub-policy of `policy`, drawn uniformly, each step applied with its
/// probability, with AutoAugment's constants.
pub fn autoaugment(policy: &[SubPolicy], img: &mut Vec<u8>, h: usize, w: usize, rng: &mut Rng) {
    let sub = policy[rng.below(policy.len() as u64) as usize];
    for (op, prob, level) in sub {
        if rng.uniform() < prob {
            apply(op, level as f64, AUTOAUGMENT_HPARAMS, img, h, w, rng);
        }
    }
}

/// RandAugment: `layers` ops drawn uniformly from [`RANDAUGMENT_OPS`], each applied at
/// `magnitude`, with RandAugment's constants.
pub fn randaugment(layers: usize, magnitude: f64, img: &mut Vec<u8>, h: usize, w: usize, rng: &mut Rng) {
    for _ in 0..layers {
        let op = RANDAUGMENT_OPS[rng.below(RANDAUGMENT_OPS.len() as u64) as usize];
        apply(op, magnitude, RANDAUGMENT_HPARAMS, img, h, w, rng);
    }
}

/// The policy a dataset's `autoaugment` uses (the reference maps cifar10/cifar100 to `cifar`).
pub fn policy_for(dataset: &str) -> Option<&'static [SubPolicy]> {
    match dataset {
        "cifar10" | "cifar100" => Some(CIFAR),
        "svhn" => Some(SVHN),
        "imagenet" => Some(IMAGENET),
        _ => None,
    }
}

/// Op by the reference's name.
pub fn op_named(name: &str) -> Option<Op> {
    RANDAUGMENT_OPS.iter().copied().find(|op| format!("{op:?}") == name)
}

/// The `imagenet` policy (25 sub-policies; TPU EfficientNet `policy_v0`).
pub const IMAGENET: &[SubPolicy] = &[
    [(Equalize, 0.8, 1), (ShearY, 0.8, 4)],
    [(Color, 0.4, 9), (Equalize, 0.6, 3)],
    [(Color, 0.4, 1), (Rotate, 0.6, 8)],
    [(Solarize, 0.8, 3), (Equalize, 0.4, 7)],
    [(Solarize, 0.4, 2), (Solarize, 0.6, 2)],
    [(Color, 0.2, 0), (Equalize, 0.8, 8)],
    [(Equalize, 0.4, 8), (SolarizeAdd, 0.8, 3)],
    [(ShearX, 0.2, 9), (Rotate, 0.6, 8)],
    [(Color, 0.6, 1), (Equalize, 1.0, 2)],
    [(Invert, 0.4, 9), (Rotate, 0.6, 0)],
    [(Equalize, 1.0, 9), (ShearY, 0.6, 3)],
    [(Color, 0.4, 7), (Equalize, 0.6, 0)],
    [(Posterize, 0.4, 6), (AutoContrast, 0.4, 7)],
    [(Solarize, 0.6, 8), (Color, 0.6, 9)],
    [(Solarize, 0.2, 4), (Rotate, 0.8, 9)],
    [(Rotate, 1.0, 7), (TranslateY, 0.8, 9)],
    [(ShearX, 0.0, 0), (Solarize, 0.8, 4)],
    [(ShearY, 0.8, 0), (Color, 0.6, 4)],
    [(Color, 1.0, 0), (Rotate, 0.6, 2)],
    [(Equalize, 0.8, 4), (Equalize, 0.0, 8)],
    [(Equalize, 1.0, 4), (AutoContrast, 0.6, 2)],
    [(ShearY, 0.4, 7), (SolarizeAdd, 0.6, 7)],
    [(Posterize, 0.8, 2), (Solarize, 0.6, 10)],
    [(Solarize, 0.6, 8), (Equalize, 0.6, 1)],
    [(Color, 0.8, 6), (Rotate, 0.4, 5)],
];

/// The `cifar` policy (95 sub-policies: experiments exp0_0 … exp2_7 of the AutoAugment search).
pub const CIFAR: &[SubPolicy] = &[
    [(Invert, 0.1, 7), (Contrast, 0.2, 6)],
    [(Rotate, 0.7, 2), (TranslateX, 0.3, 9)],
    [(Sharpness, 0.8, 1), (Sharpness, 0.9, 3)],
    [(ShearY, 0.5, 8), (TranslateY, 0.7, 9)],
    [(AutoContrast, 0.5, 8), (Equalize, 0.9, 2)],
    [(Solarize, 0.4, 5), (AutoContrast, 0.9, 3)],
    [(TranslateY, 0.9, 9), (TranslateY, 0.7, 9)],
    [(AutoContrast, 0.9, 2), (Solarize, 0.8, 3)],
    [(Equalize, 0.8, 8), (Invert, 0.1, 3)],
    [(TranslateY, 0.7, 9), (AutoContrast, 0.9, 1)],
    [(Solarize, 0.4, 5), (AutoContrast, 0.0, 2)],
    [(TranslateY, 0.7, 9), (TranslateY, 0.7, 9)],
    [(AutoContrast, 0.9, 0), (Solarize, 0.4, 3)],
    [(Equalize, 0.7, 5), (Invert, 0.1, 3)],
    [(TranslateY, 0.7, 9), (TranslateY, 0.7, 9)],
    [(Solarize, 0.4, 5), (AutoContrast, 0.9, 1)],
    [(TranslateY, 0.8, 9), (TranslateY, 0.9, 9)],
    [(AutoContrast, 0.8, 0), (TranslateY, 0.7, 9)],
    [(TranslateY, 0.2, 7), (Color, 0.9, 6)],
    [(Equalize, 0.7, 6), (Color, 0.4, 9)],
    [(ShearY, 0.2, 7), (Posterize, 0.3, 7)],
    [(Color, 0.4, 3), (Brightness, 0.6, 7)],
    [(Sharpness, 0.3, 9), (Brightness, 0.7, 9)],
    [(Equalize, 0.6, 5), (Equalize, 0.5, 1)],
    [(Contrast, 0.6, 7), (Sharpness, 0.6, 5)],
    [(Brightness, 0.3, 7), (AutoContrast, 0.5, 8)],
    [(AutoContrast, 0.9, 4), (AutoContrast, 0.5, 6)],
    [(Solarize, 0.3, 5), (Equalize, 0.6, 5)],
    [(TranslateY, 0.2, 4), (Sharpness, 0.3, 3)],
    [(Brightness, 0.0, 8), (Color, 0.8, 8)],
    [(Solarize, 0.2, 6), (Color, 0.8, 6)],
    [(Solarize, 0.2, 6), (AutoContrast, 0.8, 1)],
    [(Solarize, 0.4, 1), (Equalize, 0.6, 5)],
    [(Brightness, 0.0, 0), (Solarize, 0.5, 2)],
    [(AutoContrast, 0.9, 5), (Brightness, 0.5, 3)],
    [(Contrast, 0.7, 5), (Brightness, 0.0, 2)],
    [(Solarize, 0.2, 8), (Solarize, 0.1, 5)],
    [(Contrast, 0.5, 1), (TranslateY, 0.2, 9)],
    [(AutoContrast, 0.6, 5), (TranslateY, 0.0, 9)],
    [(AutoContrast, 0.9, 4), (Equalize, 0.8, 4)],
    [(Brightness, 0.0, 7), (Equalize, 0.4, 7)],
    [(Solarize, 0.2, 5), (Equalize, 0.7, 5)],
    [(Equalize, 0.6, 8), (Color, 0.6, 2)],
    [(Color, 0.3, 7), (Color, 0.2, 4)],
    [(AutoContrast, 0.5, 2), (Solarize, 0.7, 2)],
    [(AutoContrast, 0.2, 0), (Equalize, 0.1, 0)],
    [(ShearY, 0.6, 5), (Equalize, 0.6, 5)],
    [(Brightness, 0.9, 3), (AutoContrast, 0.4, 1)],
    [(Equalize, 0.8, 8), (Equalize, 0.7, 7)],
    [(Equalize, 0.7, 7), (Solarize, 0.5, 0)],
    [(Equalize, 0.8, 4), (TranslateY, 0.8, 9)],
    [(TranslateY, 0.8, 9), (TranslateY, 0.6, 9)],
    [(TranslateY, 0.9, 0), (TranslateY, 0.5, 9)],
    [(AutoContrast, 0.5, 3), (Solarize, 0.3, 4)],
    [(Solarize, 0.5, 3), (Equalize, 0.4, 4)],
    [(Color, 0.7, 7), (TranslateX, 0.5, 8)],
    [(Equalize, 0.3, 7), (AutoContrast, 0.4, 8)],
    [(TranslateY, 0.4, 3), (Sharpness, 0.2, 6)],
    [(Brightness, 0.9, 6), (Color, 0.2, 8)],
    [(Solarize, 0.5, 2), (Invert, 0.0, 3)],
    [(AutoContrast, 0.1, 5), (Brightness, 0.0, 0)],
    [(Cutout, 0.2, 4), (Equalize, 0.1, 1)],
    [(Equalize, 0.7, 7), (AutoContrast, 0.6, 4)],
    [(Color, 0.1, 8), (ShearY, 0.2, 3)],
    [(ShearY, 0.4, 2), (Rotate, 0.7, 0)],
    [(ShearY, 0.1, 3), (AutoContrast, 0.9, 5)],
    [(TranslateY, 0.3, 6), (Cutout, 0.3, 3)],
    [(Equalize, 0.5, 0), (Solarize, 0.6, 6)],
    [(AutoContrast, 0.3, 5), (Rotate, 0.2, 7)],
    [(Equalize, 0.8, 2), (Invert, 0.4, 0)],
    [(Equalize, 0.9, 5), (Color, 0.7, 0)],
    [(Equalize, 0.1, 1), (ShearY, 0.1, 3)],
    [(AutoContrast, 0.7, 3), (Equalize, 0.7, 0)],
    [(Brightness, 0.5, 1), (Contrast, 0.1, 7)],
    [(Contrast, 0.1, 4), (Solarize, 0.6, 5)],
    [(Solarize, 0.2, 3), (ShearX, 0.0, 0)],
    [(TranslateX, 0.3, 0), (TranslateX, 0.6, 0)],
    [(Equalize, 0.5, 9), (TranslateY, 0.6, 7)],
    [(ShearX, 0.1, 0), (Sharpness, 0.5, 1)],
    [(Equalize, 0.8, 6), (Invert, 0.3, 6)],
    [(AutoContrast, 0.3, 9), (Cutout, 0.5, 3)],
    [(ShearX, 0.4, 4), (AutoContrast, 0.9, 2)],
    [(ShearX, 0.0, 3), (Posterize, 0.0, 3)],
    [(Solarize, 0.4, 3), (Color, 0.2, 4)],
    [(Equalize, 0.1, 4), (Equalize, 0.7, 6)],
    [(Equalize, 0.3, 8), (AutoContrast, 0.4, 3)],
    [(Solarize, 0.6, 4), (AutoContrast, 0.7, 6)],
    [(AutoContrast, 0.2, 9), (Brightness, 0.4, 8)],
    [(Equalize, 0.1, 0), (Equalize, 0.0, 6)],
    [(Equalize, 0.8, 4), (Equalize, 0.0, 4)],
    [(Equalize, 0.5, 5), (AutoContrast, 0.1, 2)],
    [(Solarize, 0.5, 5), (AutoContrast, 0.9, 5)],
    [(AutoContrast, 0.6, 1), (AutoContrast, 0.7, 8)],
    [(Equalize, 0.2, 0), (AutoContrast, 0.1, 2)],
    [(Equalize, 0.6, 9), (Equalize, 0.4, 4)],
];

/// The `svhn` policy (25 sub-policies).
pub const SVHN: &[SubPolicy] = &[
    [(ShearX, 0.9, 4), (Invert, 0.2, 3)],
    [(ShearY, 0.9, 8), (Invert, 0.7, 5)],
    [(Equalize, 0.6, 5), (Solarize, 0.6, 6)],
    [(Invert, 0.9, 3), (Equalize, 0.6, 3)],
    [(Equalize, 0.6, 1), (Rotate, 0.9, 3)],
    [(ShearX, 0.9, 4), (AutoContrast, 0.8, 3)],
    [(ShearY, 0.9, 8), (Invert, 0.4, 5)],
    [(ShearY, 0.9, 5), (Solarize, 0.2, 6)],
    [(Invert, 0.9, 6), (AutoContrast, 0.8, 1)],
    [(Equalize, 0.6, 3), (Rotate, 0.9, 3)],
    [(ShearX, 0.9, 4), (Solarize, 0.3, 3)],
    [(ShearY, 0.8, 8), (Invert, 0.7, 4)],
    [(Equalize, 0.9, 5), (TranslateY, 0.6, 6)],
    [(Invert, 0.9, 4), (Equalize, 0.6, 7)],
    [(Contrast, 0.3, 3), (Rotate, 0.8, 4)],
    [(Invert, 0.8, 5), (TranslateY, 0.0, 2)],
    [(ShearY, 0.7, 6), (Solarize, 0.4, 8)],
    [(Invert, 0.6, 4), (Rotate, 0.8, 4)],
    [(ShearY, 0.3, 7), (TranslateX, 0.9, 3)],
    [(ShearX, 0.1, 6), (Invert, 0.6, 5)],
    [(Solarize, 0.7, 2), (TranslateY, 0.6, 7)],
    [(ShearY, 0.8, 4), (Invert, 0.8, 8)],
    [(ShearX, 0.7, 9), (TranslateY, 0.8, 3)],
    [(ShearY, 0.8, 5), (AutoContrast, 0.7, 3)],
    [(ShearX, 0.7, 2), (Invert, 0.1, 5)],
];
