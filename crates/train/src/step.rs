//! One replica's training step: SGD (ρ = 0) or SAM.
//!
//! A SAM step, exactly as the reference computes it (docs/SAM.md has the details and the
//! differences):
//! 1. pass 1 at `w`: loss = CE(label smoothing) + ½·wd·‖w‖², gradient `g`; batch-norm running
//!    statistics from this pass are kept;
//! 2. `w_adv = w + ρ·g/‖g‖` (ASAM: `ρ·T²g/‖Tg‖`) into a second buffer; `e = 0` when `‖g‖ = 0`;
//! 3. pass 2 at `w_adv`, same batch, same random draws: gradient `g'` (weight decay evaluated at
//!    `w_adv`); its batch-norm statistics are discarded;
//! 4. `g'` is clipped by global norm and the base optimizer updates `w` (never `w_adv`).
//!
//! With ρ = 0 the step is plain SGD: one pass, no ascent. So is every step that `--sam_every` or
//! LookSAM leaves out of its schedule; LookSAM adds its reused direction to that step's gradient
//! after the exchange ([`crate::cheap_sam`]). With `sam_m = M` the batch is cut into
//! chunks of `M` examples that each take their own ascent and their own batch statistics (as
//! `N/M` devices without `sync_perturbations` would), and the descent gradients are averaged.
//! Metrics (`loss`, `error_rate`) come from the logits of the pass whose gradient is applied —
//! pass 2 under SAM — as the reference reports them.
//!
//! Micro-batches ([`BatchShare`]): the global batch is `units` micro-batches (`--max_replicas ×
//! --grad_accum_steps`), and this replica computes its share of them, whatever the world size.
//! Each pass runs over the replica's micro-batches, summing their gradients, and only then
//! ascends or updates; activations are held for one micro-batch. Every micro-batch is a
//! batch-norm batch of its own, as a device is: each starts from the step's running statistics,
//! and the step's new statistics are the mean of every micro-batch's update over the whole
//! world (the reference averages its devices' statistics; the running average is linear, so
//! averaging every step equals averaging once before evaluation). Without `sync_perturbations`
//! every micro-batch also ascends on its own: m-sharpness with m = the micro-batch.
//!
//! Data-parallel ([`SamStep::sync`] set): gradients are scaled by one over the examples of the
//! whole exchange and SUMMED over the replicas as backward produces them ([`crate::grad_sync`]),
//! so a replica holding two micro-batches weighs twice as much as one holding one — pass 1's over
//! the replica's group when `sync_perturbations` is on (the ascent is then the same everywhere);
//! pass 2's (or SGD's only gradient) always over the world, before clipping and the update, so
//! parameters stay identical on every replica. The batch-norm statistics are summed after it.

use std::ops::Range;
use std::sync::Arc;

use ringsam_kernels::Gpu;
use ringsam_models::{Model, ModelConfig, build};
use ringsam_nn::{Arena, Pass};
use ringsam_optim::weight_decay::{add_l2_gradient, decay_decoupled};
use ringsam_optim::{BaseOptimizer, OptimizerKind, asam_ascent_point, ascent_point, clip_by_global_norm, global_norm};
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{
    LossShape, Mixed, softmax_cross_entropy_backward, softmax_cross_entropy_forward, softmax_cross_entropy_mixed_backward,
    softmax_cross_entropy_mixed_forward,
};

use crate::TrainError;
use crate::cheap_sam::{DIRECTION_BUFFER, ReusedDirection, SamSchedule};
use crate::cluster::{Cluster, Scope};
use crate::device_step::DeviceStep;
use crate::grad_sync::{BucketPlan, ExchangeStats, GradSync};
use ringsam_data::share::BatchShare;

mod pipeline;

/// Mixup on a GPU: refused by name.
fn mixup_on_gpu() -> TrainError {
    TrainError::Config("mixup is not on the GPU step yet: train it with --device cpu".into())
}

/// Hyperparameters of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// SAM radius ρ; 0 is plain SGD.
    pub rho: f32,
    /// ASAM (adaptive SAM) instead of SAM.
    pub adaptive: bool,
    /// ASAM's η in `T = |w| + η`.
    pub asam_eta: f32,
    /// Weight decay coefficient.
    pub weight_decay: f32,
    /// Decoupled weight decay (`w ← w − lr·wd·w` after the update) instead of L2 in the loss.
    pub decoupled_weight_decay: bool,
    /// Only tensors with more than one dimension decay (the reference's `no_weight_decay_on_bn`).
    pub no_weight_decay_on_bn: bool,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Clip the applied gradient to this global norm (0: no clipping).
    pub gradient_clipping: f32,
    /// Base optimizer.
    pub optimizer: OptimizerKind,
    /// m-sharpness: examples per ascent (None: the whole batch).
    pub sam_m: Option<usize>,
    /// Run seed (random draws are keyed by seed, step and layer).
    pub seed: u64,
    /// One ascent for the whole batch (false: one per micro-batch; see the module docs).
    pub sync_perturbations: bool,
    /// Batch norm normalises with its running statistics in training passes and leaves them
    /// alone (finetuning a pretrained checkpoint, as the reference does).
    pub frozen_bn: bool,
    /// Which steps take SAM's two passes (`--sam_every`, LookSAM; [`crate::cheap_sam`]).
    pub schedule: SamSchedule,
}

