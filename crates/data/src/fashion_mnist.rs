//! Fashion-MNIST in the IDX format (<https://github.com/zalandoresearch/fashion-mnist>).
//!
//! Format: an IDX file is a big-endian header then raw `u8` data. Images
//! (`*-images-idx3-ubyte`): magic `2051` (`0x00000803`), count `n`, rows, cols, then `n · rows ·
//! cols` pixels, row-major, one channel. Labels (`*-labels-idx1-ubyte`): magic `2049`
//! (`0x00000801`), count `n`, then `n` label bytes. Train files are prefixed `train`, test files
//! `t10k`. Each file may be raw or gzipped (`.gz`, as downloaded); the raw file wins when both
//! exist.
//!
//! What is checked: both magics (reported at offset 0 with the value found), rows = cols = 28,
//! the file length equals what the header's count implies (checked before anything is allocated
//! from that count), the image and label counts agree, and every label is `< 10`. For a `.gz`
//! file, offsets are positions in the decompressed stream, and decompression stops at
//! [`MAX_DECOMPRESSED`] bytes, so a corrupt or hostile archive cannot exhaust memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, read_file};

/// Where to download the dataset.
pub const FASHION_MNIST_URL: &str = "https://github.com/zalandoresearch/fashion-mnist";
/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 2049;
/// Image side in pixels.
pub const SIDE: usize = 28;
/// Header bytes of an images file.
pub const IMAGES_HEADER: usize = 16;
/// Header bytes of a labels file.
pub const LABELS_HEADER: usize = 8;
/// Largest decompressed `.gz` we accept; the real train images are 47,040,016 bytes.
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Base names (without `.gz`) of a split's images and labels files.
pub fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// The file to read for `base`: the raw one if present, else the `.gz` one.
pub(crate) fn locate(dir: &Path, base: &str) -> Option<PathBuf> {
    [dir.join(base), dir.join(format!("{base}.gz"))].into_iter().find(|p| p.is_file())
}

/// Reads `path`, decompressing it if its name ends in `.gz`.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    if path.extension().is_none_or(|e| e != "gz") {
        return read_file(path, MAX_DECOMPRESSED);
    }
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    if let Err(e) = GzDecoder::new(file).take(MAX_DECOMPRESSED + 1).read_to_end(&mut out) {
        return Err(match e.kind() {
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => DataError::format(
                path,
                out.len() as u64,
                format!("bad gzip stream at decompressed offset {}: {e} (re-download from {FASHION_MNIST_URL})", out.len()),
            ),
            _ => DataError::io(path, e),
        });
    }
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(DataError::format(
            path,
            MAX_DECOMPRESSED,
            format!("decompresses to more than {MAX_DECOMPRESSED} bytes; not a Fashion-MNIST file (re-download from {FASHION_MNIST_URL})"),
        ));
    }
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn check_magic(path: &Path, bytes: &[u8], want: u32, what: &str) -> Result<(), DataError> {
    let found = be_u32(bytes, 0);
    if found != want {
        return Err(DataError::format(
            path,
            0,
            format!(
                "bad magic {found} (0x{found:08x}), expected {want} (0x{want:08x}) for an IDX {what} file; wrong file or corrupt download"
            ),
        ));
    }
    Ok(())
}

fn check_length(path: &Path, bytes: &[u8], header: usize, count: u32, per_item: u64) -> Result<(), DataError> {
    // u64 arithmetic: count < 2^32 and per_item is 784 or 1, so this cannot overflow.
    let expected = header as u64 + u64::from(count) * per_item;
    let len = bytes.len() as u64;
    if len != expected {
        return Err(DataError::format(
            path,
            len,
            format!(
                "file is {len} bytes but its header (count {count} at offset 4) needs {expected}; truncated or corrupt, re-download from {FASHION_MNIST_URL}"
            ),
        ));
    }
    Ok(())
}

