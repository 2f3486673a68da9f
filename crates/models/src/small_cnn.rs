//! SmallCnn: a tiny convolutional classifier with no batch norm.
//!
//! ```text
//! conv_0   3×3 conv, 16 channels, stride 1, no bias → ReLU
//! conv_1   3×3 conv, 32 channels, stride 2, no bias → ReLU
//! global average pool, Dense_0 (with bias)
//! ```
//! It exists for data-parallel tests: with no batch statistics, R replicas × batch B/R compute
//! exactly the gradient of one replica × batch B (up to summation order), so their trajectories
//! can be compared. Every layer is one of the engine's gradient-checked layers.

use ringsam_nn::layers::{Activation, ActivationKind, Conv2d, Conv2dConfig, GlobalAvgPool, Linear};
use ringsam_nn::{Layer, NnError, ParamLayout, Pass, StateLayout, Workspace};
use ringsam_tensor::Tensor;

use crate::residual_stack::{check_backward_buffers, model_fields};
use crate::{Model, ModelConfig, ModelError};

/// See the module docs.
pub struct SmallCnn {
    name: String,
    cfg: ModelConfig,
    layout: ParamLayout,
    state_layout: StateLayout,
    conv_0: Conv2d,
    relu_0: Activation,
    conv_1: Conv2d,
    relu_1: Activation,
    conv_1_start: usize, // first parameter offset of conv_1 (gradient-ready mark)
    head_start: usize,   // first parameter offset of Dense_0
    pool: GlobalAvgPool,
    dense: Linear,
}

impl SmallCnn {
    /// Builds the network for `cfg`.
    pub fn new(cfg: ModelConfig) -> Result<Self, ModelError> {
        if cfg.num_classes == 0 || cfg.in_channels == 0 {
            return Err(ModelError::Config { name: "SmallCnn".into(), why: "num_classes and in_channels must be positive".into() });
        }
        let mut p = ParamLayout::new();
        let ws = Workspace::new();
        let first = Conv2dConfig { input_grad: false, ..Conv2dConfig::same(cfg.in_channels, 16, 3, 1) };
        let conv_0 = Conv2d::with_workspace(&mut p, "conv_0", first, &ws);
        let conv_1_start = p.total();
        let conv_1 = Conv2d::with_workspace(&mut p, "conv_1", Conv2dConfig::same(16, 32, 3, 2), &ws);
        let head_start = p.total();
        let dense = Linear::new(&mut p, "Dense_0", 32, cfg.num_classes);
        Ok(SmallCnn {
            name: "SmallCnn".into(),
            cfg,
            layout: p,
            state_layout: StateLayout::new(),
            conv_0,
            relu_0: Activation::new("relu_0", ActivationKind::Relu),
            conv_1,
            relu_1: Activation::new("relu_1", ActivationKind::Relu),
            conv_1_start,
            head_start,
            pool: GlobalAvgPool::new("global_avg_pool"),
            dense,
        })
    }
}

