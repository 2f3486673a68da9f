//! JPEG decoding: zune-jpeg (pure Rust, the default: builds on any machine) and, with the
//! `turbojpeg` feature, libjpeg-turbo 3, decoding only the crop and optionally at a reduced size.
//!
//! Why two: the loader's cost per image is mostly decoding, and libjpeg-turbo (SIMD IDCT and
//! colour conversion, the library Pillow and TensorFlow use) is the reference point; but it is C,
//! built from source with cmake and nasm, so it is an option measured against the default
//! (`ringsam bench loader --decoder ...`), not a requirement.
//!
//! Crop-aware decoding (`turbo`, as TensorFlow's `decode_and_crop_jpeg`, which the reference
//! uses): only the crop's rows and the iMCU columns around it are inverse-transformed and colour
//! converted; the pixels are those of a full decode.
//!
//! Reduced-size decoding (`turbo-reduced`): libjpeg can run the inverse DCT at 1/8 … 7/8 of the
//! size, which costs a fraction of a full decode. When the crop, scaled by s, still has at least
//! the output's side, there is no need for the full resolution: the image is decoded at the
//! smallest such s and the crop taken in scaled coordinates (rounded to whole pixels, so the crop
//! can move by up to 1/s − 1 source pixels). The output then differs from the reference's (which
//! decodes at full size) by that and by the DCT-domain downscale acting as a low-pass pre-filter: an
//! opt-in for throughput, never the default.
//!
//! Every path bounds the image from its header before allocating ([`MAX_SIDE`], [`MAX_PIXELS`]).

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use super::crop::Rect;

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

/// Which decoder the loader uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JpegDecoder {
    /// zune-jpeg, full size.
    #[default]
    Zune,
    /// libjpeg-turbo, full size (feature `turbojpeg`).
    Turbo,
    /// libjpeg-turbo at the smallest DCT scale the crop allows (feature `turbojpeg`).
    TurboReduced,
}

impl JpegDecoder {
    /// Names as flags spell them.
    pub const NAMES: &[&str] = &["zune", "turbo", "turbo-reduced"];

    /// From a flag value; an error names the feature when this build lacks it.
    pub fn parse(s: &str) -> Result<JpegDecoder, String> {
        let d = match s {
            "zune" => JpegDecoder::Zune,
            "turbo" => JpegDecoder::Turbo,
            "turbo-reduced" => JpegDecoder::TurboReduced,
            other => return Err(format!("JPEG decoder {other:?}: expected one of {}", Self::NAMES.join(", "))),
        };
        if d != JpegDecoder::Zune && !cfg!(feature = "turbojpeg") {
            return Err(format!("JPEG decoder {s}: this build has no libjpeg-turbo (build with --features turbojpeg)"));
        }
        Ok(d)
    }
}

fn check_size(width: usize, height: usize) -> Result<(), String> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS {
        return Err(format!("JPEG of {width}×{height} pixels; sides 1..={MAX_SIDE} and at most {MAX_PIXELS} pixels accepted"));
    }
    Ok(())
}

/// Decodes a JPEG to RGB with zune-jpeg; grayscale and CMYK/YCCK come out as RGB.
pub fn decode_jpeg(bytes: &[u8]) -> Result<Rgb, String> {
    decode_jpeg_reusing(bytes, Vec::new())
}

/// [`decode_jpeg`] into `buffer`'s allocation (a previous image's pixels): a decoder thread then
/// allocates only when an image is larger than any before it. The buffer is zeroed first: in
/// its lenient mode zune may leave rows of a damaged JPEG unwritten, and they must not show the
/// previous image (which would make a sample depend on the thread that decoded it).
pub fn decode_jpeg_reusing(bytes: &[u8], mut buffer: Vec<u8>) -> Result<Rgb, String> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .set_strict_mode(false);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| format!("undecodable JPEG header: {e:?}"))?;
    let info = decoder.info().ok_or("JPEG without dimensions")?;
    let (width, height) = (info.width as usize, info.height as usize);
    check_size(width, height)?;
    let len = decoder.output_buffer_size().ok_or("JPEG without dimensions")?;
    if len != width * height * 3 {
        return Err(format!("decoder wants {len} bytes for a {width}×{height} RGB image"));
    }
    buffer.clear();
    buffer.resize(len, 0);
    decoder.decode_into(&mut buffer).map_err(|e| format!("undecodable JPEG: {e:?}"))?;
    Ok(Rgb { width, height, pixels: buffer })
}

