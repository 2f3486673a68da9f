//! Shake-Shake (Gastaldi 2017) and ShakeDrop (Yamada et al. 2018), as the reference applies them
//! (google-research/sam `sam_jax/models/utils.py`).
//!
//! Both scale whole examples by random coefficients, one per example, drawn afresh every step:
//! - ShakeShake mixes two branches: forward `g·a + (1−g)·b`, `g ~ U[0, 1)`; backward sends `h·dy`
//!   to `a` and `(1−h)·dy` to `b` with an independent `h ~ U[0, 1)`, or `h = g` when the pass
//!   ties them (`true_gradient`). Evaluation: `(a + b)/2`.
//! - ShakeDrop scales a residual branch: forward `(m + α − m·α)·x` with `m ~ Bernoulli(p)`,
//!   `α ~ U[−1, 1]`; backward `(m + β − m·β)·dy`, `β ~ U[0, 1]` (or the forward coefficient when
//!   tied). Evaluation: the expectation, `(p + ᾱ − p·ᾱ)·x` with `ᾱ = 0`, i.e. `p·x`.
//!
//! Draws are keyed by (seed, step, layer, the example's place in the global batch): SAM's two
//! passes see the same forward coefficients, a run is reproducible, and any number of replicas
//! draws what one would. (The reference's Bernoulli ignores its key — a hardware-RNG patch — so
//! its masks differ between passes; ringsam does not reproduce that; docs/SAM.md, "Random draws".)

use std::ops::Range;

use ringsam_kernels::dense::{mix_planes, scale_planes};
use ringsam_kernels::examples::{self, ExampleCoefficients, ExampleDraws};
use ringsam_kernels::flat::{copy, fill};
use ringsam_tensor::Tensor;

use super::{Buffers, Layer, expect_same, name_key, shape_error};
use crate::device::OnDevice;
use crate::{NnError, Pass};

fn draw(pass: &Pass, key: u64, what: u64, example: u64) -> f32 {
    pass.example_draw(key, what, example)
}

const FORWARD: u64 = 1;
const BACKWARD: u64 = 2;
const MASK: u64 = 3;

/// Multiplies example `n` of `x (C, N, H, W)` by `coef[n]` into `out`.
pub fn scale_examples(out: &mut [f32], x: &[f32], coef: &[f32], plane: usize) {
    let n = coef.len();
    for (i, (o, v)) in out.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
        let c = coef[i % n];
        o.iter_mut().zip(v).for_each(|(o, &v)| *o = c * v);
    }
}

/// Shake-Shake's mix: example `n` of `out (C, N, H, W)` is `g·a + (1 − g)·b` with `g = coef[n]`.
pub fn mix_examples(out: &mut [f32], a: &[f32], b: &[f32], coef: &[f32], plane: usize) {
    let n = coef.len();
    for (i, ((o, a), b)) in out.chunks_mut(plane).zip(a.chunks(plane)).zip(b.chunks(plane)).enumerate() {
        let g = coef[i % n];
        o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| *o = g * a + (1.0 - g) * b);
    }
}

/// The scale a pass applies to each example: none (the layer is the identity), or coefficients
/// drawn where the layer runs: `host` on the CPU, values `at` of `device` on a device.
pub(crate) enum ExampleScale<'a> {
    Identity,
    Drawn { host: &'a [f32], device: &'a Tensor, at: Range<usize> },
}

/// A training pass's coefficients of `what` for `n` examples drawn on `dev` into `device`
/// (bitwise the host's draws: `ringsam_kernels::examples`).
pub(crate) fn draw_on_device(
    dev: &OnDevice,
    device: &mut Tensor,
    what: ExampleCoefficients,
    pass: &Pass,
    key: u64,
    n: usize,
    like: &Tensor,
) -> Result<(), NnError> {
    let out = dev.place(device, &[what.per_example() * n], like)?;
    let at = ExampleDraws { seed: pass.seed, step: pass.step, key, first_example: pass.first_example, tied: pass.tied_backward };
    dev.run(|l| examples::draw(l, out, n, what, at))
}

/// Evaluation's coefficients on `dev`: `len` copies of `value` in `device`.
fn fill_on_device(dev: &OnDevice, device: &mut Tensor, len: usize, value: f32, like: &Tensor) -> Result<(), NnError> {
    let out = dev.place(device, &[len], like)?;
    dev.run(|l| fill(l, out, value))
}

