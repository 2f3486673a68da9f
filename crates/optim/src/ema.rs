//! Exponential moving average of weights and batch-norm state, as the reference's
//! `ExponentialMovingAverage` (TensorFlow's): `decay_t = min(d, (1 + Δ)/(10 + Δ))` with
//! `Δ = step − warmup`, and before `warmup` steps the average is a plain copy. The reference
//! hard-codes `warmup = 1560`; [`Ema::REFERENCE_WARMUP`] keeps it.

/// The averaged buffers.
#[derive(Clone, Debug)]
pub struct Ema {
    /// Target decay `d`.
    pub decay: f32,
    /// Steps during which the average just copies.
    pub warmup: u64,
    /// Averaged parameters.
    pub params: Vec<f32>,
    /// Averaged model state.
    pub state: Vec<f32>,
}

impl Ema {
    /// The reference's warm-up.
    pub const REFERENCE_WARMUP: u64 = 1560;

    /// Starts the average at the current values.
    pub fn new(decay: f32, warmup: u64, params: &[f32], state: &[f32]) -> Self {
        Ema { decay, warmup, params: params.to_vec(), state: state.to_vec() }
    }

    /// Folds in the values after step `step`.
    pub fn update(&mut self, step: u64, params: &[f32], state: &[f32]) {
        let d = self.decay_at(step);
        for (a, &b) in self.params.iter_mut().zip(params).chain(self.state.iter_mut().zip(state)) {
            *a = (1.0 - d) * b + d * *a;
        }
    }

    /// The weight of the old average at `step`: 0 (a copy) before the warm-up ends, then
    /// `min(decay, (1 + Δ)/(10 + Δ))` with Δ the steps since, as the reference ramps it.
    pub fn decay_at(&self, step: u64) -> f32 {
        if step < self.warmup {
            0.0
        } else {
            let delta = (step - self.warmup) as f32;
            self.decay.min((1.0 + delta) / (10.0 + delta))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_before_warmup_then_averages() {
        let mut e = Ema::new(0.5, 2, &[0.0], &[]);
        e.update(1, &[4.0], &[]);
        assert_eq!(e.params, [4.0]);
        e.update(2, &[8.0], &[]); // delta 0: decay = min(0.5, 0.1) = 0.1
        assert!((e.params[0] - (0.9 * 8.0 + 0.1 * 4.0)).abs() < 1e-6);
    }
}
