//! JPEG decoding against Pillow (libjpeg-turbo), on fixtures written by
//! tests/fixtures/make_jpeg_fixtures.py, and the preprocessing pipelines' shapes.

use std::path::PathBuf;

use ringsam_data::imagenet::{decode_jpeg, eval_image, train_image};
use ringsam_rng::Rng;

fn fixture(name: &str) -> (Vec<u8>, Vec<u8>, usize, usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jpeg");
    let jpg = std::fs::read(dir.join(format!("{name}.jpg"))).unwrap();
    let rgb = std::fs::read(dir.join(format!("{name}.rgb"))).unwrap();
    let dims = std::fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap();
    let mut it = dims.split_whitespace().map(|v| v.parse::<usize>().unwrap());
    (jpg, rgb, it.next().unwrap(), it.next().unwrap())
}

#[test]
fn decodes_like_libjpeg_turbo() {
    // Decoders may differ in IDCT rounding and chroma upsampling. Measured: mean |diff| 0.43 /
    // 0.01 / 0.00 / 0.38 / 0.00 levels, max 3 (4:2:0 upsampling). Tolerance: mean below 1, max 8.
    for name in ["rgb_q90_420", "rgb_q95_444", "gray_q90", "odd_size_q85", "cmyk_q90"] {
        let (jpg, want, w, h) = fixture(name);
        let img = decode_jpeg(&jpg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.width, img.height), (w, h), "{name}");
        let diffs: Vec<i32> = img.pixels.iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        let max = *diffs.iter().max().unwrap();
        eprintln!("{name}: mean |diff| {mean:.3}, max {max}");
        assert!(mean < 1.0 && max <= 8, "{name}: mean |diff| {mean:.2}, max {max}");
    }
}

#[test]
fn garbage_and_truncated_jpegs_are_errors_not_panics() {
    let (jpg, ..) = fixture("rgb_q90_420");
    assert!(decode_jpeg(b"definitely not a jpeg").is_err());
    assert!(decode_jpeg(&[]).is_err());
    for cut in [2, 20, jpg.len() / 3] {
        let _ = decode_jpeg(&jpg[..cut]); // may decode partially or fail; must not panic
    }
    let mut flipped = jpg.clone();
    for i in (200..flipped.len()).step_by(37) {
        flipped[i] ^= 0x5a;
    }
    let _ = decode_jpeg(&flipped);
}

#[test]
fn pipelines_give_square_images_at_the_model_size() {
    let (jpg, ..) = fixture("rgb_q90_420");
    let img = decode_jpeg(&jpg).unwrap();
    let mut out = Vec::new();
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        train_image(&img, 24, &mut rng, &mut out);
        assert_eq!(out.len(), 24 * 24 * 3);
        assert!(out.iter().all(|v| v.is_finite() && (-40.0..=300.0).contains(v)));
    }
    eval_image(&img, 24, &mut out);
    assert_eq!(out.len(), 24 * 24 * 3);
    // Same seed, same image.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    train_image(&img, 16, &mut Rng::new(9), &mut a);
    train_image(&img, 16, &mut Rng::new(9), &mut b);
    assert_eq!(a, b);
}

