//! Drop-connect as EfficientNet uses it (stochastic depth on a residual branch): each example's
//! branch is dropped with probability `rate` and kept ones are scaled by `1/(1 − rate)`, so
//! evaluation is the identity. One draw per example, keyed like every per-example draw
//! ([`Pass::example_draw`]): SAM's two passes drop the same examples, replicas draw what one
//! replica would. (The reference's hardware-RNG Bernoulli is neither; docs/SAM.md, "Random draws".)

use ringsam_tensor::Tensor;

use super::shake::{scale_examples_backward, scale_examples_forward};
use super::{Buffers, Layer, name_key, shape_error};
use crate::{NnError, Pass};

/// See the module docs.
#[derive(Debug)]
pub struct DropConnect {
    name: String,
    key: u64,
    rate: f32,
    coef: Vec<f32>,    // per example: 0 or 1/(1 − rate); empty after an evaluation pass
    on_device: Tensor, // the same, when the layer runs on a device
    buffers: Buffers,
}

impl DropConnect {
    /// Drops a whole example's branch with probability `rate` (0 ≤ rate < 1).
    pub fn new(name: &str, rate: f32) -> Self {
        assert!((0.0..1.0).contains(&rate), "drop-connect {name}: rate {rate} outside [0, 1)");
        DropConnect {
            name: name.to_string(),
            key: name_key(name),
            rate,
            coef: Vec::new(),
            on_device: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }

    /// The last training forward's per-example scales.
    pub fn coefficients(&self) -> &[f32] {
        &self.coef
    }
}

impl Layer for DropConnect {
    fn name(&self) -> &str {
        &self.name
    }

    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        let n = match *x.shape() {
            [_, n, _, _] if n > 0 => n,
            _ => return Err(shape_error(&self.name, "(C, N, H, W)".into(), x)),
        };
        self.coef.clear();
        if pass.train && self.rate > 0.0 {
            let keep = 1.0 - self.rate;
            self.coef = (0..n as u64).map(|i| if pass.example_draw(self.key, 4, i) < keep { 1.0 / keep } else { 0.0 }).collect();
        }
        scale_examples_forward(&self.name, &mut self.buffers, &mut self.on_device, x, &self.coef)
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        scale_examples_backward(&self.name, &mut self.buffers, &mut self.on_device, x, dout, &self.coef)
    }

    fn on_device(&self) -> bool {
        true
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
