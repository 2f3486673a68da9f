//! Sharpness diagnostics (`--log_sharpness_every`, `ringsam sharpness`; docs/SAM.md,
//! "Sharpness diagnostics"): the loss Hessian's top eigenvalues and the paper's m-sharpness, on
//! one fixed batch.
//!
//! The loss is the batch's mean cross-entropy (no label smoothing, no weight decay) as training
//! computes it: batch norm normalises with the batch's statistics (or the running ones when batch
//! norm is frozen) and leaves the running statistics alone, and random draws (dropout,
//! ShakeShake, ShakeDrop) are fixed by the run's seed and the step diagnosed, so the loss is one
//! deterministic function of the weights.
//!
//! - **Eigenvalues**: subspace iteration ([`subspace`]) on Hessian-vector products taken as
//!   central differences of the engine's gradient, `H·v ≈ (∇L(w + εv) − ∇L(w − εv)) / 2ε` for
//!   unit `v`, with `ε = 10⁻³·max(1, ‖w‖)`: exact for a quadratic up to f32 rounding (10⁻³
//!   relative in the tests), and within 2·10⁻³·λ1 of a dense finite-difference Hessian on a
//!   small smooth network. On ReLU networks a finite difference crosses kinks, so the product is
//!   the Hessian of the loss smoothed at the scale ε, not quite linear in `v`: the estimates
//!   jitter by a few per cent between rounds and depend on ε (docs/SAM.md gives the measured
//!   spread); smaller steps drown in f32 rounding. λ1/λk (λ1/λ5 by default, the ratio the paper
//!   reports) comes with them.
//! - **m-sharpness** (the paper's §4.1): the batch cut into chunks of `m` examples, each chunk
//!   `s` taking its own ascent `ε_s = ρ·∇L_s/‖∇L_s‖` (the paper's first-order solution of the
//!   inner maximisation, as SAM's step) and its own batch statistics; the m-sharpness is the mean
//!   over chunks of `L_s(w + ε_s) − L_s(w)`. A remainder smaller than `m` is left out.

pub mod jacobi;
pub mod subspace;

use ringsam_models::Model;
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_backward, softmax_cross_entropy_forward};

use crate::TrainError;
use crate::config::TrainConfig;
use crate::step::copy_examples;

/// What to measure (`--sharpness_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharpnessConfig {
    /// Eigenvalues estimated.
    pub eigs: usize,
    /// Most rounds of the subspace iteration.
    pub iters: usize,
    /// Its stopping tolerance, relative to λ1.
    pub tol: f64,
    /// Examples per ascent of the m-sharpness.
    pub m: usize,
    /// The m-sharpness's ρ.
    pub rho: f32,
    /// Seed of the random draws and the iteration's start.
    pub seed: u64,
    /// Batch norm frozen to its running statistics (as training runs it).
    pub frozen_bn: bool,
}

impl From<&TrainConfig> for SharpnessConfig {
    fn from(cfg: &TrainConfig) -> Self {
        SharpnessConfig {
            eigs: cfg.sharpness_eigs,
            iters: cfg.sharpness_iters,
            tol: cfg.sharpness_tol,
            m: cfg.sharpness_m,
            rho: cfg.sharpness_rho,
            seed: cfg.run_seed,
            frozen_bn: cfg.bn_frozen(),
        }
    }
}

/// What was measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SharpnessReport {
    /// The batch's loss at `w`.
    pub loss: f64,
    /// Hessian eigenvalues, largest first.
    pub eigenvalues: Vec<f64>,
    /// Rounds of the subspace iteration.
    pub iterations: usize,
    /// Whether it met the tolerance before the last round.
    pub converged: bool,
    /// Without convergence, λ1's range over the rounds averaged, relative ([`subspace`]).
    pub spread: f64,
    /// Gradient evaluations spent.
    pub gradients: usize,
    /// The m-sharpness, with its m and ρ.
    pub m_sharpness: f64,
    /// Its m.
    pub m: usize,
    /// Its ρ.
    pub rho: f32,
    /// Examples in the batch.
    pub examples: usize,
}

