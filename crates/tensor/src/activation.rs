//! Element-wise activations: ReLU, SiLU (swish), sigmoid. Backward passes overwrite `dinp`.
//! Each takes what its derivative needs most cheaply: ReLU and sigmoid their output, SiLU its input.

use rayon::prelude::*;

use crate::{TensorError, check_len};

/// Below this many elements the work is done on the calling thread: splitting costs more.
const PAR_MIN: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

pub(crate) fn map2(op: &'static str, out: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Result<(), TensorError> {
    check_len(op, "input", a.len(), out.len())?;
    if out.len() < PAR_MIN {
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    } else {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x)));
    }
    Ok(())
}

pub(crate) fn map3(op: &'static str, out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Result<(), TensorError> {
    check_len(op, "first input", a.len(), out.len())?;
    check_len(op, "second input", b.len(), out.len())?;
    if out.len() < PAR_MIN {
        out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y)));
    }
    Ok(())
}

/// `out = max(x, 0)`.
pub fn relu_forward(out: &mut [f32], inp: &[f32]) -> Result<(), TensorError> {
    map2("relu_forward", out, inp, |x| x.max(0.0))
}

/// `dinp = dout · [out > 0]`.
pub fn relu_backward(dinp: &mut [f32], dout: &[f32], out: &[f32]) -> Result<(), TensorError> {
    map3("relu_backward", dinp, dout, out, |g, y| if y > 0.0 { g } else { 0.0 })
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `out = 1 / (1 + e^−x)`.
pub fn sigmoid_forward(out: &mut [f32], inp: &[f32]) -> Result<(), TensorError> {
    map2("sigmoid_forward", out, inp, sigmoid)
}

/// `dinp = dout · out · (1 − out)`.
pub fn sigmoid_backward(dinp: &mut [f32], dout: &[f32], out: &[f32]) -> Result<(), TensorError> {
    map3("sigmoid_backward", dinp, dout, out, |g, y| g * y * (1.0 - y))
}

/// `out = x · sigmoid(x)` (swish with β = 1, as EfficientNet uses).
pub fn silu_forward(out: &mut [f32], inp: &[f32]) -> Result<(), TensorError> {
    map2("silu_forward", out, inp, |x| x * sigmoid(x))
}

/// `dinp = dout · σ(x)·(1 + x·(1 − σ(x)))`.
pub fn silu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32]) -> Result<(), TensorError> {
    map3("silu_backward", dinp, dout, inp, |g, x| {
        let s = sigmoid(x);
        g * s * (1.0 + x * (1.0 - s))
    })
}
