//! Dropout with masks drawn from `(seed, step, layer)`.
//!
//! Why keyed masks: SAM evaluates the same batch twice (at `w` and at `w + e`), and both passes
//! should see the same mask (docs/SAM.md, "Random draws"). The reference does not (its hardware RNG ignores the key); we
//! choose determinism and say so.

use ringsam_kernels::dropout as device;
use ringsam_kernels::flat::copy;
use ringsam_tensor::Tensor;

use super::{Buffers, Layer, expect_same, name_key};
use crate::device::OnDevice;
use crate::{NnError, Pass, Rng};

/// Inverted dropout: kept values are scaled by `1/(1 − rate)` so evaluation is the identity.
#[derive(Debug)]
pub struct Dropout {
    name: String,
    rate: f32,
    key: u64,
    mask: Vec<f32>,         // same length as the input: 0 or 1/(1 − rate); empty after an eval pass
    mask_on_device: Tensor, // the same on a device (empty after an eval pass)
    buffers: Buffers,
}

impl Dropout {
    /// Drops each value with probability `rate` (0 ≤ rate < 1).
    pub fn new(name: &str, rate: f32) -> Self {
        assert!((0.0..1.0).contains(&rate), "dropout rate {rate} must be in [0, 1)");
        Dropout {
            name: name.to_string(),
            rate,
            key: name_key(name),
            mask: Vec::new(),
            mask_on_device: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }
}

impl Layer for Dropout {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (out, inp) = (dev.place(&mut self.buffers.out, x.shape(), x)?, dev.buf(x)?);
            if !pass.train || self.rate == 0.0 {
                self.mask_on_device = Tensor::empty();
                return dev.run(|l| copy(l, out, inp));
            }
            // The CPU layer's mask, each thread drawing its element's value of the same stream.
            let mask = dev.place(&mut self.mask_on_device, x.shape(), x)?;
            let rng = Rng::stream(pass.seed, pass.step, self.key);
            return dev.run(|l| device::forward(l, out, mask, inp, &rng, self.rate));
        }
        self.buffers.out.resize(x.shape());
        if !pass.train || self.rate == 0.0 {
            self.mask.clear();
            self.buffers.out.as_mut_slice().copy_from_slice(x.as_slice());
            return Ok(());
        }
        self.mask.resize(x.len(), 0.0);
        draw_mask(&mut self.mask, Rng::stream(pass.seed, pass.step, self.key), self.rate);
        for ((o, &v), &m) in self.buffers.out.as_mut_slice().iter_mut().zip(x.as_slice()).zip(&self.mask) {
            *o = v * m;
        }
        Ok(())
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        expect_same(&self.name, dout, &self.buffers.out)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (dinp, dy) = (dev.place(&mut self.buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
            if self.mask_on_device.is_empty() {
                return dev.run(|l| copy(l, dinp, dy));
            }
            let mask = dev.buf(&self.mask_on_device)?;
            return dev.run(|l| device::backward(l, dinp, dy, mask));
        }
        self.buffers.dinp.resize(x.shape());
        if self.mask.is_empty() {
            self.buffers.dinp.as_mut_slice().copy_from_slice(dout.as_slice());
        } else {
            for ((d, &g), &m) in self.buffers.dinp.as_mut_slice().iter_mut().zip(dout.as_slice()).zip(&self.mask) {
                *d = g * m;
            }
        }
        Ok(())
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// Dropout's mask from `rng`: element `i` (in the tensor's order) is 0 where draw `i` is below
/// `rate`, else `1/(1 − rate)`. The GPU's dropout kernel draws the same (ringsam_kernels).
pub fn draw_mask(mask: &mut [f32], mut rng: Rng, rate: f32) {
    let keep = 1.0 / (1.0 - rate);
    for m in mask.iter_mut() {
        *m = if rng.uniform() < rate { 0.0 } else { keep };
    }
}