impl Default for StepConfig {
    /// The run defaults (`TrainConfig::default()`; there is no second list of them).
    fn default() -> Self {
        StepConfig::from(&crate::config::TrainConfig::default())
    }
}

impl From<&crate::config::TrainConfig> for StepConfig {
    /// The step's hyperparameters from a run configuration ([`crate::config::TrainConfig::validate`]
    /// checks them).
    fn from(cfg: &crate::config::TrainConfig) -> Self {
        StepConfig {
            rho: cfg.sam_rho,
            adaptive: cfg.adaptive_sam,
            asam_eta: cfg.asam_eta,
            weight_decay: cfg.weight_decay,
            decoupled_weight_decay: cfg.decoupled_weight_decay,
            no_weight_decay_on_bn: cfg.no_weight_decay_on_bn,
            label_smoothing: cfg.label_smoothing,
            gradient_clipping: cfg.gradient_clipping,
            optimizer: if cfg.use_rmsprop {
                OptimizerKind::RmsProp { beta: cfg.momentum, beta2: 0.9, eps: 1e-3 }
            } else {
                OptimizerKind::Nesterov { beta: cfg.momentum }
            },
            sam_m: cfg.sam_m,
            seed: cfg.run_seed,
            sync_perturbations: cfg.sync_perturbations,
            frozen_bn: cfg.bn_frozen(),
            schedule: SamSchedule::from_config(cfg),
        }
    }
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Cross-entropy (no weight decay) of the pass whose gradient updated `w`.
    pub loss: f32,
    /// Fraction of the batch misclassified by the same logits.
    pub error_rate: f32,
    /// Norm of the applied gradient after clipping (the reference's `gradient_norm`).
    pub grad_norm: f64,
    /// Norm of pass 1's gradient (the ascent direction), or of the only gradient under SGD.
    pub ascent_grad_norm: f64,
    /// `‖w‖` after the update (the reference's `param_norm`).
    pub param_norm: f64,
    /// The ascent gradient's exchange (zero when it is not exchanged).
    pub ascent_exchange: ExchangeStats,
    /// The applied gradient's exchange (zero on a single replica).
    pub descent_exchange: ExchangeStats,
}

/// Model, parameters, optimizer state and the scratch buffers of one replica.
///
/// Constructed complete ([`SamStep::new`]); the trainer changes it only through [`SamStep::step`],
/// [`SamStep::restore`] (a checkpoint's state) and [`SamStep::rejoin`] (new peers).
pub struct SamStep {
    model: Box<dyn Model>,
    arena: Arena,       // parameters w and their gradients, (P,) each
    state: Tensor,      // batch-norm running statistics
    opt: BaseOptimizer, // base optimizer and its state
    cfg: StepConfig,
    step: u64,              // steps taken so far (the global step; keys the random draws)
    sync: Option<GradSync>, // the other replicas, when data-parallel (see the module docs)
    // This replica's micro-batches of the global batch. Per-example random draws key on the
    // example's place in the global batch, so any number of replicas draws what one would.
    share: BatchShare,
    group: Range<usize>,            // the ranks the ascent gradient is summed over
    example_offset: u64,            // this replica's first example in the global batch (per step)
    chunk_offset: u64,              // place of the current chunk (sam_m or micro-batch) in the batch
    decayed: Vec<Range<usize>>,     // parameter ranges that take weight decay
    w_adv: Tensor,                  // w + e, same layout as arena.params
    g_sum: Vec<f32>,                // descent gradients summed over chunks
    stats: StatsMean,               // the micro-batches' batch-norm statistics, averaged
    chunk: Tensor,                  // (C, M, H, W) copy of one sam_m chunk
    micro: Tensor,                  // (C, n, H, W) copy of one accumulation micro-batch
    losses: Vec<f32>,               // (N,)
    probs: Vec<f32>,                // (N, K)
    dlogits: Tensor,                // (N, K)
    sam_now: bool,                  // this step takes SAM's two passes
    reuse: Option<ReusedDirection>, // LookSAM's direction ([`crate::cheap_sam`])
    // On a GPU ([`SamStep::to_device`]): the step runs there, and the host's w, statistics and
    // optimizer buffers are a copy refreshed by [`SamStep::sync_host`] (`host_stale` until then).
    device: Option<Box<DeviceStep>>,
    host_stale: bool,
    staged: Option<pipeline::Staged>,     // the next step's batch ([`SamStep::stage`])
    launched: Option<pipeline::Launched>, // the step launched and not finished
}

