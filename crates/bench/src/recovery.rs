//! `ringsam bench recovery`: how long an elastic job takes to train again after a loss, beside
//! the time of a step when nothing fails.
//!
//! It starts `nproc` elastic workers (`ringsam worker --min_replicas nproc`) on loopback through
//! [`LocalRanks`], training on synthetic data, each worker's log in a file of its own, and
//! watches rank 0's progress lines (one per step). Then:
//! 1. **step time**: the median gap between consecutive step lines before any fault;
//! 2. **from memory**: SIGKILL of the last worker and its restart at once (what `ringsam launch
//!    --max_restarts` or Kubernetes does): the time from the kill to the first step completed
//!    after the next generation formed, the survivors streaming their state to the newcomer;
//! 3. **from disk**: SIGKILL of every worker and their restart: nobody holds state, so the new
//!    generation resumes from the newest checkpoint (`--save_progress_seconds`); the same time,
//!    and the steps redone (done before the kill, lost with it).
//!
//! Times are read by polling the logs every 5 ms, so each carries up to that much error; a
//! restart includes the process's start-up (loading the data, building the model).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringsam_collective::local_ranks::LocalRanks;

/// What to run.
#[derive(Clone, Debug)]
pub struct RecoveryBench {
    /// The ringsam binary.
    pub exe: PathBuf,
    /// Workers (one replica each).
    pub nproc: usize,
    /// Model name.
    pub model: String,
    /// Global batch (a multiple of `nproc`).
    pub batch_size: usize,
    /// Steps before the first fault (the step time is measured over them).
    pub warmup_steps: u64,
    /// Heartbeat period, seconds.
    pub heartbeat_seconds: f64,
    /// Seconds between time-based checkpoints (what the disk path resumes from).
    pub save_progress_seconds: u64,
    /// Longest wait for any one event.
    pub timeout: Duration,
    /// Where the workers' logs and run directory go (None: a temporary directory, removed).
    pub work_dir: Option<PathBuf>,
}

/// What it measured.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct RecoveryReport {
    /// Median seconds per step, no fault.
    pub step_seconds: f64,
    /// Kill of one worker → first step of the next generation (state from memory).
    pub memory_seconds: f64,
    /// Kill of every worker → first step of the next generation (state from disk).
    pub disk_seconds: f64,
    /// Steps done before the whole-job kill and lost with it.
    pub disk_redone_steps: u64,
}

