//! The acceptor record's file: read once at start, replaced atomically on every change.
//!
//! A replacement is written to `<name>.tmp` in the same directory, fsynced, renamed over the
//! record and the directory fsynced, so after a crash the file holds either the old record or
//! the new one, whole, and a record reported written survives power loss. Errors name the file.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use ringsam_membership::{AcceptorRecord, MAX_RECORD_BYTES};

/// The record at `path`; `None` if there is no file (a fresh worker). A file that is there but
/// unreadable or damaged is an error, never a fresh start: the worker would forget its promises.
pub(crate) fn read(path: &Path) -> Result<Option<AcceptorRecord>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading acceptor record {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    // One byte past the limit, so an oversized file is refused by `decode`, not cut to fit.
    file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("reading acceptor record {}: {e}", path.display()))?;
    AcceptorRecord::decode(&bytes).map(Some).map_err(|e| {
        format!(
            "acceptor record {}: {e} (records are replaced atomically, so this is disk damage or another file: \
             restore it; deleting it lets this worker break the promises it made)",
            path.display()
        )
    })
}

/// Writes `record` to `path` durably and atomically (see the module docs).
pub(crate) fn write(path: &Path, record: &AcceptorRecord) -> Result<(), String> {
    let tmp = tmp_path(path).ok_or_else(|| format!("acceptor record {}: not a file name", path.display()))?;
    let fail = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let mut f = File::create(&tmp).map_err(|e| fail("creating", &tmp, e))?;
    f.write_all(&record.encode()).map_err(|e| fail("writing", &tmp, e))?;
    f.sync_all().map_err(|e| fail("syncing", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| fail("renaming into place", path, e))?;
    let dir = parent_dir(path);
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| fail("syncing directory", dir, e))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<name>.tmp` beside `path`; `None` if `path` names no file.
pub(crate) fn tmp_path(path: &Path) -> Option<PathBuf> {
    let mut name = OsString::from(path.file_name()?);
    name.push(".tmp");
    Some(path.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsam_membership::{Membership, Slot};

    #[test]
    fn missing_is_fresh_written_reads_back_damaged_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot-1.record");
        assert_eq!(read(&path), Ok(None));
        let record = AcceptorRecord {
            slot: Slot(1),
            incarnation: 2,
            committed: Some(Membership::new(3, [(Slot(0), 1), (Slot(1), 1)])),
            accepted: Vec::new(),
        };
        write(&path, &record).unwrap();
        assert_eq!(read(&path), Ok(Some(record.clone())));
        assert!(!tmp_path(&path).unwrap().exists());
        let newer = AcceptorRecord { incarnation: 3, ..record };
        write(&path, &newer).unwrap();
        assert_eq!(read(&path), Ok(Some(newer)));
        fs::write(&path, b"not a record").unwrap();
        assert!(read(&path).unwrap_err().contains("slot-1.record"));
    }

    #[test]
    fn paths() {
        assert_eq!(parent_dir(Path::new("record")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/b/record")), Path::new("/a/b"));
        assert_eq!(tmp_path(Path::new("/a/record")), Some(PathBuf::from("/a/record.tmp")));
        assert_eq!(tmp_path(Path::new("/")), None);
    }
}
