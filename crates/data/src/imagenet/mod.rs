//! ImageNet-style images: JPEG decoding and the reference's preprocessing.
//!
//! Files: [`jpeg`] (decoders: zune-jpeg, and libjpeg-turbo with the `turbojpeg` feature),
//! [`crop`] (the Inception-style training crop and the evaluation centre crop), [`resize`]
//! (TensorFlow 1's bicubic), this module (the two pipelines as the reference orders them:
//! decode → crop → bicubic resize → random flip for training; decode → centre crop → resize for
//! evaluation).
//!
//! Grayscale and CMYK/YCCK JPEGs come out as RGB. Image sides and area are bounded from the
//! header before the pixel buffer is allocated; a decoder panic on a hostile file costs one
//! sample (the loader catches it).

pub mod crop;
pub mod jpeg;
pub mod resize;

use ringsam_rng::Rng;

use crate::autoaugment::Augment;

use crop::{Rect, center_crop, distorted_crop};
pub use jpeg::{JpegDecoder, MAX_PIXELS, MAX_SIDE, Rgb, decode_for_crop, decode_jpeg};

/// The training image (see the module docs): `size × size × 3` floats in 0–255 (HWC), before
/// normalisation. `rng` draws the crop and the flip.
pub fn train_image(img: &Rgb, size: usize, rng: &mut Rng, out: &mut Vec<f32>) {
    let (rect, flip) = train_draws(img.width, img.height, size, rng);
    finish(img, rect, size, flip, None, out);
}

/// The evaluation image: the centre crop, resized.
pub fn eval_image(img: &Rgb, size: usize, out: &mut Vec<f32>) {
    finish(img, center_crop(img.width, img.height, size), size, false, None, out);
}

/// [`train_image`] (with `rng`) or [`eval_image`] (without) straight from JPEG bytes, through
/// `decoder`: the crop is drawn from the header's size, so a decoder may decode only what it
/// needs. Zune's result equals decoding first and calling the two functions above.
/// `augment` (training only) runs between the resize and the flip, as the reference's
/// RandAugment does.
pub fn process_jpeg(
    bytes: &[u8],
    decoder: JpegDecoder,
    size: usize,
    rng: Option<&mut Rng>,
    augment: Augment,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    let mut flip = false;
    let mut rng = rng;
    let (img, rect) = decode_for_crop(bytes, decoder, size, |w, h| match rng.as_deref_mut() {
        Some(rng) => {
            let (rect, f) = train_draws(w, h, size, rng);
            flip = f;
            rect
        }
        None => center_crop(w, h, size),
    })?;
    finish(&img, rect, size, flip, rng.map(|r| (augment, r)), out);
    Ok(())
}

/// The training crop (centre crop when no attempt succeeds) and the flip, in the reference's
/// order of draws.
fn train_draws(width: usize, height: usize, size: usize, rng: &mut Rng) -> (Rect, bool) {
    let rect = distorted_crop(width, height, rng).unwrap_or_else(|| center_crop(width, height, size));
    (rect, rng.uniform() < 0.5)
}

/// Resize, then the u8 augmentation if any, then the flip: the reference's order.
fn finish(img: &Rgb, rect: Rect, size: usize, flip: bool, augment: Option<(Augment, &mut Rng)>, out: &mut Vec<f32>) {
    resize::resize_bicubic(&img.pixels, img.width, 3, rect, size, size, out);
    if let Some((augment, rng)) = augment.filter(|(a, _)| *a != Augment::None) {
        // RandAugment works on u8: the reference casts the resized float image with `tf.cast`,
        // which truncates; bicubic overshoot outside 0–255 is clamped here (TensorFlow's cast of
        // an out-of-range float is undefined in C++ and wraps on x86).
        let mut pixels: Vec<u8> = out.iter().map(|&v| v.clamp(0.0, 255.0) as u8).collect();
        augment.apply(&mut pixels, size, size, rng);
        for (o, &p) in out.iter_mut().zip(&pixels) {
            *o = p as f32;
        }
    }
    if flip {
        flip_horizontal(out, size, size, 3);
    }
}

fn flip_horizontal(hwc: &mut [f32], width: usize, height: usize, channels: usize) {
    for row in hwc.chunks_mut(width * channels).take(height) {
        for x in 0..width / 2 {
            for c in 0..channels {
                row.swap(x * channels + c, (width - 1 - x) * channels + c);
            }
        }
    }
}
