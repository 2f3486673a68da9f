//! The loader actor pool: the same batches whatever the worker count, the same micro-batches
//! whatever the world size, bad samples skipped and reported, a missing shard refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ringsam_data::normalize::Normalization;
use ringsam_data::shard_loader::{ShardLoader, ShardLoaderConfig};
use ringsam_data::shards::index::{SplitIndex, open_or_build};
use ringsam_data::shards::{ShardFormat, pack_folder};
use ringsam_data::share::BatchShare;

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

/// The index of packed shards (`pack_folder` wrote it beside them).
fn index(shards: &[PathBuf]) -> Arc<SplitIndex> {
    let dir = shards[0].parent().unwrap();
    Arc::new(open_or_build(dir, "train", shards, 1, &|l| panic!("the index was written by pack: {l}")).unwrap())
}

/// One replica reading global batches of 3.
fn config(shards: Vec<PathBuf>, workers: usize) -> ShardLoaderConfig {
    ShardLoaderConfig {
        split: index(&shards),
        global_batch: 3,
        share: BatchShare::alone(1),
        image_size: 16,
        train: true,
        num_classes: 3,
        normalization: Normalization::for_dataset("imagenet"),
        seed: 7,
        workers,
        window_shards: 2,
        in_flight: 8,
        start_batch: 0,
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

/// Issue 19: any world size reads the same micro-batches — the same images, crops, flips and
/// mixup partners — so a resized run keeps its math and no sample is repeated or skipped.
#[test]
fn every_world_size_reads_the_same_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards(dir.path(), "tfrecord", 8, &[]); // 24 samples in 6 shards
    let mut cfg = config(s, 2);
    (cfg.global_batch, cfg.share, cfg.mixup_alpha) = (6, BatchShare::alone(3), 0.4); // 3 micro-batches of 2
    let alone: Vec<_> = ShardLoader::new(&cfg, 1, quiet()).unwrap().collect();
    assert_eq!(alone.len(), 4);
    let plane = 3 * 16 * 16;
    // Image i of a (C, N, H, W) batch, with its label and partner label.
    let image = |b: &ringsam_data::Batch, i: usize| -> (Vec<f32>, u32, u32) {
        let px: Vec<f32> = (0..3).flat_map(|c| b.images[(c * b.n + i) * plane / 3..(c * b.n + i + 1) * plane / 3].to_vec()).collect();
        (px, b.labels[i], b.partner_labels()[i])
    };
    for world in [2, 3] {
        for rank in 0..world {
            cfg.share = BatchShare::new(3, rank, world).unwrap();
            let mine: Vec<_> = ShardLoader::new(&cfg, 1, quiet()).unwrap().collect();
            assert_eq!(mine.len(), 4, "world {world}: every replica takes every step");
            let at = cfg.share.examples(6).start;
            for (k, (b, whole)) in mine.iter().zip(&alone).enumerate() {
                assert_eq!(b.mix, whole.mix, "one λ per global batch");
                for i in 0..b.n {
                    assert!(image(b, i) == image(whole, at + i), "world {world} rank {rank}: batch {k} image {i}");
                }
            }
        }
    }
    // That each sample of the epoch comes once is `EpochOrder`'s own test (the fixture's images
    // repeat, so it cannot be seen here).
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
    let mut missing = config(s.clone(), 1);
    let mut split = (*missing.split).clone();
    split.shards.push(dir.path().join("nope.tfrecord"));
    split.offsets.push(vec![0]);
    missing.split = Arc::new(split);
    let err = ShardLoader::new(&missing, 0, quiet()).err().expect("missing shard").to_string();
    assert!(err.contains("nope.tfrecord") && err.contains("not found"), "{err}");
}

#[test]
fn a_start_batch_resumes_mid_epoch_and_evaluation_reads_every_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards(dir.path(), "wds", 6, &[]); // 18 samples in 5 shards
    let mut cfg = config(s.clone(), 2);
    cfg.global_batch = 4;
    let all: Vec<_> = ShardLoader::new(&cfg, 4, quiet()).unwrap().collect();
    assert_eq!(all.iter().map(|b| b.index).collect::<Vec<_>>(), (0..4).collect::<Vec<_>>(), "18 samples: 4 whole batches");
    // Starting at batch 2 gives exactly batches 2.. of the same epoch.
    cfg.start_batch = 2;
    let tail: Vec<_> = ShardLoader::new(&cfg, 4, quiet()).unwrap().collect();
    assert_eq!(tail, all[2..].to_vec());
    // Evaluation over two replicas: every sample once, the last batch of 2 cut in two.
    cfg.train = false;
    cfg.start_batch = 0;
    let mut seen = 0;
    for rank in 0..2 {
        cfg.share = BatchShare::new(2, rank, 2).unwrap();
        let batches: Vec<_> = ShardLoader::new(&cfg, 0, quiet()).unwrap().collect();
        assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), vec![2, 2, 2, 2, 1], "rank {rank}");
        seen += batches.iter().map(|b| b.n).sum::<usize>();
    }
    assert_eq!(seen, 18);
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
    assert_eq!(index(&train).counts(), vec![4, 4, 1], "pack writes the sample index too");
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
        let l = m.mix.expect("every training batch is mixed").lambda;
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
