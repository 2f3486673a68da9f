//! CIFAR-10 and CIFAR-100, the "binary version" from <https://www.cs.toronto.edu/~kriz/cifar.html>.
//!
//! Format: a file is a plain sequence of fixed-size records, no header. A CIFAR-10 record is
//! `<1 label byte><3072 pixel bytes>`; a CIFAR-100 record is `<coarse label><fine label><3072
//! pixel bytes>`. The pixels are three planes, R then G then B, each 32×32 row-major; we convert
//! them to the crate's HWC order.
//!
//! Files: CIFAR-10 has `data_batch_1.bin`..`data_batch_5.bin` (train) and `test_batch.bin`
//! (test), 10000 records each; CIFAR-100 has `train.bin` (50000) and `test.bin` (10000). They are
//! looked up in the data directory itself, then in the directory the archive extracts to
//! (`cifar-10-batches-bin/`, `cifar-100-binary/`).
//!
//! What is checked: every file is exactly `records · record length` bytes (a short file is a
//! truncated download, not a smaller dataset), and every label is below the class count (the
//! fine label, `< 100`, for CIFAR-100; it is the standard target). Errors name the file and the
//! byte offset. There is no official per-file checksum; `verify` checks the archives' MD5s.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, read_file};

/// Where to download both datasets.
pub const CIFAR_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar.html";
/// Image side in pixels.
pub const SIDE: usize = 32;
/// Pixel bytes per record (3 planes of 32×32).
pub const PIXELS: usize = 3 * SIDE * SIDE;
/// Records in each CIFAR-10 file.
pub const CIFAR10_RECORDS_PER_FILE: usize = 10_000;
/// Records in CIFAR-100's `train.bin`.
pub const CIFAR100_TRAIN_RECORDS: usize = 50_000;
/// Records in CIFAR-100's `test.bin`.
pub const CIFAR100_TEST_RECORDS: usize = 10_000;
/// Directory `cifar-10-binary.tar.gz` extracts to.
pub const CIFAR10_SUBDIR: &str = "cifar-10-batches-bin";
/// Directory `cifar-100-binary.tar.gz` extracts to.
pub const CIFAR100_SUBDIR: &str = "cifar-100-binary";

/// The CIFAR-10 files of a split, in load order.
pub fn cifar10_files(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
        Split::Test => &["test_batch.bin"],
    }
}

/// The CIFAR-100 file of a split and its record count.
pub fn cifar100_file(split: Split) -> (&'static str, usize) {
    match split {
        Split::Train => ("train.bin", CIFAR100_TRAIN_RECORDS),
        Split::Test => ("test.bin", CIFAR100_TEST_RECORDS),
    }
}

/// Finds `name` in `dir` or in `dir/subdir`.
pub(crate) fn locate(dir: &Path, subdir: &str, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(subdir).join(name)].into_iter().find(|p| p.is_file())
}

/// Locates every file of `names`, or says which are missing and where to get them.
fn locate_all(dir: &Path, subdir: &str, names: &[&str], archive: &str) -> Result<Vec<PathBuf>, DataError> {
    let mut found = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match locate(dir, subdir, name) {
            Some(p) => found.push(p),
            None => missing.push(*name),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        msg: format!(
            "missing {} (looked in the directory and in {subdir}/); download {archive} (the \"binary version\") from {CIFAR_URL} and extract it here",
            missing.join(", ")
        ),
    })
}

