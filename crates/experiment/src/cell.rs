//! One cell of an experiment's grid — (method, label noise, seed) — and its result.
//!
//! A cell is an ordinary run: `ringsam train` with the base configuration, the cell's method,
//! noise and seed, and an output directory of its own, `{experiment}/{method}-noise_{p}-seed_{s}`.
//! Run directories are named by lr/wd/ρ/seed only, so cells sharing a parent would resume each
//! other's checkpoints (SAM and SAM-every-2 have the same ρ). A cell that finishes writes
//! `result.json` beside its run directory; an experiment run again skips those cells and resumes
//! an interrupted one from its checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::method::Method;
use ringsam_train::TrainError;
use ringsam_train::config::TrainConfig;

/// A point of the grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    /// The method.
    pub method: Method,
    /// The training labels' noise.
    pub noise: f64,
    /// The run seed.
    pub seed: u64,
}

/// What a finished cell measured (`result.json`, and a row of `results.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// [`Method::label`].
    pub method: String,
    /// Label noise.
    pub noise: f64,
    /// Run seed.
    pub seed: u64,
    /// Accuracy on the clean test labels after the last epoch.
    pub test_accuracy: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Steps trained.
    pub steps: u64,
    /// Forward-backward passes per step, on average.
    pub passes_per_step: f64,
    /// Mean wall time of a training step in the session that finished the cell, milliseconds
    /// (None when that session trained no step: the run had ended before it).
    pub ms_per_step: Option<f64>,
    /// The cell's run directory.
    pub run_dir: PathBuf,
    /// With `--sharpness`: the final weights' Hessian λ1, λ1/λ5 and m-sharpness
    /// ([`ringsam_train::sharpness`]).
    #[serde(default)]
    pub sharpness: Option<FinalSharpness>,
    /// The configuration the cell trained with: a later experiment in the same directory whose
    /// settings change the math does not take this result as its own.
    pub config: TrainConfig,
}

/// The sharpness of a cell's final weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalSharpness {
    /// The Hessian's largest eigenvalue.
    pub lambda_1: f64,
    /// λ1 / λk with k = `--sharpness_eigs` (5 by default: the paper's λ1/λ5); None when λk is
    /// not positive.
    pub lambda_ratio: Option<f64>,
    /// The m-sharpness at the run's `--sharpness_m` and `--sharpness_rho`.
    pub m_sharpness: f64,
}

impl Cell {
    /// The cell's output directory under the experiment's.
    pub fn dir(&self, experiment: &Path) -> PathBuf {
        experiment.join(format!("{}-noise_{}-seed_{}", self.method.label(), self.noise, self.seed))
    }

    /// The base configuration set to this cell (`rho` for the SAM-family methods).
    pub fn config(&self, base: &TrainConfig, rho: f32, experiment: &Path) -> Result<TrainConfig, TrainError> {
        let mut cfg = base.clone();
        self.method.apply(&mut cfg, rho);
        (cfg.label_noise, cfg.run_seed, cfg.output_dir) = (self.noise, self.seed, self.dir(experiment));
        cfg.validate().map_err(|e| TrainError::Config(format!("cell {}: {e}", self.describe())))?;
        Ok(cfg)
    }

    /// `sam, noise 0.4, seed 1`.
    pub fn describe(&self) -> String {
        format!("{}, noise {}, seed {}", self.method.label(), self.noise, self.seed)
    }

    /// The finished cell's result, if it has one that reads; an error when it was trained with
    /// settings that change the math from `cfg`'s (another experiment in this directory).
    pub fn finished(&self, experiment: &Path, cfg: &TrainConfig) -> Result<Option<CellResult>, TrainError> {
        let path = self.dir(experiment).join("result.json");
        let Some(r) = std::fs::read(&path).ok().and_then(|text| serde_json::from_slice::<CellResult>(&text).ok()) else {
            return Ok(None);
        };
        match ringsam_train::resume::ConfigChange::between(&r.config, cfg).refusal(false) {
            None => Ok(Some(r)),
            Some(why) => Err(TrainError::Config(format!("{} holds cell {} of another experiment: {why}", path.display(), self.describe()))),
        }
    }

    /// Records the cell as finished (a temporary file renamed, so a crash leaves none or all).
    pub fn record(&self, experiment: &Path, result: &CellResult) -> Result<(), TrainError> {
        let dir = self.dir(experiment);
        let (tmp, path) = (dir.join("result.json.tmp"), dir.join("result.json"));
        let out = |source| TrainError::Output { path: path.display().to_string(), source };
        let text = serde_json::to_vec_pretty(result).map_err(|e| TrainError::Runtime(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(out)?;
        std::fs::rename(&tmp, &path).map_err(out)
    }
}
