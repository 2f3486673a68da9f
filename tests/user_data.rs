//! A user's own data, end to end through the binary: `--dataset imagefolder` (JPEG class folders,
//! read by the ImageNet pipeline) with `ringsam predict` checked against the run's evaluation,
//! and `--dataset arrays` (a safetensors file of images and labels), resized for the model.

use std::path::{Path, PathBuf};

use crate::util::{ringsam, stdout_ok};

/// `test accuracy: X%` from a run's summary.
fn accuracy(stdout: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with("test accuracy:")).unwrap_or_else(|| panic!("no accuracy in {stdout}"));
    line.split_whitespace().nth(2).unwrap().trim_end_matches('%').parse().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &dst) } else { std::fs::copy(&p, &dst).map(drop).unwrap() }
    }
}

#[test]
fn an_image_folder_trains_and_predict_agrees_with_its_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("photos");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet_small"), &folder);
    let out = tmp.path().join("runs");
    let args = [
        "train",
        "--dataset",
        "imagefolder",
        "--data_dir",
        folder.to_str().unwrap(),
        "--model_name",
        "WideResnet10x1",
        "--image_size",
        "32",
        "--batch_size",
        "16",
        "--num_epochs",
        "3",
        "--learning_rate",
        "0.05",
        "--output_dir",
        out.to_str().unwrap(),
    ];
    let run = ringsam(&args);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("packing 256 training and 64 evaluation images (4 classes)"), "{log}");
    let trained = accuracy(&stdout_ok(&run));
    let packs: Vec<_> = std::fs::read_dir(folder.join(".ringsam-shards")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(packs.len() == 1 && packs[0].join("label.labels.txt").is_file(), "{packs:?}");
    // Every validation image through `predict`: the same preprocessing gives the same accuracy.
    let ckpt: PathBuf = out.join("lr_0.05/wd_0.001/rho_0.0/seed_0/checkpoints/checkpoint_48");
    let classes = ["astronaut", "china", "coffee", "flower"];
    let dirs: Vec<String> = classes.iter().map(|c| folder.join("validation").join(c).to_str().unwrap().to_string()).collect();
    let mut args = vec!["predict", "--checkpoint", ckpt.to_str().unwrap(), "--top_k", "1", "--json"];
    args.extend(dirs.iter().map(String::as_str));
    let predicted = stdout_ok(&ringsam(&args));
    let (mut right, mut total) = (0, 0);
    for line in predicted.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let image = v["image"].as_str().unwrap();
        let truth = classes.iter().find(|c| image.contains(&format!("/{c}/"))).unwrap();
        right += usize::from(v["top"][0]["name"] == **truth);
        total += 1;
    }
    assert_eq!(total, 64);
    assert!(trained > 60.0, "the run learned: {trained}%");
    // One image at a time against batches of 64: rounding may differ in the last bits, which
    // could flip one near-tie; any more is a preprocessing that differs from the evaluation's.
    let evaluated = trained * 64.0 / 100.0;
    assert!((right as f64 - evaluated).abs() <= 1.0, "predict: {right}/64 right, the run's evaluation: {evaluated}/64");
}

/// Dark images are class 0, bright ones class 1: `n` of them, 8×8 RGB.
fn two_classes(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = seed;
    let mut next = || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 56) as u8
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = (i % 2) as u8;
        labels.push(class);
        pixels.extend((0..8 * 8 * 3).map(|_| if class == 0 { next() / 4 } else { 191 + next() / 4 }));
    }
    (pixels, labels)
}

#[test]
fn arrays_train_evaluate_and_resize_to_the_image_size() {
    use safetensors::{Dtype, tensor::TensorView};
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.safetensors");
    let (train, train_labels) = two_classes(128, 1);
    let (test, test_labels) = two_classes(64, 2);
    // Test images as float32 in [0, 1], labels as int64: both accepted.
    let test: Vec<u8> = test.iter().flat_map(|&v| (f32::from(v) / 255.0).to_le_bytes()).collect();
    let test_labels: Vec<u8> = test_labels.iter().flat_map(|&l| i64::from(l).to_le_bytes()).collect();
    let views = vec![
        ("train_images".to_string(), TensorView::new(Dtype::U8, vec![128, 8, 8, 3], &train).unwrap()),
        ("train_labels".to_string(), TensorView::new(Dtype::U8, vec![128], &train_labels).unwrap()),
        ("test_images".to_string(), TensorView::new(Dtype::F32, vec![64, 8, 8, 3], &test).unwrap()),
        ("test_labels".to_string(), TensorView::new(Dtype::I64, vec![64], &test_labels).unwrap()),
    ];
    std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
    let out = tmp.path().join("runs");
    let run = ringsam(&[
        "train",
        "--dataset",
        "arrays",
        "--data_dir",
        file.to_str().unwrap(),
        "--model_name",
        "WideResnet10x1",
        "--image_size",
        "16",
        "--batch_size",
        "32",
        "--num_epochs",
        "2",
        "--output_dir",
        out.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("arrays: 8×8 images resized bicubically to 16×16"), "{log}");
    assert!(accuracy(&stdout_ok(&run)) > 90.0, "{log}");
}