/// The loader's fused path (resize rows normalised, flipped and split into planes as they are
/// made, buffers reused) must give exactly what decoding, [`train_image`] / [`eval_image`] and
/// `Normalization::plane` give one after the other.
#[test]
fn fused_planes_equal_the_step_by_step_pipeline() {
    use ringsam_data::autoaugment::Augment;
    use ringsam_data::imagenet::{JpegDecoder, JpegPipeline, Workspace};
    use ringsam_data::normalize::Normalization;
    let norm = Normalization::for_dataset("imagenet");
    let zune = |size| JpegPipeline { decoder: JpegDecoder::Zune, size, augment: Augment::None, normalization: norm.clone() };
    let mut ws = Workspace::default();
    // The three planes of a CHW buffer, as the pipeline takes them.
    fn split(chw: &mut [f32]) -> [&mut [f32]; 3] {
        let p = chw.len() / 3;
        let (r, gb) = chw.split_at_mut(p);
        let (g, b) = gb.split_at_mut(p);
        [r, g, b]
    }
    let planes_of = |hwc: &[f32], size: usize| {
        let mut chw = vec![0.0f32; 3 * size * size];
        for (c, dst) in chw.chunks_exact_mut(size * size).enumerate() {
            norm.plane(c, hwc, 3, dst);
        }
        chw
    };
    // Several images and sizes through one workspace: a buffer left from a larger image must
    // not leak into a smaller one.
    for (name, size, seed) in [("rgb_q95_444", 40, 1), ("gray_q90", 12, 2), ("odd_size_q85", 33, 3), ("rgb_q90_420", 24, 4)] {
        let (jpg, ..) = fixture(name);
        let img = decode_jpeg(&jpg).unwrap();
        let mut hwc = Vec::new();
        for draw in 0..6 {
            train_image(&img, size, &mut Rng::new(seed * 100 + draw), &mut hwc);
            let mut got = vec![f32::NAN; 3 * size * size];
            let mut rng = Rng::new(seed * 100 + draw);
            zune(size).process(&jpg, Some(&mut rng), &mut ws, split(&mut got)).unwrap();
            assert!(got == planes_of(&hwc, size), "{name} {size}px draw {draw}: training planes differ");
        }
        eval_image(&img, size, &mut hwc);
        let mut got = vec![f32::NAN; 3 * size * size];
        zune(size).process(&jpg, None, &mut ws, split(&mut got)).unwrap();
        assert!(got == planes_of(&hwc, size), "{name} {size}px: evaluation planes differ");
    }
    let mut short = vec![0.0f32; 15];
    let (jpg, ..) = fixture("gray_q90");
    let err = zune(4).process(&jpg, None, &mut ws, split(&mut short)).unwrap_err();
    assert!(err.contains("a plane of 5 floats given for a 4×4 image"), "{err}");
}

