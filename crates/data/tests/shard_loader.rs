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
        samples: None,
        start_sample: 0,
        decoder: Default::default(),
        augment: Default::default(),
        mixup_alpha: 0.0,
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
    let r0 = shards_for(&cfg, 1, 0);
    cfg.rank = 1;
    let r1 = shards_for(&cfg, 1, 0);
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
    // Evaluation leaves the 4 bad samples out.
    cfg.train = false;
    let loader = ShardLoader::new(&cfg, 0, Arc::new(move |l| sink.lock().unwrap().push(l))).unwrap();
    let stats = loader.stats.clone();
    let batches: Vec<_> = loader.collect();
    {
        let lines = lines.lock().unwrap();
        assert_eq!(stats.skipped.load(std::sync::atomic::Ordering::Relaxed), 4, "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("garbage") && l.contains("undecodable")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("label 2 outside 0..2")), "{lines:?}");
    }
    assert_eq!(batches.iter().map(|b| b.n).sum::<usize>(), 6, "6 good samples");
    assert!(batches.iter().flat_map(|b| &b.labels).all(|&l| l < 2));
    // Training keeps every batch full: a bad sample's slot holds a copy of a good one.
    cfg.train = true;
    let loader = ShardLoader::new(&cfg, 0, quiet()).unwrap();
    let stats = loader.stats.clone();
    let batches: Vec<_> = loader.collect();
    assert_eq!(batches.len(), 3, "10 samples: 3 full batches of 3, the last sample dropped");
    assert!(batches.iter().all(|b| b.n == 3 && b.labels.len() == 3 && b.labels.iter().all(|&l| l < 2)));
    assert!(stats.skipped.load(std::sync::atomic::Ordering::Relaxed) >= 3, "the bad samples of the 9 used were counted");
    let mut missing = s.clone();
    missing.push(dir.path().join("nope.tfrecord"));
    let err = ShardLoader::new(&config(missing, 1), 0, quiet()).err().expect("missing shard").to_string();
    assert!(err.contains("nope.tfrecord") && err.contains("not found"), "{err}");
}

#[test]
fn a_sample_count_reads_the_shards_again_and_a_start_sample_resumes_mid_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards(dir.path(), "wds", 6, &[]); // 18 samples in 5 shards
    let mut cfg = config(s.clone(), 2);
    cfg.world = 2;
    cfg.rank = 1;
    // 30 samples from rank 1's ~9: three passes over other shard subsets.
    cfg.samples = Some(30);
    let all: Vec<_> = ShardLoader::new(&cfg, 4, quiet()).unwrap().collect();
    assert_eq!(all.len(), 10);
    assert_eq!(all.iter().map(|b| b.index).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    // Starting at sample 12 gives exactly batches 4.. of the same epoch.
    cfg.start_sample = 12;
    let tail: Vec<_> = ShardLoader::new(&cfg, 4, quiet()).unwrap().collect();
    assert_eq!(tail, all[4..].to_vec());
    cfg.start_sample = 13;
    assert!(ShardLoader::new(&cfg, 4, quiet()).is_err(), "not at a batch boundary");
}

