//! What kind of forward pass is running.

/// Per-call context of a forward pass.
///
/// Random draws (dropout and drop-connect masks, shake coefficients) are a pure function of
/// `(seed, step, layer)` (and the example's place in the global batch), so SAM's second pass at
/// `w + e` sees the same draws as its first pass and a run is reproducible. `update_bn_stats` is
/// true in training passes except SAM's second: the reference keeps the running statistics of
/// the clean pass and discards those of the perturbed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Training (batch statistics, dropout on) or evaluation (running statistics, dropout off).
    pub train: bool,
    /// Whether batch norm folds this pass's batch statistics into its running statistics.
    pub update_bn_stats: bool,
    /// Batch norm normalises with its running statistics even while training (and leaves them
    /// alone): the reference's finetuning from a pretrained checkpoint.
    pub frozen_bn: bool,
    /// Run seed.
    pub seed: u64,
    /// Global step: with `seed` and the layer it fixes every random draw.
    pub step: u64,
    /// Backward uses the forward's random coefficients (the reference's `true_gradient`): SAM's
    /// first pass. Otherwise ShakeShake/ShakeDrop draw independent backward coefficients.
    pub tied_backward: bool,
    /// Place of the batch's first example in the global batch (a replica's offset). Per-example
    /// draws are keyed by the global place, so R replicas draw exactly what one replica would.
    pub first_example: u64,
}

impl Pass {
    /// A training pass that updates batch-norm running statistics (SGD, or SAM's first pass).
    pub fn train(seed: u64, step: u64) -> Self {
        Pass { train: true, update_bn_stats: true, frozen_bn: false, seed, step, tied_backward: false, first_example: 0 }
    }
    /// A training pass that leaves running statistics alone (SAM's second pass, gradient checks).
    pub fn train_frozen_stats(seed: u64, step: u64) -> Self {
        Pass { train: true, update_bn_stats: false, frozen_bn: false, seed, step, tied_backward: false, first_example: 0 }
    }
    /// Evaluation: running statistics, no dropout.
    pub fn eval() -> Self {
        Pass { train: false, update_bn_stats: false, frozen_bn: false, seed: 0, step: 0, tied_backward: false, first_example: 0 }
    }
    /// One uniform draw in `[0, 1)` for example `example` of this pass's batch, from stream `what`
    /// of the layer keyed `layer`: a function of (seed, step, layer, the example's place in the
    /// global batch) only — what per-example stochastic layers (ShakeShake, ShakeDrop,
    /// drop-connect) draw from.
    pub fn example_draw(&self, layer: u64, what: u64, example: u64) -> f32 {
        let stream = layer ^ what.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (self.first_example + example).wrapping_mul(0xd1b5_4a32_d192_ed03);
        crate::Rng::stream(self.seed, self.step, stream).uniform()
    }

    /// This pass with backward coefficients tied to the forward's (or not).
    pub fn tied(self, tied_backward: bool) -> Self {
        Pass { tied_backward, ..self }
    }
    /// This pass with batch norm frozen to its running statistics (or not).
    pub fn with_frozen_bn(self, frozen_bn: bool) -> Self {
        Pass { frozen_bn, ..self }
    }
    /// This pass for a batch whose first example is `first_example` of the global batch.
    pub fn starting_at(self, first_example: u64) -> Self {
        Pass { first_example, ..self }
    }
}