/// Decodes what the crop `choose(width, height)` needs for an output of `side` pixels: the
/// image and the crop inside it (in the decoded image's coordinates). `choose` runs once, with the
/// full-size dimensions, whatever the decoder. The pixels go into `buffer`'s allocation (pass
/// the previous image's, or `Vec::new()`).
pub fn decode_for_crop(
    bytes: &[u8],
    decoder: JpegDecoder,
    side: usize,
    choose: impl FnOnce(usize, usize) -> Rect,
    buffer: Vec<u8>,
) -> Result<(Rgb, Rect), String> {
    match decoder {
        JpegDecoder::Zune => {
            let img = decode_jpeg_reusing(bytes, buffer)?;
            let rect = choose(img.width, img.height);
            Ok((img, rect))
        }
        #[cfg(feature = "turbojpeg")]
        JpegDecoder::Turbo | JpegDecoder::TurboReduced => {
            turbo::decode_for_crop(bytes, decoder == JpegDecoder::TurboReduced, side, choose, buffer)
        }
        #[cfg(not(feature = "turbojpeg"))]
        _ => {
            let _ = (side, buffer);
            Err("this build has no libjpeg-turbo (build with --features turbojpeg)".into())
        }
    }
}

/// The smallest of libjpeg's scales `n/8` at which a `w × h` crop still covers `side` pixels
/// each way (8: no reduction).
pub fn reduced_scale_eighths(w: usize, h: usize, side: usize) -> usize {
    (1..=8).find(|&n| w * n >= side * 8 && h * n >= side * 8).unwrap_or(8)
}

/// `rect` in the coordinates of the image scaled to `scaled_w × scaled_h` by `n/8` (rounded
/// outward to whole pixels, clamped to the image).
pub fn scale_rect(rect: Rect, n: usize, scaled_w: usize, scaled_h: usize) -> Rect {
    let x = (rect.x * n / 8).min(scaled_w - 1);
    let y = (rect.y * n / 8).min(scaled_h - 1);
    let w = ((rect.x + rect.w) * n).div_ceil(8).min(scaled_w).saturating_sub(x).max(1);
    let h = ((rect.y + rect.h) * n).div_ceil(8).min(scaled_h).saturating_sub(y).max(1);
    Rect { x, y, w, h }
}

#[cfg(feature = "turbojpeg")]
mod turbo {
    //! libjpeg-turbo 3 through its C API (the safe wrapper has no cropping region). The C library
    //! reports errors by return code: nothing unwinds through it.
    use std::cell::RefCell;
    use std::ffi::CStr;

    use turbojpeg::raw;

    use super::{MAX_PIXELS, Rect, Rgb, check_size, decode_jpeg_reusing, reduced_scale_eighths, scale_rect};

