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
pub mod plane_out;
pub mod resize;

use ringsam_rng::Rng;

use crate::autoaugment::Augment;
use crate::normalize::Normalization;

use crop::{Rect, center_crop, distorted_crop};
pub use jpeg::{JpegDecoder, MAX_PIXELS, MAX_SIDE, Rgb, decode_for_crop, decode_jpeg};
pub use plane_out::PlaneOut;
use resize::ResizeScratch;

/// The training image (see the module docs): `size × size × 3` floats in 0–255 (HWC), before
/// normalisation. `rng` draws the crop and the flip.
pub fn train_image(img: &Rgb, size: usize, rng: &mut Rng, out: &mut Vec<f32>) {
    let (rect, flip) = train_draws(img.width, img.height, size, rng);
    finish(img, rect, size, flip, out);
}

/// The evaluation image: the centre crop, resized.
pub fn eval_image(img: &Rgb, size: usize, out: &mut Vec<f32>) {
    finish(img, center_crop(img.width, img.height, size), size, false, out);
}

/// Buffers one decoder thread keeps from image to image (decoded pixels, resize rows, the
/// augmentation's u8 image), so the loader's steady state allocates nothing per image.
#[derive(Debug, Default)]
pub struct Workspace {
    pixels: Vec<u8>,
    resize: ResizeScratch,
    hwc: Vec<f32>,
    u8s: Vec<u8>,
}

/// How the loader turns JPEG bytes into a normalised image: the decoder, the output side, the
/// training augmentation and the channel normalisation.
#[derive(Clone, Debug)]
pub struct JpegPipeline {
    /// Which JPEG decoder.
    pub decoder: JpegDecoder,
    /// Output side in pixels.
    pub size: usize,
    /// Per-image u8 augmentation (training only).
    pub augment: Augment,
    /// Channel normalisation (0–255 inputs).
    pub normalization: Normalization,
}

impl JpegPipeline {
    /// [`train_image`] (with `rng`) or [`eval_image`] (without) straight from JPEG bytes,
    /// normalised into three `size × size` channel planes (`planes`: R, G, B) — the form a batch
    /// wants, where they lie apart (one per channel block of a (C, N, H, W) batch). The crop is
    /// drawn from the header's size, so a decoder may decode only what it needs. With zune and
    /// no augmentation the result equals decoding first, calling the two functions above and
    /// normalising with [`Normalization::plane`]; the augmentation (training only) runs between
    /// the resize and the flip, as the reference's RandAugment does (tests hold both paths to
    /// the step-by-step result, bit for bit).
    pub fn process(&self, bytes: &[u8], rng: Option<&mut Rng>, ws: &mut Workspace, planes: [&mut [f32]; 3]) -> Result<(), String> {
        self.process_into(bytes, rng, ws, planes.map(PlaneOut::init))
    }

