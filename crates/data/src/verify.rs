//! Checks a data directory against the official checksums (what `ringsam data verify` prints).
//!
//! What is checked, per dataset:
//! - `fashion_mnist`: the MD5 of each `.gz` file the project publishes. A raw (decompressed) file
//!   has no official checksum: it is parsed instead (header, length, labels, and the official
//!   item count), and reported [`CheckStatus::NoOfficialChecksum`] when it passes. When both
//!   exist, both are reported, since the loader reads the raw one.
//! - `svhn`: the MD5 of `train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`.
//! - `cifar10`, `cifar100`: the MD5 of the archive (`cifar-10-binary.tar.gz`,
//!   `cifar-100-binary.tar.gz`) when it is in the directory. The extracted `.bin` files have no
//!   official checksum; each is read with the loader's own record parser (exact size, labels in
//!   range) and reported `NoOfficialChecksum` when it passes, `Mismatch` when it does not.
//! - `digits` and `synthetic` need no files: the report is empty.
//!
//! Files are hashed in 1 MiB chunks, so SVHN's 1.3 GB extra file costs 1 MiB of memory.
//! A file that is absent is a [`CheckStatus::Missing`] entry, not an error; errors are I/O
//! failures and unknown dataset names.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use crate::cifar::{self, CIFAR_URL};
use crate::dataset::Split;
use crate::error::{DataError, read_file};
use crate::fashion_mnist::{self, FASHION_MNIST_URL};
use crate::svhn::{self, SVHN_URL};

/// Outcome of checking one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// The checksum matches the official one.
    Ok,
    /// The checksum differs, or the file fails to parse.
    Mismatch,
    /// The file is not in the directory.
    Missing,
    /// The file has no official checksum; it was checked by parsing it.
    NoOfficialChecksum,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The file, relative to the data directory.
    pub file: String,
    /// What the check found.
    pub status: CheckStatus,
    /// The checksum found, what was expected, or why the file was rejected.
    pub detail: String,
}

/// Official MD5s of the Fashion-MNIST downloads.
pub const FASHION_MNIST_MD5: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
];
/// Official MD5s of the SVHN format-2 files.
pub const SVHN_MD5: [(&str, &str); 3] = [
    ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    ("test_32x32.mat", "eb5a983be6a315427106f1b69d24b6ef"),
    ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
];
/// Official MD5 of the CIFAR-10 binary archive.
pub const CIFAR10_ARCHIVE_MD5: (&str, &str) = ("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530");
/// Official MD5 of the CIFAR-100 binary archive.
pub const CIFAR100_ARCHIVE_MD5: (&str, &str) = ("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8");

/// Checks the files of `dataset` in `dir`; one entry per expected file.
pub fn verify(dir: &Path, dataset: &str) -> Result<Vec<FileCheck>, DataError> {
    match dataset {
        "cifar10" => {
            let files: Vec<(&str, usize)> = [Split::Train, Split::Test]
                .into_iter()
                .flat_map(|s| cifar::cifar10_files(s).iter().map(|&f| (f, cifar::CIFAR10_RECORDS_PER_FILE)))
                .collect();
            verify_cifar(dir, CIFAR10_ARCHIVE_MD5, cifar::CIFAR10_SUBDIR, 1, 10, &files)
        }
        "cifar100" => {
            let files = [cifar::cifar100_file(Split::Train), cifar::cifar100_file(Split::Test)];
            verify_cifar(dir, CIFAR100_ARCHIVE_MD5, cifar::CIFAR100_SUBDIR, 2, 100, &files)
        }
        "fashion_mnist" => verify_fashion_mnist(dir),
        "svhn" => SVHN_MD5
            .iter()
            .map(|&(name, want)| {
                let hint = if name == svhn::EXTRA_FILE { " (needed for train+extra, which the reference trains on)" } else { "" };
                check_md5(dir, name, want, &format!("download it from {SVHN_URL}{hint}"))
            })
            .collect(),
        "digits" | "synthetic" => Ok(Vec::new()),
        other => Err(DataError::Config(format!(
            "verify: unknown dataset `{other}` (known: cifar10, cifar100, fashion_mnist, svhn; digits and synthetic need no files)"
        ))),
    }
}

/// The MD5 of a file as 32 lowercase hex digits, read in 1 MiB chunks.
pub fn md5_file(path: &Path) -> Result<String, DataError> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::io(path, e)),
        };
        hasher.update(&buf[..k]);
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(32);
    for b in digest.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

