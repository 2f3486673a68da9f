//! How a directory of shards is laid out: which shards make which split, how many samples each
//! holds, and the class names.
//!
//! The layout is TFDS's, so a `tfds build` of `imagenet2012` reads as it is, and `ringsam data
//! pack` writes the same files:
//! - shards whose file name has the word `train` (or `validation` / `val`) between `-`, `.` or
//!   `_` separators: `imagenet2012-train.tfrecord-00000-of-01024`, `train-00000-of-00004.tar`;
//! - `dataset_info.json` with, per split, `shardLengths` (samples per shard, in shard order; TFDS
//!   writes them as strings, as proto3 JSON does for 64-bit integers);
//! - `label.labels.txt`, one class name per line, line `i` naming label `i`.
//!
//! The directory given may also be a TFDS data dir: `DIR/imagenet2012/5.1.0/` is found (the
//! highest version when there are several).
//!
//! Why the counts matter: an epoch is `samples / global batch` steps, and every replica must take
//! the same number of steps. The loader counts with the split's sample index ([`super::index`]),
//! which lists only samples that read whole; `shardLengths` is checked against it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::ShardFormat;
use crate::DataError;
use crate::error::read_file;

/// The file with the per-split shard lengths.
pub const DATASET_INFO: &str = "dataset_info.json";
/// The file with the class names.
pub const LABELS: &str = "label.labels.txt";
/// Largest metadata file read (TFDS's imagenet2012 dataset_info.json is ~20 KB).
const MAX_METADATA: u64 = 16 << 20;

/// The shards of one split, in index order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitShards {
    /// Shard files.
    pub shards: Vec<PathBuf>,
    /// Samples per shard, from `dataset_info.json`, when it lists them.
    pub lengths: Option<Vec<u64>>,
}

impl SplitShards {
    /// Samples in the split, when known without reading the shards.
    pub fn known_len(&self) -> Option<u64> {
        // The parser refused lengths whose sum overflows; saturate rather than trust that here.
        self.lengths.as_ref().map(|l| l.iter().fold(0u64, |a, &b| a.saturating_add(b)))
    }
}

/// A directory of sharded training and validation data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    /// Where the shards are (the TFDS version directory when one was found).
    pub dir: PathBuf,
    /// Training shards.
    pub train: SplitShards,
    /// Validation shards.
    pub validation: SplitShards,
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
}

/// Which split a shard's file name says it belongs to.
pub fn split_of(name: &str) -> Option<&'static str> {
    let words: Vec<&str> = name.split(['-', '.', '_']).collect();
    let has = |w: &str| words.contains(&w);
    match (has("train"), has("validation") || has("val")) {
        (true, false) => Some("train"),
        (false, true) => Some("validation"),
        _ => None,
    }
}

/// The shard files (`*.tar`, `*.tfrecord*`, not `*.tmp`) directly in `dir`, sorted.
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && ShardFormat::of(p).is_ok() && !p.to_string_lossy().ends_with(".tmp"))
        .collect();
    v.sort();
    Ok(v)
}

/// `dir` itself when it holds shards, else the highest-versioned `dir/*/*/` that does.
fn shard_dir(dir: &Path) -> Result<PathBuf, DataError> {
    if !shard_files(dir)?.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(d).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        v.sort();
        v
    };
    let version = |p: &Path| -> Vec<u64> {
        p.file_name().map(|n| n.to_string_lossy().split('.').map(|x| x.parse().unwrap_or(0)).collect()).unwrap_or_default()
    };
    let mut found: Vec<PathBuf> =
        subdirs(dir).iter().flat_map(|d| subdirs(d)).filter(|d| shard_files(d).map(|f| !f.is_empty()).unwrap_or(false)).collect();
    found.sort_by_key(|d| version(d));
    found.pop().ok_or_else(|| DataError::Missing {
        dir: dir.into(),
        msg: "no shards (*.tar or *.tfrecord*) here or in a TFDS DATASET/VERSION/ sub-directory; `ringsam data pack` makes them".into(),
    })
}

