//! Element-wise activations: ReLU, SiLU (swish), sigmoid. Backward passes overwrite `dinp`.
//! Each takes what its derivative needs most cheaply: ReLU and sigmoid their output, SiLU its input.

use rayon::prelude::*;

use crate::simd::{Vector, madd};
use crate::{TensorError, check_len, exp};

/// Below this many elements the work is done on the calling thread: splitting costs more.
const PAR_MIN: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

/// `chunk(out, a)` over `CHUNK`-sized pieces, in parallel above `PAR_MIN` values.
fn chunked2(op: &'static str, out: &mut [f32], a: &[f32], chunk: impl Fn(&mut [f32], &[f32]) + Sync) -> Result<(), TensorError> {
    check_len(op, "input", a.len(), out.len())?;
    if out.len() < PAR_MIN {
        chunk(out, a);
    } else {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| chunk(o, a));
    }
    Ok(())
}

/// `chunk(out, a, b)` over `CHUNK`-sized pieces, in parallel above `PAR_MIN` values.
fn chunked3(
    op: &'static str,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    chunk: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> Result<(), TensorError> {
    check_len(op, "first input", a.len(), out.len())?;
    check_len(op, "second input", b.len(), out.len())?;
    if out.len() < PAR_MIN {
        chunk(out, a, b);
    } else {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| chunk(o, a, b));
    }
    Ok(())
}

pub(crate) fn map2(op: &'static str, out: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Result<(), TensorError> {
    chunked2(op, out, a, |o, a| o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x)))
}

pub(crate) fn map3(op: &'static str, out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Result<(), TensorError> {
    chunked3(op, out, a, b, |o, a, b| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y)))
}

/// `out = max(x, 0)`.
pub fn relu_forward(out: &mut [f32], inp: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("relu forward", 0.0, || map2("relu_forward", out, inp, |x| x.max(0.0)))
}

/// `dinp = dout · [out > 0]`.
pub fn relu_backward(dinp: &mut [f32], dout: &[f32], out: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("relu backward", 0.0, || map3("relu_backward", dinp, dout, out, |g, y| if y > 0.0 { g } else { 0.0 }))
}

/// `out = 1 / (1 + e^−x)`.
pub fn sigmoid_forward(out: &mut [f32], inp: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("sigmoid forward", 0.0, || chunked2("sigmoid_forward", out, inp, sigmoid_chunk))
}

/// `dinp = dout · out · (1 − out)`.
pub fn sigmoid_backward(dinp: &mut [f32], dout: &[f32], out: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("sigmoid backward", 0.0, || map3("sigmoid_backward", dinp, dout, out, |g, y| g * y * (1.0 - y)))
}

/// `out = x · sigmoid(x)` (swish with β = 1, as EfficientNet uses).
pub fn silu_forward(out: &mut [f32], inp: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("swish forward", 0.0, || chunked2("silu_forward", out, inp, silu_chunk))
}

/// `dinp = dout · σ(x)·(1 + x·(1 − σ(x)))`.
pub fn silu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("swish backward", 0.0, || chunked3("silu_backward", dinp, dout, inp, silu_grad_chunk))
}

// The transcendental ones, per chunk, on the vectorisable exp ([`crate::exp`]).

#[inline(always)]
fn sigmoid_body<V: Vector>(out: &mut [f32], x: &[f32]) {
    out.iter_mut().zip(x).for_each(|(o, &x)| *o = exp::sigmoid::<V>(x));
}
crate::simd::multiversion!(fn sigmoid_chunk(out: &mut [f32], x: &[f32]) => sigmoid_body);

#[inline(always)]
fn silu_body<V: Vector>(out: &mut [f32], x: &[f32]) {
    out.iter_mut().zip(x).for_each(|(o, &x)| *o = x * exp::sigmoid::<V>(x));
}
crate::simd::multiversion!(fn silu_chunk(out: &mut [f32], x: &[f32]) => silu_body);

#[inline(always)]
fn silu_grad_body<V: Vector>(dinp: &mut [f32], dout: &[f32], x: &[f32]) {
    dinp.iter_mut().zip(dout.iter().zip(x)).for_each(|(d, (&g, &x))| *d = g * silu_slope::<V>(x));
}
crate::simd::multiversion!(fn silu_grad_chunk(dinp: &mut [f32], dout: &[f32], x: &[f32]) => silu_grad_body);

/// `d/dx [x·σ(x)] = σ(x)·(1 + x·(1 − σ(x)))`.
#[inline(always)]
pub(crate) fn silu_slope<V: Vector>(x: f32) -> f32 {
    let s = exp::sigmoid::<V>(x);
    s * madd::<V>(x, 1.0 - s, 1.0)
}

/// The references: the same maps through the C library's `exp`, one value at a time. For tests.
pub mod reference {
    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }
    /// `x · σ(x)`.
    pub fn silu(x: f32) -> f32 {
        x * sigmoid(x)
    }
    /// `σ(x)·(1 + x·(1 − σ(x)))`.
    pub fn silu_slope(x: f32) -> f32 {
        let s = sigmoid(x);
        s * (1.0 + x * (1.0 - s))
    }
    /// `σ(x)`.
    pub fn sigmoid_of(x: f32) -> f32 {
        sigmoid(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised maps against the C library's, on every scale a network produces.
    #[test]
    fn fast_activations_match_reference() {
        let x: Vec<f32> = (0..100_000).map(|i| ((i as f32 * 0.618).fract() - 0.5) * 2.0 * 10f32.powi(i % 4 - 1)).collect();
        let (mut y, mut d) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let ones = vec![1.0; x.len()];
        silu_forward(&mut y, &x).unwrap();
        silu_backward(&mut d, &ones, &x).unwrap();
        for ((&x, &y), &d) in x.iter().zip(&y).zip(&d) {
            let (ry, rd) = (reference::silu(x), reference::silu_slope(x));
            assert!((y - ry).abs() <= 1e-6 * ry.abs().max(1e-3), "silu({x}) = {y}, reference {ry}");
            assert!((d - rd).abs() <= 1e-6 * rd.abs().max(0.1), "silu'({x}) = {d}, reference {rd}");
        }
        sigmoid_forward(&mut y, &x).unwrap();
        for (&x, &y) in x.iter().zip(&y) {
            let r = reference::sigmoid_of(x);
            assert!((y - r).abs() <= 1e-6 * r.max(1e-3), "sigmoid({x}) = {y}, reference {r}");
        }
        let nan = [f32::NAN; 3];
        silu_forward(&mut y[..3], &nan).unwrap();
        assert!(y[..3].iter().all(|v| v.is_nan()), "NaN must reach the loss");
    }
}
