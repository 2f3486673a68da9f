//! The run's generation record: `run_dir/GENERATION`, the newest membership generation that
//! leads the run, on the volume every worker shares.
//!
//! Why: a checkpoint writer can be replaced while it is stopped (SIGSTOP, a frozen VM) and wake up
//! later believing it still leads. The membership protocol fences its messages, but the volume
//! knows nothing of generations. So the first rank of every new generation raises the record
//! before training, and a writer reads it before renaming a checkpoint into place and before
//! pruning ([`fence`]): a writer of an older generation stops there ([`TrainError::Fenced`]).
//! Pruning also never removes a checkpoint of a newer generation than the writer's (its
//! `state.json` says which), which covers a writer that woke between its check and its prune.

use std::path::{Path, PathBuf};

use crate::TrainError;
use crate::checkpoint::{sync_dir, write_synced};

/// The record's file.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("GENERATION")
}

/// The generation the record names (0 when there is none yet). A record that is not a number
/// is an error naming the file: guessing could let a stale writer through.
pub fn read(run_dir: &Path) -> Result<u64, TrainError> {
    let p = path(run_dir);
    match std::fs::read(&p) {
        Ok(bytes) if bytes.len() <= 32 => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| TrainError::Checkpoint(format!("{}: not a generation number", p.display()))),
        Ok(bytes) => Err(TrainError::Checkpoint(format!("{}: {} bytes, not a generation number", p.display(), bytes.len()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(TrainError::Checkpoint(format!("{}: {e}", p.display()))),
    }
}

/// Raises the record to `generation` (written to a temporary, synced and renamed, so a reader
/// sees the old number or the new one). Refuses to lower it: a newer generation already leads.
pub fn raise(run_dir: &Path, generation: u64) -> Result<(), TrainError> {
    fence(run_dir, generation)?;
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::Checkpoint(format!("{}: {e}", run_dir.display())))?;
    let (p, tmp) = (path(run_dir), run_dir.join("GENERATION.tmp"));
    write_synced(&tmp, format!("{generation}\n").as_bytes())?;
    std::fs::rename(&tmp, &p).map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
    sync_dir(run_dir)
}

/// Fails with [`TrainError::Fenced`] when a newer generation than `mine` leads the run.
pub fn fence(run_dir: &Path, mine: u64) -> Result<(), TrainError> {
    let now = read(run_dir)?;
    if now > mine {
        return Err(TrainError::Fenced(format!("generation {now} leads {}; this writer belongs to generation {mine}", run_dir.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_only_rises_and_fences_older_writers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
        raise(dir.path(), 3).unwrap();
        assert_eq!(read(dir.path()).unwrap(), 3);
        fence(dir.path(), 3).unwrap();
        assert!(matches!(fence(dir.path(), 2), Err(TrainError::Fenced(_))));
        assert!(matches!(raise(dir.path(), 2), Err(TrainError::Fenced(_))), "never lowered");
        raise(dir.path(), 5).unwrap();
        std::fs::write(path(dir.path()), b"five").unwrap();
        assert!(read(dir.path()).unwrap_err().to_string().contains("GENERATION"));
    }
}
