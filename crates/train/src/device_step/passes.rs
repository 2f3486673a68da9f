//! The device step's passes over micro-batches, their exchange, and the batch-norm statistics'
//! mean ([`crate::step`]'s module docs have the arithmetic; this is the same on a device).

use std::ops::Range;

use ringsam_kernels::flat;
use ringsam_kernels::loss::{LossShape, softmax_xent_backward, softmax_xent_forward_into};
use ringsam_kernels::{Buf, DeviceVec, Gpu, PendingRead, PinnedVec};
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;

use super::{DeviceStep, device_error};
use crate::TrainError;
use crate::cluster::{Cluster, Scope};
use crate::device_grad_sync::{PinnedBucket, kernel_err};
use crate::grad_sync::ExchangeStats;

/// The step's batch-norm statistics as the mean of every micro-batch's over the world: each
/// micro-batch starts from the step's statistics (`start`), and their updates are summed
/// (`sum`, whose last value is how many micro-batches were summed).
#[derive(Default)]
pub(super) struct StatsMean {
    /// Several micro-batches or replicas this step: the statistics are a mean.
    active: bool,
    /// Over replicas too: the sum crosses the ring.
    exchanged: bool,
    /// Micro-batches of this replica summed this step.
    count: usize,
    start: Option<DeviceVec<f32>>,
    sum: Option<DeviceVec<f32>>,
    /// The sum's copy out, started when the pass that updates the statistics is queued.
    read: Option<PendingRead<f32>>,
    /// Its pinned buffer between steps.
    idle: Option<PinnedVec<f32>>,
}

impl StatsMean {
    /// Whether finishing the statistics waits for the ring.
    pub(super) fn exchanged(&self) -> bool {
        self.exchanged
    }

    /// The statistics as the step found them, when it kept them.
    pub(super) fn start_buf(&self) -> Option<Buf<f32>> {
        self.start.as_ref().filter(|_| self.active).map(DeviceVec::buf)
    }

    /// A failed step: nothing in flight.
    pub(super) fn abandon(&mut self) {
        self.read = None; // waits for the copy
        self.count = 0;
    }
}

/// The L2 term `wd·w` added to the gradient `g` over the decayed ranges within a bucket.
fn l2_term<'a>(
    gpu: &'a Gpu,
    [g, w]: [Buf<f32>; 2],
    wd: f32,
    decayed: &'a [Range<usize>],
) -> impl FnMut(Range<usize>) -> Result<(), TrainError> + 'a {
    move |bucket| {
        if wd == 0.0 {
            return Ok(());
        }
        let parts: Vec<_> = decayed.iter().map(|r| r.start.max(bucket.start)..r.end.min(bucket.end)).filter(|r| !r.is_empty()).collect();
        let mut l = gpu.launcher();
        flat::add_l2_gradient(&mut *l, g, w, wd, &parts).map_err(device_error(gpu, "the L2 term"))
    }
}

