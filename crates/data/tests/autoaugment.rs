//! AutoAugment / RandAugment against independent implementations: every op on real images
//! against fixtures computed by Pillow or by a NumPy port of the reference's TensorFlow op
//! (tests/fixtures/make_augment_fixtures.py), the policy tables entry by entry against the
//! reference's own file (tests/fixtures/make_autoaugment_policies.py), and determinism.

use std::path::PathBuf;

use ringsam_data::autoaugment::policies::{self, CIFAR, IMAGENET, SVHN, SubPolicy, op_named};
use ringsam_data::autoaugment::{geometry, ops};
use ringsam_rng::Rng;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/autoaugment")
}

/// Runs ringsam's op `name` with the fixture's arguments.
fn run(name: &str, args: &[f64], img: &[u8], h: usize, w: usize) -> Vec<u8> {
    let mut v = img.to_vec();
    let a = |i: usize| args[i];
    match name {
        "invert" => ops::invert(&mut v),
        "equalize" => ops::equalize(&mut v),
        "autocontrast" => ops::autocontrast(&mut v),
        "solarize" => ops::solarize(&mut v, a(0) as i32),
        "posterize" | "posterize_tf" => ops::posterize(&mut v, a(0) as u32),
        "solarize_add" => ops::solarize_add(&mut v, a(0) as i32),
        "color" => ops::color(&mut v, a(0)),
        "contrast" => ops::contrast(&mut v, h, w, a(0)),
        "brightness" => ops::brightness(&mut v, a(0)),
        "sharpness" => ops::sharpness(&mut v, h, w, a(0)),
        "rotate" => v = geometry::rotate(img, h, w, a(0) as f32),
        "shear_x" => v = geometry::shear_x(img, h, w, a(0) as f32),
        "shear_y" => v = geometry::shear_y(img, h, w, a(0) as f32),
        "translate_x" => v = geometry::translate_x(img, h, w, a(0) as f32),
        "translate_y" => v = geometry::translate_y(img, h, w, a(0) as f32),
        "cutout" => ops::cutout_at(&mut v, h, w, a(0) as usize, a(1) as usize, a(2) as usize),
        other => panic!("fixture names an unknown op {other}"),
    }
    v
}

/// Tolerance per op, in intensity levels: exact where both sides do integer arithmetic or move
/// whole pixels; ±1 where float rounding order may differ (the f32 blends, TF's grayscale
/// weights, AutoContrast computed by Pillow in f64 and by the reference in f32).
fn tolerance(name: &str) -> i32 {
    match name {
        "color" | "contrast" | "brightness" | "sharpness" | "autocontrast" => 1,
        _ => 0,
    }
}

#[test]
fn every_op_matches_its_independent_fixture() {
    let dir = fixtures();
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let inputs = std::fs::read(dir.join("inputs.bin")).unwrap();
    let outputs = std::fs::read(dir.join("outputs.bin")).unwrap();
    let images: Vec<(usize, usize, usize)> = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["h"].as_u64().unwrap() as usize, m["w"].as_u64().unwrap() as usize, m["offset"].as_u64().unwrap() as usize))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut worst = std::collections::BTreeMap::<String, i32>::new();
    for case in meta["cases"].as_array().unwrap() {
        let name = case["op"].as_str().unwrap();
        let args: Vec<f64> = case["args"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let (h, w, off) = images[case["image"].as_u64().unwrap() as usize];
        let n = h * w * 3;
        let img = &inputs[off..off + n];
        let o = case["offset"].as_u64().unwrap() as usize;
        let want = &outputs[o..o + n];
        let got = run(name, &args, img, h, w);
        let max = got.iter().zip(want).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap();
        let e = worst.entry(name.to_string()).or_default();
        *e = (*e).max(max);
        assert!(max <= tolerance(name), "{name}{args:?} on image {}: max |diff| {max} > {}", case["image"], tolerance(name));
        seen.insert(name.to_string());
    }
    eprintln!("worst |diff| per op: {worst:?}");
    assert_eq!(seen.len(), 17, "every op (and Posterize's TF 0-bit case) has fixtures: {seen:?}");
}

