//! The SAM step with the model, its arena and the optimizer state on a device: [`SamStep`]'s
//! arithmetic, micro-batches and data-parallel exchange included (no `--sam_m`, no mixup, no
//! LookSAM, no ascent per micro-batch: those stay on [`SamStep`] until the device step takes
//! them over).
//!
//! Per step, as [`SamStep`] does it (docs/SAM.md): pass 1 at `w` (gradient zeroed, forward,
//! softmax cross-entropy with label smoothing, backward, the L2 term), the ascent `w_adv = w +
//! ρ·g/‖g‖` (ASAM's when asked), pass 2 at `w_adv` with batch-norm statistics frozen, clipping, the
//! base optimizer's update of `w`. Every operation is a launch on the device, in one stream:
//! the batch comes in from pinned host memory by an asynchronous copy, the ascent and clipping
//! read their norms on the device, and the scalars the report needs (the loss, the errors, the
//! norms) wait in a small device buffer until the host reads them together, once, at the end
//! of the step: on one replica, the only time the host waits for the device. (Data-parallel,
//! gradient buckets also leave on a side stream, and the host waits for each: see
//! [`crate::device_grad_sync`].)
//!
//! A step is staged, launched and finished ([`DeviceStep::stage`], [`DeviceStep::launch`],
//! [`DeviceStep::finish`]): the trainer stages batch i + 1 while step i runs, so the host's copy
//! of it into pinned memory, and the wait for the loader, overlap the device's work
//! (docs/ARCHITECTURE.md, "Tensors on a device"). `launch` queues as much of the step as needs
//! no wait: all of it on one replica; data-parallel, up to the first exchange, whose result the
//! next launches need. `finish` queues the rest, waiting for the ring where it must.
//!
//! Micro-batches and replicas ([`crate::step`]'s module docs have the arithmetic): each pass runs
//! over this replica's micro-batches (copied out of the batch on the device), summing their
//! gradients, each example weighing one over the examples of the whole exchange; data-parallel,
//! the last micro-batch's backward sends the sum to the ring bucket by bucket, straight from
//! device memory ([`crate::device_grad_sync`]). Every micro-batch is a batch-norm batch of its
//! own, and the step's statistics are the mean of every micro-batch's over the world.
//!
//! [`SamStep`]: crate::step::SamStep

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use ringsam_kernels::flat::{self, OptimizerState};
use ringsam_kernels::{DeviceVec, Gpu, KernelError, Launcher, PinnedVec};
use ringsam_models::{Model, ModelConfig, build};
use ringsam_nn::Pass;
use ringsam_optim::OptimizerKind;
use ringsam_tensor::{Tensor, TensorError};

use crate::TrainError;
use crate::cluster::{Cluster, Scope};
use crate::device_grad_sync::DeviceGradSync;
use crate::grad_sync::{BucketPlan, ExchangeStats};
use crate::step::{StepConfig, StepReport, decayed_ranges};
use ringsam_data::share::BatchShare;

mod passes;

/// The step's scalars: the kernels leave them in `DeviceStep::scalars`, one double each, and the
/// host reads them together once at the end of the step, never between its launches. First
/// these squared norms, then two per micro-batch ([`DeviceStep::micro_slots`]): Σ of the last
/// pass's per-example losses, and its misclassified examples.
#[derive(Clone, Copy)]
enum SquaredNorm {
    /// ‖g‖² at the ascent (the first pass's gradient; the only one under SGD).
    Ascent,
    /// ASAM's ‖T·g‖², which its ascent reads.
    AsamScaled,
    /// ‖g‖² of the gradient the update takes, before clipping.
    Grad,
    /// ‖w‖² after the update.
    Params,
}

/// Slots in `DeviceStep::scalars`.
const SLOTS: usize = SquaredNorm::Params as usize + 1;

/// `slot`'s pinned buffer, (re)made with `len` values when it has another length.
fn pinned<'a, T: ringsam_kernels::launch::Elem>(
    slot: &'a mut Option<PinnedVec<T>>,
    len: usize,
    mem: &ringsam_kernels::DeviceMemory,
) -> Result<&'a mut PinnedVec<T>, KernelError> {
    if slot.as_ref().is_none_or(|p| p.len() != len) {
        *slot = None; // free the old one first
        *slot = Some(mem.pinned(len)?);
    }
    Ok(slot.as_mut().expect("just placed"))
}

