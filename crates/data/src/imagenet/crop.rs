//! The reference's ImageNet crops (sam_jax/datasets/dataset_source_imagenet.py).
//!
//! Training: `tf.image.sample_distorted_bounding_box` with the whole image as the object, area
//! range (0.08, 1), aspect range (3/4, 4/3), min object covered 0.1, 10 attempts; when no attempt
//! succeeds the op returns the whole image, and the reference then takes the evaluation centre
//! crop instead. We follow the op's sampling rule (from TensorFlow's
//! `sample_distorted_bounding_box_op.cc`, read for its facts): per attempt the aspect ratio is
//! uniform in the range; the height is uniform (inclusive) between the heights giving the minimum
//! and the maximum area at that ratio, capped by the image; the width is `round(height·ratio)`;
//! rounding is repaired by one step up or down; the offsets are uniform over `[0, W − w)` and
//! `[0, H − h)` (the op never places a smaller crop flush with the right or bottom edge).
//!
//! Evaluation: a centred square of side `⌊size/(size + 32) · min(H, W)⌋`, offsets
//! `⌊(H − side + 1)/2⌋`, `⌊(W − side + 1)/2⌋`.

use ringsam_rng::Rng;

/// A crop: left, top, width, height in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
}

/// The reference's constants.
pub const AREA_RANGE: (f32, f32) = (0.08, 1.0);
/// Width / height.
pub const ASPECT_RANGE: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);
/// The crop must cover this fraction of the image (the image is the only "object").
pub const MIN_OBJECT_COVERED: f32 = 0.1;
/// Attempts before falling back.
pub const MAX_ATTEMPTS: usize = 10;
/// Evaluation's padding around the centre crop.
pub const CROP_PADDING: usize = 32;

fn round(v: f32) -> i64 {
    v.round_ties_even() as i64 // lrintf in the default rounding mode
}

/// One attempt at a crop of `width × height` with aspect `ratio`; `None` if the constraints
/// cannot be met at this ratio.
fn attempt(width: usize, height: usize, ratio: f32, rng: &mut Rng) -> Option<Rect> {
    let (w0, h0) = (width as i64, height as i64);
    let min_area = AREA_RANGE.0 * width as f32 * height as f32;
    let max_area = AREA_RANGE.1 * width as f32 * height as f32;
    let mut h = round((min_area / ratio).sqrt());
    let mut max_h = round((max_area / ratio).sqrt());
    if round(max_h as f32 * ratio) > w0 {
        max_h = ((w0 as f32 + 0.5 - 1e-7) / ratio) as i64;
        if round(max_h as f32 * ratio) > w0 {
            max_h -= 1;
        }
    }
    max_h = max_h.min(h0);
    h = h.min(max_h);
    if h < max_h {
        h += rng.below((max_h - h + 1) as u64) as i64;
    }
    let mut w = round(h as f32 * ratio);
    let mut area = (w * h) as f32;
    if area < min_area {
        h += 1;
        w = round(h as f32 * ratio);
        area = (w * h) as f32;
    }
    if area > max_area {
        h -= 1;
        w = round(h as f32 * ratio);
        area = (w * h) as f32;
    }
    if area < min_area || area > max_area || w > w0 || h > h0 || w <= 0 || h <= 0 {
        return None;
    }
    let y = if h < h0 { rng.below((h0 - h) as u64) as usize } else { 0 };
    let x = if w < w0 { rng.below((w0 - w) as u64) as usize } else { 0 };
    Some(Rect { x, y, w: w as usize, h: h as usize })
}

/// The training crop of a `width × height` image (see the module docs): `None` means the
/// sampler fell back to the whole image, and the caller takes [`center_crop`] instead.
pub fn distorted_crop(width: usize, height: usize, rng: &mut Rng) -> Option<Rect> {
    if width == 0 || height == 0 {
        return None;
    }
    let image_area = (width * height) as f32;
    for _ in 0..MAX_ATTEMPTS {
        let ratio = rng.uniform() * (ASPECT_RANGE.1 - ASPECT_RANGE.0) + ASPECT_RANGE.0;
        if let Some(r) = attempt(width, height, ratio, rng) {
            let area = (r.w * r.h) as f32;
            if area >= 1.0 && area / image_area >= MIN_OBJECT_COVERED {
                // The reference treats a crop of the image's full size as a failed sample.
                return (r.w != width || r.h != height).then_some(r);
            }
        }
    }
    None
}

/// The evaluation crop for a model input of `size` pixels.
pub fn center_crop(width: usize, height: usize, size: usize) -> Rect {
    let side = ((size as f64 / (size + CROP_PADDING) as f64) * width.min(height) as f64) as usize;
    let side = side.max(1).min(width.min(height));
    Rect { x: (width - side).div_ceil(2), y: (height - side).div_ceil(2), w: side, h: side }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_respect_the_area_and_aspect_ranges_and_stay_inside() {
        let mut rng = Rng::new(5);
        let (w, h) = (500, 375);
        let (mut n, mut fallbacks) = (0, 0);
        for _ in 0..5000 {
            match distorted_crop(w, h, &mut rng) {
                Some(r) => {
                    n += 1;
                    let frac = (r.w * r.h) as f64 / (w * h) as f64;
                    assert!((0.08..=1.0).contains(&frac), "{r:?}: area fraction {frac}");
                    let aspect = r.w as f64 / r.h as f64;
                    assert!((0.74..=1.35).contains(&aspect), "{r:?}: aspect {aspect}");
                    assert!(r.x + r.w <= w && r.y + r.h <= h, "{r:?}");
                }
                None => fallbacks += 1,
            }
        }
        // Square-ish crops of up to the whole area fit a 4:3 image almost always.
        assert!(fallbacks < 100, "{fallbacks} fallbacks in 5000 ({n} crops)");
    }

    #[test]
    fn center_crop_matches_the_reference_arithmetic() {
        // 224/256 · 375 = 328.125 → 328; offsets ⌊(500−328+1)/2⌋ = 86, ⌊(375−328+1)/2⌋ = 24.
        assert_eq!(center_crop(500, 375, 224), Rect { x: 86, y: 24, w: 328, h: 328 });
        assert_eq!(center_crop(7, 5, 224), Rect { x: 2, y: 1, w: 4, h: 4 });
    }
}