    struct Handle(raw::tjhandle);

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle came from tj3Init and is destroyed once.
            unsafe { raw::tj3Destroy(self.0) }
        }
    }

    impl Handle {
        fn error(&self, what: &str) -> String {
            // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
            let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.0)) };
            format!("{what}: {}", msg.to_string_lossy())
        }

        fn get(&self, param: raw::TJPARAM) -> i32 {
            // SAFETY: a valid handle and a parameter id from the bindings.
            unsafe { raw::tj3Get(self.0, param as i32) }
        }
    }

    /// `tjMCUWidth` of turbojpeg.h (a header-only table, not an exported symbol), indexed by
    /// `TJSAMP`: 4:4:4, 4:2:2, 4:2:0, gray, 4:4:0, 4:1:1, 4:4:1.
    const MCU_WIDTH: [usize; 7] = [8, 16, 16, 8, 8, 32, 8];

    thread_local! {
        // One handle per decoder thread: creating one per image costs more than a small decode.
        static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
    }

    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    /// `TJSCALED`: a dimension scaled by `n/8`, rounded up.
    fn scaled(dim: usize, n: usize) -> usize {
        (dim * n).div_ceil(8)
    }

    pub fn decode_for_crop(
        bytes: &[u8],
        reduced: bool,
        side: usize,
        choose: impl FnOnce(usize, usize) -> Rect,
        mut pixels: Vec<u8>,
    ) -> Result<(Rgb, Rect), String> {
        HANDLE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                // SAFETY: plain constructor; null means failure, checked below.
                let h = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as i32) };
                if h.is_null() {
                    return Err("libjpeg-turbo: cannot create a decompressor".into());
                }
                let h = Handle(h);
                // SAFETY: valid handle; the library refuses larger images itself as well.
                unsafe { raw::tj3Set(h.0, raw::TJPARAM_TJPARAM_MAXPIXELS as i32, MAX_PIXELS as i32) };
                *slot = Some(h);
            }
            let h = slot.as_ref().expect("set above");
            // SAFETY: the pointer and length describe `bytes`, which outlives the call.
            if unsafe { raw::tj3DecompressHeader(h.0, bytes.as_ptr(), bytes.len() as _) } != 0 {
                return Err(h.error("undecodable JPEG header"));
            }
            let (width, height) =
                (h.get(raw::TJPARAM_TJPARAM_JPEGWIDTH).max(0) as usize, h.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT).max(0) as usize);
            check_size(width, height)?;
            let cs = h.get(raw::TJPARAM_TJPARAM_COLORSPACE);
            if cs == raw::TJCS_TJCS_CMYK as i32 || cs == raw::TJCS_TJCS_YCCK as i32 {
                // TurboJPEG does not turn CMYK into RGB; zune-jpeg does.
                let img = decode_jpeg_reusing(bytes, pixels)?;
                let rect = choose(img.width, img.height);
                return Ok((img, rect));
            }
            let rect = choose(width, height);
            let n = if reduced { reduced_scale_eighths(rect.w, rect.h, side) } else { 8 };
            let (sw, sh) = (scaled(width, n), scaled(height, n));
            let want = if n == 8 { rect } else { scale_rect(rect, n, sw, sh) };
            // The region's left edge must sit on a (scaled) iMCU boundary: start at the one
            // before the crop and remember the offset.
            let subsamp = h.get(raw::TJPARAM_TJPARAM_SUBSAMP);
            let mcu = if (0..7).contains(&subsamp) {
                scaled(MCU_WIDTH[subsamp as usize], n).max(1)
            } else {
                usize::MAX // unknown subsampling: decode whole rows
            };
            // One iMCU of margin on each side (rows and columns): chroma upsampling reads the
            // neighbouring samples, and without them the crop's edge pixels differ from a full
            // decode's.
            let margin = if mcu == usize::MAX { 0 } else { mcu };
            let x0 = if mcu == usize::MAX { 0 } else { (want.x - want.x % mcu).saturating_sub(margin) };
            let x1 = if mcu == usize::MAX { sw } else { (want.x + want.w + margin).min(sw) };
            let y0 = want.y.saturating_sub(2 * margin);
            let y1 = (want.y + want.h + 2 * margin).min(sh);
            let (region_w, region_h) = (x1 - x0, y1 - y0);
            let region = raw::tjregion { x: x0 as i32, y: y0 as i32, w: region_w as i32, h: region_h as i32 };
            // SAFETY: valid handle; scaling factor and region checked by the library.
            unsafe {
                // The library matches factors exactly as it lists them (1/1, 7/8, 3/4, …): reduce.
                let g = gcd(n, 8);
                if raw::tj3SetScalingFactor(h.0, raw::tjscalingfactor { num: (n / g) as i32, denom: (8 / g) as i32 }) != 0 {
                    return Err(h.error("libjpeg-turbo scaling"));
                }
                if raw::tj3SetCroppingRegion(h.0, region) != 0 {
                    return Err(h.error("libjpeg-turbo crop"));
                }
            }
            // Uninitialised capacity, not a zero fill: the library writes every byte of the region
            // on success, and the length is set only then.
            let len = 3 * region_w * region_h;
            pixels.clear();
            pixels.reserve(len);
            // SAFETY: `pixels` has capacity for region_w × region_h RGB pixels at pitch
            // 3·region_w, exactly the region set above; `bytes` outlives the call.
            let rc = unsafe {
                raw::tj3Decompress8(
                    h.0,
                    bytes.as_ptr(),
                    bytes.len() as _,
                    pixels.as_mut_ptr(),
                    (3 * region_w) as i32,
                    raw::TJPF_TJPF_RGB as i32,
                )
            };
            if rc != 0 {
                return Err(h.error("undecodable JPEG"));
            }
            // SAFETY: the decompression succeeded, so all `len` bytes were written.
            unsafe { pixels.set_len(len) };
            let inside = Rect { x: want.x - x0, y: want.y - y0, w: want.w, h: want.h };
            Ok((Rgb { width: region_w, height: region_h, pixels }, inside))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduced_scale_keeps_at_least_the_output_side() {
        assert_eq!(reduced_scale_eighths(448, 448, 224), 4);
        assert_eq!(reduced_scale_eighths(449, 1000, 224), 4);
        assert_eq!(reduced_scale_eighths(447, 1000, 224), 5, "4/8 of 447 is under 224");
        assert_eq!(reduced_scale_eighths(200, 300, 224), 8, "upsampling: full size");
        assert_eq!(reduced_scale_eighths(1800, 1800, 224), 1);
        let r = scale_rect(Rect { x: 13, y: 7, w: 451, h: 449 }, 4, 300, 250);
        assert_eq!(r, Rect { x: 6, y: 3, w: 226, h: 225 });
        assert!(r.w * 8 >= 451 * 4 && r.h * 8 >= 449 * 4, "covers the scaled crop");
    }
}