impl SamStep {
    /// Builds `model_name` and initialises it the reference's way (initialisation seed 0, as the
    /// reference always uses `PRNGKey(0)`; `cfg.seed` drives only the random draws of training).
    /// `cfg` comes from a validated [`crate::config::TrainConfig`] (its one place of checks).
    /// Data-parallel, `peers` holds the rings and how gradients are cut into buckets for them;
    /// `share` is this replica's part of each global batch (one replica: all `units` micro-batches).
    pub fn new(
        model_name: &str,
        model_cfg: &ModelConfig,
        cfg: StepConfig,
        peers: Option<(Cluster, BucketPlan)>,
        share: BatchShare,
    ) -> Result<Self, TrainError> {
        let model = build(model_name, model_cfg)?;
        let mut arena = Arena::new(model.layout().clone());
        let mut state = Tensor::from(vec![0.0; model.state_layout().total()]);
        model.init(&mut arena.params, &mut state, 0);
        let decayed = decayed_ranges(&arena.layout, &cfg);
        let n = arena.len();
        Ok(SamStep {
            opt: BaseOptimizer::new(cfg.optimizer, n),
            w_adv: Tensor::from(vec![0.0; n]),
            g_sum: Vec::new(),
            stats: StatsMean::default(),
            chunk: Tensor::empty(),
            micro: Tensor::empty(),
            model,
            arena,
            state,
            cfg,
            step: 0,
            group: peers.as_ref().map_or(0..1, |(c, _)| c.group_ranks()),
            sync: peers.map(|(c, plan)| GradSync::new(c, n, plan)),
            share,
            example_offset: 0,
            chunk_offset: 0,
            decayed,
            losses: Vec::new(),
            probs: Vec::new(),
            dlogits: Tensor::empty(),
            sam_now: false,
            reuse: match cfg.schedule {
                SamSchedule::LookSam { alpha, .. } => Some(ReusedDirection::new(alpha, n)),
                SamSchedule::Every(_) => None,
            },
            device: None,
            host_stale: false,
            staged: None,
            launched: None,
        })
    }

    /// Moves the step to `gpu` ([`DeviceStep`]): the model's state as it is now goes there, and
    /// every later step runs there. What the device step does not do yet is refused here, by
    /// name, rather than run differently.
    pub fn to_device(&mut self, model_name: &str, gpu: &Arc<Gpu>) -> Result<(), TrainError> {
        let refuse = |what: &str| Err(TrainError::Config(format!("{what} is not on the GPU step yet: train it with --device cpu")));
        if self.cfg.rho > 0.0 && !self.cfg.sync_perturbations && self.share.units != self.share.world {
            return refuse("--sync_perturbations=false with several micro-batches per replica (an ascent for each)");
        }
        if self.cfg.sam_m.is_some() {
            return refuse("--sam_m");
        }
        if self.looksam().is_some() {
            return refuse("LookSAM (--looksam_k)");
        }
        let mut d = DeviceStep::new(model_name, &self.model.config(), self.cfg, gpu)?;
        d.set_peers(self.share, self.group.clone(), self.sync.as_ref().map(GradSync::plan));
        d.upload(&self.arena.params, &self.state, &self.opt.state(), self.step)?;
        self.device = Some(Box::new(d));
        Ok(())
    }

