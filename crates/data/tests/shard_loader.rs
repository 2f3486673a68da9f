//! The loader actor pool: the same batches whatever the worker count, disjoint ranks, bad
//! samples skipped and reported, a missing shard refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ringsam_data::normalize::Normalization;
use ringsam_data::shard_loader::{ShardLoader, ShardLoaderConfig, shards_for};
use ringsam_data::shards::{ShardFormat, pack_folder};

fn fixture_jpegs() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jpeg");
    ["rgb_q90_420", "rgb_q95_444", "gray_q90", "odd_size_q85", "cmyk_q90"]
        .iter()
        .map(|n| std::fs::read(dir.join(format!("{n}.jpg"))).unwrap())
        .collect()
}

/// An image folder of `per_class` JPEGs in each of 3 classes, packed into shards of 4.
fn shards(dir: &Path, format: &str, per_class: usize, extra: &[(&str, &[u8])]) -> Vec<PathBuf> {
    let jpegs = fixture_jpegs();
    let src = dir.join("folder");
    for c in 0..3 {
        std::fs::create_dir_all(src.join(format!("class{c}"))).unwrap();
        for i in 0..per_class {
            std::fs::write(src.join(format!("class{c}/{i:02}.jpg")), &jpegs[(c + i) % jpegs.len()]).unwrap();
        }
    }
    for (name, bytes) in extra {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    pack_folder(&src, &dir.join(format), ShardFormat::parse(format).unwrap(), 4, "train", 3).unwrap()
}

fn config(shards: Vec<PathBuf>, workers: usize) -> ShardLoaderConfig {
    ShardLoaderConfig {
        shards,
        batch_size: 3,
        image_size: 16,
        train: true,
        num_classes: 3,
        normalization: Normalization::for_dataset("imagenet"),
        seed: 7,
        workers,
        shuffle_buffer: 5,
        in_flight: 8,
        rank: 0,
        world: 1,
    }
}

fn quiet() -> Arc<dyn Fn(String) + Send + Sync> {
    Arc::new(|_| {})
}

#[test]
fn same_batches_with_one_and_with_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["wds", "tfrecord"] {
        let s = shards(dir.path(), format, 6, &[]);
        let one: Vec<_> = ShardLoader::new(&config(s.clone(), 1), 2, quiet()).unwrap().collect();
        let two: Vec<_> = ShardLoader::new(&config(s.clone(), 2), 2, quiet()).unwrap().collect();
        assert_eq!(one.len(), 6, "{format}: 18 samples in batches of 3");
        assert_eq!(one, two, "{format}");
        // Another epoch is another order; the same epoch again is the same.
        let other: Vec<_> = ShardLoader::new(&config(s.clone(), 2), 3, quiet()).unwrap().collect();
        assert_ne!(one, other);
        assert!(one.iter().all(|b| b.images.iter().all(|v| v.is_finite()) && b.c == 3 && b.h == 16));
    }
}

#[test]
fn ranks_read_disjoint_shards_that_cover_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards(dir.path(), "wds", 6, &[]);
    let mut cfg = config(s.clone(), 1);
    cfg.world = 2;
    let r0 = shards_for(&cfg, 1);
    cfg.rank = 1;
    let r1 = shards_for(&cfg, 1);
    assert!(r0.iter().all(|p| !r1.contains(p)));
    let mut all: Vec<_> = r0.into_iter().chain(r1).collect();
    all.sort();
    let mut want = s.clone();
    want.sort();
    assert_eq!(all, want);
}

#[test]
fn bad_jpegs_and_labels_are_skipped_and_reported_and_missing_shards_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards(dir.path(), "tfrecord", 3, &[("class1/garbage.jpg", b"this is not a jpeg")]);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut cfg = config(s.clone(), 2);
    cfg.num_classes = 2; // class 2's samples now carry a label out of range
    let loader = ShardLoader::new(&cfg, 0, Arc::new(move |l| sink.lock().unwrap().push(l))).unwrap();
    let stats = loader.stats.clone();
    let batches: Vec<_> = loader.collect();
    let lines = lines.lock().unwrap();
    assert_eq!(stats.skipped.load(std::sync::atomic::Ordering::Relaxed), 4, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("garbage") && l.contains("undecodable")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("label 2 outside 0..2")), "{lines:?}");
    assert_eq!(batches.iter().map(|b| b.n).sum::<usize>(), 6, "6 good samples in full batches of 3");
    let mut missing = s.clone();
    missing.push(dir.path().join("nope.tfrecord"));
    let err = ShardLoader::new(&config(missing, 1), 0, quiet()).err().expect("missing shard").to_string();
    assert!(err.contains("nope.tfrecord") && err.contains("not found"), "{err}");
}
