//! `--dataset imagefolder`: a user's own JPEGs, one folder per class, read by the ImageNet
//! pipeline (decode, Inception crop, resize to the model's side, RandAugment; centre crop for
//! evaluation).
//!
//! `DIR/train/<class>/*.jpg` trains; `DIR/val/`, `DIR/validation/` or `DIR/test/` (the first
//! found) evaluates, its class folders named as in `train/` (a class may be missing there, not
//! added). Classes are numbered in sorted name order of `train/`.
//!
//! Why shards: the shard loader is what reads JPEGs fast, spreads them over replicas and resumes
//! mid-epoch, and it reads shards. So the folder is packed once into
//! `DIR/.ringsam-shards/<fingerprint>/` (WebDataset tars beside their index, as `ringsam data
//! pack` writes them), the fingerprint hashing every file's path, size and modification time: a
//! file added, removed or changed makes a new pack, and the stale ones are removed after it.
//! A pack is built under a name of its own (`<fingerprint>.tmp-<pid>-<nanos>`) and renamed into
//! place; a complete pack is never renamed or rewritten, so workers starting together on a
//! shared volume each build or find a whole one (if two build it, the second rename fails and
//! that worker uses the first's: the same bytes).

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::DataError;
use crate::shards::{PackOptions, ShardFormat, list_image_folder, pack_files};

/// The cache directory's name inside the image folder.
pub const CACHE: &str = ".ringsam-shards";
/// Samples per shard in the cache.
const PER_SHARD: usize = 1000;

/// What the folder holds now.
struct Listing {
    classes: Vec<String>,
    train_dir: PathBuf,
    eval_dir: PathBuf,
    train: Vec<(PathBuf, i64)>,
    eval: Vec<(PathBuf, i64)>,
    /// Where its pack lives.
    pack: PathBuf,
}

fn list(dir: &Path) -> Result<Listing, DataError> {
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
    let pack = dir.join(CACHE).join(fingerprint(dir, train.iter().chain(&eval).map(|(p, _)| p.as_path()))?);
    Ok(Listing { classes, train_dir, eval_dir, train, eval, pack })
}

/// Where the pack of image folder `dir` as it is now lives, packed or not.
pub fn pack_dir(dir: &Path) -> Result<PathBuf, DataError> {
    Ok(list(dir)?.pack)
}

/// The shard directory for image folder `dir`, packed if it is missing or stale.
pub fn prepare(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf, DataError> {
    let l = list(dir)?;
    if l.pack.is_dir() {
        return Ok(l.pack);
    }
    log(&format!(
        "{}: packing {} training and {} evaluation images ({} classes) into {} (once; again if the folder changes)",
        dir.display(),
        l.train.len(),
        l.eval.len(),
        l.classes.len(),
        l.pack.display()
    ));
    let cache = dir.join(CACHE);
    std::fs::create_dir_all(&cache).map_err(|e| DataError::io(&cache, e))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = l.pack.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = cache.join(format!("{name}.tmp-{}-{nanos}", std::process::id()));
    let total = l.train.len() + l.eval.len();
    let mut progress = Progress::new(total, log);
    let opts = |prefix| PackOptions { format: ShardFormat::Wds, per_shard: PER_SHARD, prefix, seed: 0 };
    let packed = pack_files(&l.train_dir, l.train, &l.classes, &tmp, &opts("train"), &mut |n| progress.add(n))
        .and_then(|_| pack_files(&l.eval_dir, l.eval, &l.classes, &tmp, &opts("validation"), &mut |n| progress.add(n)));
    if let Err(e) = packed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &l.pack).is_err() {
        // Another worker renamed its pack of the same files in first: use that one.
        let _ = std::fs::remove_dir_all(&tmp);
        if !l.pack.is_dir() {
            return Err(DataError::Missing { dir: cache, msg: format!("could not rename the new pack to {name}") });
        }
    }
    remove_stale(&cache, &name);
    Ok(l.pack)
}

/// Removes packs of earlier versions of the folder (and temporaries older than a day, left by a
/// worker that died while packing).
fn remove_stale(cache: &Path, current: &str) {
    let Ok(rd) = std::fs::read_dir(cache) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a.as_secs() > 86_400);
        let stale = if name.contains(".tmp-") { old } else { name != current };
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Progress lines while packing: every tenth of the images, and at least every 30 s.
struct Progress<'a> {
    total: usize,
    done: usize,
    next: usize,
    last: std::time::Instant,
    log: &'a mut dyn FnMut(&str),
}

impl<'a> Progress<'a> {
    fn new(total: usize, log: &'a mut dyn FnMut(&str)) -> Self {
        Progress { total, done: 0, next: total.div_ceil(10), last: std::time::Instant::now(), log }
    }

    fn add(&mut self, n: usize) {
        self.done += n;
        if self.done >= self.next || self.last.elapsed().as_secs() >= 30 {
            (self.log)(&format!("packed {} of {} images", self.done, self.total));
            self.next = self.done + self.total.div_ceil(10);
            self.last = std::time::Instant::now();
        }
    }
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

/// Every file's path (relative to `dir`), size and modification time, hashed (MD5, hex).
fn fingerprint<'a>(dir: &Path, files: impl Iterator<Item = &'a Path>) -> Result<String, DataError> {
    let mut hasher = Md5::new();
    hasher.update(b"ringsam image folder pack v1\n");
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| DataError::io(f, e))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        hasher.update(format!("{} {} {mtime}\n", f.strip_prefix(dir).unwrap_or(f).display(), meta.len()).as_bytes());
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
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
        assert_eq!(cache, pack_dir(tmp.path()).unwrap());
        let layout = crate::shards::layout::open_layout(&cache).unwrap();
        assert_eq!(layout.classes, vec!["ant", "bee", "cat"]);
        let mut labels = Vec::new();
        crate::shards::read_shard(&layout.validation.shards[0], |_, s| {
            labels.push(s.label);
            true
        })
        .unwrap();
        assert_eq!(labels, vec![2, 2]);
        assert!(lines[0].contains("packing 6 training and 2 evaluation images (3 classes)"), "{lines:?}");
        assert!(lines.last().unwrap().contains("packed 8 of 8 images"), "{lines:?}");
        let n = lines.len();
        assert_eq!(prepare(tmp.path(), &mut |l| lines.push(l.to_string())).unwrap(), cache);
        assert_eq!(lines.len(), n, "an unchanged folder is not packed again");
        std::fs::write(tmp.path().join("train/ant/9.jpg"), jpeg()).unwrap();
        let repacked = prepare(tmp.path(), &mut |l| lines.push(l.to_string())).unwrap();
        assert!(lines[n].contains("packing 7 training and 2 evaluation images (3 classes)"), "{}", lines[n]);
        assert_ne!(repacked, cache);
        assert!(!cache.exists(), "the stale pack is removed");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join(CACHE)).unwrap().collect();
        assert_eq!(left.len(), 1, "one pack, no temporaries");
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
