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

use ringsam_nn::layers::{Activation, ActivationKind, Conv2dConfig};

use crate::chain::Chain;
use crate::init::init_by_name;
use crate::layer_factory::LayerFactory;
use crate::network::Network;
use crate::stem_head::{CIFAR_STEM_WIDTH, first_conv};
use crate::{ModelConfig, ModelError};

/// Builds the network for `cfg` (see the module docs). Three chains, so that backward reports
/// `Dense_0`, `conv_1` and `conv_0` as each is done.
pub fn new(cfg: ModelConfig) -> Result<Network, ModelError> {
    if cfg.num_classes == 0 || cfg.in_channels == 0 {
        return Err(ModelError::Config { name: "SmallCnn".into(), why: "num_classes and in_channels must be positive".into() });
    }
    let mut layers = LayerFactory::default();
    let stem = Chain::sequential(&mut layers)
        .then(|l| first_conv(l, "conv_0", cfg.in_channels))
        .then(|_| Activation::new("relu_0", ActivationKind::Relu))
        .build();
    let body = Chain::sequential(&mut layers)
        .then(|l| l.conv("conv_1", Conv2dConfig::same(CIFAR_STEM_WIDTH, 32, 3, 2)))
        .then(|_| Activation::new("relu_1", ActivationKind::Relu))
        .build();
    let head = Chain::sequential(&mut layers).pool_dense("Dense_0", 32, cfg.num_classes).build();
    Ok(Network::assemble("SmallCnn", cfg, init_by_name, layers, stem, body, head))
}

#[cfg(test)]
mod tests {
    use ringsam_nn::Pass;
    use ringsam_tensor::Tensor;

    use super::*;
    use crate::Model;

    /// `Σ logits·v` in f64 (v = the `dl` below), the scalar whose gradient backward computes.
    fn objective(m: &mut Network, params: &Tensor, x: &Tensor, v: &[f32]) -> f64 {
        let out = m.forward(params, &mut Tensor::empty(), x, &Pass::train(0, 0)).unwrap();
        out.as_slice().iter().zip(v).map(|(&o, &v)| o as f64 * v as f64).sum()
    }

    #[test]
    fn gradients_match_finite_differences_and_ready_marks_fall_to_zero() {
        let mut m = new(ModelConfig { num_classes: 3, in_channels: 2 }).unwrap();
        let mut params = Tensor::from(vec![0.0; m.layout().total()]);
        m.init(&mut params, &mut [], 1);
        let x = Tensor::from_vec(&[2, 3, 6, 6], (0..216).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
        let v = [0.1, -0.2, 0.1, 0.3, 0.0, -0.3, -0.1, 0.2, -0.1];
        let dl = Tensor::from_vec(&[3, 3], v.to_vec()).unwrap();
        m.forward(&params, &mut Tensor::empty(), &x, &Pass::train(0, 0)).unwrap();
        let mut full = Tensor::from(vec![0.0; params.len()]);
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
        m.forward(&params, &mut Tensor::empty(), &x, &Pass::train(0, 0)).unwrap();
        let mut marks = Vec::new();
        let mut g = Tensor::from(vec![0.0; params.len()]);
        m.backward_notify(&params, &mut g, &x, &dl, &mut |g, at| marks.push((at, g[at..].to_vec()))).unwrap();
        assert_eq!(marks.last().unwrap().0, 0);
        assert!(marks.windows(2).all(|w| w[0].0 > w[1].0), "{:?}", marks.iter().map(|m| m.0).collect::<Vec<_>>());
        for (at, seen) in marks {
            assert_eq!(seen, full[at..], "gradients from offset {at} were not final when reported");
        }
    }
}
