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