/// `dst = src` by the host's cores: a batch is ~150 MB at ImageNet sizes, past one core's copy
/// rate.
fn copy_in_parallel(dst: &mut [f32], src: &[f32]) {
    const CHUNK: usize = 1 << 18; // 1 MiB of floats per task
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| d.copy_from_slice(s));
}

/// Pinned host buffers for two batches: the next batch is copied into one by the host's cores
/// while the step before it still has its copy from the other pending or running.
#[derive(Default)]
struct PinnedSlots {
    x: [Option<PinnedVec<f32>>; 2],
    labels: [Option<PinnedVec<u32>>; 2],
    /// The slot the next batch goes to.
    next: usize,
}

/// The next step's batch: its labels in a pinned slot, its images there too or already on the
/// device.
struct Staged {
    slot: usize,
    shape: Vec<usize>,
    on_device: Option<Tensor>,
}

/// A step whose launches are queued and whose report is not read yet.
struct Launched {
    n: usize,
    /// Examples per micro-batch.
    micro: usize,
    clip: f32,
    lr: f32,
    slot: usize,
    phase: Phase,
    /// The gradient just computed is being exchanged (its buckets leaving during backward).
    exchanging: bool,
    /// The L2 term's coefficient for the buckets still to leave, and whether at `w_adv`.
    l2: (f32, bool),
    exchanges: [ExchangeStats; 2],
    /// SAM's two passes (false: SGD's one, whose gradient's norm is also the ascent's slot).
    sam: bool,
}

/// How far a launched step is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Pass 1 (SAM's ascent gradient) is queued.
    AscentGrad,
    /// The gradient the update takes is queued (pass 2, or SGD's only pass).
    Grad,
    /// All of the step is queued.
    Updated,
}

/// One replica's model, parameters, gradients and optimizer state on `gpu`.
pub struct DeviceStep {
    model: Box<dyn Model>,
    gpu: Arc<Gpu>,
    cfg: StepConfig,
    step: u64,
    params: Tensor,                 // w
    w_adv: Tensor,                  // w + e
    grads: Tensor,                  // the gradient of the pass just run
    state: Tensor,                  // batch-norm running statistics
    momentum: DeviceVec<f32>,       // the optimizer's first moment
    second: Option<DeviceVec<f32>>, // RMSProp's second moment
    decayed: Vec<Range<usize>>,     // parameter ranges that take weight decay
    x: Tensor,                      // the batch, copied to the device
    labels: Option<DeviceVec<u32>>,
    pinned: PinnedSlots,        // where batches are staged on the host
    staged: Option<Staged>,     // the next step's batch, staged
    launched: Option<Launched>, // the step launched and not yet read
    scalars: DeviceVec<f64>,    // the step's scalars (SquaredNorm, then micro_slots), read once per step
    probs: Tensor,              // (N, K)
    losses: Tensor,             // (N,)
    losses64: Option<DeviceVec<f64>>,
    wrong: Option<DeviceVec<u32>>,
    dlogits: Tensor, // (n, K)
    micro_x: Tensor, // one micro-batch's images, copied out of `x`
    // This replica's micro-batches of the global batch, the ranks its ascent gradient is summed
    // over, and its exchange when data-parallel ([`DeviceStep::set_peers`]).
    share: BatchShare,
    group: Range<usize>,
    exchange: Option<DeviceGradSync>,
    stats: passes::StatsMean,
}

/// LookSAM is not on the device step yet: refused by name rather than run as plain SAM.
fn refuse_looksam(schedule: crate::cheap_sam::SamSchedule) -> Result<(), TrainError> {
    match schedule {
        crate::cheap_sam::SamSchedule::LookSam { .. } => {
            Err(TrainError::Config("LookSAM (--looksam_k) is not on the device step yet".into()))
        }
        crate::cheap_sam::SamSchedule::Every(_) => Ok(()),
    }
}