/// Parses `bytes`, the whole content of `path`, as exactly `expected_records` CIFAR records and
/// appends their pixels (HWC, `expected_records · 3072` bytes) to `pixels` and their labels to
/// `labels`.
///
/// A record is `label_bytes` label bytes then 3072 pixel bytes; the label used is the last label
/// byte (CIFAR-10's only one, CIFAR-100's fine label) and must be `< num_classes`. On error the
/// buffers hold a partial result and should be dropped.
pub fn parse_cifar_records(
    path: &Path,
    bytes: &[u8],
    label_bytes: usize,
    num_classes: usize,
    expected_records: usize,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<(), DataError> {
    assert!(label_bytes >= 1, "a CIFAR record has at least one label byte");
    let record_len = label_bytes + PIXELS;
    let expected_len = expected_records * record_len;
    if bytes.len() != expected_len {
        return Err(DataError::format(
            path,
            bytes.len() as u64,
            format!(
                "file is {} bytes, expected {expected_len} bytes ({expected_records} records of {record_len}); \
                 re-download the binary version from {CIFAR_URL} and extract it again",
                bytes.len()
            ),
        ));
    }
    let base = pixels.len();
    pixels.resize(base + expected_records * PIXELS, 0);
    labels.reserve(expected_records);
    for (i, record) in bytes.chunks_exact(record_len).enumerate() {
        let label = record[label_bytes - 1] as usize;
        if label >= num_classes {
            return Err(DataError::format(
                path,
                (i * record_len) as u64,
                format!(
                    "record {i}: label {label} out of range (expected < {num_classes}); the file is corrupt or not the binary version (re-download from {CIFAR_URL})"
                ),
            ));
        }
        labels.push(label as u32);
        let out = &mut pixels[base + i * PIXELS..base + (i + 1) * PIXELS];
        planes_to_hwc(&record[label_bytes..], out);
    }
    Ok(())
}

/// Converts one image from three 32×32 planes (R, G, B) to HWC.
fn planes_to_hwc(planes: &[u8], out: &mut [u8]) {
    // planes: (3, 32, 32); out: (32, 32, 3)
    let plane = SIDE * SIDE;
    for (p, px) in out.chunks_exact_mut(3).enumerate() {
        px[0] = planes[p];
        px[1] = planes[plane + p];
        px[2] = planes[2 * plane + p];
    }
}

/// Loads a CIFAR-10 split (train: 50000 images from five files, test: 10000).
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let paths = locate_all(dir, CIFAR10_SUBDIR, cifar10_files(split), "cifar-10-binary.tar.gz")?;
    let total = paths.len() * CIFAR10_RECORDS_PER_FILE;
    let mut pixels = Vec::with_capacity(total * PIXELS);
    let mut labels = Vec::with_capacity(total);
    for path in &paths {
        let bytes = read_file(path, (CIFAR10_RECORDS_PER_FILE * (PIXELS + 1)) as u64)?;
        parse_cifar_records(path, &bytes, 1, 10, CIFAR10_RECORDS_PER_FILE, &mut pixels, &mut labels)?;
    }
    Ok(dataset("cifar10", pixels, labels, 10))
}

/// Loads a CIFAR-100 split with the fine labels (train: 50000 images, test: 10000).
pub fn load_cifar100(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let (name, records) = cifar100_file(split);
    let paths = locate_all(dir, CIFAR100_SUBDIR, &[name], "cifar-100-binary.tar.gz")?;
    let bytes = read_file(&paths[0], (records * (PIXELS + 2)) as u64)?;
    let mut pixels = Vec::with_capacity(records * PIXELS);
    let mut labels = Vec::with_capacity(records);
    parse_cifar_records(&paths[0], &bytes, 2, 100, records, &mut pixels, &mut labels)?;
    Ok(dataset("cifar100", pixels, labels, 100))
}

