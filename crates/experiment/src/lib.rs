//! ringsam-experiment: grids of ordinary training runs, compared (docs/SAM.md, "Experiments").
//!
//! `ringsam experiment label-noise` is the paper's noisy-label experiment (§3.3, Table 4) at a
//! size a laptop runs: symmetric label noise on the training labels (`--label_noise`), SGD
//! against SAM (and the cheaper schedules) with the same epochs, accuracy on the clean test
//! labels. `ringsam experiment cheap-sam` compares SGD, SAM, SAM every 2 and 5 steps and LookSAM
//! on clean labels, against their time per step.
//!
//! Both run the grid method × noise × seed one cell at a time ([`cell`]): every cell is an
//! ordinary run directory with its checkpoints and TensorBoard events, so an interrupted
//! experiment resumes where it stopped. Then they print a table of mean ± standard deviation over
//! seeds ([`summary`]), write every cell to `results.csv`, and draw the figure ([`plot`]).
//!
//! Files: [`method`] (what a method sets), [`cell`] (one run and its result), [`summary`],
//! [`plot`].

pub mod cell;
pub mod method;
pub mod plot;
pub mod summary;

use std::path::PathBuf;
use std::time::Instant;

use ringsam_train::TrainError;
use ringsam_train::config::TrainConfig;
use ringsam_train::run::RunOptions;

use crate::cell::{Cell, CellResult, FinalSharpness};
use crate::method::Method;

/// Which experiment (what its figure shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Accuracy against label noise, one line per method (`label_noise.png`).
    LabelNoise,
    /// Accuracy against time per step, one point per method (`cheap_sam.png`).
    CheapSam,
}

/// An experiment's grid and where it goes.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// Which one.
    pub kind: Kind,
    /// Methods compared.
    pub methods: Vec<Method>,
    /// Label-noise levels.
    pub noises: Vec<f64>,
    /// Seeds: the base configuration's `run_seed` and the ones after it.
    pub seeds: u64,
    /// ρ of the SAM-family methods.
    pub rho: f32,
    /// The experiment's directory (one sub-directory per cell).
    pub dir: PathBuf,
    /// Also measure each cell's final sharpness (λ1, λ1/λ5, m-sharpness; the `--sharpness_*`
    /// settings of the base configuration), for the table, `results.csv` and (label noise)
    /// `sharpness.png`. Cells finished without it are measured from their final checkpoint.
    pub sharpness: bool,
}

/// What [`run`] produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every cell's result, in grid order.
    pub results: Vec<CellResult>,
    /// The printed table.
    pub table: String,
    /// `results.csv`.
    pub csv: PathBuf,
    /// The figure.
    pub figure: PathBuf,
    /// With `sharpness`, for the label-noise experiment: λ1 and the m-sharpness against label
    /// noise (cheap-sam's table has them).
    pub sharpness_figure: Option<PathBuf>,
}

impl Experiment {
    /// The cells, seed by seed (so an early stop still covers every method and noise).
    pub fn cells(&self, base: &TrainConfig) -> Vec<Cell> {
        let mut v = Vec::new();
        for seed in base.run_seed..base.run_seed.saturating_add(self.seeds) {
            for &noise in &self.noises {
                v.extend(self.methods.iter().map(|&method| Cell { method, noise, seed }));
            }
        }
        v
    }
}

/// Runs every cell not yet finished (see the module docs), then writes the CSV and the figure.
/// `progress` hears a line as each cell starts and ends; each cell's own log goes to
/// `{cell}/train.log`.
pub fn run(exp: &Experiment, base: &TrainConfig, opts: &RunOptions, progress: &mut dyn FnMut(&str)) -> Result<Outcome, TrainError> {
    let cells = exp.cells(base);
    let configs = cells.iter().map(|c| c.config(base, exp.rho, &exp.dir)).collect::<Result<Vec<_>, _>>()?; // every cell checked first
    let started = Instant::now();
    let (mut results, mut trained) = (Vec::new(), 0usize);
    for (i, (cell, cfg)) in cells.iter().zip(&configs).enumerate() {
        let at = format!("cell {}/{} ({})", i + 1, cells.len(), cell.describe());
        if let Some(mut r) = cell.finished(&exp.dir, cfg)? {
            progress(&format!("{at}: done before, test accuracy {:.2}%", 100.0 * r.test_accuracy));
            if exp.sharpness && r.sharpness.is_none() {
                progress(&format!("{at}: measuring the final weights' sharpness"));
                let last = r.run_dir.join("checkpoints").join(format!("checkpoint_{}", r.steps));
                r.sharpness = Some(final_sharpness(&last, cfg, &mut cell_log(cfg)?)?);
                cell.record(&exp.dir, &r)?;
            }
            results.push(r);
            continue;
        }
        progress(&format!("{at}: training{}", eta(started, trained, cells.len() - i)));
        let r = run_cell(cell, cfg, opts, exp.sharpness)?;
        trained += 1;
        let ms = r.ms_per_step.map_or(String::new(), |ms| format!(", {ms:.1} ms/step"));
        progress(&format!("{at}: test accuracy {:.2}% ({} steps{ms})", 100.0 * r.test_accuracy, r.steps));
        cell.record(&exp.dir, &r)?;
        results.push(r);
    }
    finish(exp, results)
}