fn device_error<'a>(gpu: &'a Gpu, op: &'static str) -> impl Fn(KernelError) -> TrainError + 'a {
    move |source| TrainError::Tensor(TensorError::Kernel { op, device: gpu.name().to_string(), source })
}

impl DeviceStep {
    /// Builds `model_name`, initialises it as [`crate::step::SamStep::new`] does (seed 0), and
    /// puts it on `gpu`.
    pub fn new(model_name: &str, model_cfg: &ModelConfig, cfg: StepConfig, gpu: &Arc<Gpu>) -> Result<Self, TrainError> {
        if cfg.sam_m.is_some() {
            return Err(TrainError::Config("--sam_m is not on the device step yet".into()));
        }
        refuse_looksam(cfg.schedule)?;
        let model = build(model_name, model_cfg)?;
        let (mut p, mut s) = (vec![0.0; model.layout().total()], vec![0.0; model.state_layout().total()]);
        model.init(&mut p, &mut s, 0);
        let decayed = decayed_ranges(model.layout(), &cfg);
        let n = p.len();
        let mem = gpu.memory();
        let err = device_error(gpu, "DeviceStep::new");
        let second =
            matches!(cfg.optimizer, OptimizerKind::RmsProp { .. }).then(|| mem.upload(&vec![1.0f32; n])).transpose().map_err(&err)?;
        Ok(DeviceStep {
            params: Tensor::from(p).to_gpu(gpu)?,
            w_adv: Tensor::zeros_on(&[n], gpu)?,
            grads: Tensor::zeros_on(&[n], gpu)?,
            state: Tensor::from(s).to_gpu(gpu)?,
            momentum: mem.zeros(n).map_err(&err)?,
            second,
            model,
            gpu: gpu.clone(),
            cfg,
            step: 0,
            decayed,
            x: Tensor::empty(),
            labels: None,
            pinned: PinnedSlots::default(),
            staged: None,
            launched: None,
            scalars: mem.zeros(SLOTS + 2).map_err(&err)?,
            probs: Tensor::empty(),
            losses: Tensor::empty(),
            losses64: None,
            wrong: None,
            dlogits: Tensor::empty(),
            micro_x: Tensor::empty(),
            share: BatchShare::alone(1),
            group: 0..1,
            exchange: None,
            stats: passes::StatsMean::default(),
        })
    }

    /// This replica's part of each global batch (`share`), the ranks its ascent gradient is
    /// summed over (`group`) and, data-parallel, how its gradient is cut into buckets (`plan`):
    /// later launches are given the rings. Set on one replica too, for micro-batches.
    pub fn set_peers(&mut self, share: BatchShare, group: Range<usize>, plan: Option<BucketPlan>) {
        let n = self.params.len();
        (self.share, self.group) = (share, group);
        self.exchange = plan.map(|plan| DeviceGradSync::new(n, plan));
    }

    /// Sets ρ (benchmarks time SGD and SAM on one model).
    pub fn set_rho(&mut self, rho: f32) {
        self.cfg.rho = rho;
    }

    /// Sets which steps take SAM's two passes (benchmarks); LookSAM is refused, as by [`DeviceStep::new`].
    pub fn set_schedule(&mut self, schedule: crate::cheap_sam::SamSchedule) -> Result<(), TrainError> {
        refuse_looksam(schedule)?;
        self.cfg.schedule = schedule;
        Ok(())
    }

    /// The network.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// Parameters `w`, copied to the host.
    pub fn params(&self) -> Result<Vec<f32>, TrainError> {
        Ok(self.params.to_host()?.as_slice().to_vec())
    }

    /// Batch-norm statistics, copied to the host.
    pub fn state(&self) -> Result<Vec<f32>, TrainError> {
        Ok(self.state.to_host()?.as_slice().to_vec())
    }

    /// Takes `w`, the batch-norm statistics, the optimizer's buffers (by name, as
    /// [`ringsam_optim::BaseOptimizer::state`] names them) and the step count from the host: the
    /// CPU step's initialisation, a checkpoint, or weights loaded from elsewhere.
    pub fn upload(&mut self, params: &[f32], state: &[f32], optim: &[(&str, &[f32])], step: u64) -> Result<(), TrainError> {
        let err = device_error(&self.gpu, "DeviceStep::upload");
        self.params.write_from(params)?;
        self.state.write_from(state)?;
        for (name, host) in optim {
            match (*name, &mut self.second) {
                ("momentum", _) => self.momentum.write(host).map_err(&err)?,
                ("second_moment", Some(second)) => second.write(host).map_err(&err)?,
                _ => return Err(TrainError::Checkpoint(format!("no optimizer buffer {name} on the device step"))),
            }
        }
        self.step = step;
        Ok(())
    }

