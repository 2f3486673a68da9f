//! Where a checkpoint's bytes come from: the `checkpoint.tar.gz` as downloaded, a directory of
//! `checkpoint_<step>` files (what `flax.training.checkpoints.restore_checkpoint` accepts: the
//! highest step wins), or one extracted file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::FlaxError;

/// The largest checkpoint read (EfficientNet-L2's is about 2 GB).
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 30;

/// The most entries an archive may list (the published ones hold one checkpoint).
const MAX_MEMBERS: usize = 10_000;

/// A checkpoint's msgpack bytes and where they came from (for messages).
pub struct CheckpointBytes {
    /// The msgpack stream.
    pub bytes: Vec<u8>,
    /// `path` or `archive.tar.gz:member`.
    pub origin: String,
}

/// Reads the checkpoint at `path` (see the module docs).
pub fn read_checkpoint(path: &Path) -> Result<CheckpointBytes, FlaxError> {
    let io = |what, source| FlaxError::Io { path: path.to_path_buf(), what, source };
    let meta = std::fs::metadata(path).map_err(|e| io("reading", e))?;
    if meta.is_dir() {
        let file = newest_in_dir(path)?;
        return read_checkpoint(&file);
    }
    let mut f = File::open(path).map_err(|e| io("opening", e))?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic).map_err(|e| io("reading", e))? == 2 && magic == [0x1f, 0x8b];
    let f = File::open(path).map_err(|e| io("opening", e))?;
    if gz {
        return from_tar_gz(path, f);
    }
    Ok(CheckpointBytes { bytes: read_bounded(f, meta.len(), path)?, origin: path.display().to_string() })
}

fn read_bounded(reader: impl Read, declared: u64, path: &Path) -> Result<Vec<u8>, FlaxError> {
    if declared > MAX_CHECKPOINT_BYTES {
        return Err(FlaxError::Source {
            path: path.into(),
            why: format!("{declared} bytes is more than the {MAX_CHECKPOINT_BYTES}-byte limit for a checkpoint"),
        });
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    reader.take(declared + 1).read_to_end(&mut bytes).map_err(|source| FlaxError::Io { path: path.into(), what: "reading", source })?;
    if bytes.len() as u64 != declared {
        return Err(FlaxError::Source {
            path: path.into(),
            why: format!("expected {declared} bytes, read {} (changed while reading?)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// The step of a file named like flax's checkpoints (`checkpoint_<step>`), or 0 for `checkpoint`.
fn step_of(name: &str) -> Option<u64> {
    if name == "checkpoint" {
        return Some(0);
    }
    name.strip_prefix("checkpoint_")?.parse().ok()
}

fn newest_in_dir(dir: &Path) -> Result<PathBuf, FlaxError> {
    let rd = std::fs::read_dir(dir).map_err(|source| FlaxError::Io { path: dir.into(), what: "listing", source })?;
    let best = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((step_of(e.file_name().to_str()?)?, e.path())))
        .max_by_key(|(s, _)| *s);
    best.map(|(_, p)| p).ok_or_else(|| FlaxError::Source {
        path: dir.into(),
        why: "no file named checkpoint_<step> here (give the checkpoint file, its directory, or the checkpoint.tar.gz)".into(),
    })
}

/// The member of a `.tar.gz` to read: the highest `checkpoint_<step>`, or the only file.
fn from_tar_gz(path: &Path, file: File) -> Result<CheckpointBytes, FlaxError> {
    let io = |what, source| FlaxError::Io { path: path.to_path_buf(), what, source };
    // First pass: names and sizes only (tar has no index; a second pass reads the one chosen).
    let mut members = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for (i, entry) in archive.entries().map_err(|e| io("reading the tar.gz", e))?.enumerate() {
        let entry = entry.map_err(|e| io("reading the tar.gz", e))?;
        if i >= MAX_MEMBERS {
            return Err(FlaxError::Source { path: path.into(), why: format!("more than {MAX_MEMBERS} entries: not a checkpoint archive") });
        }
        if entry.header().entry_type().is_file() {
            let name = entry.path().map_err(|e| io("reading a member's name", e))?.to_string_lossy().into_owned();
            members.push((name, entry.header().size().map_err(|e| io("reading a member's size", e))?));
        }
    }
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    let chosen = members
        .iter()
        .filter_map(|(n, s)| Some((step_of(&base(n))?, n.clone(), *s)))
        .max_by_key(|(step, _, _)| *step)
        .map(|(_, n, s)| (n, s))
        .or_else(|| if members.len() == 1 { Some(members[0].clone()) } else { None });
    let Some((name, size)) = chosen else {
        let listed: Vec<&str> = members.iter().take(10).map(|(n, _)| n.as_str()).collect();
        return Err(FlaxError::Source {
            path: path.into(),
            why: format!("no checkpoint_<step> file among the archive's members {listed:?}"),
        });
    };
    let file = File::open(path).map_err(|e| io("opening", e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().map_err(|e| io("reading the tar.gz", e))? {
        let entry = entry.map_err(|e| io("reading the tar.gz", e))?;
        if entry.path().is_ok_and(|p| p.to_string_lossy() == name) {
            let origin = format!("{}:{name}", path.display());
            return Ok(CheckpointBytes { bytes: read_bounded(entry, size, Path::new(&origin))?, origin });
        }
    }
    Err(FlaxError::Source { path: path.into(), why: format!("member {name} vanished between two reads") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn the_highest_step_wins_in_an_archive_and_in_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("checkpoint.tar.gz");
        std::fs::write(&archive, tar_gz(&[("b0/checkpoint_9", b"\x01"), ("b0/checkpoint_10", b"\x02"), ("README", b"x")])).unwrap();
        let got = read_checkpoint(&archive).unwrap();
        assert_eq!((got.bytes, got.origin.ends_with(":b0/checkpoint_10")), (vec![2], true));
        std::fs::write(tmp.path().join("checkpoint_3"), [3]).unwrap();
        std::fs::write(tmp.path().join("checkpoint_12"), [12]).unwrap();
        assert_eq!(read_checkpoint(tmp.path()).unwrap().bytes, vec![12]);
        assert_eq!(read_checkpoint(&tmp.path().join("checkpoint_3")).unwrap().bytes, vec![3]);
    }

    #[test]
    fn an_archive_without_a_checkpoint_or_a_directory_without_one_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("x.tar.gz");
        std::fs::write(&archive, tar_gz(&[("a", b"1"), ("b", b"2")])).unwrap();
        let e = read_checkpoint(&archive).err().unwrap().to_string();
        assert!(e.contains("no checkpoint_<step>") && e.contains("\"a\""), "{e}");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(read_checkpoint(&empty).err().unwrap().to_string().contains("no file named checkpoint_<step>"));
        // A single file of any name is taken.
        std::fs::write(&archive, tar_gz(&[("model.msgpack", b"\x07")])).unwrap();
        assert_eq!(read_checkpoint(&archive).unwrap().bytes, vec![7]);
    }

    #[test]
    fn a_truncated_archive_is_an_error_not_a_short_read() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("c.tar.gz");
        let full = tar_gz(&[("checkpoint_1", &[5u8; 4000])]);
        std::fs::write(&archive, &full[..full.len() / 2]).unwrap();
        assert!(read_checkpoint(&archive).is_err());
    }
}