    /// The device the step runs on, if not the CPU.
    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        self.device.as_ref().map(|d| d.gpu())
    }

    /// Makes the host's w, statistics and optimizer buffers the device's (a no-op on the CPU):
    /// before a checkpoint or anything else that reads them.
    pub fn sync_host(&mut self) -> Result<(), TrainError> {
        if let (Some(d), true) = (&self.device, self.host_stale) {
            d.download_into(&mut self.arena.params, &mut self.state, self.opt.state_mut())?;
            self.host_stale = false;
        }
        Ok(())
    }

    /// After the host's copy changed (a checkpoint or weights loaded): the device takes it.
    fn upload_host(&mut self) -> Result<(), TrainError> {
        if let Some(d) = &mut self.device {
            d.upload(&self.arena.params, &self.state, &self.opt.state(), self.step)?;
            self.host_stale = false;
        }
        Ok(())
    }

    fn assert_host_fresh(&self, what: &str) {
        assert!(!self.host_stale, "SamStep::{what} read the host's copy of a GPU step's state without SamStep::sync_host");
    }

    /// Takes over a checkpoint's state: parameters, batch-norm statistics, optimizer buffers (by
    /// name) and the step count. Lengths are the checkpoint loader's to verify against the layout.
    pub fn restore(&mut self, saved: Restore<'_>) -> Result<(), TrainError> {
        if saved.params.len() != self.arena.params.len() || saved.state.len() != self.state.len() {
            return Err(TrainError::Checkpoint(format!(
                "{} parameters and {} statistics, the model has {} and {}",
                saved.params.len(),
                saved.state.len(),
                self.arena.params.len(),
                self.state.len()
            )));
        }
        for (name, buf) in self.opt.state_mut() {
            match saved.optim(name) {
                Some(v) if v.len() == buf.len() => buf.copy_from_slice(v),
                _ => {
                    return Err(TrainError::Checkpoint(format!("no optimizer buffer {name} of {} values (another optimizer?)", buf.len())));
                }
            }
        }
        if let (Some(r), true) = (self.reuse.as_mut(), matches!(self.cfg.schedule, SamSchedule::LookSam { .. })) {
            match saved.optim(DIRECTION_BUFFER) {
                Some(d) if d.len() != self.arena.params.len() => {
                    return Err(TrainError::Checkpoint(format!(
                        "{DIRECTION_BUFFER} of {} values, the model has {}",
                        d.len(),
                        self.arena.params.len()
                    )));
                }
                d => r.restore(d),
            }
        }
        self.arena.params.copy_from_slice(saved.params);
        self.state.copy_from_slice(saved.state);
        self.step = saved.step;
        self.upload_host()
    }

    /// Joins other peers (or none): new rings and this replica's new place in the global batch.
    /// Returns the rings it held, for the caller to close.
    pub fn rejoin(&mut self, peers: Option<(Cluster, BucketPlan)>, share: BatchShare) -> Option<Cluster> {
        self.share = share;
        self.group = peers.as_ref().map_or(0..1, |(c, _)| c.group_ranks());
        let n = self.arena.len();
        if let Some(d) = self.device.as_mut() {
            d.set_peers(share, self.group.clone(), peers.as_ref().map(|(_, plan)| *plan));
        }
        std::mem::replace(&mut self.sync, peers.map(|(c, plan)| GradSync::new(c, n, plan))).map(|s| s.cluster)
    }

    /// Sets ρ (benchmarks time SGD and SAM on one model).
    pub fn set_rho(&mut self, rho: f32) {
        self.cfg.rho = rho;
    }

    /// Sets which steps take SAM's two passes (benchmarks time the cheaper variants on one model,
    /// in alternation). LookSAM's direction, once made, is kept while another schedule runs. On a
    /// GPU the device step takes the schedule (and refuses LookSAM).
    pub fn set_schedule(&mut self, schedule: SamSchedule) -> Result<(), TrainError> {
        if let Some(d) = self.device.as_mut() {
            d.set_schedule(schedule)?;
        }
        self.cfg.schedule = schedule;
        if let SamSchedule::LookSam { alpha, .. } = schedule {
            let n = self.arena.len();
            self.reuse.get_or_insert_with(|| ReusedDirection::new(alpha, n)).set_alpha(alpha);
        }
        Ok(())
    }

    /// LookSAM's direction, when the schedule is LookSAM's.
    fn looksam(&self) -> Option<&ReusedDirection> {
        self.reuse.as_ref().filter(|_| matches!(self.cfg.schedule, SamSchedule::LookSam { .. }))
    }

    /// Sharpness diagnostics at the current weights on the batch `x`, `labels`
    /// ([`crate::sharpness`]); the random draws are the current step's. On the CPU only.
    pub fn sharpness(
        &mut self,
        x: &Tensor,
        labels: &[u32],
        cfg: &crate::sharpness::SharpnessConfig,
        progress: &mut dyn FnMut(&str),
    ) -> Result<crate::sharpness::SharpnessReport, TrainError> {
        if self.device.is_some() {
            return Err(TrainError::Config("sharpness diagnostics are not on the GPU step yet: run them with --device cpu".into()));
        }
        let mut loss = crate::sharpness::BatchLoss::new(self.model.as_mut(), &self.state, cfg.seed, self.step, cfg.frozen_bn);
        crate::sharpness::measure(&mut loss, &self.arena.params, x, labels, cfg, progress)
    }

    /// The network.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// Starts from weights made elsewhere, matched by name ([`crate::init_from`]).
    pub fn load_initial(&mut self, src: &crate::init_from::SourceTensors) -> Result<crate::init_from::LoadReport, TrainError> {
        self.sync_host()?;
        let report =
            crate::init_from::load_into(src, self.model.layout(), self.model.state_layout(), &mut self.arena.params, &mut self.state)?;
        self.upload_host()?;
        Ok(report)
    }

    /// Parameters `w`, in the model's layout. On a GPU, after [`SamStep::sync_host`].
    pub fn params(&self) -> &[f32] {
        self.assert_host_fresh("params");
        &self.arena.params
    }

    /// Batch-norm running statistics, in the model's state layout. On a GPU, after
    /// [`SamStep::sync_host`].
    pub fn state(&self) -> &[f32] {
        self.assert_host_fresh("state");
        &self.state
    }

    /// Named optimizer buffers, in the parameter layout, with LookSAM's direction when it is on.
    /// On a GPU, after [`SamStep::sync_host`].
    pub fn optim_state(&self) -> Vec<(&'static str, &[f32])> {
        self.assert_host_fresh("optim_state");
        let mut bufs = self.opt.state();
        if let Some(r) = self.looksam() {
            bufs.push((DIRECTION_BUFFER, r.direction()));
        }
        bufs
    }

    /// Steps taken (the global step).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The rings, when data-parallel.
    pub fn cluster(&mut self) -> Option<&mut Cluster> {
        self.sync.as_mut().map(|s| &mut s.cluster)
    }

    /// The model with weights and statistics to evaluate: `self`'s own (on its device), or
    /// `other`'s (the EMA's, on the host).
    pub fn eval_parts<'a>(&'a mut self, other: Option<(&'a Tensor, &'a mut Tensor)>) -> (&'a mut dyn Model, &'a Tensor, &'a mut Tensor) {
        match (other, &mut self.device) {
            (Some((p, s)), _) => (self.model.as_mut(), p, s),
            (None, Some(d)) => d.eval_parts(),
            (None, None) => (self.model.as_mut(), &self.arena.params, &mut self.state),
        }
    }

    /// The parameters and the rings, borrowed together (on a GPU, the host's copy refreshed
    /// first): to compare fingerprints across replicas.
    pub fn params_and_cluster(&mut self) -> Result<(&[f32], Option<&mut Cluster>), TrainError> {
        self.sync_host()?;
        Ok((&self.arena.params, self.sync.as_mut().map(|s| &mut s.cluster)))
    }

    /// Closes the rings (the end of a data-parallel run).
    pub fn close(&mut self) {
        if let Some(s) = self.sync.take() {
            s.cluster.close();
        }
    }

    /// One step on batch `x (C, N, H, W)` with `labels (N,)` at learning rate `lr`.
    pub fn step(&mut self, x: &Tensor, labels: &[u32], lr: f32) -> Result<StepReport, TrainError> {
        self.step_mixed(x, labels, None, lr)
    }

    /// [`SamStep::step`] on a mixup batch: with `mix = Some((partners, λ))` image `i` is
    /// `λ·x_i + (1 − λ)·x_j` for its partner `j` and the loss is `λ·CE(labels) + (1 −
    /// λ)·CE(partners)` (both SAM passes; `partners[i]` is `j`'s label, [`Batch::partner_labels`]).
    /// Error rates count against `labels`, the heavier target (λ ≥ ½).
    ///
    /// [`Batch::partner_labels`]: ringsam_data::Batch::partner_labels
    pub fn step_mixed(&mut self, x: &Tensor, labels: &[u32], mix: Option<(&[u32], f32)>, lr: f32) -> Result<StepReport, TrainError> {
        if mix.is_some_and(|(p, _)| p.len() != labels.len()) {
            return Err(TrainError::Runtime(format!("{} labels with another number of mixup partners", labels.len())));
        }
        if let Some(d) = &mut self.device {
            if mix.is_some() {
                return Err(mixup_on_gpu());
            }
            self.staged = None; // the device step stages this batch in its place
            let report = d.step(x, labels, lr, self.sync.as_mut().map(|s| &mut s.cluster))?;
            (self.step, self.host_stale) = (self.step + 1, true);
            return Ok(report);
        }
        let targets = Targets { labels, mix };
        let [c, n, h, w] = x.dims4("SamStep::step")?;
        if labels.len() != n || n == 0 {
            return Err(TrainError::Runtime(format!("batch of {n} images with {} labels", labels.len())));
        }
        let units = self.share.my_units().len();
        if !n.is_multiple_of(units) {
            return Err(TrainError::Runtime(format!("a batch of {n} cannot be cut into {units} micro-batches")));
        }
        let micro = n / units;
        self.example_offset = (micro * self.share.my_units().start) as u64;
        self.sam_now = self.cfg.rho > 0.0 && self.cfg.schedule.sam_at(self.step);
        let chunk = match self.cfg.sam_m {
            _ if !self.sam_now => None, // an SGD step is one pass over the whole batch
            Some(_) if self.share.units > 1 => {
                return Err(TrainError::Config(
                    "--sam_m with several replicas or micro-batches is not supported: omit --sam_m (with --sync_perturbations=false, m is the micro-batch)".into(),
                ));
            }
            Some(m) => Some(m.min(n)),
            None if self.per_micro_batch_ascent() => Some(micro),
            None => None,
        };
        let mut exchanges = [ExchangeStats::default(); 2];
        self.stats.begin(&self.state);
        let grads = match chunk {
            None => self.sharpness_aware_grad(x, targets, micro, Some(&mut exchanges)),
            Some(m) => self.chunked_grad(x, targets, [c, n, h, w], m, micro, &mut exchanges[1]),
        };
        let (loss, errors, ascent_norm) = match grads.and_then(|r| self.finish_stats().map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                // A failed step (a peer lost mid-exchange) leaves the state as it found it: the
                // parameters are untouched until the update, and the statistics go back, so
                // this replica holds exactly the last completed step (what recovery streams).
                self.state.copy_from_slice(&self.stats.start);
                return Err(e);
            }
        };
        let grad_norm = clip_by_global_norm(&mut self.arena.grads, self.cfg.gradient_clipping);
        let clipped_norm = if self.cfg.gradient_clipping > 0.0 { grad_norm.min(self.cfg.gradient_clipping as f64) } else { grad_norm };
        self.opt.update(&mut self.arena.params, &self.arena.grads, lr);
        if self.cfg.decoupled_weight_decay && self.cfg.weight_decay > 0.0 {
            decay_decoupled(&mut self.arena.params, lr, self.cfg.weight_decay, &self.decayed);
        }
        self.step += 1;
        Ok(StepReport {
            loss,
            error_rate: errors as f32 / n as f32,
            grad_norm: clipped_norm,
            ascent_grad_norm: ascent_norm,
            param_norm: global_norm(&self.arena.params),
            ascent_exchange: exchanges[0],
            descent_exchange: exchanges[1],
        })
    }

    /// Whether every micro-batch takes its own ascent (see the module docs): SAM without
    /// `sync_perturbations` when some replica holds more than one micro-batch. With one each,
    /// pass 1 simply stays local, and pass 2 keeps its exchange overlapped with backward.
    fn per_micro_batch_ascent(&self) -> bool {
        self.sam_now && !self.cfg.sync_perturbations && self.share.units != self.share.world
    }

    /// SGD or SAM over the whole batch, in micro-batches of `micro`: leaves the gradient to apply
    /// in `arena.grads`. Exchanged with the other replicas when `exchanges` is given (their costs
    /// go there: [ascent, descent]); local otherwise (a chunk of [`SamStep::chunked_grad`]).
    /// Returns (loss, misclassified examples, pass-1 gradient norm).
    fn sharpness_aware_grad(
        &mut self,
        x: &Tensor,
        labels: Targets<'_>,
        micro: usize,
        exchanges: Option<&mut [ExchangeStats; 2]>,
    ) -> Result<(f32, usize, f64), TrainError> {
        let (seed, step, frozen) = (self.cfg.seed, self.step, self.cfg.frozen_bn);
        let mut local = [ExchangeStats::default(); 2];
        let shared = exchanges.is_some();
        let exchanges = exchanges.unwrap_or(&mut local);
        let world = shared.then_some(Scope::World);
        // LookSAM's direction is the whole batch's (one ascent, averaged over the world), never
        // a chunk's (validation keeps LookSAM away from chunks).
        let keep = shared && self.looksam().is_some();
        if !self.sam_now {
            let (loss, errors) =
                self.loss_and_grad(false, x, labels, Pass::train(seed, step).with_frozen_bn(frozen), world, micro, &mut exchanges[1])?;
            let norm = match self.reuse.as_ref().filter(|_| keep) {
                Some(r) => r.add_to(&mut self.arena.grads),
                None => global_norm(&self.arena.grads),
            };
            return Ok((loss, errors, norm));
        }
        let ascent_scope = (shared && self.cfg.sync_perturbations).then_some(Scope::Group);
        // Pass 1 ties ShakeShake/ShakeDrop backward coefficients to the forward's (the reference's
        // `true_gradient=True`); pass 2 and plain SGD draw independent ones.
        let pass1 = Pass::train(seed, step).tied(true).with_frozen_bn(frozen);
        self.loss_and_grad(false, x, labels, pass1, ascent_scope, micro, &mut exchanges[0])?;
        if let (true, Some(r)) = (keep, self.reuse.as_mut()) {
            r.remember_ascent(&self.arena.grads);
        }
        let norm = self.ascend();
        let pass2 = Pass::train_frozen_stats(seed, step).with_frozen_bn(frozen);
        let (loss, errors) = self.loss_and_grad(true, x, labels, pass2, world, micro, &mut exchanges[1])?;
        if let (true, Some(r)) = (keep, self.reuse.as_mut()) {
            r.keep_from(&self.arena.grads);
        }
        Ok((loss, errors, norm))
    }

    /// Chunks of `m` examples, each with its own ascent (m-sharpness: `--sam_m`, or one chunk per
    /// micro-batch of `micro` without `sync_perturbations`). Their descent gradients are averaged
    /// over the global batch and, data-parallel, summed over the world afterwards (not
    /// overlapped with backward: every chunk's backward must be done first).
    fn chunked_grad(
        &mut self,
        x: &Tensor,
        labels: Targets<'_>,
        [c, n, h, w]: [usize; 4],
        m: usize,
        micro: usize,
        exchange: &mut ExchangeStats,
    ) -> Result<(f32, usize, f64), TrainError> {
        let chunks = n.div_ceil(m);
        let examples = micro * self.share.units; // the global batch (one replica: n)
        self.g_sum.clear();
        self.g_sum.resize(self.arena.len(), 0.0);
        let (mut loss_sum, mut errors, mut norm_sum) = (0.0f64, 0usize, 0.0f64);
        for k in 0..chunks {
            let (lo, hi) = (k * m, ((k + 1) * m).min(n));
            let mut chunk = std::mem::replace(&mut self.chunk, Tensor::empty());
            copy_examples(x, [c, n, h, w], lo, hi, &mut chunk);
            self.chunk_offset = lo as u64;
            let r = self.sharpness_aware_grad(&chunk, labels.slice(lo, hi), hi - lo, None);
            self.chunk_offset = 0;
            self.chunk = chunk;
            let (loss, e, norm) = r?;
            loss_sum += loss as f64 * (hi - lo) as f64 / n as f64;
            errors += e;
            norm_sum += norm / chunks as f64;
            let weight = (hi - lo) as f64 / examples as f64;
            for (s, &g) in self.g_sum.iter_mut().zip(&self.arena.grads) {
                *s += g * weight as f32;
            }
        }
        self.arena.grads.copy_from_slice(&self.g_sum);
        if let Some(sync) = self.sync.as_mut() {
            sync.begin(Scope::World);
            *exchange = sync.finish(&mut self.arena.grads, &mut |_, _| {})?;
        }
        Ok((loss_sum as f32, errors, norm_sum))
    }

    /// The step's batch-norm statistics: the mean of every micro-batch's update over the world.
    fn finish_stats(&mut self) -> Result<(), TrainError> {
        if self.state.is_empty() {
            return Ok(());
        }
        let mut sum = std::mem::take(&mut self.stats.sum);
        let mut count = self.stats.count as f32;
        if let Some(sync) = self.sync.as_mut() {
            sum.push(count);
            sum = sync.cluster.sum(sum)?;
            count = sum.pop().unwrap_or(0.0);
        }
        if count > 0.0 {
            for (s, &v) in self.state.iter_mut().zip(&sum) {
                *s = v / count;
            }
        }
        self.stats.sum = sum;
        Ok(())
    }

    /// Writes the ascent point into `w_adv` from the gradient in `arena.grads`; returns its norm.
    fn ascend(&mut self) -> f64 {
        let (w, g) = (&self.arena.params, &self.arena.grads);
        if self.cfg.adaptive {
            asam_ascent_point(&mut self.w_adv, w, g, self.cfg.rho, self.cfg.asam_eta);
            global_norm(g)
        } else {
            ascent_point(&mut self.w_adv, w, g, self.cfg.rho)
        }
    }

    /// Zeroes the gradients, then forward, loss and backward at `w` (or at `w_adv`) over the
    /// micro-batches of `micro` examples, plus this replica's part of the L2 weight-decay gradient
    /// at the same point; data-parallel, the gradient is summed over `exchange` during backward
    /// (costs into `stats`), each example weighing one over the examples of the whole exchange.
    /// Returns (cross-entropy, misclassified examples).
    #[allow(clippy::too_many_arguments)]
    fn loss_and_grad(
        &mut self,
        at_adv: bool,
        x: &Tensor,
        labels: Targets<'_>,
        pass: Pass,
        exchange: Option<Scope>,
        micro: usize,
        stats: &mut ExchangeStats,
    ) -> Result<(f32, usize), TrainError> {
        let [c, n_total, h, wd_] = x.dims4("SamStep::loss_and_grad")?;
        let micros = (n_total / micro.max(1)).max(1);
        let examples = match exchange {
            Some(Scope::World) => micro * self.share.units,
            Some(Scope::Group) => self.share.examples_of(self.group.clone(), micro * self.share.units),
            None => n_total,
        };
        // Loss scale per example, and this replica's part of the L2 term (1 on one replica).
        let weights = [1.0 / examples as f32, n_total as f32 / examples as f32];
        self.arena.grads.fill(0.0);
        let (mut loss_sum, mut errors) = (0.0f64, 0usize);
        for j in 0..micros {
            let (lo, hi) = (j * n_total / micros, (j + 1) * n_total / micros);
            // Micro-batches other than a whole batch are copied out (C, n, H, W); one batch is used as is.
            let mut micro_x = std::mem::replace(&mut self.micro, Tensor::empty());
            if micros > 1 {
                copy_examples(x, [c, n_total, h, wd_], lo, hi, &mut micro_x);
            }
            let xj = if micros > 1 { &micro_x } else { x };
            let pass = pass.starting_at(self.example_offset + self.chunk_offset + lo as u64);
            if pass.update_bn_stats {
                self.stats.before(&mut self.state);
            }
            let r = self.micro_step(at_adv, xj, labels.slice(lo, hi), &pass, weights, j + 1 == micros, exchange, stats);
            self.micro = micro_x;
            let (loss, e) = r?;
            if pass.update_bn_stats {
                self.stats.after(&self.state);
            }
            loss_sum += loss as f64 * (hi - lo) as f64 / n_total as f64;
            errors += e;
        }
        Ok((loss_sum as f32, errors))
    }

    /// Forward, loss and backward of one micro-batch, adding its gradient (each example scaled by
    /// `weights[0]`) into `arena.grads`. The last micro-batch also adds the L2 term (times
    /// `weights[1]`) and, data-parallel, sends the gradient to the ring during its backward: only
    /// the accumulated gradient crosses the ring.
    #[allow(clippy::too_many_arguments)]
    fn micro_step(
        &mut self,
        at_adv: bool,
        x: &Tensor,
        targets: Targets<'_>,
        pass: &Pass,
        weights: [f32; 2],
        last: bool,
        exchange: Option<Scope>,
        stats: &mut ExchangeStats,
    ) -> Result<(f32, usize), TrainError> {
        let w: &Tensor = if at_adv { &self.w_adv } else { &self.arena.params };
        let logits = self.model.forward(w, &mut self.state, x, pass)?;
        let [n, k] = match *logits.shape() {
            [n, k] => [n, k],
            ref s => return Err(TrainError::Runtime(format!("model returned logits of shape {s:?}"))),
        };
        let sh = LossShape { n, k };
        self.losses.resize(n, 0.0);
        self.probs.resize(n * k, 0.0);
        self.dlogits.resize(&[n, k]);
        let (labels, ls, scale) = (targets.labels, self.cfg.label_smoothing, weights[0]);
        let loss = match targets.mix {
            None => softmax_cross_entropy_forward(&mut self.losses, &mut self.probs, logits.as_slice(), labels, ls, &sh)?,
            Some((partner, lambda)) => {
                let mix = Mixed { partner, lambda };
                softmax_cross_entropy_mixed_forward(&mut self.losses, &mut self.probs, logits.as_slice(), labels, mix, ls, &sh)?
            }
        };
        let errors = count_errors(logits.as_slice(), labels, k);
        match targets.mix {
            None => softmax_cross_entropy_backward(self.dlogits.as_mut_slice(), &self.probs, labels, ls, scale, &sh)?,
            Some((partner, lambda)) => {
                let mix = Mixed { partner, lambda };
                softmax_cross_entropy_mixed_backward(self.dlogits.as_mut_slice(), &self.probs, labels, mix, ls, scale, &sh)?
            }
        }
        if !last {
            self.model.backward(w, &mut self.arena.grads, x, &self.dlogits)?;
            return Ok((loss, errors));
        }
        let wd = if self.cfg.decoupled_weight_decay { 0.0 } else { self.cfg.weight_decay * weights[1] };
        let decayed = &self.decayed;
        // The L2 term joins each gradient before it leaves for the ring.
        let mut add_l2 = |g: &mut [f32], bucket: Range<usize>| {
            if wd > 0.0 {
                let parts: Vec<_> =
                    decayed.iter().map(|r| r.start.max(bucket.start)..r.end.min(bucket.end)).filter(|r| !r.is_empty()).collect();
                add_l2_gradient(g, w, wd, &parts);
            }
        };
        match (exchange, self.sync.as_mut()) {
            (Some(scope), Some(sync)) => {
                sync.begin(scope);
                let grads = &mut self.arena.grads;
                self.model.backward_notify(w, grads, x, &self.dlogits, &mut |g, at| sync.on_ready(g, at, &mut add_l2))?;
                *stats = sync.finish(grads, &mut add_l2)?;
            }
            _ => {
                self.model.backward(w, &mut self.arena.grads, x, &self.dlogits)?;
                add_l2(&mut self.arena.grads, 0..w.len());
            }
        }
        Ok((loss, errors))
    }
}

