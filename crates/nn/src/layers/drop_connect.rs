//! Drop-connect as EfficientNet uses it (stochastic depth on a residual branch): each example's
//! branch is dropped with probability `rate` and kept ones are scaled by `1/(1 − rate)`, so
//! evaluation is the identity. One draw per example, keyed like every per-example draw
//! ([`Pass::example_draw`]): SAM's two passes drop the same examples, replicas draw what one
//! replica would. (The reference's hardware-RNG Bernoulli is neither; docs/SAM.md, "Random draws".)

use ringsam_tensor::Tensor;

use super::shake::{scale_examples, scale_examples_backward};
use super::{Buffers, Layer, name_key, shape_error};
use crate::{NnError, Pass};

/// See the module docs.
#[derive(Debug)]
pub struct DropConnect {
    name: String,
    key: u64,
    rate: f32,
    coef: Vec<f32>, // per example: 0 or 1/(1 − rate); empty after an evaluation pass
    buffers: Buffers,
}

impl DropConnect {
    /// Drops a whole example's branch with probability `rate` (0 ≤ rate < 1).
    pub fn new(name: &str, rate: f32) -> Self {
        assert!((0.0..1.0).contains(&rate), "drop-connect {name}: rate {rate} outside [0, 1)");
        DropConnect { name: name.to_string(), key: name_key(name), rate, coef: Vec::new(), buffers: Buffers::default() }
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
        self.buffers.out.resize(x.shape());
        if !pass.train || self.rate == 0.0 {
            self.coef.clear();
            self.buffers.out.as_mut_slice().copy_from_slice(x.as_slice());
            return Ok(());
        }
        let keep = 1.0 - self.rate;
        self.coef = (0..n as u64).map(|i| if pass.example_draw(self.key, 4, i) < keep { 1.0 / keep } else { 0.0 }).collect();
        scale_examples(self.buffers.out.as_mut_slice(), x.as_slice(), &self.coef, x.shape()[2] * x.shape()[3]);
        Ok(())
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        scale_examples_backward(&self.name, &mut self.buffers, x, dout, &self.coef)
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
