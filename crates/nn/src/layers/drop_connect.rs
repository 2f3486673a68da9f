//! Drop-connect as EfficientNet uses it (stochastic depth on a residual branch): each example's
//! branch is dropped with probability `rate` and kept ones are scaled by `1/(1 − rate)`, so
//! evaluation is the identity. One draw per example, keyed like every per-example draw
//! ([`Pass::example_draw`]): SAM's two passes drop the same examples, replicas draw what one
//! replica would. (The reference's hardware-RNG Bernoulli is neither; docs/SAM.md, "Random draws".)

use ringsam_kernels::examples::ExampleCoefficients;
use ringsam_tensor::Tensor;

use super::shake::{ExampleScale, draw_on_device, scale_examples_backward, scale_examples_forward};
use super::{Buffers, Layer, name_key, shape_error};
use crate::device::OnDevice;
use crate::{NnError, Pass};

/// See the module docs.
#[derive(Debug)]
pub struct DropConnect {
    name: String,
    key: u64,
    rate: f32,
    coef: Vec<f32>,    // per example: 0 or 1/(1 − rate), on the host; empty after an evaluation pass
    on_device: Tensor, // the same, when the layer runs on a device
    scaled: bool,      // whether the last forward scaled examples (a training pass) or copied
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
            scaled: false,
            buffers: Buffers::default(),
        }
    }

    /// The last training forward's per-example scales (on the host; a device pass keeps them
    /// there, and this is empty).
    pub fn coefficients(&self) -> &[f32] {
        &self.coef
    }

    /// What the last forward applied: its coefficients, where they were drawn, or the identity.
    fn scale<'a>(scaled: bool, coef: &'a [f32], on_device: &'a Tensor, n: usize) -> ExampleScale<'a> {
        if scaled { ExampleScale::Drawn { host: coef, device: on_device, at: 0..n } } else { ExampleScale::Identity }
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
        self.scaled = pass.train && self.rate > 0.0;
        let keep = 1.0 - self.rate;
        if let Some(dev) = OnDevice::of(&self.name, x).filter(|_| self.scaled) {
            draw_on_device(&dev, &mut self.on_device, ExampleCoefficients::DropConnect { keep }, pass, self.key, n, x)?;
        } else if self.scaled {
            self.coef = (0..n as u64).map(|i| if pass.example_draw(self.key, 4, i) < keep { 1.0 / keep } else { 0.0 }).collect();
        }
        let scale = Self::scale(self.scaled, &self.coef, &self.on_device, n);
        scale_examples_forward(&self.name, &mut self.buffers, x, scale)
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let scale = Self::scale(self.scaled, &self.coef, &self.on_device, x.shape()[1]);
        scale_examples_backward(&self.name, &mut self.buffers, x, dout, scale)
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
