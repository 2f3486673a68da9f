//! `--dataset imagefolder`: a user's own JPEGs, one folder per class, read by the ImageNet
//! pipeline (decode, Inception crop, resize to the model's side, RandAugment; centre crop for
//! evaluation).
//!
//! `DIR/train/<class>/*.jpg` trains; `DIR/val/`, `DIR/validation/` or `DIR/test/` (the first
//! found) evaluates, its class folders named as in `train/` (a class may be missing there, not
//! added). Classes are numbered in sorted name order of `train/`.
//!
//! Why shards: the shard loader is what reads JPEGs fast, spreads them over replicas and resumes
//! mid-epoch, and it reads shards. So the folder is packed once into `DIR/.ringsam-shards/`
//! (WebDataset tars beside their index, as `ringsam data pack` writes them), and again whenever
//! a file is added, removed or changed: the cache records a fingerprint of every file's path,
//! size and modification time. The pack is built under a temporary name and renamed into place,
//! so several workers starting together each see a whole cache (the last rename wins; all of
//! them are the same).

use std::path::{Path, PathBuf};

use crate::DataError;
use crate::shards::{PackOptions, ShardFormat, list_image_folder, pack_files};

/// The cache directory's name inside the image folder.
pub const CACHE: &str = ".ringsam-shards";
/// The file in the cache that records what it was packed from.
const SOURCE: &str = "SOURCE";
/// Samples per shard in the cache.
const PER_SHARD: usize = 1000;

/// The shard directory for image folder `dir`, packed if it is missing or stale.
pub fn prepare(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf, DataError> {
    let train_dir = dir.join("train");
    let eval_dir = ["val", "validation", "test"].iter().map(|s| dir.join(s)).find(|p| p.is_dir()).ok_or_else(|| DataError::Missing {
        dir: dir.into(),
        msg: "no val/, validation/ or test/ folder beside train/ (an image folder has both, one sub-folder per class)".into(),
    })?;
    let (classes, train) = list_image_folder(&train_dir)?;
    let (eval_classes, eval) = list_image_folder(&eval_dir)?;
    let eval = relabel(eval, &eval_classes, &classes, &eval_dir)?;
    if train.is_empty() || eval.is_empty() {
        return Err(DataError::Missing { dir: dir.into(), msg: "no .jpg/.jpeg images in train/ or in its evaluation folder".into() });
    }
    let fingerprint = fingerprint(dir, train.iter().chain(&eval).map(|(p, _)| p.as_path()))?;
    let cache = dir.join(CACHE);
    if std::fs::read_to_string(cache.join(SOURCE)).is_ok_and(|s| s == fingerprint) {
        return Ok(cache);
    }
    log(&format!(
        "{}: packing {} training and {} evaluation images ({} classes) into {} (once; again if the folder changes)",
        dir.display(),
        train.len(),
        eval.len(),
        classes.len(),
        cache.display()
    ));
    let tmp = dir.join(format!("{CACHE}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let opts = |prefix| PackOptions { format: ShardFormat::Wds, per_shard: PER_SHARD, prefix, seed: 0 };
    pack_files(&train_dir, train, &classes, &tmp, &opts("train"))?;
    pack_files(&eval_dir, eval, &classes, &tmp, &opts("validation"))?;
    std::fs::write(tmp.join(SOURCE), &fingerprint).map_err(|e| DataError::io(tmp.join(SOURCE), e))?;
    // Replace a stale cache: move it aside, rename the new one in, then remove the old.
    let old = dir.join(format!("{CACHE}.old-{}", std::process::id()));
    if cache.exists() {
        std::fs::rename(&cache, &old).map_err(|e| DataError::io(&cache, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &cache) {
        // Another worker renamed its (identical) pack in first.
        let _ = std::fs::remove_dir_all(&tmp);
        if !std::fs::read_to_string(cache.join(SOURCE)).is_ok_and(|s| s == fingerprint) {
            return Err(DataError::io(&cache, e));
        }
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(cache)
}

/// Labels of the evaluation folder (numbered by its own class folders) renumbered by `train`'s.
fn relabel(files: Vec<(PathBuf, i64)>, own: &[String], train: &[String], dir: &Path) -> Result<Vec<(PathBuf, i64)>, DataError> {
    let map: Vec<i64> = own
        .iter()
        .map(|c| {
            train.iter().position(|t| t == c).map(|i| i as i64).ok_or_else(|| DataError::Missing {
                dir: dir.into(),
                msg: format!("class folder {c:?} has no folder of the same name in train/"),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(files.into_iter().map(|(p, l)| (p, map[l as usize])).collect())
}

/// Every file's path (relative to `dir`), size and modification time, hashed.
fn fingerprint<'a>(dir: &Path, files: impl Iterator<Item = &'a Path>) -> Result<String, DataError> {
    let mut text = String::from("ringsam image folder pack v1\n");
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| DataError::io(f, e))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        text.push_str(&format!("{} {} {mtime}\n", f.strip_prefix(dir).unwrap_or(f).display(), meta.len()));
    }
    Ok(format!("{:08x} {}\n", crc32c::crc32c(text.as_bytes()), text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jpeg/rgb_q90_420.jpg")).unwrap()
    }

    fn folder(root: &Path, split: &str, classes: &[(&str, usize)]) {
        for (c, n) in classes {
            std::fs::create_dir_all(root.join(split).join(c)).unwrap();
            for i in 0..*n {
                std::fs::write(root.join(split).join(c).join(format!("{i}.jpg")), jpeg()).unwrap();
            }
        }
    }

    #[test]
    fn packs_once_repacks_when_the_folder_changes_and_numbers_classes_by_train() {
        let tmp = tempfile::tempdir().unwrap();
        folder(tmp.path(), "train", &[("ant", 2), ("bee", 3), ("cat", 1)]);
        folder(tmp.path(), "val", &[("cat", 2)]); // a class missing from val keeps train's numbering
        let mut lines = Vec::new();
        let cache = prepare(tmp.path(), &mut |l| lines.push(l.to_string())).unwrap();
        let layout = crate::shards::layout::open_layout(&cache).unwrap();
        assert_eq!(layout.classes, vec!["ant", "bee", "cat"]);
        let mut labels = Vec::new();
        crate::shards::read_shard(&layout.validation.shards[0], |_, s| {
            labels.push(s.label);
            true
        })
        .unwrap();
        assert_eq!(labels, vec![2, 2]);
        assert_eq!(lines.len(), 1);
        prepare(tmp.path(), &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(lines.len(), 1, "an unchanged folder is not packed again");
        std::fs::write(tmp.path().join("train/ant/9.jpg"), jpeg()).unwrap();
        prepare(tmp.path(), &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(lines.len(), 2, "a new file repacks");
        assert!(lines[1].contains("packing 7 training and 2 evaluation images (3 classes)"), "{}", lines[1]);
    }

    #[test]
    fn a_missing_split_or_an_unknown_class_says_which() {
        let tmp = tempfile::tempdir().unwrap();
        folder(tmp.path(), "train", &[("ant", 1)]);
        let e = prepare(tmp.path(), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("no val/, validation/ or test/"), "{e}");
        folder(tmp.path(), "test", &[("wasp", 1)]);
        let e = prepare(tmp.path(), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("\"wasp\" has no folder of the same name in train/"), "{e}");
    }
}
