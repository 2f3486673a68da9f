//! Rotate, ShearX/Y and TranslateX/Y as the reference runs them: `tfa.image.transform` (a
//! projective map from output to input pixel coordinates, nearest-neighbour sampling, constant
//! fill) on the image with an extra all-ones channel, then every pixel whose extra channel came
//! out 0 — the uncovered ones — set to grey 128 (`wrap`/`unwrap` in autoaugment.py).
//!
//! Nearest neighbour in TensorFlow rounds the input coordinate half away from zero and reads the
//! fill value when the rounded coordinate is outside the image. Coordinates are pixel indices
//! (no half-pixel offset). All arithmetic is f32, as the op's.

use super::ops::FILL;

/// Output pixel `(x, y)` reads input `(a0·x + a1·y + a2, b0·x + b1·y + b2)`.
pub fn transform(img: &[u8], h: usize, w: usize, m: [f32; 6]) -> Vec<u8> {
    let mut out = vec![FILL; img.len()];
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32);
            let ix = (m[0] * xf + m[1] * yf + m[2]).round();
            let iy = (m[3] * xf + m[4] * yf + m[5]).round();
            if ix >= 0.0 && iy >= 0.0 && (ix as usize) < w && (iy as usize) < h {
                let (sx, sy) = (ix as usize, iy as usize);
                out[(y * w + x) * 3..][..3].copy_from_slice(&img[(sy * w + sx) * 3..][..3]);
            }
        }
    }
    out
}

/// Rotate by `degrees` about the image centre (`tfa.image.rotate`: positive is counter-clockwise
/// as displayed).
pub fn rotate(img: &[u8], h: usize, w: usize, degrees: f32) -> Vec<u8> {
    let radians = degrees * (std::f32::consts::PI / 180.0);
    let (sin, cos) = radians.sin_cos();
    let (wf, hf) = ((w - 1) as f32, (h - 1) as f32);
    let x_offset = (wf - (cos * wf - sin * hf)) / 2.0;
    let y_offset = (hf - (sin * wf + cos * hf)) / 2.0;
    transform(img, h, w, [cos, -sin, x_offset, sin, cos, y_offset])
}

/// Shear along x: output `(x, y)` reads `(x + level·y, y)`.
pub fn shear_x(img: &[u8], h: usize, w: usize, level: f32) -> Vec<u8> {
    transform(img, h, w, [1.0, level, 0.0, 0.0, 1.0, 0.0])
}

/// Shear along y: output `(x, y)` reads `(x, level·x + y)`.
pub fn shear_y(img: &[u8], h: usize, w: usize, level: f32) -> Vec<u8> {
    transform(img, h, w, [1.0, 0.0, 0.0, level, 1.0, 0.0])
}

/// Translate along x: output `(x, y)` reads `(x + pixels, y)` (the reference passes `−pixels` as
/// `tfa.image.translate`'s dx, whose map is `x − dx`).
pub fn translate_x(img: &[u8], h: usize, w: usize, pixels: f32) -> Vec<u8> {
    transform(img, h, w, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])
}

/// Translate along y: output `(x, y)` reads `(x, y + pixels)`.
pub fn translate_y(img: &[u8], h: usize, w: usize, pixels: f32) -> Vec<u8> {
    transform(img, h, w, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Vec<u8> {
        (0..h * w).flat_map(|i| [i as u8, (i * 3) as u8, 7]).collect()
    }

    #[test]
    fn zero_motions_are_identities_and_full_turns_nearly_so() {
        let img = ramp(5, 7);
        assert_eq!(rotate(&img, 5, 7, 0.0), img);
        assert_eq!(shear_x(&img, 5, 7, 0.0), img);
        assert_eq!(translate_y(&img, 5, 7, 0.0), img);
        // 180° maps (x, y) to (w−1−x, h−1−y).
        let r = rotate(&img, 5, 7, 180.0);
        assert_eq!(&r[..3], &img[(5 * 7 - 1) * 3..]);
    }

    #[test]
    fn translation_uncovers_grey() {
        let img = ramp(4, 4);
        let t = translate_x(&img, 4, 4, 1.0);
        // Column 0 reads column 1; column 3 reads column 4 (outside): grey.
        assert_eq!(&t[..3], &img[3..6]);
        assert_eq!(&t[9..12], &[FILL; 3]);
        // Far beyond the image: all grey (the reference's 250-px translate on 32-px images).
        assert!(translate_y(&img, 4, 4, 225.0).iter().all(|&v| v == FILL));
    }
}
