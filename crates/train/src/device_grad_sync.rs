//! Data-parallel exchange of a gradient that lives on a device: [`crate::grad_sync`]'s buckets,
//! leaving device memory as backward produces them (docs/ARCHITECTURE.md, "Replicas on GPUs").
//!
//! Backward's launches run ahead of the device: when the model reports that the gradients at
//! `offset..` are final, the kernels that compute them are queued, not run. So each bucket that
//! report completes queues, behind those kernels, its L2 term and a copy into the bucket's own
//! pinned host buffer on a side stream ([`DeviceMemory::read_async`]: an event orders the copy
//! after the kernels before it, and the kernels after it do not wait for the copy). The ring
//! sums the pinned buffer where it lies, with no host copy, as soon as the copy is in; the sum
//! goes back into the gradient by an asynchronous copy, queued before anything that reads it.
//!
//! When the host submits: while backward is being launched it only looks at the copies queued
//! so far ([`PendingRead::is_done`]) and submits those that are in; after the launches,
//! [`DeviceGradSync::finish`] waits for each copy in turn and submits it as it lands, while the
//! device still runs the rest of backward. Either way the exchange overlaps backward, however
//! far the host runs ahead of the device. Then it waits for each sum in turn and queues its
//! copy back.
//!
//! Every replica cuts the same buckets ([`plan_buckets`]) and submits them in the same order, as
//! the CPU step's [`crate::grad_sync::GradSync`] does: a CPU replica and a GPU replica make the
//! same ring operations.
//!
//! The gradient buffer is not written while a copy out of it may run: the next kernel that
//! writes it (pass 2's zeroing, the next step's) is queued only after `finish` has waited for
//! every copy.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use ringsam_collective::{PendingAllreduce, Values};
use ringsam_kernels::{Buf, DeviceMemory, KernelError, PendingRead, PinnedVec};

use crate::TrainError;
use crate::cluster::{Cluster, Scope, ring_err};
use crate::grad_sync::{BucketPlan, ExchangeStats, plan_buckets};

/// A bucket's pinned buffer as the ring's storage: the ring reads and writes it in place.
pub(crate) struct PinnedBucket {
    buf: PinnedVec<f32>,
    ptr: *mut f32,
}

// SAFETY: the buffer is owned (PinnedVec is Send) and `ptr` points into it.
unsafe impl Send for PinnedBucket {}

impl PinnedBucket {
    /// The ring's storage over `buf`, which no copy may still read or write.
    pub(crate) fn new(mut buf: PinnedVec<f32>, what: &'static str) -> Result<Self, TrainError> {
        let ptr = buf.host_mut().map_err(|e| kernel_err(what, e))?.as_mut_ptr();
        Ok(PinnedBucket { buf, ptr })
    }

    /// The buffer again, holding what the ring left in it.
    pub(crate) fn into_inner(self) -> PinnedVec<f32> {
        self.buf
    }
}

// SAFETY: `ptr` is where `buf`'s `len` values lie; pinned memory does not move when the
// PinnedVec that owns it does, and the ring holds this value (hence the buffer) while it uses it.
unsafe impl Values for PinnedBucket {
    fn values_ptr(&mut self) -> *mut f32 {
        self.ptr
    }