    /// Copies `w`, the statistics and the optimizer's buffers into the host's (the inverse of
    /// [`DeviceStep::upload`]), for checkpoints.
    pub fn download_into(&self, params: &mut [f32], state: &mut [f32], optim: Vec<(&str, &mut Vec<f32>)>) -> Result<(), TrainError> {
        let err = device_error(&self.gpu, "DeviceStep::download_into");
        let copy = |host: &mut [f32], device: Vec<f32>| {
            if host.len() != device.len() {
                return Err(TrainError::Runtime(format!("{} values on the device for {} on the host", device.len(), host.len())));
            }
            host.copy_from_slice(&device);
            Ok(())
        };
        copy(params, self.params()?)?;
        copy(state, self.state()?)?;
        for (name, host) in optim {
            let device = match (name, &self.second) {
                ("momentum", _) => &self.momentum,
                ("second_moment", Some(second)) => second,
                _ => return Err(TrainError::Checkpoint(format!("no optimizer buffer {name} on the device step"))),
            };
            copy(host, device.download().map_err(&err)?)?;
        }
        Ok(())
    }

    /// The model with its weights and statistics on the device, to evaluate.
    pub fn eval_parts(&mut self) -> (&mut dyn Model, &Tensor, &mut Tensor) {
        (self.model.as_mut(), &self.params, &mut self.state)
    }

    /// What the device's allocator has done (peak memory for `bench step`).
    pub fn memory(&self) -> ringsam_kernels::MemoryStats {
        self.gpu.memory().stats()
    }

    /// The device it runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// One step on batch `x (C, N, H, W)` (on the host or already on the device) with `labels`:
    /// [`DeviceStep::stage`], [`DeviceStep::launch`] and [`DeviceStep::finish`] in a row, on the
    /// rings of `peers` when data-parallel.
    pub fn step(&mut self, x: &Tensor, labels: &[u32], lr: f32, mut peers: Option<&mut Cluster>) -> Result<StepReport, TrainError> {
        self.stage(x, labels)?;
        self.launch(lr, peers.as_deref_mut())?;
        self.finish(peers)
    }

