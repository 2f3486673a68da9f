//! `--log_sample_ids`: which stored examples every step took, so a run that lost workers,
//! resized or resumed can be shown to have repeated or skipped none.
//!
//! Each replica appends one line per step attempt, before the step, to
//! `{run_dir}/samples/replica-{rank}-{pid}.log` (its own file: a restarted process never appends
//! to a file another process is writing): `generation epoch batch rank id id …`, the ids being
//! those of [`ringsam_data::Batch::ids`]. Written before the step, because a step can complete
//! on some replicas and not on others (a peer killed in the all-gather); the line of an attempt
//! that did not count is superseded by the attempt that did, which always runs in a later
//! generation (a failed step ends its generation, and whatever state the next one takes, the
//! steps after it are run again there). [`consumed`] applies that rule.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// Largest sample log read back (a line per step and replica).
const MAX_LOG: u64 = 1 << 30;

/// An open sample log.
pub struct SampleLog {
    file: std::fs::File,
    path: PathBuf,
}

impl SampleLog {
    /// Creates (or appends to) this process's log in `run_dir/samples/`.
    pub fn open(run_dir: &Path, rank: usize) -> Result<SampleLog, TrainError> {
        let dir = run_dir.join("samples");
        let path = dir.join(format!("replica-{rank}-{}.log", std::process::id()));
        let err = |source| TrainError::Output { path: path.display().to_string(), source };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(err)?;
        Ok(SampleLog { file, path })
    }

    /// Records that `rank` of `generation` takes batch `batch` of `epoch`, examples `ids`.
    pub fn record(&mut self, generation: u64, epoch: u64, batch: usize, rank: usize, ids: &[u64]) -> Result<(), TrainError> {
        let mut line = format!("{generation} {epoch} {batch} {rank}");
        ids.iter().for_each(|id| line.push_str(&format!(" {id}")));
        line.push('\n');
        // One write per line: an appended line is never interleaved with another's.
        self.file.write_all(line.as_bytes()).map_err(|source| TrainError::Output { path: self.path.display().to_string(), source })
    }
}

/// Examples by (epoch, batch), sorted.
pub type Taken = BTreeMap<(u64, usize), Vec<u64>>;

/// The latest generation that took a batch, and what each of its ranks took.
type Latest = BTreeMap<(u64, usize), (u64, BTreeMap<usize, Vec<u64>>)>;

/// The examples each (epoch, batch) of a run took, sorted: per (epoch, batch) the lines of its
/// latest generation, one per rank (see the module docs). Reads every log in `run_dir/samples`.
pub fn consumed(run_dir: &Path) -> Result<Taken, String> {
    let dir = run_dir.join("samples");
    let mut latest = Latest::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let bytes = ringsam_data::error::read_file(&path, MAX_LOG).map_err(|e| e.to_string())?;
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            let nums: Result<Vec<u64>, _> = line.split(' ').map(str::parse::<u64>).collect();
            let nums =
                nums.ok().filter(|n| n.len() >= 4).ok_or_else(|| format!("{}: line {}: not a sample log line", path.display(), i + 1))?;
            let (generation, key, rank) = (nums[0], (nums[1], nums[2] as usize), nums[3] as usize);
            let slot = latest.entry(key).or_insert((generation, BTreeMap::new()));
            if generation > slot.0 {
                *slot = (generation, BTreeMap::new());
            }
            if generation == slot.0 {
                slot.1.insert(rank, nums[4..].to_vec());
            }
        }
    }
    Ok(latest
        .into_iter()
        .map(|(key, (_, ranks))| {
            let mut ids: Vec<u64> = ranks.into_values().flatten().collect();
            ids.sort_unstable();
            (key, ids)
        })
        .collect())
}

/// Why `run` did not take exactly `reference`'s examples batch by batch, or took one twice in
/// an epoch; `None` when it did neither.
pub fn compare(run: &Taken, reference: &Taken) -> Option<String> {
    for (key, want) in reference {
        match run.get(key) {
            None => return Some(format!("epoch {} batch {}: never taken", key.0, key.1)),
            Some(got) if got != want => {
                return Some(format!("epoch {} batch {}: took {} examples, {} of them not the reference's", key.0, key.1, got.len(), {
                    got.iter().filter(|id| want.binary_search(id).is_err()).count()
                }));
            }
            Some(_) => {}
        }
    }
    if let Some(key) = run.keys().find(|k| !reference.contains_key(k)) {
        return Some(format!("epoch {} batch {}: taken, but not by the reference", key.0, key.1));
    }
    let mut per_epoch: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    run.iter().for_each(|((epoch, _), ids)| per_epoch.entry(*epoch).or_default().extend(ids));
    for (epoch, mut ids) in per_epoch {
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != n {
            return Some(format!("epoch {epoch}: {} examples taken twice", n - ids.len()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_generation_of_a_batch_counts_and_repeats_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = SampleLog::open(dir.path(), 0).unwrap();
        a.record(0, 0, 0, 0, &[4, 1]).unwrap();
        a.record(0, 0, 1, 0, &[9, 9]).unwrap(); // an attempt that did not count…
        a.record(1, 0, 1, 0, &[2, 7]).unwrap(); // …superseded by the next generation's
        a.record(1, 0, 1, 1, &[3, 8]).unwrap();
        a.record(0, 0, 0, 1, &[0, 5]).unwrap();
        let run = consumed(dir.path()).unwrap();
        assert_eq!(run[&(0, 0)], vec![0, 1, 4, 5]);
        assert_eq!(run[&(0, 1)], vec![2, 3, 7, 8]);
        assert_eq!(compare(&run, &run), None);
        let mut other = run.clone();
        other.get_mut(&(0, 1)).unwrap()[0] = 1;
        assert!(compare(&other, &other).unwrap().contains("taken twice"));
        assert!(compare(&other, &run).unwrap().contains("1 of them not the reference's"));
        other.remove(&(0, 1));
        assert!(compare(&other, &run).unwrap().contains("never taken"));
    }
}