impl SharpnessReport {
    /// λ1 / λk, the last eigenvalue estimated (None with one, or when λk is not positive).
    pub fn ratio(&self) -> Option<f64> {
        match self.eigenvalues[..] {
            [l1, .., lk] if lk > 0.0 => Some(l1 / lk),
            _ => None,
        }
    }

    /// TensorBoard scalars: `sharpness/lambda_1` …, `sharpness/lambda_1_over_lambda_k`,
    /// `sharpness/m_sharpness`, `sharpness/loss`.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> =
            self.eigenvalues.iter().enumerate().map(|(i, &l)| (format!("sharpness/lambda_{}", i + 1), l)).collect();
        if let Some(r) = self.ratio() {
            v.push((format!("sharpness/lambda_1_over_lambda_{}", self.eigenvalues.len()), r));
        }
        v.push(("sharpness/m_sharpness".into(), self.m_sharpness));
        v.push(("sharpness/loss".into(), self.loss));
        v
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        let eig: Vec<String> = self.eigenvalues.iter().map(|l| format!("{l:.4}")).collect();
        let ratio = self.ratio().map_or(String::new(), |r| format!(", λ1/λ{} {r:.2}", self.eigenvalues.len()));
        let conv = if self.converged {
            String::new()
        } else {
            format!(" (not converged: the last half's mean, λ1 within ±{:.1}%)", 50.0 * self.spread)
        };
        format!(
            "sharpness on {} examples: loss {:.4}, Hessian λ [{}]{ratio} after {} rounds{conv}, {}-sharpness at ρ {} {:.5} ({} gradients)",
            self.examples,
            self.loss,
            eig.join(", "),
            self.iterations,
            self.m,
            self.rho,
            self.m_sharpness,
            self.gradients
        )
    }
}

/// The loss of one fixed batch as a function of the weights (see the module docs).
pub struct BatchLoss<'a> {
    model: &'a mut dyn Model,
    state: Tensor, // a copy: never written back
    pass: Pass,
    grads: Tensor,
    probs: Vec<f32>,
    losses: Vec<f32>,
    gradients: usize,
}

impl<'a> BatchLoss<'a> {
    /// `state` holds the running statistics (copied); `seed` and `step` fix the random draws.
    pub fn new(model: &'a mut dyn Model, state: &[f32], seed: u64, step: u64, frozen_bn: bool) -> Self {
        let n = model.layout().total();
        BatchLoss {
            model,
            state: Tensor::from(state.to_vec()),
            pass: Pass::train_frozen_stats(seed, step).with_frozen_bn(frozen_bn),
            grads: Tensor::from(vec![0.0; n]),
            probs: Vec::new(),
            losses: Vec::new(),
            gradients: 0,
        }
    }

    /// The mean cross-entropy of `x (C, N, H, W)` with `labels` at `w`, and its gradient into
    /// `grad` when given.
    pub fn eval(&mut self, w: &Tensor, x: &Tensor, labels: &[u32], grad: Option<&mut [f32]>) -> Result<f64, TrainError> {
        let logits = self.model.forward(w, &mut self.state, x, &self.pass)?;
        let (n, k) = match *logits.shape() {
            [n, k] => (n, k),
            ref s => return Err(TrainError::Runtime(format!("model returned logits of shape {s:?}"))),
        };
        let sh = LossShape { n, k };
        self.losses.resize(n, 0.0);
        self.probs.resize(n * k, 0.0);
        let loss = softmax_cross_entropy_forward(&mut self.losses, &mut self.probs, logits.as_slice(), labels, 0.0, &sh)?;
        if let Some(g) = grad {
            let mut dlogits = Tensor::from_vec(&[n, k], vec![0.0; n * k])?;
            softmax_cross_entropy_backward(dlogits.as_mut_slice(), &self.probs, labels, 0.0, 1.0 / n as f32, &sh)?;
            self.grads.fill(0.0);
            self.model.backward(w, &mut self.grads, x, &dlogits)?;
            g.copy_from_slice(&self.grads);
            self.gradients += 1;
        }
        Ok(loss as f64)
    }