fn entry(file: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> FileCheck {
    FileCheck { file: file.into(), status, detail: detail.into() }
}

/// `dir/name` against its official MD5; `get` says how to obtain it when it is missing.
fn check_md5(dir: &Path, name: &str, want: &str, get: &str) -> Result<FileCheck, DataError> {
    let path = dir.join(name);
    if !path.is_file() {
        return Ok(entry(name, CheckStatus::Missing, format!("not found; {get}")));
    }
    let got = md5_file(&path)?;
    Ok(if got == want {
        entry(name, CheckStatus::Ok, format!("md5 {got}"))
    } else {
        entry(
            name,
            CheckStatus::Mismatch,
            format!("md5 {got}, expected {want}; the download is corrupt or a different version, re-download it"),
        )
    })
}

/// `path` relative to `dir`, for the report.
fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

fn verify_cifar(
    dir: &Path,
    (archive, archive_md5): (&str, &str),
    subdir: &str,
    label_bytes: usize,
    num_classes: usize,
    files: &[(&str, usize)],
) -> Result<Vec<FileCheck>, DataError> {
    let mut out = Vec::with_capacity(files.len() + 1);
    let has_archive = dir.join(archive).is_file();
    if has_archive {
        out.push(check_md5(dir, archive, archive_md5, "")?);
    }
    for &(name, records) in files {
        let Some(path) = cifar::locate(dir, subdir, name) else {
            let detail = if has_archive {
                format!("not found here or in {subdir}/; extract {archive} here")
            } else {
                format!("not found here or in {subdir}/; download {archive} (the \"binary version\") from {CIFAR_URL} and extract it here")
            };
            out.push(entry(name, CheckStatus::Missing, detail));
            continue;
        };
        let bytes = read_file(&path, (records * (crate::cifar::PIXELS + label_bytes)) as u64)?;
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        let check = match cifar::parse_cifar_records(&path, &bytes, label_bytes, num_classes, records, &mut pixels, &mut labels) {
            Ok(()) => entry(
                relative(dir, &path),
                CheckStatus::NoOfficialChecksum,
                format!("{} bytes, {records} records parse; only the archive {archive} has an official md5", bytes.len()),
            ),
            Err(e) => entry(relative(dir, &path), CheckStatus::Mismatch, e.to_string()),
        };
        out.push(check);
    }
    Ok(out)
}

fn verify_fashion_mnist(dir: &Path) -> Result<Vec<FileCheck>, DataError> {
    let mut out = Vec::new();
    for (split, count) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
        let (images, labels) = fashion_mnist::file_names(split);
        for base in [images, labels] {
            let gz = format!("{base}.gz");
            let want = FASHION_MNIST_MD5.iter().find(|(n, _)| *n == gz).map(|&(_, m)| m);
            let (has_gz, has_raw) = (dir.join(&gz).is_file(), dir.join(base).is_file());
            if let (true, Some(want)) = (has_gz, want) {
                out.push(check_md5(dir, &gz, want, "")?);
            }
            if has_raw {
                out.push(check_raw_idx(dir, base, base == images, count)?);
            }
            if !has_gz && !has_raw {
                out.push(entry(
                    gz,
                    CheckStatus::Missing,
                    format!("neither {base} nor {base}.gz found; download it from {FASHION_MNIST_URL}"),
                ));
            }
        }
    }
    Ok(out)
}

