//! The reference's image operations on u8 RGB images (autoaugment/autoaugment.py, forked from
//! tensorflow/tpu), each with its argument already mapped from a level ([`super::policies`] does
//! the mapping). Arithmetic follows the TensorFlow ops the reference calls, in f32, with its
//! truncating casts; where that differs from Pillow's operation of the same name the difference is
//! noted at the function. Geometric operations are in [`super::geometry`].
//!
//! Images are interleaved RGB, row-major, `h · w · 3` bytes.

/// The grey that fills what geometric operations and Cutout uncover (the reference's `replace`).
pub const FILL: u8 = 128;

/// `blend(image1, image2, factor)`: `image1 + factor·(image2 − image1)` in f32; inside (0, 1) the
/// result is cast without clipping (it cannot leave 0–255), outside it is clipped, and the cast
/// truncates, as `tf.cast` does. `factor` arrives as the f64 the reference computes in Python
/// (its 0 and 1 tests are on that value) and is applied as f32.
pub fn blend(image1: &[u8], image2: &[u8], factor: f64, out: &mut [u8]) {
    if factor == 0.0 {
        out.copy_from_slice(image1);
        return;
    }
    if factor == 1.0 {
        out.copy_from_slice(image2);
        return;
    }
    let f = factor as f32;
    let interpolate = factor > 0.0 && factor < 1.0;
    for ((o, &a), &b) in out.iter_mut().zip(image1).zip(image2) {
        let (a, b) = (a as f32, b as f32);
        let t = a + f * (b - a);
        *o = if interpolate { t as u8 } else { t.clamp(0.0, 255.0) as u8 };
    }
}

/// `tf.image.rgb_to_grayscale` on u8: to [0, 1] by ×(1/255), weights 0.2989/0.5870/0.1140, back by
/// ×255.5 and a truncating cast (`convert_image_dtype`). Pillow's "L" uses integer weights
/// 299/587/114 and rounds: values can differ by one.
pub fn grayscale(img: &[u8]) -> Vec<u8> {
    let s = 1.0f32 / 255.0;
    img.chunks_exact(3)
        .map(|p| {
            let g = (p[0] as f32 * s) * 0.2989 + (p[1] as f32 * s) * 0.5870 + (p[2] as f32 * s) * 0.1140;
            (g * 255.5) as u8
        })
        .collect()
}

fn gray_rgb(gray: &[u8]) -> Vec<u8> {
    gray.iter().flat_map(|&g| [g, g, g]).collect()
}

/// Color: blend towards the image's grey version ([`grayscale`]).
pub fn color(img: &mut [u8], factor: f64) {
    let degenerate = gray_rgb(&grayscale(img));
    let orig = img.to_vec();
    blend(&degenerate, &orig, factor, img);
}

/// Contrast, with the reference's quirk: it means to blend towards the mean grey level, but
/// takes the "mean" as the histogram's total over 256 bins — the pixel count / 256 (4.0 for a
/// 32×32 image, 196 for 224×224), not the mean intensity (Pillow uses the mean). Clipped to
/// 0–255 and truncated to u8 as the reference does.
pub fn contrast(img: &mut [u8], h: usize, w: usize, factor: f64) {
    let mean = ((h * w) as f32 / 256.0).clamp(0.0, 255.0) as u8;
    let degenerate = vec![mean; img.len()];
    let orig = img.to_vec();
    blend(&degenerate, &orig, factor, img);
}

/// Brightness: blend towards black.
pub fn brightness(img: &mut [u8], factor: f64) {
    let degenerate = vec![0u8; img.len()];
    let orig = img.to_vec();
    blend(&degenerate, &orig, factor, img);
}

/// Sharpness: blend towards Pillow's SMOOTH filter (3×3, centre 5, others 1, /13) — computed as
/// the reference does, in f32 with the weights 1/13 and 5/13, clipped and truncated (Pillow
/// rounds), on the interior only; the one-pixel border keeps the original pixels.
pub fn sharpness(img: &mut [u8], h: usize, w: usize, factor: f64) {
    let orig = img.to_vec();
    let mut degenerate = orig.clone();
    if h >= 3 && w >= 3 {
        let (k1, k5) = (1.0f32 / 13.0, 5.0f32 / 13.0);
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for c in 0..3 {
                    let mut acc = 0.0f32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let k = if dy == 1 && dx == 1 { k5 } else { k1 };
                            acc += orig[((y + dy - 1) * w + x + dx - 1) * 3 + c] as f32 * k;
                        }
                    }
                    degenerate[(y * w + x) * 3 + c] = acc.clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    blend(&degenerate, &orig, factor, img);
}

/// Posterize to `bits` bits: `(x >> (8 − bits)) << (8 − bits)`. The reference maps level 0 to
/// 0 bits; TensorFlow clamps a shift of 8 on u8 to 7, so 0 bits keeps the top bit (pixels become 0
/// or 128) rather than turning the image black. Pillow's `posterize` agrees for 1–8 bits.
pub fn posterize(img: &mut [u8], bits: u32) {
    let shift = 8u32.saturating_sub(bits).min(7);
    for v in img.iter_mut() {
        *v = (*v >> shift) << shift;
    }
}