/// The mean of the micro-batches' batch-norm statistics (see the module docs): each micro-batch
/// starts from the step's statistics, and their updates are summed.
#[derive(Debug, Default)]
struct StatsMean {
    start: Vec<f32>,
    sum: Vec<f32>,
    count: usize,
}

impl StatsMean {
    /// A step starts from `state`.
    fn begin(&mut self, state: &[f32]) {
        self.start.clear();
        self.start.extend_from_slice(state);
        self.sum.clear();
        self.sum.resize(state.len(), 0.0);
        self.count = 0;
    }

    /// Before a micro-batch's forward: back to the step's statistics.
    fn before(&self, state: &mut [f32]) {
        state.copy_from_slice(&self.start);
    }

    /// After it: its update counts once.
    fn after(&mut self, state: &[f32]) {
        for (s, &v) in self.sum.iter_mut().zip(state) {
            *s += v;
        }
        self.count += 1;
    }
}

/// Copies examples `lo..hi` of `x (C, N, H, W)` into `out (C, hi−lo, H, W)`.
pub(crate) fn copy_examples(x: &Tensor, [c, n, h, w]: [usize; 4], lo: usize, hi: usize, out: &mut Tensor) {
    let hw = h * w;
    out.resize(&[c, hi - lo, h, w]);
    for ch in 0..c {
        out.as_mut_slice()[ch * (hi - lo) * hw..(ch + 1) * (hi - lo) * hw]
            .copy_from_slice(&x.as_slice()[(ch * n + lo) * hw..(ch * n + hi) * hw]);
    }
}

