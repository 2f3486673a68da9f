//! One replica's training step: SGD (ρ = 0) or SAM.
//!
//! A SAM step, exactly as the reference computes it (reference/sam.md §1.6):
//! 1. pass 1 at `w`: loss = CE(label smoothing) + ½·wd·‖w‖², gradient `g`; batch-norm running
//!    statistics from this pass are kept;
//! 2. `w_adv = w + ρ·g/‖g‖` (into a second buffer; `e = 0` when `‖g‖ = 0`);
//! 3. pass 2 at `w_adv`, same batch, same random draws: gradient `g'` (weight decay evaluated at
//!    `w_adv`); its batch-norm statistics are discarded;
//! 4. the base optimizer updates `w` (never `w_adv`) with `g'`.
//!
//! With ρ = 0 the step is plain SGD: one pass, no ascent.

use ringsam_models::{Model, ModelConfig, build};
use ringsam_nn::{Arena, Pass};
use ringsam_optim::{Nesterov, ascent_point};
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_backward, softmax_cross_entropy_forward};

use crate::TrainError;

/// Hyperparameters of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// SAM radius ρ; 0 is plain SGD.
    pub rho: f32,
    /// L2 weight decay coefficient (in the loss, as the reference).
    pub weight_decay: f32,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Nesterov momentum β.
    pub momentum: f32,
    /// Run seed (random draws are keyed by seed, step and layer).
    pub seed: u64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig { rho: 0.05, weight_decay: 5e-4, label_smoothing: 0.0, momentum: 0.9, seed: 0 }
    }
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Cross-entropy (no weight decay) of the pass whose gradient updated `w` (pass 2 under SAM).
    pub loss: f32,
    /// `‖g‖` of pass 1 (the ascent direction's norm); the only gradient under SGD.
    pub ascent_grad_norm: f64,
}

/// Model, parameters, optimizer state and the scratch buffers of one replica.
pub struct SamStep {
    /// The network (activation buffers inside).
    pub model: Box<dyn Model>,
    /// Parameters `w` and gradients.
    pub arena: Arena,
    /// Batch-norm running statistics.
    pub state: Vec<f32>,
    /// Hyperparameters.
    pub cfg: StepConfig,
    w_adv: Vec<f32>, // w + e, same layout as arena.params
    opt: Nesterov,
    step: u64,
    losses: Vec<f32>, // (N,)
    probs: Vec<f32>,  // (N, K)
    dlogits: Tensor,  // (N, K)
}

impl SamStep {
    /// Builds `model_name` and initialises it the reference's way (initialisation seed 0, as the
    /// reference always uses `PRNGKey(0)`; `cfg.seed` drives only the random draws of training).
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails the check
    pub fn new(model_name: &str, model_cfg: &ModelConfig, cfg: StepConfig) -> Result<Self, TrainError> {
        if !(cfg.rho >= 0.0) || !(cfg.weight_decay >= 0.0) || !(0.0..1.0).contains(&cfg.label_smoothing) {
            return Err(TrainError::Config(format!(
                "rho {} and weight decay {} must be >= 0, label smoothing {} in [0, 1)",
                cfg.rho, cfg.weight_decay, cfg.label_smoothing
            )));
        }
        let model = build(model_name, model_cfg)?;
        let mut arena = Arena::new(model.layout().clone());
        let mut state = vec![0.0; model.state_layout().total()];
        model.init(&mut arena.params, &mut state, 0);
        let n = arena.len();
        Ok(SamStep {
            model,
            w_adv: vec![0.0; n],
            opt: Nesterov::new(n, cfg.momentum),
            arena,
            state,
            cfg,
            step: 0,
            losses: Vec::new(),
            probs: Vec::new(),
            dlogits: Tensor::empty(),
        })
    }

    /// One step on batch `x (C, N, H, W)` with `labels (N,)` at learning rate `lr`.
    pub fn step(&mut self, x: &Tensor, labels: &[u32], lr: f32) -> Result<StepReport, TrainError> {
        let seed = self.cfg.seed;
        let report = if self.cfg.rho == 0.0 {
            let loss = self.loss_and_grad(false, x, labels, Pass::train(seed, self.step))?;
            let norm = ringsam_optim::global_norm(&self.arena.grads);
            StepReport { loss, ascent_grad_norm: norm }
        } else {
            self.loss_and_grad(false, x, labels, Pass::train(seed, self.step))?;
            let norm = ascent_point(&mut self.w_adv, &self.arena.params, &self.arena.grads, self.cfg.rho);
            let loss = self.loss_and_grad(true, x, labels, Pass::train_frozen_stats(seed, self.step))?;
            StepReport { loss, ascent_grad_norm: norm }
        };
        self.opt.update(&mut self.arena.params, &self.arena.grads, lr);
        self.step += 1;
        Ok(report)
    }

    /// Zeroes the gradients, then forward, loss and backward at `w` (or at `w_adv`), plus the
    /// weight-decay gradient `wd·w` at the same point. Returns the cross-entropy.
    fn loss_and_grad(&mut self, at_adv: bool, x: &Tensor, labels: &[u32], pass: Pass) -> Result<f32, TrainError> {
        let w: &[f32] = if at_adv { &self.w_adv } else { &self.arena.params };
        let logits = self.model.forward(w, &mut self.state, x, &pass)?;
        let [n, k] = match *logits.shape() {
            [n, k] => [n, k],
            ref s => return Err(TrainError::Config(format!("model returned logits of shape {s:?}"))),
        };
        let sh = LossShape { n, k };
        self.losses.resize(n, 0.0);
        self.probs.resize(n * k, 0.0);
        self.dlogits.resize(&[n, k]);
        let loss =
            softmax_cross_entropy_forward(&mut self.losses, &mut self.probs, logits.as_slice(), labels, self.cfg.label_smoothing, &sh)?;
        softmax_cross_entropy_backward(self.dlogits.as_mut_slice(), &self.probs, labels, self.cfg.label_smoothing, 1.0 / n as f32, &sh)?;
        self.arena.grads.fill(0.0);
        self.model.backward(w, &mut self.arena.grads, x, &self.dlogits)?;
        if self.cfg.weight_decay > 0.0 {
            ringsam_tensor::elementwise::axpy(&mut self.arena.grads, self.cfg.weight_decay, w)?;
        }
        Ok(loss)
    }
}