/// Checks an images file and returns its image count; the pixels are `bytes[16..]`.
pub(crate) fn parse_images(path: &Path, bytes: &[u8]) -> Result<usize, DataError> {
    if bytes.len() < IMAGES_HEADER {
        return Err(DataError::format(
            path,
            bytes.len() as u64,
            format!("truncated header: {} bytes, an IDX images file starts with {IMAGES_HEADER}", bytes.len()),
        ));
    }
    check_magic(path, bytes, IMAGES_MAGIC, "images")?;
    let count = be_u32(bytes, 4);
    for (at, what) in [(8, "rows"), (12, "cols")] {
        let v = be_u32(bytes, at);
        if v as usize != SIDE {
            return Err(DataError::format(path, at as u64, format!("{what} is {v}, expected {SIDE}; not a Fashion-MNIST images file")));
        }
    }
    check_length(path, bytes, IMAGES_HEADER, count, (SIDE * SIDE) as u64)?;
    Ok(count as usize)
}

/// Checks a labels file (magic, length, every label `< 10`) and returns the labels.
pub(crate) fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u32>, DataError> {
    if bytes.len() < LABELS_HEADER {
        return Err(DataError::format(
            path,
            bytes.len() as u64,
            format!("truncated header: {} bytes, an IDX labels file starts with {LABELS_HEADER}", bytes.len()),
        ));
    }
    check_magic(path, bytes, LABELS_MAGIC, "labels")?;
    let count = be_u32(bytes, 4);
    check_length(path, bytes, LABELS_HEADER, count, 1)?;
    let data = &bytes[LABELS_HEADER..];
    if let Some(i) = data.iter().position(|&l| l >= 10) {
        return Err(DataError::format(
            path,
            (LABELS_HEADER + i) as u64,
            format!("label {} of item {i} out of range (expected < 10); corrupt download, re-download from {FASHION_MNIST_URL}", data[i]),
        ));
    }
    Ok(data.iter().map(|&l| u32::from(l)).collect())
}