/// A batch's targets: labels, and for a mixup batch the partner labels and λ.
#[derive(Clone, Copy, Debug)]
struct Targets<'a> {
    labels: &'a [u32],
    mix: Option<(&'a [u32], f32)>,
}

impl<'a> Targets<'a> {
    /// Examples `lo..hi` (a micro-batch or an m-sharpness chunk) with their partners.
    fn slice(self, lo: usize, hi: usize) -> Targets<'a> {
        Targets { labels: &self.labels[lo..hi], mix: self.mix.map(|(p, l)| (&p[lo..hi], l)) }
    }
}

/// Examples whose arg-max logit is not their label (`logits` is `(N, K)`).
pub fn count_errors(logits: &[f32], labels: &[u32], k: usize) -> usize {
    logits
        .chunks(k)
        .zip(labels)
        .filter(|&(row, &l)| {
            let best = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
            best != l as usize
        })
        .count()
}

/// The parameter ranges that take weight decay: all, or only tensors of more than one dimension
/// (the reference's `no_weight_decay_on_bn`). The CPU and the device steps share it.
pub(crate) fn decayed_ranges(layout: &ringsam_nn::ParamLayout, cfg: &StepConfig) -> Vec<Range<usize>> {
    layout.entries().iter().filter(|e| !cfg.no_weight_decay_on_bn || e.shape.len() > 1).map(|e| e.id.range()).collect()
}

/// A checkpoint's state for [`SamStep::restore`].
pub struct Restore<'a> {
    /// Parameters.
    pub params: &'a [f32],
    /// Batch-norm statistics.
    pub state: &'a [f32],
    /// Optimizer buffers by name.
    pub optim: &'a std::collections::HashMap<String, Vec<f32>>,
    /// Steps taken when it was written.
    pub step: u64,
}

impl Restore<'_> {
    fn optim(&self, name: &str) -> Option<&[f32]> {
        self.optim.get(name).map(Vec::as_slice)
    }
}