/// The point a pass runs at (`w`, or `w_adv` for SAM's second pass) and its input (the batch,
/// or the micro-batch copied out of it when there are several).
fn point_and_input<'a>(
    at_adv: bool,
    [w, w_adv]: [&'a Tensor; 2],
    [x, micro_x]: [&'a Tensor; 2],
    micros: usize,
) -> (&'a Tensor, &'a Tensor) {
    (if at_adv { w_adv } else { w }, if micros > 1 { micro_x } else { x })
}

impl DeviceStep {
    /// `(n, micro)` of the launched step.
    fn batch_shape(&self) -> (usize, usize) {
        let l = self.launched.as_ref().expect("a launched step");
        (l.n, l.micro)
    }

    /// Keeps the statistics the step starts from and zeroes their sum, when they are a mean.
    pub(super) fn begin_stats(&mut self) -> Result<(), TrainError> {
        let (n, micro) = self.batch_shape();
        let len = self.state.len();
        self.stats.active = len > 0 && (self.exchange.is_some() || n / micro > 1);
        self.stats.exchanged = len > 0 && self.exchange.is_some();
        self.stats.count = 0;
        if !self.stats.active {
            return Ok(());
        }
        if self.stats.start.as_ref().is_none_or(|b| b.len() != len) {
            let (mem, err) = (self.gpu.memory(), device_error(&self.gpu, "DeviceStep::launch"));
            self.stats.start = Some(mem.alloc(len).map_err(&err)?);
            self.stats.sum = Some(mem.alloc(len + 1).map_err(&err)?);
        }
        let (start, sum) = (self.stats.start_buf().expect("placed"), self.stats.sum.as_ref().expect("placed").buf());
        self.launch_with(|l, s| {
            flat::copy(l, start, s.state_buf())?;
            flat::fill(l, sum, 0.0)
        })
    }

    /// Zeroed gradient, then over the micro-batches: forward at `w` (or `w_adv`), the loss,
    /// backward; the last one adds the L2 term and, with a `scope` and rings, sends the gradient
    /// to them bucket by bucket during its backward. Each micro-batch's loss sum and errors are
    /// left in its slots.
    pub(super) fn run_pass(
        &mut self,
        at_adv: bool,
        pass: Pass,
        scope: Option<Scope>,
        peers: Option<&mut Cluster>,
    ) -> Result<(), TrainError> {
        let (n, micro) = self.batch_shape();
        let micros = n / micro;
        let examples = match scope {
            Some(Scope::World) => micro * self.share.units,
            Some(Scope::Group) => self.share.examples_of(self.group.clone(), micro * self.share.units),
            None => n,
        };
        // Loss scale per example, and this replica's part of the L2 term (1 on one replica).
        let weights = [1.0 / examples as f32, n as f32 / examples as f32];
        let wd = if self.cfg.decoupled_weight_decay { 0.0 } else { self.cfg.weight_decay * weights[1] };
        let first = (micro * self.share.my_units().start) as u64;
        self.launch_with(|l, s| flat::fill(l, s.grads_buf(), 0.0))?;
        let mut peers = peers;
        for j in 0..micros {
            let pass = pass.starting_at(first + (j * micro) as u64);
            let tracks = pass.update_bn_stats && self.stats.active;
            if tracks && j > 0 {
                let start = self.stats.start_buf().expect("kept by begin_stats");
                self.launch_with(|l, s| flat::copy(l, s.state_buf(), start))?;
            }
            if micros > 1 {
                self.copy_micro_batch(j)?;
            }
            self.forward_and_loss(at_adv, &pass, j, weights[0])?;
            if tracks {
                let sum = self.stats.sum.as_ref().expect("placed by begin_stats").buf();
                let len = self.state.len();
                self.launch_with(|l, s| flat::axpy(l, sum.slice(0..len), 1.0, s.state_buf()))?;
                self.stats.count += 1;
            }
            match (j + 1 == micros, scope, peers.as_deref_mut()) {
                (true, Some(scope), Some(cluster)) if self.exchange.is_some() => self.backward_exchanged(at_adv, scope, wd, cluster)?,
                (last, ..) => {
                    let (w, xj) = point_and_input(at_adv, [&self.params, &self.w_adv], [&self.x, &self.micro_x], micros);
                    self.model.backward(w, &mut self.grads, xj, &self.dlogits)?;
                    if last {
                        let g = self.grads_buf();
                        let w = w.device_buf().expect("on the device");
                        l2_term(&self.gpu, [g, w], wd, &self.decayed)(0..g.len())?;
                    }
                }
            }
        }
        if pass.update_bn_stats && self.stats.exchanged {
            self.stats.read = Some(self.read_stats_out()?);
        }
        Ok(())
    }

    /// Micro-batch `j`'s images into `micro_x`, copied on the device (one run per channel).
    fn copy_micro_batch(&mut self, j: usize) -> Result<(), TrainError> {
        let (n, micro) = self.batch_shape();
        let [c, _, h, w] = self.x.dims4("DeviceStep::copy_micro_batch")?;
        self.micro_x.place_like(&[c, micro, h, w], &self.x)?;
        let (src, dst, hw) = (self.x.device_buf().expect("on the device"), self.micro_x.device_buf().expect("on the device"), h * w);
        self.launch_with(|l, _| {
            for ch in 0..c {
                let from = (ch * n + j * micro) * hw;
                flat::copy(l, dst.slice(ch * micro * hw..(ch + 1) * micro * hw), src.slice(from..from + micro * hw))?;
            }
            Ok(())
        })
    }

    /// Forward of micro-batch `j`, its loss (each example scaled by `scale` in the gradient of
    /// the logits) and its errors into its slots.
    fn forward_and_loss(&mut self, at_adv: bool, pass: &Pass, j: usize, scale: f32) -> Result<(), TrainError> {
        let (n, micro) = self.batch_shape();
        let (w, xj) = point_and_input(at_adv, [&self.params, &self.w_adv], [&self.x, &self.micro_x], n / micro);
        let logits = self.model.forward(w, &mut self.state, xj, pass)?;
        let [rows, k] = match *logits.shape() {
            [rows, k] if rows == micro => [rows, k],
            ref s => return Err(TrainError::Runtime(format!("model returned logits of shape {s:?} for {micro} examples"))),
        };
        let logits = logits.device_buf().ok_or_else(|| TrainError::Runtime("the model's logits left the device".into()))?;
        let bufs = |t: &Tensor| t.device_buf().expect("placed on the device by load_batch");
        let (probs, losses, dlogits) = (bufs(&self.probs), bufs(&self.losses), bufs(&self.dlogits));
        let labels = self.labels_buf().slice(j * micro..(j + 1) * micro);
        let (losses64, wrong) = (self.losses64.as_ref().expect("placed").buf(), self.wrong.as_ref().expect("placed").buf());
        let (ls, sh) = (self.cfg.label_smoothing, LossShape { n: rows, k });
        let [loss_sum, errors] = self.micro_slots(j);
        self.launch_with(|l, _| {
            softmax_xent_forward_into(l, logits, labels, ls, sh, [probs, losses], losses64, loss_sum)?;
            ringsam_kernels::dense::count_errors_into(l, wrong, logits, labels, errors)?;
            softmax_xent_backward(l, dlogits, probs, labels, ls, scale, sh)
        })
    }

    /// The last micro-batch's backward, its buckets leaving for the ring as they are queued.
    fn backward_exchanged(&mut self, at_adv: bool, scope: Scope, wd: f32, cluster: &mut Cluster) -> Result<(), TrainError> {
        let (n, micro) = self.batch_shape();
        let g = self.grads_buf();
        let DeviceStep { model, params, w_adv, grads, x, micro_x, dlogits, exchange, gpu, decayed, .. } = self;
        let (w, xj) = point_and_input(at_adv, [params, w_adv], [x, micro_x], n / micro);
        let sync = exchange.as_mut().expect("data-parallel");
        sync.begin(scope);
        let mut prepare = l2_term(gpu, [g, w.device_buf().expect("on the device")], wd, decayed);
        let mem = gpu.memory().clone();
        model.backward_notify(w, grads, xj, dlogits, &mut |g, at| {
            sync.on_ready(&mem, g.device_buf().expect("on the device"), at, &mut prepare, cluster);
        })?;
        let l = self.launched.as_mut().expect("a launched step");
        (l.exchanging, l.l2) = (true, (wd, at_adv));
        Ok(())
    }

    /// Waits for the gradient's exchange, if one runs: every bucket summed and queued back.
    pub(super) fn finish_exchange(&mut self, peers: Option<&mut Cluster>) -> Result<ExchangeStats, TrainError> {
        let l = self.launched.as_mut().expect("a launched step");
        if !l.exchanging {
            return Ok(ExchangeStats::default());
        }
        l.exchanging = false;
        let (wd, at_adv) = l.l2;
        let cluster = peers.ok_or_else(|| TrainError::Runtime("a data-parallel device step finished without its rings".into()))?;
        let g = self.grads_buf();
        let w = if at_adv { &self.w_adv } else { &self.params }.device_buf().expect("on the device");
        let mut prepare = l2_term(&self.gpu, [g, w], wd, &self.decayed);
        let sync = self.exchange.as_mut().expect("data-parallel");
        sync.finish(self.gpu.memory(), g, &mut prepare, cluster)
    }

    /// The sum of the statistics, with its count, on its way to pinned memory.
    fn read_stats_out(&mut self) -> Result<PendingRead<f32>, TrainError> {
        let (sum, count, len) = (self.stats.sum.as_ref().expect("placed").buf(), self.stats.count as f32, self.state.len());
        self.launch_with(|l, _| flat::fill(l, sum.slice(len..len + 1), count))?;
        let mem = self.gpu.memory();
        let buf = match self.stats.idle.take() {
            Some(buf) => buf,
            None => mem.pinned(len + 1).map_err(|e| kernel_err("the statistics' pinned buffer", e))?,
        };
        mem.read_async(sum, buf).map_err(|e| kernel_err("the statistics' copy out", e))
    }

    /// The step's statistics: the mean of the micro-batches' over the world (the ring's sum of
    /// every replica's sum and count), or over this replica's micro-batches on one replica.
    pub(super) fn finish_stats(&mut self, peers: Option<&mut Cluster>) -> Result<(), TrainError> {
        if !self.stats.active {
            return Ok(());
        }
        let (len, sum) = (self.state.len(), self.stats.sum.as_ref().expect("placed").buf());
        if !self.stats.exchanged {
            let count = self.stats.count;
            if count > 0 {
                self.launch_with(|l, s| {
                    flat::copy(l, s.state_buf(), sum.slice(0..len))?;
                    flat::scale(l, s.state_buf(), 1.0 / count as f32)
                })?;
            }
            return Ok(());
        }
        let cluster = peers.ok_or_else(|| TrainError::Runtime("a data-parallel device step finished without its rings".into()))?;
        // No pass updated them (batch norm frozen): the sum is still the zeros, counted 0.
        let read = match self.stats.read.take() {
            Some(read) => read,
            None => self.read_stats_out()?,
        };
        let buf = read.wait().map_err(|e| kernel_err("the statistics' copy out", e))?;
        let pending = cluster.submit_sum(Scope::World, PinnedBucket::new(buf, "the statistics")?)?;
        let mut buf =
            pending.wait().map_err(|e| crate::cluster::ring_err("batch-norm statistics with the other replicas", e))?.into_inner();
        let host = buf.host_mut().map_err(|e| kernel_err("the statistics' pinned buffer", e))?;
        let count = host[len];
        if count > 0.0 {
            for v in &mut host[..len] {
                *v /= count;
            }
            let mem = self.gpu.memory();
            mem.write_async_to(sum, &mut buf).map_err(|e| kernel_err("the statistics back to the device", e))?;
            self.launch_with(|l, s| flat::copy(l, s.state_buf(), sum.slice(0..len)))?;
        }
        self.stats.idle = Some(buf);
        Ok(())
    }
}