#[test]
fn policy_tables_equal_the_references_entry_by_entry() {
    let json: Value = serde_json::from_slice(&std::fs::read(fixtures().join("policies.json")).unwrap()).unwrap();
    for (name, ours) in [("imagenet", IMAGENET), ("cifar", CIFAR), ("svhn", SVHN)] {
        let theirs = json[name].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: number of sub-policies");
        for (i, (sub, want)) in ours.iter().zip(theirs).enumerate() {
            let want = want.as_array().unwrap();
            assert_eq!(want.len(), 2, "{name}[{i}]");
            for (j, ((op, p, level), w)) in sub.iter().zip(want).enumerate() {
                let w = w.as_array().unwrap();
                assert_eq!(Some(*op), op_named(w[0].as_str().unwrap()), "{name}[{i}][{j}] op");
                assert_eq!(*p as f64, w[1].as_f64().unwrap() as f32 as f64, "{name}[{i}][{j}] probability");
                assert_eq!(*level as u64, w[2].as_u64().unwrap(), "{name}[{i}][{j}] level");
            }
        }
    }
    assert_eq!((IMAGENET.len(), CIFAR.len(), SVHN.len()), (25, 95, 25));
}

fn photo() -> (Vec<u8>, usize, usize) {
    let inputs = std::fs::read(fixtures().join("inputs.bin")).unwrap();
    (inputs[..32 * 32 * 3].to_vec(), 32, 32)
}

#[test]
fn same_seed_same_augmentation_and_every_policy_runs() {
    let (img, h, w) = photo();
    let run_aa = |policy: &[SubPolicy], seed: u64| {
        let mut v = img.clone();
        policies::autoaugment(policy, &mut v, h, w, &mut Rng::new(seed));
        v
    };
    for policy in [IMAGENET, CIFAR, SVHN] {
        let outs: Vec<Vec<u8>> = (0..40).map(|s| run_aa(policy, s)).collect();
        assert_eq!(outs, (0..40).map(|s| run_aa(policy, s)).collect::<Vec<_>>(), "deterministic from the seed");
        assert!(outs.iter().filter(|o| **o != img).count() > 10, "most draws change the image");
    }
    let ra = |seed: u64| {
        let mut v = img.clone();
        policies::randaugment(2, 9.0, &mut v, h, w, &mut Rng::new(seed));
        v
    };
    assert_eq!(ra(5), ra(5));
    let distinct: std::collections::BTreeSet<Vec<u8>> = (0..20).map(ra).collect();
    assert!(distinct.len() > 5, "seeds draw different ops: {} distinct results", distinct.len());
}

#[test]
fn every_randaugment_op_runs_at_every_level_on_tiny_and_odd_images() {
    for (h, w) in [(1, 1), (2, 3), (5, 7), (32, 32)] {
        let img: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
        for op in policies::RANDAUGMENT_OPS {
            for level in 0..=10 {
                let mut v = img.clone();
                policies::apply(op, level as f64, policies::AUTOAUGMENT_HPARAMS, &mut v, h, w, &mut Rng::new(level));
                assert_eq!(v.len(), img.len(), "{op:?} at {level} on {h}×{w}");
            }
        }
    }
}

#[test]
fn the_references_imagenet_scale_constants_grey_out_small_images() {
    let (img, h, w) = photo();
    // AutoAugment TranslateX at level 9: ±225 px on a 32-px image: nothing left but grey.
    let mut v = img.clone();
    policies::apply(policies::Op::TranslateX, 9.0, policies::AUTOAUGMENT_HPARAMS, &mut v, h, w, &mut Rng::new(1));
    assert!(v.iter().all(|&p| p == ops::FILL));
    // Cutout at level 4: pad 40 ≥ the image: all grey, wherever the centre.
    let mut v = img.clone();
    policies::apply(policies::Op::Cutout, 4.0, policies::AUTOAUGMENT_HPARAMS, &mut v, h, w, &mut Rng::new(2));
    assert!(v.iter().all(|&p| p == ops::FILL));
}