#[test]
fn packing_records_shard_lengths_and_classes_as_tfds_does() {
    use ringsam_data::shards::layout::{LABELS, open_layout};
    let dir = tempfile::tempdir().unwrap();
    let train = shards(dir.path(), "tfrecord", 3, &[]);
    let out = dir.path().join("tfrecord");
    // A validation split packed beside it, from a folder with the same classes.
    pack_folder(&dir.path().join("folder"), &out, ShardFormat::TfRecord, 5, "validation", 0).unwrap();
    let layout = open_layout(&out).unwrap();
    assert_eq!(layout.train.shards, train);
    assert_eq!(layout.train.lengths, Some(vec![4, 4, 1]));
    assert_eq!(layout.validation.known_len(), Some(9));
    assert_eq!(layout.classes, vec!["class0", "class1", "class2"]);
    // A TFDS data dir (DATASET/VERSION/) is found from its root.
    let tfds = dir.path().join("tfds/imagenet2012/5.1.0");
    std::fs::create_dir_all(tfds.parent().unwrap().join("3.0.0")).unwrap();
    std::fs::rename(&out, &tfds).unwrap();
    assert_eq!(open_layout(&dir.path().join("tfds")).unwrap().dir, tfds);
    // Lengths that disagree with the shards present, and a missing label file, are errors.
    std::fs::rename(tfds.join(LABELS), tfds.join("labels.bak")).unwrap();
    let err = open_layout(&tfds).unwrap_err().to_string();
    assert!(err.contains(LABELS), "{err}");
    // A blank line inside the class list would shift every later label: refused.
    std::fs::write(tfds.join(LABELS), "class0\n\nclass2\n").unwrap();
    let err = open_layout(&tfds).unwrap_err().to_string();
    assert!(err.contains("line 2 is empty"), "{err}");
    std::fs::rename(tfds.join("labels.bak"), tfds.join(LABELS)).unwrap();
    std::fs::remove_file(tfds.join(train[0].file_name().unwrap())).unwrap();
    let err = open_layout(&tfds).unwrap_err().to_string();
    assert!(err.contains("lists 3 shard lengths") && err.contains("2 train shards"), "{err}");
    // Another class list for a second split is refused.
    std::fs::create_dir_all(dir.path().join("other/zebra")).unwrap();
    std::fs::write(dir.path().join("other/zebra/a.jpg"), &fixture_jpegs()[0]).unwrap();
    let err = pack_folder(&dir.path().join("other"), &tfds, ShardFormat::Wds, 5, "validation", 0).unwrap_err();
    assert!(err.to_string().contains("other classes"), "{err}");
}

#[test]
fn mixup_blends_each_batch_with_its_reversal_at_one_lambda_of_at_least_half() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards(dir.path(), "wds", 6, &[]);
    let plain: Vec<_> = ShardLoader::new(&config(s.clone(), 2), 1, quiet()).unwrap().collect();
    let mut cfg = config(s, 2);
    cfg.mixup_alpha = 0.2;
    let mixed: Vec<_> = ShardLoader::new(&cfg, 1, quiet()).unwrap().collect();
    assert_eq!(mixed, ShardLoader::new(&cfg, 1, quiet()).unwrap().collect::<Vec<_>>(), "λ comes from the seed");
    for (p, m) in plain.iter().zip(&mixed) {
        let l = m.mix.expect("every training batch is mixed");
        assert!((0.5..=1.0).contains(&l), "λ = {l}");
        assert_eq!(p.labels, m.labels, "labels stay; the partner is the reversed batch");
        let plane = 16 * 16;
        let (n, i, q) = (p.n, 0, 37); // image 0 of channel 1, pixel q
        let want = l * p.images[(n + i) * plane + q] + (1.0 - l) * p.images[(n + n - 1 - i) * plane + q];
        assert!((m.images[(n + i) * plane + q] - want).abs() < 1e-5);
    }
}

/// Issue 18: `dataset_info.json` shard lengths whose sum overflows u64 wrapped silently.
#[test]
fn shard_lengths_that_overflow_are_refused() {
    use ringsam_data::shards::layout::open_layout;
    let dir = tempfile::tempdir().unwrap();
    shards(dir.path(), "tfrecord", 3, &[]);
    let out = dir.path().join("tfrecord");
    let info_path = out.join("dataset_info.json");
    let mut info: serde_json::Value = serde_json::from_slice(&std::fs::read(&info_path).unwrap()).unwrap();
    let train = info["splits"].as_array_mut().unwrap().iter_mut().find(|s| s["name"] == "train").unwrap();
    train["shardLengths"] = serde_json::json!(["18446744073709551615", "1", "1"]);
    std::fs::write(&info_path, serde_json::to_vec(&info).unwrap()).unwrap();
    let msg = open_layout(&out).unwrap_err().to_string();
    assert!(msg.contains("dataset_info.json") && msg.contains("more than 2^64"), "{msg}");
}