    /// Hands over the next step's batch: copied now, by the host's cores, into a pinned slot
    /// (or on the device already: copied there). A trainer stages batch i + 1 between
    /// [`DeviceStep::launch`] and [`DeviceStep::finish`] of step i, so that the copy runs while
    /// the device computes. A batch staged and never launched is replaced.
    pub fn stage(&mut self, x: &Tensor, labels: &[u32]) -> Result<(), TrainError> {
        let replaced = self.staged.take(); // a refusal below leaves nothing staged
        let [_, n, _, _] = x.dims4("DeviceStep::stage")?;
        if labels.len() != n || n == 0 {
            return Err(TrainError::Runtime(format!("batch of {n} images with {} labels", labels.len())));
        }
        let k = self.model.config().num_classes;
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
            return Err(TrainError::Runtime(format!("label {bad} of a model with {k} classes")));
        }
        let slot = match replaced {
            Some(replaced) => replaced.slot,
            None => {
                let slot = self.pinned.next;
                self.pinned.next = 1 - slot;
                slot
            }
        };
        let mem = self.gpu.memory();
        let err = device_error(&self.gpu, "DeviceStep::stage");
        pinned(&mut self.pinned.labels[slot], n, mem).map_err(&err)?.host_mut().map_err(&err)?.copy_from_slice(labels);
        let on_device = match x.gpu() {
            Some(_) => Some(x.to_gpu(&self.gpu)?),
            None => {
                let staged_x = pinned(&mut self.pinned.x[slot], x.len(), mem).map_err(&err)?;
                copy_in_parallel(staged_x.host_mut().map_err(&err)?, x.host_slice("DeviceStep::stage")?);
                None
            }
        };
        self.staged = Some(Staged { slot, shape: x.shape().to_vec(), on_device });
        Ok(())
    }

    /// Starts the step on the staged batch: queues its copies to the device and as much of the
    /// step as needs no wait (see the module docs), and returns without waiting for any of it.
    /// Data-parallel, `peers` holds the rings (the same ones [`DeviceStep::finish`] is given).
    pub fn launch(&mut self, lr: f32, mut peers: Option<&mut Cluster>) -> Result<(), TrainError> {
        if self.launched.is_some() {
            return Err(TrainError::Runtime("a device step launched before the one before it was finished".into()));
        }
        if self.exchange.is_some() && peers.is_none() {
            return Err(TrainError::Runtime("a data-parallel device step launched without its rings".into()));
        }
        let sam = self.cfg.rho > 0.0 && self.cfg.schedule.sam_at(self.step);
        if sam && !self.cfg.sync_perturbations && self.share.units != self.share.world {
            // SamStep::to_device refuses it too; an elastic generation of another size can
            // bring it about later. Refused before the staged batch is taken.
            return Err(TrainError::Config(format!(
                "--sync_perturbations=false with {} micro-batches over {} replicas (an ascent for each) is not on the GPU step yet",
                self.share.units, self.share.world
            )));
        }
        let staged = self.staged.take().ok_or_else(|| TrainError::Runtime("a device step launched with no batch staged".into()))?;
        let (slot, n, units) = (staged.slot, staged.shape[1], self.share.my_units().len());
        if !n.is_multiple_of(units) {
            return Err(TrainError::Runtime(format!("a batch of {n} cannot be cut into {units} micro-batches")));
        }
        self.load_batch(staged, n / units)?;
        let phase = if sam { Phase::AscentGrad } else { Phase::Grad };
        let clip = self.cfg.gradient_clipping;
        let exchanges = Default::default();
        self.launched = Some(Launched { n, micro: n / units, clip, lr, slot, phase, exchanging: false, l2: (0.0, false), exchanges, sam });
        let queued = self.begin_stats().and_then(|()| {
            let (seed, step, frozen) = (self.cfg.seed, self.step, self.cfg.frozen_bn);
            if sam {
                // Pass 1 ties ShakeShake/ShakeDrop backward coefficients to the forward's.
                let scope = (self.exchange.is_some() && self.cfg.sync_perturbations).then_some(Scope::Group);
                self.run_pass(false, Pass::train(seed, step).tied(true).with_frozen_bn(frozen), scope, peers.as_deref_mut())
            } else {
                // ρ = 0, or a step `--sam_every` leaves to SGD: one pass.
                let scope = self.exchange.is_some().then_some(Scope::World);
                self.run_pass(false, Pass::train(seed, step).with_frozen_bn(frozen), scope, peers.as_deref_mut())
            }
        });
        queued.and_then(|()| self.advance(peers, false)).inspect_err(|_| self.abandon())
    }

    /// Queues the rest of the launched step, waiting for the ring where it must, then waits for
    /// the step and reads its report: every scalar the report needs, read together.
    pub fn finish(&mut self, peers: Option<&mut Cluster>) -> Result<StepReport, TrainError> {
        if self.launched.is_none() {
            return Err(TrainError::Runtime("a device step finished that was not launched".into()));
        }
        self.advance(peers, true).inspect_err(|_| self.abandon())?;
        let Launched { n, micro, clip, slot, exchanges, .. } = self.launched.take().expect("checked above");
        let v = self.launch_with(|l, s| l.read_f64(s.scalars.buf()))?;
        for x in self.pinned.x[slot].iter_mut() {
            // SAFETY: reading the scalars waited for the stream, after the step's batch copy.
            unsafe { x.assume_copied() };
        }
        for labels in self.pinned.labels[slot].iter_mut() {
            // SAFETY: as above.
            unsafe { labels.assume_copied() };
        }
        self.step += 1;
        let micros = n / micro;
        let loss: f64 = (0..micros).map(|j| v[SLOTS + 2 * j]).sum();
        let errors: f64 = (0..micros).map(|j| v[SLOTS + 2 * j + 1]).sum();
        let grad_norm = v[SquaredNorm::Grad as usize].sqrt();
        Ok(StepReport {
            loss: (loss / n as f64) as f32,
            error_rate: errors as f32 / n as f32,
            grad_norm: if clip > 0.0 { grad_norm.min(clip as f64) } else { grad_norm },
            ascent_grad_norm: v[SquaredNorm::Ascent as usize].sqrt(),
            param_norm: v[SquaredNorm::Params as usize].sqrt(),
            ascent_exchange: exchanges[0],
            descent_exchange: exchanges[1],
        })
    }

    /// Queues the launched step's next phases; stops before a wait for the ring unless `wait`.
    fn advance(&mut self, mut peers: Option<&mut Cluster>, wait: bool) -> Result<(), TrainError> {
        loop {
            let l = self.launched.as_ref().expect("a launched step");
            let must_wait = l.exchanging || (l.phase == Phase::Grad && self.stats.exchanged());
            if must_wait && !wait {
                return Ok(());
            }
            let (phase, sam) = (l.phase, l.sam);
            match phase {
                Phase::AscentGrad => {
                    self.launched.as_mut().expect("launched").exchanges[0] = self.finish_exchange(peers.as_deref_mut())?;
                    self.launch_with(|l, s| s.ascend(l))?;
                    let (seed, step, frozen) = (self.cfg.seed, self.step, self.cfg.frozen_bn);
                    let scope = self.exchange.is_some().then_some(Scope::World);
                    self.run_pass(true, Pass::train_frozen_stats(seed, step).with_frozen_bn(frozen), scope, peers.as_deref_mut())?;
                    self.launched.as_mut().expect("launched").phase = Phase::Grad;
                }
                Phase::Grad => {
                    self.launched.as_mut().expect("launched").exchanges[1] = self.finish_exchange(peers.as_deref_mut())?;
                    if !sam {
                        // SGD's one gradient is also the one the report calls the ascent's.
                        self.launch_with(|l, s| flat::sum_squares_into(l, s.grads_buf(), s.slot(SquaredNorm::Ascent)))?;
                    }
                    self.finish_stats(peers.as_deref_mut())?;
                    self.update()?;
                    self.launched.as_mut().expect("launched").phase = Phase::Updated;
                }
                Phase::Updated => return Ok(()),
            }
        }
    }

    /// Clipping and the base optimizer's update of `w`, with the norms the report needs.
    fn update(&mut self) -> Result<(), TrainError> {
        let (clip, lr) = self.launched.as_ref().map(|l| (l.clip, l.lr)).expect("a launched step");
        self.launch_with(|l, s| flat::clip_by_global_norm_into(l, s.grads_buf(), clip, s.slot(SquaredNorm::Grad)))?;
        self.launch_with(|l, s| {
            let state = OptimizerState { momentum: s.momentum.buf(), second_moment: s.second.as_ref().map(DeviceVec::buf) };
            flat::update(l, s.cfg.optimizer, s.params_buf(), s.grads_buf(), state, lr)?;
            if s.cfg.decoupled_weight_decay && s.cfg.weight_decay > 0.0 {
                // w −= lr·wd·w over the decayed ranges (ringsam_optim::weight_decay::decay_decoupled).
                let w = s.params_buf();
                for r in &s.decayed {
                    flat::scale(l, w.slice(r.clone()), 1.0 - lr * s.cfg.weight_decay)?;
                }
            }
            flat::sum_squares_into(l, s.params_buf(), s.slot(SquaredNorm::Params))
        })
    }

    /// After a failed step: the statistics as the step found them (the parameters are untouched
    /// until the update, which needs no ring), nothing in flight, nothing launched. The replica
    /// holds the last completed step, which recovery streams to the others.
    fn abandon(&mut self) {
        if let Some(x) = self.exchange.as_mut() {
            x.begin(Scope::World); // drops the copies and sums in flight
        }
        self.stats.abandon();
        if let Some(start) = self.stats.start_buf() {
            let _ = self.launch_with(|l, s| flat::copy(l, s.state.device_buf().expect("on the device"), start));
        }
        self.launched = None;
    }

    /// The staged batch on the device (its copies queued), and the buffers sized for micro-batches
    /// of `micro` examples.
    fn load_batch(&mut self, staged: Staged, micro: usize) -> Result<(), TrainError> {
        let Staged { slot, shape, on_device } = staged;
        let (n, k) = (shape[1], self.model.config().num_classes);
        let mem = self.gpu.memory();
        let err = device_error(&self.gpu, "DeviceStep::launch");
        if self.labels.as_ref().is_none_or(|b| b.len() != n) {
            self.labels = Some(mem.alloc(n).map_err(&err)?);
        }
        if self.wrong.as_ref().is_none_or(|b| b.len() != micro) {
            self.losses64 = Some(mem.alloc(micro).map_err(&err)?);
            self.wrong = Some(mem.alloc(micro).map_err(&err)?);
        }
        let slots = SLOTS + 2 * (n / micro);
        if self.scalars.len() != slots {
            self.scalars = mem.zeros(slots).map_err(&err)?;
        }
        match on_device {
            Some(x) => self.x = x,
            None => {
                // One asynchronous copy from the pinned slot: the host goes on launching the
                // step while it runs (docs/ARCHITECTURE.md, "Tensors on a device").
                self.x.place_like(&shape, &self.params)?;
                self.x.write_async_from(self.pinned.x[slot].as_mut().expect("filled by stage"))?;
            }
        }
        let staged_labels = self.pinned.labels[slot].as_mut().expect("filled by stage");
        self.labels.as_mut().expect("just placed").write_async(staged_labels).map_err(&err)?;
        for (t, shape) in [(&mut self.probs, vec![micro, k]), (&mut self.losses, vec![micro]), (&mut self.dlogits, vec![micro, k])] {
            t.place_like(&shape, &self.x)?;
        }
        Ok(())
    }

    /// Micro-batch `j`'s two scalars: Σ of its per-example losses and its misclassified examples.
    fn micro_slots(&self, j: usize) -> [ringsam_kernels::Buf<f64>; 2] {
        let i = SLOTS + 2 * j;
        [self.scalars.buf().slice(i..i + 1), self.scalars.buf().slice(i + 1..i + 2)]
    }

    /// `w_adv = w + ρ·g/‖g‖` (or ASAM's), ‖g‖² left in its slot.
    fn ascend(&self, l: &mut Box<dyn Launcher + Send>) -> Result<(), KernelError> {
        let (w_adv, w, g) = (self.w_adv.device_buf().expect("on the device"), self.params_buf(), self.grads_buf());
        if self.cfg.adaptive {
            flat::asam_ascent_point_into(l, [w_adv, w, g], self.cfg.rho, self.cfg.asam_eta, self.slot(SquaredNorm::AsamScaled))?;
            flat::sum_squares_into(l, g, self.slot(SquaredNorm::Ascent))
        } else {
            flat::ascent_point_into(l, w_adv, w, g, self.cfg.rho, self.slot(SquaredNorm::Ascent))
        }
    }

    fn slot(&self, which: SquaredNorm) -> ringsam_kernels::Buf<f64> {
        let i = which as usize;
        self.scalars.buf().slice(i..i + 1)
    }

    fn params_buf(&self) -> ringsam_kernels::Buf<f32> {
        self.params.device_buf().expect("the device step's parameters live on the device")
    }

    fn state_buf(&self) -> ringsam_kernels::Buf<f32> {
        self.state.device_buf().expect("the device step's statistics live on the device")
    }

    fn grads_buf(&self) -> ringsam_kernels::Buf<f32> {
        self.grads.device_buf().expect("the device step's gradients live on the device")
    }

    fn labels_buf(&self) -> ringsam_kernels::Buf<u32> {
        self.labels.as_ref().expect("placed by load_batch").buf()
    }

    /// Runs `op` with the launcher and this step's buffers.
    fn launch_with<T>(&self, op: impl FnOnce(&mut Box<dyn Launcher + Send>, &Self) -> Result<T, KernelError>) -> Result<T, TrainError> {
        let mut launcher = self.gpu.launcher();
        op(&mut launcher, self).map_err(device_error(&self.gpu, "the SAM step"))
    }
}