    /// Gradient evaluations so far.
    pub fn gradients(&self) -> usize {
        self.gradients
    }
}

/// Measures the batch `x (C, N, H, W)`, `labels` at `w` (see the module docs). `progress` hears
/// about each phase.
pub fn measure(
    loss: &mut BatchLoss<'_>,
    w: &[f32],
    x: &Tensor,
    labels: &[u32],
    cfg: &SharpnessConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<SharpnessReport, TrainError> {
    let [_, n, _, _] = x.dims4("sharpness")?;
    if labels.len() != n || n == 0 {
        return Err(TrainError::Runtime(format!("sharpness: a batch of {n} images with {} labels", labels.len())));
    }
    if cfg.m > n {
        return Err(TrainError::Config(format!("--sharpness_m {} is larger than the batch of {n} (the training split's size?)", cfg.m)));
    }
    let at_loss = loss.eval(&Tensor::from(w.to_vec()), x, labels, None)?;
    progress("Hessian eigenvalues");
    let eig = hessian_eigenvalues(w, cfg, |at, g| loss.eval(at, x, labels, Some(g)).map(|_| ()))?;
    progress("m-sharpness");
    let m_sharpness = m_sharpness(loss, w, x, labels, cfg.m, cfg.rho)?;
    Ok(SharpnessReport {
        loss: at_loss,
        eigenvalues: eig.values,
        iterations: eig.iterations,
        converged: eig.converged,
        spread: eig.spread,
        gradients: loss.gradients(),
        m_sharpness,
        m: cfg.m,
        rho: cfg.rho,
        examples: n,
    })
}

/// The finite differences' step relative to `max(1, ‖w‖)` (see the module docs).
pub const FD_STEP: f64 = 1e-3;

/// The step of the finite differences at `w` (see the module docs).
pub fn fd_step(w: &[f32]) -> f64 {
    FD_STEP * ringsam_optim::global_norm(w).max(1.0)
}

/// The top `cfg.eigs` eigenvalues of the Hessian at `w` of the function whose gradient
/// `grad(at, out)` writes, by subspace iteration on central-difference Hessian-vector products.
pub fn hessian_eigenvalues(
    w: &[f32],
    cfg: &SharpnessConfig,
    mut grad: impl FnMut(&Tensor, &mut [f32]) -> Result<(), TrainError>,
) -> Result<subspace::Eigenvalues, TrainError> {
    let dim = w.len();
    let eps = fd_step(w);
    let mut at = Tensor::from(w.to_vec());
    let (mut g_plus, mut g_minus) = (vec![0.0f32; dim], vec![0.0f32; dim]);
    subspace::top_eigenvalues(dim, cfg.eigs, cfg.iters, cfg.tol, cfg.seed, |v, out| {
        for (sign, g) in [(1.0, &mut g_plus), (-1.0, &mut g_minus)] {
            at.iter_mut().zip(w).zip(v).for_each(|((a, &w), &v)| *a = (w as f64 + sign * eps * v as f64) as f32);
            grad(&at, g)?;
        }
        let s = (0.5 / eps) as f32;
        out.iter_mut().zip(g_plus.iter().zip(&g_minus)).for_each(|(o, (&p, &m))| *o = (p - m) * s);
        Ok(())
    })
}

/// The mean over chunks of `m` examples of `L_s(w + ρ·∇L_s/‖∇L_s‖) − L_s(w)` (module docs).
pub fn m_sharpness(loss: &mut BatchLoss<'_>, w: &[f32], x: &Tensor, labels: &[u32], m: usize, rho: f32) -> Result<f64, TrainError> {
    let [c, n, h, wd] = x.dims4("m-sharpness")?;
    let chunks = n / m.max(1);
    if chunks == 0 {
        return Err(TrainError::Config(format!("--sharpness_m {m} is larger than the batch of {n}")));
    }
    let at = Tensor::from(w.to_vec());
    let (mut g, mut adv, mut chunk) = (vec![0.0f32; w.len()], Tensor::from(vec![0.0; w.len()]), Tensor::empty());
    let mut sum = 0.0;
    for s in 0..chunks {
        let (lo, hi) = (s * m, (s + 1) * m);
        copy_examples(x, [c, n, h, wd], lo, hi, &mut chunk);
        let before = loss.eval(&at, &chunk, &labels[lo..hi], Some(&mut g))?;
        ringsam_optim::ascent_point(&mut adv, w, &g, rho);
        sum += loss.eval(&adv, &chunk, &labels[lo..hi], None)? - before;
    }
    Ok(sum / chunks as f64)
}

/// `cfg`'s `--sharpness_*` settings as flags, for [`of_checkpoint`] (to measure a checkpoint as
/// another run's settings say).
pub fn settings_as_flags(cfg: &TrainConfig) -> Vec<String> {
    let pairs = [
        ("--sharpness_batch", cfg.sharpness_batch.to_string()),
        ("--sharpness_eigs", cfg.sharpness_eigs.to_string()),
        ("--sharpness_iters", cfg.sharpness_iters.to_string()),
        ("--sharpness_tol", cfg.sharpness_tol.to_string()),
        ("--sharpness_m", cfg.sharpness_m.to_string()),
        ("--sharpness_rho", cfg.sharpness_rho.to_string()),
    ];
    pairs.into_iter().flat_map(|(k, v)| [k.to_string(), v]).collect()
}

/// The diagnostics of the checkpoint in `dir`, on the first `--sharpness_batch` examples of its
/// run's training split (labels as that run trained on them), with the random draws of the step
/// it was written at. `flags` are `ringsam train` flags laid over the run's configuration (the
/// `--sharpness_*` settings, `--data_dir`); another model or dataset is refused. `log` hears
/// about the data and each phase. Returns the configuration used with the report.
pub fn of_checkpoint(
    dir: &std::path::Path,
    flags: &[String],
    log: &mut dyn FnMut(&str),
) -> Result<(TrainConfig, SharpnessReport), TrainError> {
    let saved = crate::checkpoint::read_training_state(dir)?;
    let toml = toml::to_string(&saved.config).map_err(|e| TrainError::Config(format!("{}: state.json: {e}", dir.display())))?;
    let cfg = TrainConfig::from_args(flags, Some(&toml)).map_err(TrainError::Config)?;
    let change = crate::resume::ConfigChange::between(&saved.config, &cfg);
    if !change.never.is_empty() {
        return Err(TrainError::Config(format!("{} holds another model or dataset ({})", dir.display(), change.never.join(", "))));
    }
    let data = crate::data_source::TrainData::open(&cfg, log)?;
    let batch = data.eval_batches(ringsam_data::Split::Train, cfg.sharpness_batch, 0, 1)?.next();
    let b = batch.ok_or_else(|| TrainError::Runtime("the training split is empty".into()))?;
    let x = Tensor::from_vec(&[b.c, b.n, b.h, b.w], b.images)?;
    let model_cfg = ringsam_models::ModelConfig { num_classes: data.num_classes(), in_channels: data.channels() };
    let share = ringsam_data::share::BatchShare::alone(1);
    let mut st = crate::SamStep::new(&cfg.model_name, &model_cfg, crate::StepConfig::from(&cfg), None, share)?;
    let c = crate::checkpoint::load(dir, st.model().layout(), st.model().state_layout())?;
    st.restore(crate::step::Restore { params: &c.params, state: &c.state, optim: &c.optim, step: c.training.step })?;
    let report = st.sharpness(&x, &b.labels, &SharpnessConfig::from(&cfg), log)?;
    Ok((cfg, report))
}