fn read_json(path: &Path) -> Result<Value, DataError> {
    let bytes = read_bounded(path)?;
    serde_json::from_slice(&bytes).map_err(|e| DataError::Format {
        path: path.into(),
        offset: 0,
        msg: format!("not JSON (line {}, column {}): {e}", e.line(), e.column()),
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, DataError> {
    read_file(path, MAX_METADATA)
}

/// `shardLengths` of split `name` in a parsed `dataset_info.json`.
fn shard_lengths(info: &Value, name: &str, path: &Path) -> Result<Option<Vec<u64>>, DataError> {
    let Some(split) = info["splits"].as_array().and_then(|s| s.iter().find(|s| s["name"] == name)) else { return Ok(None) };
    let Some(lengths) = split["shardLengths"].as_array() else { return Ok(None) };
    let bad = |v: &Value| DataError::Format {
        path: path.into(),
        offset: 0,
        msg: format!("split {name}: shardLengths entry {v} is not a non-negative integer"),
    };
    let lengths = lengths
        .iter()
        .map(|v| match v {
            Value::String(s) => s.parse::<u64>().map_err(|_| bad(v)),
            Value::Number(n) => n.as_u64().ok_or_else(|| bad(v)),
            _ => Err(bad(v)),
        })
        .collect::<Result<Vec<u64>, _>>()?;
    // Summed once here, checked, so `SplitShards::known_len` cannot wrap.
    if lengths.iter().try_fold(0u64, |a, &b| a.checked_add(b)).is_none() {
        return Err(DataError::Format {
            path: path.into(),
            offset: 0,
            msg: format!("split {name}: shardLengths add up to more than 2^64"),
        });
    }
    Ok(Some(lengths))
}

/// Finds the shards, counts and class names under `dir` (see the module docs).
pub fn open_layout(dir: &Path) -> Result<ShardLayout, DataError> {
    let dir = shard_dir(dir)?;
    let mut layout = ShardLayout { dir: dir.clone(), train: SplitShards::default(), validation: SplitShards::default(), classes: vec![] };
    for f in shard_files(&dir)? {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match split_of(&name) {
            Some("train") => layout.train.shards.push(f),
            Some(_) => layout.validation.shards.push(f),
            None => {} // another split (TFDS's `test`, say): not read
        }
    }
    let info_path = dir.join(DATASET_INFO);
    if info_path.is_file() {
        let info = read_json(&info_path)?;
        for (name, split) in [("train", &mut layout.train), ("validation", &mut layout.validation)] {
            split.lengths = shard_lengths(&info, name, &info_path)?;
            if let Some(l) = &split.lengths
                && l.len() != split.shards.len()
            {
                return Err(DataError::Format {
                    path: info_path.clone(),
                    offset: 0,
                    msg: format!(
                        "split {name} lists {} shard lengths but {} holds {} {name} shards (an incomplete copy?)",
                        l.len(),
                        dir.display(),
                        split.shards.len()
                    ),
                });
            }
        }
    }
    let labels_path = dir.join(LABELS);
    if !labels_path.is_file() {
        return Err(DataError::Missing {
            dir: dir.clone(),
            msg: format!("no {LABELS} (one class name per line; `ringsam data pack` writes it)"),
        });
    }
    let text = String::from_utf8_lossy(&read_bounded(&labels_path)?).into_owned();
    // Line i names label i: an empty line inside the list would shift every later label.
    let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    if let Some(i) = lines.iter().position(|l| l.is_empty()) {
        return Err(DataError::Format { path: labels_path, offset: 0, msg: format!("line {} is empty: line i names label i", i + 1) });
    }
    layout.classes = lines.into_iter().map(String::from).collect();
    if layout.classes.is_empty() {
        return Err(DataError::Format { path: labels_path, offset: 0, msg: "no class names".into() });
    }
    Ok(layout)
}

/// Records split `split`'s shard lengths in `dir/dataset_info.json` (keeping the other splits and
/// fields) and the class names in `dir/label.labels.txt`; refuses class names that differ from
/// the ones already there. Both files are replaced atomically.
pub fn write_split_info(dir: &Path, split: &str, lengths: &[u64], classes: &[String]) -> Result<(), DataError> {
    if !check_classes(dir, classes)? {
        let labels = classes.iter().map(|c| format!("{c}\n")).collect::<String>();
        write_atomic(&dir.join(LABELS), labels.as_bytes())?;
    }
    let info_path = dir.join(DATASET_INFO);
    let mut info = if info_path.is_file() { read_json(&info_path)? } else { json!({"name": "ringsam-packed", "splits": []}) };
    if !info.is_object() {
        return Err(DataError::Format { path: info_path, offset: 0, msg: "not a JSON object (TFDS writes one)".into() });
    }
    if !info["splits"].is_array() {
        info["splits"] = json!([]);
    }
    let splits = info["splits"].as_array_mut().expect("made an array above");
    splits.retain(|s| s["name"] != split);
    splits.push(json!({"name": split, "shardLengths": lengths.iter().map(u64::to_string).collect::<Vec<_>>()}));
    let text = serde_json::to_vec_pretty(&info).expect("a JSON value serialises");
    write_atomic(&info_path, &text)
}

/// Whether `dir` already names these classes (false: it names none); an error if it names others.
pub fn check_classes(dir: &Path, classes: &[String]) -> Result<bool, DataError> {
    let labels_path = dir.join(LABELS);
    if !labels_path.is_file() {
        return Ok(false);
    }
    let have = String::from_utf8_lossy(&read_bounded(&labels_path)?).into_owned();
    if !have.lines().map(str::trim).filter(|l| !l.is_empty()).eq(classes.iter().map(String::as_str)) {
        return Err(DataError::Config(format!(
            "{} names other classes than the folder being packed (pack every split from folders with the same class sub-folders)",
            labels_path.display()
        )));
    }
    Ok(true)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_follow_tfds_and_pack() {
        assert_eq!(split_of("imagenet2012-train.tfrecord-00000-of-01024"), Some("train"));
        assert_eq!(split_of("imagenet2012-validation.tfrecord-00003-of-00064"), Some("validation"));
        assert_eq!(split_of("train-00000-of-00004.tar"), Some("train"));
        assert_eq!(split_of("val-00000-of-00001.tar"), Some("validation"));
        assert_eq!(split_of("imagenet2012-test.tfrecord-00000-of-00001"), None);
        assert_eq!(split_of("trainval-00000.tar"), None, "a word, not a substring");
    }
}