/// A decoder thread reuses the previous image's buffer: the result must not depend on what it
/// held — also for a damaged JPEG, whose rows the lenient decoder may leave unwritten.
#[test]
fn a_reused_buffer_never_shows_through() {
    use ringsam_data::imagenet::crop::Rect;
    use ringsam_data::imagenet::{JpegDecoder, decode_for_crop};
    let mut decoders = vec![JpegDecoder::Zune];
    if cfg!(feature = "turbojpeg") {
        decoders.extend([JpegDecoder::Turbo, JpegDecoder::TurboReduced]);
    }
    for name in ["rgb_q90_420", "gray_q90", "odd_size_q85", "cmyk_q90"] {
        let (jpg, ..) = fixture(name);
        let damaged = &jpg[..jpg.len() * 2 / 3];
        for bytes in [&jpg[..], damaged] {
            for &d in &decoders {
                let whole = |w: usize, h: usize| Rect { x: 0, y: 0, w, h };
                let fresh = decode_for_crop(bytes, d, 8, whole, Vec::new());
                let reused = decode_for_crop(bytes, d, 8, whole, vec![0xAA; 1 << 20]);
                match (fresh, reused) {
                    (Ok((a, ra)), Ok((b, rb))) => assert!(a == b && ra == rb, "{name} {d:?} ({} bytes): results differ", bytes.len()),
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!("{name} {d:?}: {:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
                }
            }
        }
    }
}

#[test]
fn a_header_declaring_a_huge_image_is_refused_before_decoding() {
    let (mut jpg, ..) = fixture("rgb_q90_420");
    // SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let sof = jpg.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline JPEG");
    jpg[sof + 5..sof + 7].copy_from_slice(&16000u16.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&16000u16.to_be_bytes());
    let err = decode_jpeg(&jpg).unwrap_err();
    assert!(err.contains("at most"), "{err}");
}

#[test]
fn decoder_names_parse_and_a_missing_backend_is_named() {
    use ringsam_data::imagenet::JpegDecoder;
    assert_eq!(JpegDecoder::parse("zune"), Ok(JpegDecoder::Zune));
    assert!(JpegDecoder::parse("libjpeg").unwrap_err().contains("zune, turbo, turbo-reduced"));
    if !cfg!(feature = "turbojpeg") {
        assert!(JpegDecoder::parse("turbo").unwrap_err().contains("--features turbojpeg"));
    }
}

/// libjpeg-turbo decoding only a crop must give that crop of Pillow's full decode (the same
/// library); CMYK falls back to zune-jpeg; the reduced-scale decode keeps the output close.
#[cfg(feature = "turbojpeg")]
#[test]
fn libjpeg_turbo_crop_decode_matches_pillow_in_the_crop() {
    use ringsam_data::imagenet::crop::Rect;
    use ringsam_data::imagenet::{JpegDecoder, decode_for_crop};
    for name in ["rgb_q90_420", "rgb_q95_444", "gray_q90", "odd_size_q85", "cmyk_q90"] {
        let (jpg, want, w, h) = fixture(name);
        let crop = Rect { x: w / 3 + 1, y: h / 4, w: w / 2, h: h / 2 };
        let (img, inside) = decode_for_crop(
            &jpg,
            JpegDecoder::Turbo,
            16,
            |fw, fh| {
                assert_eq!((fw, fh), (w, h));
                crop
            },
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((inside.w, inside.h), (crop.w, crop.h), "{name}");
        let mut max = 0;
        for y in 0..crop.h {
            for x in 0..crop.w {
                for c in 0..3 {
                    let got = img.pixels[((inside.y + y) * img.width + inside.x + x) * 3 + c] as i32;
                    let exp = want[((crop.y + y) * w + crop.x + x) * 3 + c] as i32;
                    max = max.max((got - exp).abs());
                }
            }
        }
        eprintln!("{name}: turbo crop max |diff| {max}");
        // CMYK goes through zune-jpeg (see decodes_like_libjpeg_turbo's tolerance).
        assert!(max <= if name == "cmyk_q90" { 8 } else { 1 }, "{name}: max |diff| {max}");

        // Reduced scale: a 12-px output of the whole image decodes smaller (zune for CMYK).
        let whole = |_: usize, _: usize| Rect { x: 0, y: 0, w, h };
        let (a, ra) = decode_for_crop(&jpg, JpegDecoder::Turbo, 12, whole, Vec::new()).unwrap();
        let (b, rb) = decode_for_crop(&jpg, JpegDecoder::TurboReduced, 12, whole, Vec::new()).unwrap();
        if name != "cmyk_q90" {
            assert!(b.width < a.width && rb.w >= 12 && rb.h >= 12, "{name}: {}×{} from {}×{}", b.width, b.height, a.width, a.height);
        }
        // DCT-domain scaling by 1/f is close to averaging f×f blocks of the full decode.
        let f = a.width / b.width;
        if f * b.width != a.width {
            continue; // not a whole-number scale (odd_size: 5/8)
        }
        let mut sum = 0.0f64;
        for y in 0..b.height.min(a.height / f) {
            for x in 0..b.width.min(a.width / f) {
                for c in 0..3 {
                    let mut block = 0.0f64;
                    for dy in 0..f {
                        for dx in 0..f {
                            block += a.pixels[((y * f + dy) * a.width + x * f + dx) * 3 + c] as f64;
                        }
                    }
                    sum += (block / (f * f) as f64 - b.pixels[(y * b.width + x) * 3 + c] as f64).abs();
                }
            }
        }
        let mean = sum / ((a.height / f).min(b.height) * (a.width / f).min(b.width) * 3) as f64;
        eprintln!("{name}: 1/{f} scale vs {f}×{f} block means of the full decode: mean |diff| {mean:.2} levels");
        // Measured 7.5 levels on 4:2:0 (sharp 8-px squares: the scaled IDCT keeps only low
        // frequencies, it is not a box filter); 0.0 where the decoder is zune (CMYK).
        assert!(mean < 10.0, "{name}: reduced-scale decode far from block means: {mean}");
    }
}