fn dataset(name: &str, pixels: Vec<u8>, labels: Vec<u32>, num_classes: usize) -> Dataset {
    Dataset { name: name.into(), pixels, labels, height: SIDE, width: SIDE, channels: 3, num_classes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose plane `c` pixel `p` is `(c·50 + p) mod 251`.
    fn record(labels: &[u8]) -> Vec<u8> {
        let mut r = labels.to_vec();
        for c in 0..3 {
            for p in 0..SIDE * SIDE {
                r.push(((c * 50 + p) % 251) as u8);
            }
        }
        r
    }

    fn parse(bytes: &[u8], label_bytes: usize, classes: usize, n: usize) -> Result<(Vec<u8>, Vec<u32>), DataError> {
        let (mut px, mut lb) = (Vec::new(), Vec::new());
        parse_cifar_records(Path::new("batch.bin"), bytes, label_bytes, classes, n, &mut px, &mut lb)?;
        Ok((px, lb))
    }

    #[test]
    fn two_cifar10_records_parse_to_hwc() {
        let mut bytes = record(&[3]);
        bytes.extend(record(&[9]));
        let (px, lb) = parse(&bytes, 1, 10, 2).unwrap();
        assert_eq!(lb, vec![3, 9]);
        assert_eq!(px.len(), 2 * PIXELS);
        // pixel (y=2, x=5) of image 1, channel c, comes from plane c at 2·32+5
        for c in 0..3 {
            let p = 2 * SIDE + 5;
            assert_eq!(px[PIXELS + p * 3 + c], ((c * 50 + p) % 251) as u8);
        }
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let mut bytes = record(&[19, 99]);
        bytes.extend(record(&[0, 42]));
        let (_, lb) = parse(&bytes, 2, 100, 2).unwrap();
        assert_eq!(lb, vec![99, 42]);
    }

    #[test]
    fn wrong_size_names_file_offset_and_expected_size() {
        let mut bytes = record(&[1]);
        bytes.extend(record(&[1]));
        bytes.push(0);
        let msg = parse(&bytes, 1, 10, 2).unwrap_err().to_string();
        assert!(msg.contains("batch.bin"), "{msg}");
        assert!(msg.contains("offset 6147"), "{msg}");
        assert!(msg.contains("expected 6146 bytes (2 records of 3073)"), "{msg}");
    }

    #[test]
    fn label_out_of_range_names_the_record_offset() {
        let mut bytes = record(&[1]);
        bytes.extend(record(&[10]));
        let msg = parse(&bytes, 1, 10, 2).unwrap_err().to_string();
        assert!(msg.contains("batch.bin") && msg.contains("offset 3073"), "{msg}");
        assert!(msg.contains("label 10"), "{msg}");
        let mut bytes = record(&[0, 5]);
        bytes.extend(record(&[0, 100]));
        let msg = parse(&bytes, 2, 100, 2).unwrap_err().to_string();
        assert!(msg.contains("offset 3074") && msg.contains("label 100"), "{msg}");
    }

    #[test]
    fn loader_rejects_a_short_file_with_the_full_size_rule() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), vec![0u8; 10]).unwrap();
        let msg = load_cifar10(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("test_batch.bin") && msg.contains("offset 10"), "{msg}");
        assert!(msg.contains("expected 30730000 bytes (10000 records of 3073); re-download"), "{msg}");
    }

    /// Issue 18: a 4 GiB `data_batch_3.bin` was read whole (4.29 GB resident, 22 s) before its
    /// size was checked. The size comes from the metadata first: a sparse 4 GiB file is refused
    /// at once, naming it.
    #[test]
    fn an_oversized_file_is_refused_from_its_metadata_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        for f in cifar10_files(Split::Train) {
            std::fs::File::create(dir.path().join(f)).unwrap().set_len((CIFAR10_RECORDS_PER_FILE * (PIXELS + 1)) as u64).unwrap();
        }
        std::fs::File::create(dir.path().join("data_batch_3.bin")).unwrap().set_len(4 << 30).unwrap(); // sparse
        let t0 = std::time::Instant::now();
        let msg = load_cifar10(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("data_batch_3.bin") && msg.contains("4294967296 bytes") && msg.contains("at most 30730000"), "{msg}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "took {:?}: the file was read", t0.elapsed());
    }

    #[test]
    fn loader_reads_a_full_file_from_the_archive_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join(CIFAR10_SUBDIR);
        std::fs::create_dir(&sub).unwrap();
        let mut bytes = vec![0u8; CIFAR10_RECORDS_PER_FILE * (PIXELS + 1)];
        bytes[(PIXELS + 1) * 9999] = 7; // last record's label
        bytes[(PIXELS + 1) * 9999 + 1 + 2 * SIDE * SIDE] = 200; // its blue plane, pixel 0
        std::fs::write(sub.join("test_batch.bin"), &bytes).unwrap();
        let ds = load_cifar10(dir.path(), Split::Test).unwrap();
        assert_eq!((ds.name.as_str(), ds.len(), ds.height, ds.width, ds.channels, ds.num_classes), ("cifar10", 10_000, 32, 32, 3, 10));
        assert_eq!(ds.labels[9999], 7);
        assert_eq!(&ds.image(9999)[..3], &[0u8, 0, 200][..]);
    }

    #[test]
    fn missing_files_say_what_and_where_to_get_them() {
        let dir = tempfile::tempdir().unwrap();
        match load_cifar10(dir.path(), Split::Train) {
            Err(DataError::Missing { msg, .. }) => {
                assert!(msg.contains("data_batch_1.bin") && msg.contains("data_batch_5.bin"), "{msg}");
                assert!(msg.contains(CIFAR_URL) && msg.contains("binary version"), "{msg}");
            }
            other => panic!("expected Missing, got {other:?}"),
        }
        match load_cifar100(dir.path(), Split::Test) {
            Err(DataError::Missing { msg, .. }) => assert!(msg.contains("test.bin") && msg.contains("cifar-100-binary"), "{msg}"),
            other => panic!("expected Missing, got {other:?}"),
        }
    }
}
