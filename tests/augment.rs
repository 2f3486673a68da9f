//! AutoAugment end to end: `ringsam train --dataset cifar10 --image_level_augmentations
//! autoaugment --batch_level_augmentations cutout` on CIFAR-10 binary files written here (the
//! real format and sizes, filled with crops of sample photos), and the reference's per-dataset
//! rules for which augmentations a dataset takes.

use std::path::Path;

use crate::util::{ringsam, stdout_ok};

/// CIFAR-10 binary files: 5 × 10 000 training and 10 000 test records of `<label><R><G><B>`.
fn write_cifar10(dir: &Path) {
    let photos = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/autoaugment/inputs.bin")).unwrap();
    let photo = |i: usize| -> Vec<u8> {
        // Image 0 (32×32 HWC) shifted per record, as CHW planes.
        let hwc = &photos[..32 * 32 * 3];
        (0..3).flat_map(|c| (0..1024).map(move |p| hwc[((p + i * 7) % 1024) * 3 + c].wrapping_add((i % 13) as u8))).collect()
    };
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        let mut bytes = Vec::with_capacity(10_000 * 3073);
        for i in 0..10_000 {
            bytes.push((i % 10) as u8);
            bytes.extend(photo(i % 97));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn cifar10_trains_with_autoaugment_and_cutout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar10");
    std::fs::create_dir_all(&data).unwrap();
    write_cifar10(&data);
    let out = tmp.path().join("out");
    let o = ringsam(&[
        "--threads",
        "2",
        "train",
        "--dataset",
        "cifar10",
        "--data_dir",
        data.to_str().unwrap(),
        "--model_name",
        "WideResnet10x1",
        "--image_level_augmentations",
        "autoaugment",
        "--batch_level_augmentations",
        "cutout",
        "--batch_size",
        "32",
        "--num_epochs",
        "1",
        "--max_steps",
        "4",
        "--sam_rho",
        "0.05",
        "--output_dir",
        out.to_str().unwrap(),
    ]);
    assert!(stdout_ok(&o).contains("steps: 4"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn augmentations_a_dataset_does_not_take_are_refused_as_the_reference_does() {
    for (args, want) in [
        (&["--dataset", "digits", "--image_level_augmentations", "autoaugment"][..], "digits takes none, basic"),
        (&["--dataset", "cifar10", "--image_level_augmentations", "aa-only"][..], "cifar10 takes none, basic, autoaugment"),
        // The reference's dataset classes take only none or cutout: clap lists them.
        (&["--dataset", "digits", "--batch_level_augmentations", "mixup"][..], "[possible values: none, cutout]"),
    ] {
        let mut all = vec!["train"];
        all.extend_from_slice(args);
        let o = ringsam(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
}