/// A raw IDX file: parsed, and its count compared with the official one.
fn check_raw_idx(dir: &Path, base: &str, is_images: bool, official_count: usize) -> Result<FileCheck, DataError> {
    let path = dir.join(base);
    let bytes = read_file(&path, fashion_mnist::MAX_DECOMPRESSED)?;
    let parsed =
        if is_images { fashion_mnist::parse_images(&path, &bytes) } else { fashion_mnist::parse_labels(&path, &bytes).map(|l| l.len()) };
    Ok(match parsed {
        Ok(n) if n == official_count => {
            entry(base, CheckStatus::NoOfficialChecksum, format!("raw file, {n} items parse; the official md5s cover the .gz files only"))
        }
        Ok(n) => entry(
            base,
            CheckStatus::Mismatch,
            format!("holds {n} items, the official file has {official_count}; re-download it from {FASHION_MNIST_URL}"),
        ),
        Err(e) => entry(base, CheckStatus::Mismatch, e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(report: &'a [FileCheck], file: &str) -> &'a FileCheck {
        report.iter().find(|c| c.file == file).unwrap_or_else(|| panic!("no entry for {file} in {report:?}"))
    }

    #[test]
    fn md5_streams_files_larger_than_a_chunk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        std::fs::write(&p, vec![0u8; (3 << 20) + 5]).unwrap();
        assert_eq!(md5_file(&p).unwrap(), "43d6e7fc13b258bbbe1ae441ccc18113");
    }

    #[test]
    fn unknown_dataset_is_a_config_error() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(verify(d.path(), "imagenet"), Err(DataError::Config(_))));
        assert!(verify(d.path(), "digits").unwrap().is_empty());
    }

    #[test]
    fn svhn_reports_mismatch_and_missing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("train_32x32.mat"), b"abc").unwrap();
        let report = verify(d.path(), "svhn").unwrap();
        assert_eq!(report.len(), 3);
        let train = find(&report, "train_32x32.mat");
        assert_eq!(train.status, CheckStatus::Mismatch);
        assert!(
            train.detail.contains("900150983cd24fb0d6963f7d28e17f72") && train.detail.contains("e26dedcc434d2e4c54c9b2d4a06d8373"),
            "{train:?}"
        );
        assert_eq!(find(&report, "test_32x32.mat").status, CheckStatus::Missing);
        let extra = find(&report, "extra_32x32.mat");
        assert!(extra.status == CheckStatus::Missing && extra.detail.contains(SVHN_URL), "{extra:?}");
    }

    #[test]
    fn cifar10_bins_are_parsed_and_the_archive_hashed() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join(cifar::CIFAR10_SUBDIR);
        std::fs::create_dir(&sub).unwrap();
        // all-zero records are valid: label 0, black image
        std::fs::write(sub.join("test_batch.bin"), vec![0u8; 30_730_000]).unwrap();
        std::fs::write(d.path().join("data_batch_1.bin"), vec![0u8; 3073]).unwrap();
        std::fs::write(d.path().join("cifar-10-binary.tar.gz"), b"abc").unwrap();
        let report = verify(d.path(), "cifar10").unwrap();
        assert_eq!(report.len(), 7, "{report:?}");
        assert_eq!(find(&report, "cifar-10-binary.tar.gz").status, CheckStatus::Mismatch);
        let test = find(&report, "cifar-10-batches-bin/test_batch.bin");
        assert_eq!(test.status, CheckStatus::NoOfficialChecksum, "{test:?}");
        let short = find(&report, "data_batch_1.bin");
        assert_eq!(short.status, CheckStatus::Mismatch);
        assert!(short.detail.contains("offset 3073") && short.detail.contains("expected 30730000 bytes"), "{short:?}");
        let missing = find(&report, "data_batch_5.bin");
        assert!(missing.status == CheckStatus::Missing && missing.detail.contains("extract cifar-10-binary.tar.gz"), "{missing:?}");
    }

    #[test]
    fn cifar100_without_anything_is_all_missing() {
        let d = tempfile::tempdir().unwrap();
        let report = verify(d.path(), "cifar100").unwrap();
        assert_eq!(report.len(), 2);
        assert!(report.iter().all(|c| c.status == CheckStatus::Missing && c.detail.contains(CIFAR_URL)), "{report:?}");
    }

    #[test]
    fn fashion_mnist_gz_md5_raw_parse_and_missing() {
        let d = tempfile::tempdir().unwrap();
        // t10k labels, raw: 10000 valid labels
        let mut labels = vec![0, 0, 8, 1, 0, 0, 0x27, 0x10];
        labels.extend(std::iter::repeat_n(3u8, 10_000));
        std::fs::write(d.path().join("t10k-labels-idx1-ubyte"), &labels).unwrap();
        // t10k images, raw: valid header and length but only 1 image
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28];
        images.extend([0u8; 784]);
        std::fs::write(d.path().join("t10k-images-idx3-ubyte"), &images).unwrap();
        // train images: a corrupt .gz
        std::fs::write(d.path().join("train-images-idx3-ubyte.gz"), b"abc").unwrap();
        let report = verify(d.path(), "fashion_mnist").unwrap();
        assert_eq!(report.len(), 4, "{report:?}");
        assert_eq!(find(&report, "train-images-idx3-ubyte.gz").status, CheckStatus::Mismatch);
        assert_eq!(find(&report, "train-labels-idx1-ubyte.gz").status, CheckStatus::Missing);
        assert_eq!(find(&report, "t10k-labels-idx1-ubyte").status, CheckStatus::NoOfficialChecksum);
        let im = find(&report, "t10k-images-idx3-ubyte");
        assert!(im.status == CheckStatus::Mismatch && im.detail.contains("holds 1 items"), "{im:?}");
    }
}
