//! Entry points of a training run: [`train`] (one replica) and [`train_replica`] (one of a
//! data-parallel job), what they take ([`RunOptions`]) and what they report ([`RunSummary`]).
//! The loop itself is [`crate::trainer::Trainer`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::TrainError;
use crate::cluster::Cluster;
use crate::config::TrainConfig;
use crate::grad_sync::ExchangeStats;
use crate::trainer::Trainer;

/// How the run talks to its surroundings.
pub struct RunOptions {
    /// stderr is a terminal: show a progress bar (otherwise plain progress lines go to the log).
    pub progress: bool,
    /// Set by a signal handler: checkpoint and stop.
    pub stop: Arc<AtomicBool>,
    /// Bytes this run may use (the binary's reading of the host and container); `None`: no check.
    pub memory_limit: Option<u64>,
    /// Where the step runs: `None` the CPU engine, else this device ([`crate::step::SamStep::to_device`]).
    pub gpu: Option<Arc<ringsam_kernels::Gpu>>,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// `output_dir/lr_…/wd_…/rho_…/seed_…`.
    pub run_dir: PathBuf,
    /// Global steps completed.
    pub steps: u64,
    /// Last evaluation's test error rate.
    pub test_error_rate: Option<f64>,
    /// Last evaluation's test loss.
    pub test_loss: Option<f64>,
    /// The checkpoint the run resumed from.
    pub resumed_from: Option<PathBuf>,
    /// Seconds spent in this invocation.
    pub seconds: f64,
    /// Per-step means over this invocation's steps (data-parallel cost report).
    pub per_step: StepCosts,
}

/// Mean per-step costs: wall time and the two gradient exchanges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepCosts {
    /// Steps averaged.
    pub steps: u64,
    /// Wall time of a step (the SAM step alone: no loading, no bookkeeping).
    pub seconds: f64,
    /// Pass 1's exchange (SAM with `sync_perturbations`).
    pub ascent: ExchangeStats,
    /// The applied gradient's exchange.
    pub descent: ExchangeStats,
}

impl StepCosts {
    /// Adds one step's costs.
    pub fn add(&mut self, seconds: f64, a: &ExchangeStats, d: &ExchangeStats) {
        self.steps += 1;
        self.seconds += seconds;
        for (acc, x) in [(&mut self.ascent, a), (&mut self.descent, d)] {
            acc.bytes += x.bytes;
            acc.seconds += x.seconds;
            acc.exposed_seconds += x.exposed_seconds;
        }
    }

    /// The per-step means of the sums.
    pub fn mean(&self) -> StepCosts {
        let n = self.steps.max(1) as f64;
        let m = |x: &ExchangeStats| ExchangeStats {
            bytes: (x.bytes as f64 / n) as u64,
            seconds: x.seconds / n,
            exposed_seconds: x.exposed_seconds / n,
        };
        StepCosts { steps: self.steps, seconds: self.seconds / n, ascent: m(&self.ascent), descent: m(&self.descent) }
    }

    /// One log line of these (mean) costs for a run of `world` replicas.
    pub fn describe(&self, world: usize) -> String {
        let mb = |x: &ExchangeStats| x.bytes as f64 / (1 << 20) as f64;
        format!(
            "per step ({} steps, {world} replicas): {:.1} ms; ascent exchange {:.1} MiB in {:.1} ms ({:.1} ms exposed); descent exchange {:.1} MiB in {:.1} ms ({:.1} ms exposed)",
            self.steps,
            1e3 * self.seconds,
            mb(&self.ascent),
            1e3 * self.ascent.seconds,
            1e3 * self.ascent.exposed_seconds,
            mb(&self.descent),
            1e3 * self.descent.seconds,
            1e3 * self.descent.exposed_seconds
        )
    }
}

/// Trains as `cfg` says on one replica; `log` receives one-line messages (resume, progress,
/// evaluation, checkpoints).
pub fn train(cfg: &TrainConfig, opts: &RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunSummary, TrainError> {
    train_replica(cfg, opts, None, log)
}

/// Trains as one replica of `cluster`; `None` is a single replica.
pub fn train_replica(
    cfg: &TrainConfig,
    opts: &RunOptions,
    cluster: Option<Cluster>,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary, TrainError> {
    let result = Trainer::new(cfg, opts, cluster, log).and_then(Trainer::run);
    if let Err(TrainError::Ring(_)) = &result {
        // Elastic restarts are not automatic yet: say what the operator can do.
        log("a replica was lost or stalled; the newest checkpoint is intact: start every worker again to resume from it");
    }
    result
}