    fn values_len(&self) -> usize {
        self.buf.len()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

pub(crate) fn kernel_err(what: &'static str, e: KernelError) -> TrainError {
    TrainError::Runtime(format!("{what}: {e}"))
}

/// The exchange state of one replica whose gradient is on a device (see the module docs).
pub struct DeviceGradSync {
    plan: BucketPlan,
    buckets: Vec<Range<usize>>,
    /// Each bucket's pinned buffer while no copy or ring operation holds it.
    idle: Vec<Option<PinnedVec<f32>>>,
    scope: Scope,
    /// Buckets whose copy out is queued.
    launched: usize,
    /// Copies out, in bucket order, not yet submitted.
    reads: VecDeque<(usize, PendingRead<f32>)>,
    /// Sums in flight, in bucket order.
    sums: VecDeque<(usize, PendingAllreduce<PinnedBucket>)>,
    started: Option<Instant>,
    /// When the last bucket's copy was seen in: backward done on the device.
    last_in: Option<Instant>,
    error: Option<TrainError>,
}

impl DeviceGradSync {
    /// Exchange state for a gradient of `len` values.
    pub fn new(len: usize, plan: BucketPlan) -> Self {
        let buckets = plan_buckets(len, plan.first, plan.rest);
        DeviceGradSync {
            plan,
            idle: buckets.iter().map(|_| None).collect(),
            buckets,
            scope: Scope::World,
            launched: 0,
            reads: VecDeque::new(),
            sums: VecDeque::new(),
            started: None,
            last_in: None,
            error: None,
        }
    }

    /// Starts an exchange over `scope`; call before backward.
    pub fn begin(&mut self, scope: Scope) {
        self.scope = scope;
        self.launched = 0;
        self.reads.clear();
        self.sums.clear();
        self.started = None;
        self.last_in = None;
        self.error = None;
    }

    /// Backward's report: the gradients at `offset..` of `grads` are queued. Queues the copy out
    /// of every bucket now complete, after `prepare(bucket)` (its L2 term), and submits those
    /// copies already in. Errors are kept for [`DeviceGradSync::finish`].
    pub fn on_ready(
        &mut self,
        mem: &DeviceMemory,
        grads: Buf<f32>,
        offset: usize,
        prepare: &mut dyn FnMut(Range<usize>) -> Result<(), TrainError>,
        cluster: &mut Cluster,
    ) {
        // After an error nothing more is queued or submitted (the ring pairs operations by order).
        if !self.plan.overlap || self.error.is_some() {
            return;
        }
        if let Err(e) = self.read_out_while(mem, grads, prepare, |b| b.start >= offset).and_then(|()| self.submit_landed(cluster, false)) {
            self.error.get_or_insert(e);
        }
    }

    /// After backward's launches: queues the remaining buckets' copies, submits each as it
    /// lands, waits for every sum and queues its copy back into `grads`.
    pub fn finish(
        &mut self,
        mem: &DeviceMemory,
        grads: Buf<f32>,
        prepare: &mut dyn FnMut(Range<usize>) -> Result<(), TrainError>,
        cluster: &mut Cluster,
    ) -> Result<ExchangeStats, TrainError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.read_out_while(mem, grads, prepare, |_| true)?;
        self.submit_landed(cluster, true)?;
        let last_in = self.last_in.unwrap_or_else(Instant::now);
        let mut bytes = 0u64;
        while let Some((i, pending)) = self.sums.pop_front() {
            let summed = pending.wait().map_err(|e| ring_err("gradient all-reduce with the other replicas", e))?;
            let mut buf = summed.into_inner();
            mem.write_async_to(grads.slice(self.buckets[i].clone()), &mut buf)
                .map_err(|e| kernel_err("a summed bucket back to the device", e))?;
            bytes += 4 * buf.len() as u64;
            self.idle[i] = Some(buf);
        }
        let done = Instant::now();
        Ok(ExchangeStats {
            bytes,
            seconds: self.started.map_or(0.0, |s| (done - s).as_secs_f64()),
            exposed_seconds: done.saturating_duration_since(last_in).as_secs_f64(),
        })
    }

    /// Queues the copy out of each next bucket `ready` accepts.
    fn read_out_while(
        &mut self,
        mem: &DeviceMemory,
        grads: Buf<f32>,
        prepare: &mut dyn FnMut(Range<usize>) -> Result<(), TrainError>,
        ready: impl Fn(&Range<usize>) -> bool,
    ) -> Result<(), TrainError> {
        while self.launched < self.buckets.len() && ready(&self.buckets[self.launched]) {
            let (i, b) = (self.launched, self.buckets[self.launched].clone());
            prepare(b.clone())?;
            let buf = match self.idle[i].take() {
                Some(buf) => buf,
                None => mem.pinned(b.len()).map_err(|e| kernel_err("a gradient bucket's pinned buffer", e))?,
            };
            let read = mem.read_async(grads.slice(b), buf).map_err(|e| kernel_err("a gradient bucket's copy out", e))?;
            self.reads.push_back((i, read));
            self.launched += 1;
        }
        Ok(())
    }

    /// Submits the copies that are in, in bucket order; with `wait`, all of them, waiting for each.
    fn submit_landed(&mut self, cluster: &mut Cluster, wait: bool) -> Result<(), TrainError> {
        while let Some((_, read)) = self.reads.front_mut() {
            if !wait && !read.is_done().map_err(|e| kernel_err("a gradient bucket's copy out", e))? {
                break;
            }
            let (i, read) = self.reads.pop_front().expect("looked at above");
            let buf = read.wait().map_err(|e| kernel_err("a gradient bucket's copy out", e))?;
            if i + 1 == self.buckets.len() {
                self.last_in = Some(Instant::now());
            }
            self.started.get_or_insert_with(Instant::now);
            let pending = cluster.submit_sum(self.scope, PinnedBucket::new(buf, "a gradient bucket")?)?;
            self.sums.push_back((i, pending));
        }
        Ok(())
    }
}