    /// [`JpegPipeline::process`] into planes that need not be initialised (a batch being
    /// filled). The contract the loader's batches rely on: when it returns `Ok`, every value of
    /// all three planes has been written (tests poison the planes with NaN and compare every
    /// value).
    pub fn process_into(&self, bytes: &[u8], rng: Option<&mut Rng>, ws: &mut Workspace, planes: [PlaneOut<'_>; 3]) -> Result<(), String> {
        let JpegPipeline { decoder, size, augment, ref normalization } = *self;
        process(bytes, decoder, size, rng, augment, normalization, ws, planes)
    }
}

/// The body of [`JpegPipeline::process_into`].
#[allow(clippy::too_many_arguments)]
fn process(
    bytes: &[u8],
    decoder: JpegDecoder,
    size: usize,
    rng: Option<&mut Rng>,
    augment: Augment,
    normalization: &Normalization,
    ws: &mut Workspace,
    planes: [PlaneOut<'_>; 3],
) -> Result<(), String> {
    let plane = size * size;
    if let Some(p) = planes.iter().find(|p| p.len() != plane) {
        return Err(format!("a plane of {} floats given for a {size}×{size} image", p.len()));
    }
    let mut flip = false;
    let mut rng = rng;
    let (img, rect) = decode_for_crop(
        bytes,
        decoder,
        size,
        |w, h| match rng.as_deref_mut() {
            Some(rng) => {
                let (rect, f) = train_draws(w, h, size, rng);
                flip = f;
                rect
            }
            None => center_crop(w, h, size),
        },
        std::mem::take(&mut ws.pixels),
    )?;
    let affine = [0, 1, 2].map(|c| normalization.u8_affine(c));
    let Workspace { resize, hwc, u8s, .. } = ws;
    match rng.filter(|_| augment != Augment::None) {
        None => {
            // Each channel row is normalised into its plane as it leaves the resize, in cache;
            // the flip happens inside the resize (mirrored taps).
            let mut planes = planes;
            resize::resize_bicubic_planar(&img.pixels, img.width, 3, rect, size, size, flip, resize, |c, y, row| {
                let (mean, inv) = affine[c];
                planes[c].write_row(y, size, row.iter().map(|&v| (v - mean) * inv));
            });
        }
        Some(rng) => {
            // The augmentation wants the interleaved u8 image before the flip.
            resize::resize_bicubic_with(&img.pixels, img.width, 3, rect, size, size, resize, hwc);
            augment_u8(hwc, size, augment, rng, u8s);
            for ((&(mean, inv), c), mut dst_plane) in affine.iter().zip(0..).zip(planes) {
                for y in 0..size {
                    let row = &hwc[y * size * 3..(y + 1) * size * 3];
                    dst_plane.write_row(
                        y,
                        size,
                        (0..size).map(|x| {
                            let sx = if flip { size - 1 - x } else { x };
                            (row[sx * 3 + c] - mean) * inv
                        }),
                    );
                }
            }
        }
    }
    ws.pixels = img.pixels;
    Ok(())
}

/// The training crop (centre crop when no attempt succeeds) and the flip, in the reference's
/// order of draws.
fn train_draws(width: usize, height: usize, size: usize, rng: &mut Rng) -> (Rect, bool) {
    let rect = distorted_crop(width, height, rng).unwrap_or_else(|| center_crop(width, height, size));
    (rect, rng.uniform() < 0.5)
}

/// Resize, then the flip: the reference's order.
fn finish(img: &Rgb, rect: Rect, size: usize, flip: bool, out: &mut Vec<f32>) {
    resize::resize_bicubic(&img.pixels, img.width, 3, rect, size, size, out);
    if flip {
        flip_horizontal(out, size, size, 3);
    }
}

/// RandAugment works on u8: the reference casts the resized float image with `tf.cast`, which
/// truncates; bicubic overshoot outside 0–255 is clamped here (TensorFlow's cast of an
/// out-of-range float is undefined in C++ and wraps on x86). `hwc` comes back as the augmented
/// u8 values; `u8s` is scratch.
fn augment_u8(hwc: &mut [f32], size: usize, augment: Augment, rng: &mut Rng, u8s: &mut Vec<u8>) {
    u8s.clear();
    u8s.extend(hwc.iter().map(|&v| v.clamp(0.0, 255.0) as u8));
    augment.apply(u8s, size, size, rng);
    for (o, &p) in hwc.iter_mut().zip(u8s.iter()) {
        *o = p as f32;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The augmented training path of [`JpegPipeline::process`] (resize without flip, u8 augmentation,
    /// then flip and normalise on the way into the planes) against the same steps one by one.
    #[test]
    fn augmented_planes_equal_resize_augment_flip_normalise() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jpeg");
        let jpg = std::fs::read(dir.join("rgb_q90_420.jpg")).unwrap();
        let img = decode_jpeg(&jpg).unwrap();
        let norm = Normalization::for_dataset("imagenet");
        let mut ws = Workspace::default();
        let size = 20;
        let mut flips = [0, 0];
        for seed in 0..12 {
            for augment in [Augment::parse("randaugment").unwrap(), Augment::parse("autoaugment").unwrap()] {
                // Step by step, drawing from the rng in the same order.
                let mut rng = Rng::new(seed);
                let (rect, flip) = train_draws(img.width, img.height, size, &mut rng);
                flips[flip as usize] += 1;
                let mut hwc = Vec::new();
                resize::resize_bicubic(&img.pixels, img.width, 3, rect, size, size, &mut hwc);
                augment_u8(&mut hwc, size, augment, &mut rng, &mut Vec::new());
                if flip {
                    flip_horizontal(&mut hwc, size, size, 3);
                }
                let mut want = vec![0.0f32; 3 * size * size];
                for (c, dst) in want.chunks_exact_mut(size * size).enumerate() {
                    norm.plane(c, &hwc, 3, dst);
                }
                let mut got = vec![f32::NAN; 3 * size * size];
                let (r, gb) = got.split_at_mut(size * size);
                let (g, b) = gb.split_at_mut(size * size);
                let pipeline = JpegPipeline { decoder: JpegDecoder::Zune, size, augment, normalization: norm.clone() };
                pipeline.process(&jpg, Some(&mut Rng::new(seed)), &mut ws, [r, g, b]).unwrap();
                assert!(got == want, "seed {seed} {augment:?}: planes differ");
            }
        }
        assert!(flips[0] > 0 && flips[1] > 0, "both flips seen: {flips:?}");
    }
}
