//! The SAM step with the model, its arena and the optimizer state on a device: [`SamStep`]'s
//! arithmetic for one replica holding its whole batch (no micro-batches, no `--sam_m`, no mixup,
//! no exchange: those stay on [`SamStep`] until the device step takes them over).
//!
//! Per step, as [`SamStep`] does it (docs/SAM.md): pass 1 at `w` (gradient zeroed, forward,
//! softmax cross-entropy with label smoothing, backward, the L2 term), the ascent `w_adv = w +
//! ρ·g/‖g‖` (ASAM's when asked), pass 2 at `w_adv` with batch-norm statistics frozen, clipping, the
//! base optimizer's update of `w`. Every operation is a launch on the device, in one stream:
//! the batch comes in from pinned host memory by an asynchronous copy, the ascent and clipping
//! read their norms on the device, and the scalars the report needs (the loss, the errors, the
//! norms) wait in a small device buffer until the host reads them together, once, at the end
//! of the step: the only time the host waits for the device.
//!
//! A step is staged, launched and finished ([`DeviceStep::stage`], [`DeviceStep::launch`],
//! [`DeviceStep::finish`]): the trainer stages batch i + 1 while step i runs, so the host's copy
//! of it into pinned memory, and the wait for the loader, overlap the device's work
//! (docs/ARCHITECTURE.md, "Tensors on a device").
//!
//! [`SamStep`]: crate::step::SamStep

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use ringsam_kernels::flat::{self, OptimizerState};
use ringsam_kernels::loss::{LossShape, softmax_xent_backward, softmax_xent_forward_into};
use ringsam_kernels::{DeviceVec, Gpu, KernelError, Launcher, PinnedVec};
use ringsam_models::{Model, ModelConfig, build};
use ringsam_nn::Pass;
use ringsam_optim::OptimizerKind;
use ringsam_tensor::{Tensor, TensorError};

use crate::TrainError;
use crate::step::{StepConfig, StepReport, decayed_ranges};

/// The step's scalars: the kernels leave them in `DeviceStep::scalars`, one double each, and the
/// host reads them together once at the end of the step, never between its launches.
#[derive(Clone, Copy)]
enum Slot {
    /// Σ of the last pass's per-example losses.
    Loss,
    /// The last pass's misclassified examples.
    Errors,
    /// ‖g‖² at the ascent (the first pass's gradient; the only one under SGD).
    AscentNormSq,
    /// ASAM's ‖T·g‖², which its ascent reads.
    AsamNormSq,
    /// ‖g‖² of the gradient the update takes, before clipping.
    GradNormSq,
    /// ‖w‖² after the update.
    ParamNormSq,
}

