//! The run's finished record: `run_dir/FINISHED`, written by the first rank of the generation
//! that trained to the end, after its final checkpoint: `{step} {generation}`.
//!
//! Why: the membership protocol has no "job over" message, and could not deliver one to a worker
//! that was cut off when the job ended. Such a worker, back on the network, would wait forever for
//! a generation nobody will form (on Kubernetes: a pod that never completes). While it waits it
//! reads this record on the shared volume instead, and leaves once the run has reached the steps
//! it was asked for. A run extended later (a larger `--num_epochs`) asks for more steps than the
//! record says, so an old record never ends a new job.

use std::path::{Path, PathBuf};

use crate::TrainError;
use crate::checkpoint::{sync_dir, write_synced};

/// The record's file.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("FINISHED")
}

/// Records that `generation` finished the run at `step` (a temporary file, synced, renamed).
pub fn write(run_dir: &Path, step: u64, generation: u64) -> Result<(), TrainError> {
    let (p, tmp) = (path(run_dir), run_dir.join("FINISHED.tmp"));
    write_synced(&tmp, format!("{step} {generation}\n").as_bytes())?;
    std::fs::rename(&tmp, &p).map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
    sync_dir(run_dir)
}

/// The (step, generation) the record names, if there is one that parses; a damaged record reads
/// as none (the worker then keeps waiting, as it would without the record).
pub fn read(run_dir: &Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(path(run_dir)).ok().filter(|b| b.len() <= 64)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next(), words.next()) {
        (Some(Ok(step)), Some(Ok(generation)), None) => Some((step, generation)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        write(dir.path(), 300, 4).unwrap();
        assert_eq!(read(dir.path()), Some((300, 4)));
        std::fs::write(path(dir.path()), "300").unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