/// The forward of a layer that scales each example of `x` (ShakeDrop, drop-connect), on the
/// host or where `x` is.
pub(crate) fn scale_examples_forward(layer: &str, buffers: &mut Buffers, x: &Tensor, scale: ExampleScale) -> Result<(), NnError> {
    let plane = x.shape()[2] * x.shape()[3];
    if let Some(dev) = OnDevice::of(layer, x) {
        let (out, inp) = (dev.place(&mut buffers.out, x.shape(), x)?, dev.buf(x)?);
        return match scale {
            ExampleScale::Identity => dev.run(|l| copy(l, out, inp)),
            ExampleScale::Drawn { device, at, .. } => {
                let c = dev.buf(device)?.slice(at);
                dev.run(|l| scale_planes(l, out, inp, c, plane))
            }
        };
    }
    buffers.out.resize(x.shape());
    match scale {
        ExampleScale::Identity => buffers.out.as_mut_slice().copy_from_slice(x.as_slice()),
        ExampleScale::Drawn { host, .. } => scale_examples(buffers.out.as_mut_slice(), x.as_slice(), host, plane),
    }
    Ok(())
}

/// The backward of a layer that scaled each example of `x` (ShakeDrop, drop-connect):
/// `dinput = coef · dout`, example by example, or a plain copy for the identity.
pub(crate) fn scale_examples_backward(
    layer: &str,
    buffers: &mut Buffers,
    x: &Tensor,
    dout: &Tensor,
    scale: ExampleScale,
) -> Result<(), NnError> {
    expect_same(layer, dout, &buffers.out)?;
    let plane = x.shape()[2] * x.shape()[3];
    if let Some(dev) = OnDevice::of(layer, x) {
        let (dinp, dy) = (dev.place(&mut buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
        return match scale {
            ExampleScale::Identity => dev.run(|l| copy(l, dinp, dy)),
            ExampleScale::Drawn { device, at, .. } => {
                let c = dev.buf(device)?.slice(at);
                dev.run(|l| scale_planes(l, dinp, dy, c, plane))
            }
        };
    }
    buffers.dinp.resize(x.shape());
    match scale {
        ExampleScale::Identity => buffers.dinp.as_mut_slice().copy_from_slice(dout.as_slice()),
        ExampleScale::Drawn { host, .. } => scale_examples(buffers.dinp.as_mut_slice(), dout.as_slice(), host, plane),
    }
    Ok(())
}

/// The Shake-Shake mix of two branches (two inputs, so not a [`Layer`]).
#[derive(Debug)]
pub struct ShakeShake {
    name: String,
    key: u64,
    forward: Vec<f32>,  // per example: g (0.5 in evaluation), on the host
    backward: Vec<f32>, // per example: h, on the host
    on_device: Tensor,  // on a device instead: g, h, 1 − h
    out: Tensor,
    da: Tensor,
    db: Tensor,
}

impl ShakeShake {
    /// A mix named `name` (its random stream derives from the name).
    pub fn new(name: &str) -> Self {
        ShakeShake {
            name: name.to_string(),
            key: name_key(name),
            forward: Vec::new(),
            backward: Vec::new(),
            on_device: Tensor::empty(),
            out: Tensor::empty(),
            da: Tensor::empty(),
            db: Tensor::empty(),
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mixes `a` and `b` (same shape `(C, N, H, W)`) into `output()`.
    pub fn forward(&mut self, a: &Tensor, b: &Tensor, pass: &Pass) -> Result<(), NnError> {
        let n = match *a.shape() {
            [_, n, _, _] if a.shape() == b.shape() && n > 0 => n,
            _ => return Err(shape_error(&self.name, format!("branch b's shape {:?}, (C, N, H, W)", b.shape()), a)),
        };
        let plane = a.shape()[2] * a.shape()[3];
        if let Some(dev) = OnDevice::of(&self.name, a) {
            self.forward.clear();
            self.backward.clear();
            if pass.train {
                draw_on_device(&dev, &mut self.on_device, ExampleCoefficients::ShakeMix, pass, self.key, n, a)?;
            } else {
                fill_on_device(&dev, &mut self.on_device, 3 * n, 0.5, a)?;
            }
            let (out, ab, bb) = (dev.place(&mut self.out, a.shape(), a)?, dev.buf(a)?, dev.buf(b)?);
            let g = dev.buf(&self.on_device)?.slice(0..n);
            return dev.run(|l| mix_planes(l, out, ab, bb, g, plane));
        }
        if pass.train {
            self.forward = (0..n as u64).map(|i| draw(pass, self.key, FORWARD, i)).collect();
            self.backward =
                if pass.tied_backward { self.forward.clone() } else { (0..n as u64).map(|i| draw(pass, self.key, BACKWARD, i)).collect() };
        } else {
            self.forward = vec![0.5; n];
            self.backward = vec![0.5; n];
        }
        self.out.resize(a.shape());
        mix_examples(self.out.as_mut_slice(), a.as_slice(), b.as_slice(), &self.forward, plane);
        Ok(())
    }

    /// From `dout`, the gradients reaching branch a (`da()`) and branch b (`db()`).
    pub fn backward(&mut self, dout: &Tensor) -> Result<(), NnError> {
        expect_same(&self.name, dout, &self.out)?;
        let plane = dout.shape()[2] * dout.shape()[3];
        if let Some(dev) = OnDevice::of(&self.name, dout) {
            // The forward left g, h and 1 − h there, n values each.
            let n = dout.shape()[1];
            let coef = dev.buf(&self.on_device)?;
            let (da, db, dy) = (dev.place(&mut self.da, dout.shape(), dout)?, dev.place(&mut self.db, dout.shape(), dout)?, dev.buf(dout)?);
            return dev.run(|l| {
                scale_planes(l, da, dy, coef.slice(n..2 * n), plane)?;
                scale_planes(l, db, dy, coef.slice(2 * n..3 * n), plane)
            });
        }
        let one_minus: Vec<f32> = self.backward.iter().map(|h| 1.0 - h).collect();
        self.da.resize(dout.shape());
        self.db.resize(dout.shape());
        scale_examples(self.da.as_mut_slice(), dout.as_slice(), &self.backward, plane);
        scale_examples(self.db.as_mut_slice(), dout.as_slice(), &one_minus, plane);
        Ok(())
    }

    /// The last forward's mix.
    pub fn output(&self) -> &Tensor {
        &self.out
    }
    /// Gradient reaching branch a.
    pub fn da(&self) -> &Tensor {
        &self.da
    }
    /// Gradient reaching branch b.
    pub fn db(&self) -> &Tensor {
        &self.db
    }
    /// The last forward's per-example coefficients `g`, and the backward's `h` (a pass on the
    /// host; on a device they stay there, and these are empty).
    pub fn coefficients(&self) -> (&[f32], &[f32]) {
        (&self.forward, &self.backward)
    }

    /// Frees the branch gradients once both branches have consumed them (see
    /// [`Layer::release_dinput`]).
    pub fn release(&mut self) {
        self.da.release();
        self.db.release();
    }
}

/// ShakeDrop on a residual branch (see the module docs).
#[derive(Debug)]
pub struct ShakeDrop {
    name: String,
    key: u64,
    survival: f32,      // p: the chance the branch passes unchanged
    forward: Vec<f32>,  // per example: m + α − m·α (p in evaluation), on the host
    backward: Vec<f32>, // per example: m + β − m·β, on the host
    on_device: Tensor,  // on a device instead: the forward's, then the backward's
    buffers: Buffers,
}

impl ShakeDrop {
    /// ShakeDrop with survival probability `survival` (the reference's `1 − 0.5·l/L`).
    pub fn new(name: &str, survival: f32) -> Self {
        assert!((0.0..=1.0).contains(&survival), "ShakeDrop {name}: survival {survival} outside [0, 1]");
        ShakeDrop {
            name: name.to_string(),
            key: name_key(name),
            survival,
            forward: Vec::new(),
            backward: Vec::new(),
            on_device: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }

    /// The last forward's per-example coefficients, and the backward's (a pass on the host; on a
    /// device they stay there, and these are empty).
    pub fn coefficients(&self) -> (&[f32], &[f32]) {
        (&self.forward, &self.backward)
    }
}

impl Layer for ShakeDrop {
    fn name(&self) -> &str {
        &self.name
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }

    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        let n = match *x.shape() {
            [_, n, _, _] if n > 0 => n,
            _ => return Err(shape_error(&self.name, "(C, N, H, W)".into(), x)),
        };
        if let Some(dev) = OnDevice::of(&self.name, x) {
            self.forward.clear();
            self.backward.clear();
            if pass.train {
                let what = ExampleCoefficients::ShakeDrop { survival: self.survival };
                draw_on_device(&dev, &mut self.on_device, what, pass, self.key, n, x)?;
            } else {
                fill_on_device(&dev, &mut self.on_device, 2 * n, self.survival, x)?;
            }
        } else if pass.train {
            let (mut fwd, mut bwd) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n as u64 {
                let kept = draw(pass, self.key, MASK, i) < self.survival;
                let alpha = 2.0 * draw(pass, self.key, FORWARD, i) - 1.0;
                let beta = draw(pass, self.key, BACKWARD, i);
                // m + α − m·α with m ∈ {0, 1}, written so a kept branch is scaled by exactly 1.
                fwd.push(if kept { 1.0 } else { alpha });
                bwd.push(if kept { 1.0 } else { beta });
            }
            self.backward = if pass.tied_backward { fwd.clone() } else { bwd };
            self.forward = fwd;
        } else {
            self.forward = vec![self.survival; n];
            self.backward = self.forward.clone();
        }
        let scale = ExampleScale::Drawn { host: &self.forward, device: &self.on_device, at: 0..n };
        scale_examples_forward(&self.name, &mut self.buffers, x, scale)
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let n = x.shape()[1];
        let scale = ExampleScale::Drawn { host: &self.backward, device: &self.on_device, at: n..2 * n };
        scale_examples_backward(&self.name, &mut self.buffers, x, dout, scale)
    }

    fn on_device(&self) -> bool {
        true
    }
}