/// Slots in `DeviceStep::scalars`.
const SLOTS: usize = Slot::ParamNormSq as usize + 1;

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
    clip: f32,
    slot: usize,
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
    scalars: DeviceVec<f64>,    // the step's scalars (Slot), read once per step
    probs: Tensor,              // (N, K)
    losses: Tensor,             // (N,)
    losses64: Option<DeviceVec<f64>>,
    wrong: Option<DeviceVec<u32>>,
    dlogits: Tensor, // (N, K)
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
            scalars: mem.zeros(SLOTS).map_err(&err)?,
            probs: Tensor::empty(),
            losses: Tensor::empty(),
            losses64: None,
            wrong: None,
            dlogits: Tensor::empty(),
        })
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
    /// [`DeviceStep::stage`], [`DeviceStep::launch`] and [`DeviceStep::finish`] in a row.
    pub fn step(&mut self, x: &Tensor, labels: &[u32], lr: f32) -> Result<StepReport, TrainError> {
        self.stage(x, labels)?;
        self.launch(lr)?;
        self.finish()
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

    /// Starts the step on the staged batch: queues its copies to the device, both passes and
    /// the update, and returns without waiting for any of them.
    pub fn launch(&mut self, lr: f32) -> Result<(), TrainError> {
        if self.launched.is_some() {
            return Err(TrainError::Runtime("a device step launched before the one before it was finished".into()));
        }
        let staged = self.staged.take().ok_or_else(|| TrainError::Runtime("a device step launched with no batch staged".into()))?;
        let (slot, n) = (staged.slot, staged.shape[1]);
        self.load_batch(staged)?;
        let (seed, step, frozen) = (self.cfg.seed, self.step, self.cfg.frozen_bn);
        // ρ = 0, or a step `--sam_every` leaves to SGD: one pass.
        if self.cfg.rho == 0.0 || !self.cfg.schedule.sam_at(self.step) {
            self.loss_and_grad(false, Pass::train(seed, step).with_frozen_bn(frozen))?;
            self.launch_with(|l, s| flat::sum_squares_into(l, s.grads_buf(), s.slot(Slot::AscentNormSq)))?;
        } else {
            self.loss_and_grad(false, Pass::train(seed, step).tied(true).with_frozen_bn(frozen))?;
            self.launch_with(|l, s| s.ascend(l))?;
            self.loss_and_grad(true, Pass::train_frozen_stats(seed, step).with_frozen_bn(frozen))?;
        }
        let clip = self.cfg.gradient_clipping;
        self.launch_with(|l, s| flat::clip_by_global_norm_into(l, s.grads_buf(), clip, s.slot(Slot::GradNormSq)))?;
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
            flat::sum_squares_into(l, s.params_buf(), s.slot(Slot::ParamNormSq))
        })?;
        self.launched = Some(Launched { n, clip, slot });
        Ok(())
    }

    /// Waits for the launched step and reads its report: the step's one wait, every scalar
    /// the report needs read together.
    pub fn finish(&mut self) -> Result<StepReport, TrainError> {
        let Launched { n, clip, slot } =
            self.launched.take().ok_or_else(|| TrainError::Runtime("a device step finished that was not launched".into()))?;
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
        let grad_norm = v[Slot::GradNormSq as usize].sqrt();
        Ok(StepReport {
            loss: (v[Slot::Loss as usize] / n as f64) as f32,
            error_rate: v[Slot::Errors as usize] as f32 / n as f32,
            grad_norm: if clip > 0.0 { grad_norm.min(clip as f64) } else { grad_norm },
            ascent_grad_norm: v[Slot::AscentNormSq as usize].sqrt(),
            param_norm: v[Slot::ParamNormSq as usize].sqrt(),
            ascent_exchange: Default::default(),
            descent_exchange: Default::default(),
        })
    }

    /// The staged batch on the device (its copies queued), and the buffers sized for it.
    fn load_batch(&mut self, staged: Staged) -> Result<(), TrainError> {
        let Staged { slot, shape, on_device } = staged;
        let (n, k) = (shape[1], self.model.config().num_classes);
        let mem = self.gpu.memory();
        let err = device_error(&self.gpu, "DeviceStep::launch");
        if self.labels.as_ref().is_none_or(|b| b.len() != n) {
            self.labels = Some(mem.alloc(n).map_err(&err)?);
            self.losses64 = Some(mem.alloc(n).map_err(&err)?);
            self.wrong = Some(mem.alloc(n).map_err(&err)?);
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
        for (t, shape) in [(&mut self.probs, vec![n, k]), (&mut self.losses, vec![n]), (&mut self.dlogits, vec![n, k])] {
            t.place_like(&shape, &self.x)?;
        }
        Ok(())
    }

    /// Zeroed gradient, forward at `w` (or `w_adv`), the loss, backward and the L2 term at the
    /// same point; the loss's sum and the misclassified examples left in their slots.
    fn loss_and_grad(&mut self, at_adv: bool, pass: Pass) -> Result<(), TrainError> {
        self.launch_with(|l, s| flat::fill(l, s.grads_buf(), 0.0))?;
        let w = if at_adv { &self.w_adv } else { &self.params };
        let logits = self.model.forward(w, &mut self.state, &self.x, &pass)?;
        let [n, k] = match *logits.shape() {
            [n, k] => [n, k],
            ref s => return Err(TrainError::Runtime(format!("model returned logits of shape {s:?}"))),
        };
        let logits = logits.device_buf().ok_or_else(|| TrainError::Runtime("the model's logits left the device".into()))?;
        let bufs = |t: &Tensor| t.device_buf().expect("placed on the device by load_batch");
        let (probs, losses, dlogits) = (bufs(&self.probs), bufs(&self.losses), bufs(&self.dlogits));
        let (labels, losses64, wrong) =
            (self.labels_buf(), self.losses64.as_ref().expect("placed").buf(), self.wrong.as_ref().expect("placed").buf());
        let (ls, sh) = (self.cfg.label_smoothing, LossShape { n, k });
        let (loss_sum, errors) = (self.slot(Slot::Loss), self.slot(Slot::Errors));
        self.launch_with(|l, _| {
            softmax_xent_forward_into(l, logits, labels, ls, sh, [probs, losses], losses64, loss_sum)?;
            ringsam_kernels::dense::count_errors_into(l, wrong, logits, labels, errors)?;
            softmax_xent_backward(l, dlogits, probs, labels, ls, 1.0 / n as f32, sh)
        })?;
        let w = if at_adv { &self.w_adv } else { &self.params };
        self.model.backward(w, &mut self.grads, &self.x, &self.dlogits)?;
        let wd = if self.cfg.decoupled_weight_decay { 0.0 } else { self.cfg.weight_decay };
        if wd > 0.0 {
            let w = if at_adv { self.w_adv.device_buf() } else { self.params.device_buf() }.expect("on the device");
            self.launch_with(|l, s| flat::add_l2_gradient(l, s.grads_buf(), w, wd, &s.decayed))?;
        }
        Ok(())
    }

    /// `w_adv = w + ρ·g/‖g‖` (or ASAM's), ‖g‖² left in its slot.
    fn ascend(&self, l: &mut Box<dyn Launcher + Send>) -> Result<(), KernelError> {
        let (w_adv, w, g) = (self.w_adv.device_buf().expect("on the device"), self.params_buf(), self.grads_buf());
        if self.cfg.adaptive {
            flat::asam_ascent_point_into(l, [w_adv, w, g], self.cfg.rho, self.cfg.asam_eta, self.slot(Slot::AsamNormSq))?;
            flat::sum_squares_into(l, g, self.slot(Slot::AscentNormSq))
        } else {
            flat::ascent_point_into(l, w_adv, w, g, self.cfg.rho, self.slot(Slot::AscentNormSq))
        }
    }

    fn slot(&self, which: Slot) -> ringsam_kernels::Buf<f64> {
        let i = which as usize;
        self.scalars.buf().slice(i..i + 1)
    }

    fn params_buf(&self) -> ringsam_kernels::Buf<f32> {
        self.params.device_buf().expect("the device step's parameters live on the device")
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