impl Model for SmallCnn {
    model_fields!();

    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64) {
        crate::init::init_by_name(&self.layout, params, &self.state_layout, state, seed);
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError> {
        if params.len() != self.layout.total() {
            return Err(NnError::ParamLen { expected: self.layout.total(), got: params.len() });
        }
        self.conv_0.forward(params, state, x, pass)?;
        self.relu_0.forward(params, state, self.conv_0.output(), pass)?;
        self.conv_1.forward(params, state, self.relu_0.output(), pass)?;
        self.relu_1.forward(params, state, self.conv_1.output(), pass)?;
        self.pool.forward(params, state, self.relu_1.output(), pass)?;
        self.dense.forward(params, state, self.pool.output(), pass)?;
        Ok(self.dense.output())
    }

    fn backward_notify(
        &mut self,
        params: &[f32],
        grads: &mut [f32],
        x: &Tensor,
        dlogits: &Tensor,
        ready: &mut dyn FnMut(&mut [f32], usize),
    ) -> Result<(), NnError> {
        check_backward_buffers(&self.layout, &self.state_layout, params, grads)?;
        self.dense.backward(params, grads, self.pool.output(), dlogits)?;
        ready(grads, self.head_start);
        self.pool.backward(params, grads, self.relu_1.output(), self.dense.dinput())?;
        self.relu_1.backward(params, grads, self.conv_1.output(), self.pool.dinput())?;
        self.conv_1.backward(params, grads, self.relu_0.output(), self.relu_1.dinput())?;
        ready(grads, self.conv_1_start);
        self.relu_0.backward(params, grads, self.conv_0.output(), self.conv_1.dinput())?;
        self.conv_0.backward(params, grads, x, self.relu_0.dinput())?;
        ready(grads, 0);
        Ok(())
    }

    fn last_forward_macs(&self) -> usize {
        [&self.conv_0, &self.conv_1].iter().filter_map(|c| c.last_shape()).map(|s| s.macs()).sum::<usize>() + self.dense.last_macs()
    }

    fn last_backward_macs(&self) -> usize {
        2 * self.last_forward_macs() - self.conv_0.last_shape().map_or(0, |s| s.macs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ logits·v` in f64 (v = the `dl` below), the scalar whose gradient backward computes.
    fn objective(m: &mut SmallCnn, params: &[f32], x: &Tensor, v: &[f32]) -> f64 {
        let out = m.forward(params, &mut [], x, &Pass::train(0, 0)).unwrap();
        out.as_slice().iter().zip(v).map(|(&o, &v)| o as f64 * v as f64).sum()
    }

    #[test]
    fn gradients_match_finite_differences_and_ready_marks_fall_to_zero() {
        let mut m = SmallCnn::new(ModelConfig { num_classes: 3, in_channels: 2 }).unwrap();
        let mut params = vec![0.0; m.layout.total()];
        m.init(&mut params, &mut [], 1);
        let x = Tensor::from_vec(&[2, 3, 6, 6], (0..216).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
        let v = [0.1, -0.2, 0.1, 0.3, 0.0, -0.3, -0.1, 0.2, -0.1];
        let dl = Tensor::from_vec(&[3, 3], v.to_vec()).unwrap();
        m.forward(&params, &mut [], &x, &Pass::train(0, 0)).unwrap();
        let mut full = vec![0.0; params.len()];
        m.backward(&params, &mut full, &x, &dl).unwrap();
        // Central differences on an even sample of every tensor (tolerances as the layer checks).
        // A ReLU whose input crosses 0 inside ±eps makes the estimate meaningless; such points
        // show as one-sided slopes that disagree, and are skipped (a few at most).
        let eps = 1e-3f32;
        let (mut checked, mut skipped) = (0, 0);
        let centre = objective(&mut m, &params, &x, &v);
        for i in (0..params.len()).step_by(7) {
            let keep = params[i];
            params[i] = keep + eps;
            let up = objective(&mut m, &params, &x, &v);
            params[i] = keep - eps;
            let down = objective(&mut m, &params, &x, &v);
            params[i] = keep;
            let (right, left) = ((up - centre) / eps as f64, (centre - down) / eps as f64);
            if (right - left).abs() > 1e-3 + 0.05 * right.abs().max(left.abs()) {
                skipped += 1;
                continue;
            }
            let numeric = (up - down) / (2.0 * eps as f64);
            assert!((full[i] as f64 - numeric).abs() <= 1e-3 + 5e-3 * numeric.abs(), "param {i}: analytic {} numeric {numeric}", full[i]);
            checked += 1;
        }
        assert!(skipped * 10 <= checked, "{skipped} kinks against {checked} checked values");
        // The ready marks only fall, end at 0, and each marks gradients already final.
        m.forward(&params, &mut [], &x, &Pass::train(0, 0)).unwrap();
        let mut marks = Vec::new();
        let mut g = vec![0.0; params.len()];
        m.backward_notify(&params, &mut g, &x, &dl, &mut |g, at| marks.push((at, g[at..].to_vec()))).unwrap();
        assert_eq!(marks.last().unwrap().0, 0);
        assert!(marks.windows(2).all(|w| w[0].0 > w[1].0), "{:?}", marks.iter().map(|m| m.0).collect::<Vec<_>>());
        for (at, seen) in marks {
            assert_eq!(seen, full[at..], "gradients from offset {at} were not final when reported");
        }
    }
}
