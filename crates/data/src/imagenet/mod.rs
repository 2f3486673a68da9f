//! ImageNet-style images: JPEG decoding and the reference's preprocessing.
//!
//! Files: [`crop`] (the Inception-style training crop and the evaluation centre crop),
//! [`resize`] (TensorFlow 1's bicubic), this module (decoding, and the two pipelines as the
//! reference orders them: decode → crop → bicubic resize → random flip for training; decode →
//! centre crop → resize for evaluation).
//!
//! Decoding uses zune-jpeg (pure Rust, builds anywhere); grayscale and CMYK/YCCK JPEGs come out
//! as RGB. Image sides (16384) and area ([`MAX_PIXELS`]) are bounded from the header before the
//! pixel buffer is allocated, so a crafted header cannot ask for gigabytes; a decoder panic on a
//! hostile file costs one sample (the loader catches it).

pub mod crop;
pub mod resize;

use ringsam_rng::Rng;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crop::{Rect, center_crop, distorted_crop};

/// Largest side accepted.
pub const MAX_SIDE: usize = 16384;
/// Largest image accepted, in pixels (64 MP: ImageNet's largest is ~30 MP). Checked from the
/// header before any pixel buffer exists, so a few hundred crafted bytes cannot ask for a
/// gigabyte.
pub const MAX_PIXELS: usize = 64 << 20;

/// A decoded image: RGB, interleaved, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height · width · 3` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG to RGB.
pub fn decode_jpeg(bytes: &[u8]) -> Result<Rgb, String> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .set_strict_mode(false);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| format!("undecodable JPEG header: {e:?}"))?;
    if let Some(info) = decoder.info()
        && (info.width as usize) * (info.height as usize) > MAX_PIXELS
    {
        return Err(format!("JPEG of {}×{} pixels; at most {MAX_PIXELS} accepted", info.width, info.height));
    }
    let pixels = decoder.decode().map_err(|e| format!("undecodable JPEG: {e:?}"))?;
    let info = decoder.info().ok_or("JPEG without dimensions")?;
    let (width, height) = (info.width as usize, info.height as usize);
    if pixels.len() != width * height * 3 {
        return Err(format!("decoder returned {} bytes for a {width}×{height} RGB image", pixels.len()));
    }
    Ok(Rgb { width, height, pixels })
}

/// The training image (see the module docs): `size × size × 3` floats in 0–255 (HWC), before
/// normalisation. `rng` draws the crop and the flip.
pub fn train_image(img: &Rgb, size: usize, rng: &mut Rng, out: &mut Vec<f32>) {
    let rect = distorted_crop(img.width, img.height, rng).unwrap_or_else(|| center_crop(img.width, img.height, size));
    resize::resize_bicubic(&img.pixels, img.width, 3, rect, size, size, out);
    if rng.uniform() < 0.5 {
        flip_horizontal(out, size, size, 3);
    }
}

/// The evaluation image: the centre crop, resized.
pub fn eval_image(img: &Rgb, size: usize, out: &mut Vec<f32>) {
    let rect: Rect = center_crop(img.width, img.height, size);
    resize::resize_bicubic(&img.pixels, img.width, 3, rect, size, size, out);
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