/// Loads a Fashion-MNIST split (train: 60000 images, test: 10000), 28×28×1.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let (images_name, labels_name) = file_names(split);
    let images_path = locate(dir, images_name);
    let labels_path = locate(dir, labels_name);
    let (images_path, labels_path) = match (images_path, labels_path) {
        (Some(i), Some(l)) => (i, l),
        (i, l) => {
            let missing: Vec<&str> =
                [(i.is_none(), images_name), (l.is_none(), labels_name)].into_iter().filter(|(m, _)| *m).map(|(_, n)| n).collect();
            return Err(DataError::Missing {
                dir: dir.to_path_buf(),
                msg: format!(
                    "missing {} (raw or .gz); download the four *-ubyte.gz files from {FASHION_MNIST_URL} (data/fashion) into this directory",
                    missing.join(", ")
                ),
            });
        }
    };
    let image_bytes = read_maybe_gz(&images_path)?;
    let count = parse_images(&images_path, &image_bytes)?;
    let label_bytes = read_maybe_gz(&labels_path)?;
    let labels = parse_labels(&labels_path, &label_bytes)?;
    if labels.len() != count {
        return Err(DataError::format(
            &labels_path,
            4,
            format!(
                "label count {} does not match {} image count {count}; the files are from different splits or corrupt",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(Dataset {
        name: "fashion_mnist".into(),
        pixels: image_bytes[IMAGES_HEADER..].to_vec(),
        labels,
        height: SIDE,
        width: SIDE,
        channels: 1,
        num_classes: 10,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn images(magic: u32, count: u32, real: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [magic, count, 28, 28] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..real * 784).map(|i| (i % 256) as u8));
        b
    }

    fn labels(magic: u32, values: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&magic.to_be_bytes());
        b.extend_from_slice(&(values.len() as u32).to_be_bytes());
        b.extend_from_slice(values);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn err(dir: &Path, split: Split) -> String {
        load_fashion_mnist(dir, split).unwrap_err().to_string()
    }

    #[test]
    fn raw_test_split_loads() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t10k-images-idx3-ubyte", &images(2051, 2, 2));
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[9, 0]));
        let ds = load_fashion_mnist(d.path(), Split::Test).unwrap();
        assert_eq!((ds.name.as_str(), ds.len(), ds.height, ds.width, ds.channels, ds.num_classes), ("fashion_mnist", 2, 28, 28, 1, 10));
        assert_eq!(ds.labels, vec![9, 0]);
        assert_eq!(ds.image(1)[0], (784 % 256) as u8);
    }

    #[test]
    fn gzipped_train_split_loads() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train-images-idx3-ubyte.gz", &gz(&images(2051, 3, 3)));
        write(d.path(), "train-labels-idx1-ubyte.gz", &gz(&labels(2049, &[1, 2, 3])));
        let ds = load_fashion_mnist(d.path(), Split::Train).unwrap();
        assert_eq!(ds.labels, vec![1, 2, 3]);
        assert_eq!(ds.pixels.len(), 3 * 784);
    }

    #[test]
    fn raw_wins_over_gz() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t10k-images-idx3-ubyte", &images(2051, 1, 1));
        write(d.path(), "t10k-images-idx3-ubyte.gz", b"not gzip");
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[4]));
        write(d.path(), "t10k-labels-idx1-ubyte.gz", b"not gzip");
        assert_eq!(load_fashion_mnist(d.path(), Split::Test).unwrap().labels, vec![4]);
    }

    #[test]
    fn bad_magic_reports_offset_0_and_the_value() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t10k-images-idx3-ubyte", &images(2049, 1, 1));
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[4]));
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("t10k-images-idx3-ubyte") && msg.contains("offset 0"), "{msg}");
        assert!(msg.contains("bad magic 2049") && msg.contains("expected 2051"), "{msg}");
    }

    #[test]
    fn truncated_images_are_rejected_before_allocating() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[4, 5]));
        // header says 2 images, the file holds 1
        write(d.path(), "t10k-images-idx3-ubyte", &images(2051, 2, 1));
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("t10k-images-idx3-ubyte") && msg.contains("offset 800"), "{msg}");
        assert!(msg.contains("needs 1584"), "{msg}");
        // a header count of 2^32 - 1 on a tiny file is a length error, not an allocation
        write(d.path(), "t10k-images-idx3-ubyte", &images(2051, u32::MAX, 0));
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("offset 16") && msg.contains("count 4294967295"), "{msg}");
        // shorter than a header
        write(d.path(), "t10k-images-idx3-ubyte", &[0, 0, 8]);
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("offset 3") && msg.contains("truncated header"), "{msg}");
    }

    #[test]
    fn truncated_labels_and_count_mismatch() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t10k-images-idx3-ubyte", &images(2051, 2, 2));
        let mut short = labels(2049, &[1, 2]);
        short.pop();
        write(d.path(), "t10k-labels-idx1-ubyte", &short);
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("t10k-labels-idx1-ubyte") && msg.contains("offset 9"), "{msg}");
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[1, 2, 3]));
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("t10k-labels-idx1-ubyte") && msg.contains("offset 4") && msg.contains("does not match"), "{msg}");
    }

    #[test]
    fn label_out_of_range_names_its_offset() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t10k-images-idx3-ubyte", &images(2051, 2, 2));
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[1, 10]));
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("t10k-labels-idx1-ubyte") && msg.contains("offset 9") && msg.contains("label 10"), "{msg}");
    }

    #[test]
    fn wrong_dims_and_bad_gzip() {
        let d = tempfile::tempdir().unwrap();
        let mut im = images(2051, 1, 1);
        im[11] = 32; // rows = 32
        write(d.path(), "t10k-images-idx3-ubyte", &im);
        write(d.path(), "t10k-labels-idx1-ubyte", &labels(2049, &[4]));
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("offset 8") && msg.contains("rows is 32"), "{msg}");
        std::fs::remove_file(d.path().join("t10k-images-idx3-ubyte")).unwrap();
        write(d.path(), "t10k-images-idx3-ubyte.gz", b"definitely not a gzip stream");
        let msg = err(d.path(), Split::Test);
        assert!(msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("offset 0") && msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn missing_files_are_listed() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train-labels-idx1-ubyte.gz", &gz(&labels(2049, &[1])));
        match load_fashion_mnist(d.path(), Split::Train) {
            Err(DataError::Missing { msg, .. }) => {
                assert!(msg.contains("train-images-idx3-ubyte") && !msg.contains("train-labels"), "{msg}");
                assert!(msg.contains(FASHION_MNIST_URL), "{msg}");
            }
            other => panic!("expected Missing, got {other:?}"),
        }
    }
}
