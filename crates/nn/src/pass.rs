//! What kind of forward pass is running.

/// Per-call context of a forward pass.
///
/// Random draws (dropout masks, later shake coefficients) are a pure function of
/// `(seed, step, layer)`, so SAM's second pass at `w + e` sees the same masks as its first pass
/// and a run is reproducible. `update_bn_stats` is true only in SAM's first pass: the reference
/// keeps the running statistics of the clean pass and discards those of the perturbed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Training (batch statistics, dropout on) or evaluation (running statistics, dropout off).
    pub train: bool,
    /// Whether batch norm folds this pass's batch statistics into its running statistics.
    pub update_bn_stats: bool,
    /// Run seed.
    pub seed: u64,
    /// Global step: with `seed` and the layer it fixes every random draw.
    pub step: u64,
}

impl Pass {
    /// A training pass that updates batch-norm running statistics (SGD, or SAM's first pass).
    pub fn train(seed: u64, step: u64) -> Self {
        Pass { train: true, update_bn_stats: true, seed, step }
    }
    /// A training pass that leaves running statistics alone (SAM's second pass, gradient checks).
    pub fn train_frozen_stats(seed: u64, step: u64) -> Self {
        Pass { train: true, update_bn_stats: false, seed, step }
    }
    /// Evaluation: running statistics, no dropout.
    pub fn eval() -> Self {
        Pass { train: false, update_bn_stats: false, seed: 0, step: 0 }
    }
}