/// Runs the benchmark (see the module docs); `progress` hears what it is doing.
pub fn run(cfg: &RecoveryBench, progress: &mut dyn FnMut(&str)) -> Result<RecoveryReport, String> {
    let temp = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let dir = cfg.work_dir.as_deref().unwrap_or(temp.path());
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ranks = LocalRanks::prepare(cfg.nproc, false).map_err(|e| format!("preparing the workers: {e}"))?;
    let peers = ranks.peers();
    let logs: Vec<PathBuf> = (0..cfg.nproc).map(|r| dir.join(format!("worker-{r}.log"))).collect();
    let args = |r: usize, cmd: &mut std::process::Command| -> Result<(), String> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&logs[r]).map_err(|e| format!("{}: {e}", logs[r].display()))?;
        let n = cfg.nproc.to_string();
        cmd.args(["--threads", "1", "worker", "--rank", &r.to_string(), "--world_size", &n, "--peers", &peers, "--transport", "tcp"])
            .args(["--min_replicas", &n, "--heartbeat_seconds", &cfg.heartbeat_seconds.to_string(), "--connect_timeout", "120"])
            .args(["--dataset", "synthetic", "--model_name", &cfg.model, "--batch_size", &cfg.batch_size.to_string()])
            .args(["--num_epochs", "1000", "--log_every_steps", "1", "--save_progress_seconds", &cfg.save_progress_seconds.to_string()])
            .args(["--output_dir", &dir.display().to_string()])
            .stderr(log);
        Ok(())
    };
    let mut failed = None;
    ranks
        .spawn(&cfg.exe, false, |r, cmd| {
            if let Err(e) = args(r, cmd) {
                failed = Some(e);
            }
        })
        .map_err(|e| format!("starting the workers: {e}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let watch = Watch { log: &logs[0], timeout: cfg.timeout };
    progress("warming up");
    let mut times = Vec::new();
    for step in 1..=cfg.warmup_steps.max(2) {
        times.push(watch.step(step, 0)?);
    }
    let mut gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    gaps.sort_by(f64::total_cmp);
    let step_seconds = gaps[gaps.len() / 2];

    progress("killing one worker (recovery from memory)");
    let last = cfg.nproc - 1;
    let (at, offset) = (Instant::now(), watch.len());
    ranks.kill(last).map_err(|e| format!("killing worker {last}: {e}"))?;
    restart(&mut ranks, last, &args)?;
    let memory_seconds = watch.first_step_after_generation(offset, at)?;

    progress("killing every worker (recovery from disk)");
    let before = watch.last_step();
    let (at, offset) = (Instant::now(), watch.len());
    for r in 0..cfg.nproc {
        ranks.kill(r).map_err(|e| format!("killing worker {r}: {e}"))?;
    }
    for r in 0..cfg.nproc {
        restart(&mut ranks, r, &args)?;
    }
    let disk_seconds = watch.first_step_after_generation(offset, at)?;
    let restored = watch.text()[offset..]
        .split("state from disk at step ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .ok_or("the whole-job restart did not resume from disk")?;
    for r in 0..cfg.nproc {
        let _ = ranks.kill(r);
    }
    Ok(RecoveryReport { step_seconds, memory_seconds, disk_seconds, disk_redone_steps: before.saturating_sub(restored) })
}

fn restart(ranks: &mut LocalRanks, r: usize, args: &dyn Fn(usize, &mut std::process::Command) -> Result<(), String>) -> Result<(), String> {
    let mut failed = None;
    ranks
        .respawn(r, |cmd| {
            if let Err(e) = args(r, cmd) {
                failed = Some(e);
            }
        })
        .map_err(|e| format!("restarting worker {r}: {e}"))?;
    failed.map_or(Ok(()), Err)
}

/// Rank 0's log, polled.
struct Watch<'a> {
    log: &'a Path,
    timeout: Duration,
}

impl Watch<'_> {
    fn text(&self) -> String {
        std::fs::read_to_string(self.log).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.text().len()
    }

    /// The highest step the log names.
    fn last_step(&self) -> u64 {
        self.text().split("step ").filter_map(|w| w.split_once('/')?.0.parse::<u64>().ok()).max().unwrap_or(0)
    }

    /// Polls until `done(log)` holds; the time it did.
    fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> Result<Instant, String> {
        let t0 = Instant::now();
        loop {
            if done(&self.text()) {
                return Ok(Instant::now());
            }
            if t0.elapsed() > self.timeout {
                return Err(format!("no {what} within {:?}; the log ends:\n{}", self.timeout, tail(&self.text())));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// When step `step` shows up after byte `from`.
    fn step(&self, step: u64, from: usize) -> Result<Instant, String> {
        let needle = format!("step {step}/");
        self.until(&format!("step {step}"), |t| t.get(from..).is_some_and(|t| t.contains(&needle)))
    }

    /// Seconds from `at` until a step line follows a generation line, both after byte `from`.
    fn first_step_after_generation(&self, from: usize, at: Instant) -> Result<f64, String> {
        let done = self.until("step of a new generation", |t| {
            let after_generation = t.get(from..).and_then(|t| t.find("replicas (slots").map(|g| &t[g..])).and_then(|t| t.split_once('\n'));
            after_generation.is_some_and(|(_, rest)| has_progress_line(rest))
        })?;
        Ok((done - at).as_secs_f64())
    }
}

/// Whether `text` holds a progress line's "step N/".
fn has_progress_line(text: &str) -> bool {
    text.split("step ").skip(1).any(|w| w.split_once('/').is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

fn tail(text: &str) -> &str {
    &text[text.len().saturating_sub(2000)..]
}