/// " — about N s left", from the cells trained so far in this session.
fn eta(started: Instant, trained: usize, left: usize) -> String {
    if trained == 0 {
        return String::new();
    }
    let s = started.elapsed().as_secs_f64() / trained as f64 * left as f64;
    format!(" — about {:.0} min {:02.0} s left", (s / 60.0).floor(), s % 60.0)
}

/// A writer of lines to the cell's `train.log` (appended to).
fn cell_log(cfg: &TrainConfig) -> Result<impl FnMut(&str), TrainError> {
    std::fs::create_dir_all(&cfg.output_dir).map_err(|source| TrainError::Output { path: cfg.output_dir.display().to_string(), source })?;
    let log_path = cfg.output_dir.join("train.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| TrainError::Output { path: log_path.display().to_string(), source })?;
    Ok(move |line: &str| {
        use std::io::Write;
        let _ = writeln!(file, "{line}"); // the log is a convenience: a full disk shows in the run's own writes
    })
}

/// Trains one cell, its log into `{cell}/train.log`.
fn run_cell(cell: &Cell, cfg: &TrainConfig, opts: &RunOptions, sharpness: bool) -> Result<CellResult, TrainError> {
    let mut log = cell_log(cfg)?;
    let summary = ringsam_train::run::train(cfg, opts, &mut log)?;
    let last = summary.run_dir.join("checkpoints").join(format!("checkpoint_{}", summary.steps));
    let (err, loss) = match (summary.test_error_rate, summary.test_loss) {
        (Some(e), Some(l)) => (e, l),
        // No evaluation after the last step (--max_steps ended the run, or it had ended before
        // this session): its final checkpoint, evaluated as training evaluates.
        _ => {
            let (_, r) = ringsam_train::eval::evaluate_checkpoint(&last, None, cfg.batch_size, opts.gpu.as_ref())?;
            log(&format!("evaluated {}: test error {:.4}", last.display(), r.error_rate));
            (r.error_rate, r.loss)
        }
    };
    Ok(CellResult {
        method: cell.method.label(),
        noise: cell.noise,
        seed: cell.seed,
        test_accuracy: 1.0 - err,
        test_loss: loss,
        steps: summary.steps,
        passes_per_step: cell.method.passes_per_step(),
        ms_per_step: (summary.per_step.steps > 0).then_some(1e3 * summary.per_step.seconds),
        run_dir: summary.run_dir,
        config: cfg.clone(),
        sharpness: if sharpness { Some(final_sharpness(&last, cfg, &mut log)?) } else { None },
    })
}

/// λ1, λ1/λ5 and the m-sharpness of the checkpoint `dir`, as `ringsam sharpness` measures them
/// with `cfg`'s `--sharpness_*` settings (this session's, not those the cell was trained with).
fn final_sharpness(dir: &std::path::Path, cfg: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<FinalSharpness, TrainError> {
    let flags = ringsam_train::sharpness::settings_as_flags(cfg);
    let (_, r) = ringsam_train::sharpness::of_checkpoint(dir, &flags, log)?;
    log(&r.describe());
    Ok(FinalSharpness { lambda_1: r.eigenvalues[0], lambda_ratio: r.ratio(), m_sharpness: r.m_sharpness })
}

/// The table, `results.csv` and the figure.
fn finish(exp: &Experiment, results: Vec<CellResult>) -> Result<Outcome, TrainError> {
    let groups = summary::groups(&results);
    let table = summary::table(&groups);
    let csv = exp.dir.join("results.csv");
    std::fs::write(&csv, summary::csv(&results)).map_err(|source| TrainError::Output { path: csv.display().to_string(), source })?;
    let seeds = format!("{} seed{}", exp.seeds, if exp.seeds == 1 { "" } else { "s" });
    let (figure, drawn) = match exp.kind {
        Kind::LabelNoise => {
            let f = exp.dir.join("label_noise.png");
            let title = format!("Test accuracy on clean labels against label noise ({seeds}, ± 1 sd)");
            (f.clone(), plot::accuracy_vs_noise(&f, &groups, &title))
        }
        Kind::CheapSam => {
            let f = exp.dir.join("cheap_sam.png");
            (f.clone(), plot::accuracy_vs_cost(&f, &groups, &format!("Test accuracy against time per step ({seeds}, ± 1 sd)")))
        }
    };
    drawn.map_err(|e| TrainError::Runtime(format!("drawing {}: {e}", figure.display())))?;
    let sharpness_figure = if groups.iter().all(|g| g.lambda_1.is_some()) && exp.sharpness && exp.kind == Kind::LabelNoise {
        let f = exp.dir.join("sharpness.png");
        let title = format!("Sharpness of the final weights against label noise ({seeds}, ± 1 sd)");
        plot::sharpness_vs_noise(&f, &groups, &title).map_err(|e| TrainError::Runtime(format!("drawing {}: {e}", f.display())))?;
        Some(f)
    } else {
        None
    };
    Ok(Outcome { results, table, csv, figure, sharpness_figure })
}