/// Solarize: pixels at or above `threshold` become `255 − x` (Pillow's semantics). The
/// reference's threshold for level 10 is 256, which TensorFlow converts to u8 through NumPy (0
/// under NumPy < 2, inverting every pixel; an error under NumPy 2): we keep the arithmetic
/// meaning — nothing is at or above 256, the image is unchanged.
pub fn solarize(img: &mut [u8], threshold: i32) {
    for v in img.iter_mut() {
        if (*v as i32) >= threshold {
            *v = 255 - *v;
        }
    }
}

/// SolarizeAdd: pixels below 128 get `addition` added, clipped to 0–255.
pub fn solarize_add(img: &mut [u8], addition: i32) {
    for v in img.iter_mut() {
        if *v < 128 {
            *v = (*v as i32 + addition).clamp(0, 255) as u8;
        }
    }
}

/// AutoContrast, per channel: `lo → 0`, `hi → 255` with `x·scale + offset` in f32, clipped and
/// truncated; a flat channel is unchanged (Pillow's with no cutoff).
pub fn autocontrast(img: &mut [u8]) {
    for c in 0..3 {
        let (mut lo, mut hi) = (255u8, 0u8);
        for p in img.chunks_exact(3) {
            lo = lo.min(p[c]);
            hi = hi.max(p[c]);
        }
        if hi <= lo {
            continue;
        }
        let scale = 255.0f32 / (hi as f32 - lo as f32);
        let offset = -(lo as f32) * scale;
        for p in img.chunks_exact_mut(3) {
            p[c] = (p[c] as f32 * scale + offset).clamp(0.0, 255.0) as u8;
        }
    }
}

/// Equalize, per channel, as Pillow's `ImageOps.equalize`: `step = (Σ nonzero bins − last
/// nonzero bin) / 255`; the lookup table is the running count before each value, plus `step/2`,
/// over `step`; a channel with `step = 0` is unchanged.
pub fn equalize(img: &mut [u8]) {
    for c in 0..3 {
        let mut hist = [0u64; 256];
        for p in img.chunks_exact(3) {
            hist[p[c] as usize] += 1;
        }
        let last = hist.iter().rev().find(|&&n| n > 0).copied().unwrap_or(0);
        let step = (hist.iter().sum::<u64>() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut running = 0u64;
        for (i, slot) in lut.iter_mut().enumerate() {
            *slot = ((running + step / 2) / step).min(255) as u8;
            running += hist[i];
        }
        for p in img.chunks_exact_mut(3) {
            p[c] = lut[p[c] as usize];
        }
    }
}

/// Invert: `255 − x`.
pub fn invert(img: &mut [u8]) {
    for v in img.iter_mut() {
        *v = 255 - *v;
    }
}

/// Cutout centred at `(cy, cx)`: rows `cy − pad .. cy + pad` and columns alike, clipped to the
/// image, set to [`FILL`] (the reference's `replace`, 128, not 0: AutoAugment's Cutout is not
/// the batch-level one). With the reference's ImageNet constants (`pad` up to 100 for
/// AutoAugment, 40 for RandAugment) a 32-pixel image is mostly or wholly grey.
pub fn cutout_at(img: &mut [u8], h: usize, w: usize, cy: usize, cx: usize, pad: usize) {
    let (y0, y1) = (cy.saturating_sub(pad), (cy + pad).min(h));
    let (x0, x1) = (cx.saturating_sub(pad), (cx + pad).min(w));
    for y in y0..y1 {
        img[(y * w + x0) * 3..(y * w + x1) * 3].fill(FILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_endpoints_and_extrapolation_clip() {
        let (a, b) = ([10u8, 200], [20u8, 100]);
        let mut out = [0u8; 2];
        blend(&a, &b, 0.0, &mut out);
        assert_eq!(out, a);
        blend(&a, &b, 1.0, &mut out);
        assert_eq!(out, b);
        blend(&a, &b, 0.5, &mut out);
        assert_eq!(out, [15, 150]);
        blend(&a, &b, 1.9, &mut out);
        assert_eq!(out, [29, 10]); // 10 + 1.9·10 = 29; 200 − 1.9·100 = 10
        blend(&a, &b, 3.0, &mut out);
        assert_eq!(out, [40, 0], "clipped below 0");
    }

    #[test]
    fn posterize_zero_bits_keeps_the_top_bit_as_tensorflow_clamps_the_shift() {
        let mut v = [0u8, 127, 128, 255];
        posterize(&mut v, 0);
        assert_eq!(v, [0, 0, 128, 128]);
        let mut v = [0u8, 127, 128, 255];
        posterize(&mut v, 4);
        assert_eq!(v, [0, 112, 128, 240]);
    }

    #[test]
    fn contrast_uses_the_pixel_count_over_256_as_its_mean() {
        // 16×16 image: "mean" = 256/256 = 1, whatever the pixels.
        let mut img = vec![200u8; 16 * 16 * 3];
        contrast(&mut img, 16, 16, 0.5);
        assert!(img.iter().all(|&v| v == 100), "1 + 0.5·(200 − 1) = 100.5 → 100");
    }
}
