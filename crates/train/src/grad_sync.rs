//! Data-parallel gradient exchange, overlapped with backward (DDP's bucketing).
//!
//! The gradient buffer is cut into buckets from its end: the first bucket is small (1 MiB by
//! default) so communication starts early, later ones are large (25 MiB) so per-operation costs
//! stay small. Backward walks the layers from last to first and reports, through
//! [`ringsam_models::Model::backward_notify`], the offset from which every gradient is final;
//! each bucket lying wholly above it is prepared (weight decay's L2 term added), copied out and
//! submitted to the ring at once, so the ring works while the rest of backward runs. After
//! backward, [`GradSync::finish`] submits what remains, waits for every bucket in submit order
//! and writes the sums back into the buffer (the step scaled every example by one over the
//! examples of the whole exchange, so the sum is the mean).
//!
//! Every replica cuts the same buckets and submits them in the same order (the ring matches
//! operations by their order), whatever its timing.

use std::ops::Range;
use std::time::Instant;

use ringsam_collective::PendingAllreduce;

use crate::TrainError;
use crate::cluster::{Cluster, Scope, ring_err};

/// What one exchange (all buckets of one gradient) cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Gradient bytes this replica contributed.
    pub bytes: u64,
    /// From the first bucket's submission to the last result.
    pub seconds: f64,
    /// Of those, the time the training thread waited after backward (communication not hidden).
    pub exposed_seconds: f64,
}

/// Bucket sizes in values, and whether buckets start during backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketPlan {
    /// The first bucket (the last layers' gradients).
    pub first: usize,
    /// Every later bucket.
    pub rest: usize,
    /// Submit buckets as backward finishes them (true) or all after backward (false: to measure
    /// what the overlap buys).
    pub overlap: bool,
}

impl Default for BucketPlan {
    /// DDP's defaults: 1 MiB first bucket, 25 MiB after, overlapped.
    fn default() -> Self {
        BucketPlan { first: (1 << 20) / 4, rest: (25 << 20) / 4, overlap: true }
    }
}

/// Cuts `0..len` into buckets from the end: `first` values, then `rest` each. Returned in
/// submission order (highest offsets first).
pub fn plan_buckets(len: usize, first: usize, rest: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut hi = len;
    let mut size = first.max(1);
    while hi > 0 {
        let lo = hi.saturating_sub(size);
        out.push(lo..hi);
        hi = lo;
        size = rest.max(1);
    }
    out
}

/// The exchange state of one replica (see the module docs).
pub struct GradSync {
    /// The rings.
    pub cluster: Cluster,
    plan: BucketPlan,
    buckets: Vec<Range<usize>>,
    scope: Scope,
    launched: usize,
    pending: Vec<(Range<usize>, PendingAllreduce)>,
    started: Option<Instant>,
    error: Option<TrainError>,
}

impl GradSync {
    /// Exchange state for a gradient buffer of `len` values.
    pub fn new(cluster: Cluster, len: usize, plan: BucketPlan) -> GradSync {
        GradSync {
            cluster,
            buckets: plan_buckets(len, plan.first, plan.rest),
            plan,
            scope: Scope::World,
            launched: 0,
            pending: Vec::new(),
            started: None,
            error: None,
        }
    }

    /// How the gradient is cut into buckets.
    pub fn plan(&self) -> BucketPlan {
        self.plan
    }

    /// Starts an exchange over `scope`; call before backward.
    pub fn begin(&mut self, scope: Scope) {
        self.scope = scope;
        self.launched = 0;
        self.pending.clear();
        self.started = None;
        self.error = None;
    }

    /// Backward's report: gradients at `offset..` are final. Submits every bucket now complete,
    /// after `prepare(grads, bucket)` (the L2 term). Errors are kept for [`GradSync::finish`].
    pub fn on_ready(&mut self, grads: &mut [f32], offset: usize, prepare: &mut dyn FnMut(&mut [f32], Range<usize>)) {
        if !self.plan.overlap {
            return;
        }
        self.launch_while(grads, prepare, |b| b.start >= offset);
    }

    fn launch_while(
        &mut self,
        grads: &mut [f32],
        prepare: &mut dyn FnMut(&mut [f32], Range<usize>),
        ready: impl Fn(&Range<usize>) -> bool,
    ) {
        while self.error.is_none() && self.launched < self.buckets.len() && ready(&self.buckets[self.launched]) {
            let b = self.buckets[self.launched].clone();
            prepare(grads, b.clone());
            self.started.get_or_insert_with(Instant::now);
            match self.cluster.submit_sum(self.scope, grads[b.clone()].to_vec()) {
                Ok(p) => self.pending.push((b, p)),
                Err(e) => self.error = Some(e),
            }
            self.launched += 1;
        }
    }

    /// After backward: submits the remaining buckets, waits for all and writes the summed
    /// gradients into `grads`.
    pub fn finish(&mut self, grads: &mut [f32], prepare: &mut dyn FnMut(&mut [f32], Range<usize>)) -> Result<ExchangeStats, TrainError> {
        let after_backward = Instant::now();
        self.launch_while(grads, prepare, |_| true);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut bytes = 0u64;
        for (b, p) in self.pending.drain(..) {
            let avg = p.wait().map_err(|e| ring_err("gradient all-reduce with the other replicas", e))?;
            grads[b].copy_from_slice(&avg);
            bytes += 4 * avg.len() as u64;
        }
        let done = Instant::now();
        Ok(ExchangeStats {
            bytes,
            seconds: self.started.map_or(0.0, |s| (done - s).as_secs_f64()),
            exposed_seconds: (done - after_backward).as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_buffer_from_its_end() {
        assert_eq!(plan_buckets(10, 3, 4), vec![7..10, 3..7, 0..3]);
        assert_eq!(plan_buckets(2, 3, 4), vec![0..2]);
        assert_eq!(plan_buckets(0, 3, 4), Vec::<Range<usize>>::new());
        assert_eq!(plan_buckets(7, 3, 4), vec![4..7, 0..4]);
    }
}
