//! Batch normalization over `(C, M)` activations (`M = N·H·W` contiguous values per channel),
//! optionally fused with the ReLU that follows it in every pre-activation block.
//!
//! Training mode normalises with the batch's mean and *biased* variance (as Flax does) and saves
//! `mean` and `rstd = 1/sqrt(var + eps)` per channel for backward; the caller updates running
//! statistics from them (`running = momentum·running + (1 − momentum)·batch`, Flax's convention).
//! Eval mode normalises with the running statistics. Statistics are accumulated in f64: a channel
//! of a 128-image batch at 32×32 sums 131 072 values.

use rayon::prelude::*;

use crate::{TensorError, check_len};

/// Sizes of a batch-norm call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    /// Channels.
    pub c: usize,
    /// Values per channel (`N·H·W`).
    pub m: usize,
}

fn check(op: &'static str, sh: &BnShape, x: usize, y: usize, per_c: &[(&'static str, usize)]) -> Result<(), TensorError> {
    check_len(op, "input", x, sh.c * sh.m)?;
    check_len(op, "output", y, sh.c * sh.m)?;
    for &(what, len) in per_c {
        check_len(op, what, len, sh.c)?;
    }
    if sh.m == 0 {
        return Err(TensorError::Shape { op, msg: "batch norm over an empty batch".into() });
    }
    Ok(())
}

/// Training-mode forward: `out = [relu]((x − mean)·rstd·scale + bias)`; writes `mean`, `var`
/// (biased, for the running statistics) and `rstd` per channel.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    out: &mut [f32],
    mean: &mut [f32],
    var: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    relu: bool,
    sh: &BnShape,
) -> Result<(), TensorError> {
    let op = "batchnorm_forward_train";
    check(
        op,
        sh,
        inp.len(),
        out.len(),
        &[("mean", mean.len()), ("var", var.len()), ("rstd", rstd.len()), ("scale", scale.len()), ("bias", bias.len())],
    )?;
    out.par_chunks_mut(sh.m)
        .zip(inp.par_chunks(sh.m))
        .zip(mean.par_iter_mut().zip(var.par_iter_mut()).zip(rstd.par_iter_mut()))
        .enumerate()
        .for_each(|(c, ((y, x), ((mu, va), rs)))| {
            let m = sum_lanes(x, |v| v) / sh.m as f64;
            let mf = m as f32;
            let v = sum_lanes(x, |v| (v - mf) * (v - mf)) / sh.m as f64;
            let r = 1.0 / (v + eps as f64).sqrt();
            *mu = m as f32;
            *va = v as f32;
            *rs = r as f32;
            let a = (r * scale[c] as f64) as f32;
            let b = (bias[c] as f64 - m * r * scale[c] as f64) as f32;
            affine(y, x, a, b, relu);
        });
    Ok(())
}

/// Eval-mode forward with running statistics: `out = [relu]((x − mean)/sqrt(var + eps)·scale + bias)`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    out: &mut [f32],
    inp: &[f32],
    scale: &[f32],
    bias: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    relu: bool,
    sh: &BnShape,
) -> Result<(), TensorError> {
    let op = "batchnorm_forward_eval";
    check(
        op,
        sh,
        inp.len(),
        out.len(),
        &[("scale", scale.len()), ("bias", bias.len()), ("running mean", running_mean.len()), ("running var", running_var.len())],
    )?;
    out.par_chunks_mut(sh.m).zip(inp.par_chunks(sh.m)).enumerate().for_each(|(c, (y, x))| {
        let r = 1.0 / (running_var[c] as f64 + eps as f64).sqrt();
        let a = (r * scale[c] as f64) as f32;
        let b = (bias[c] as f64 - running_mean[c] as f64 * r * scale[c] as f64) as f32;
        affine(y, x, a, b, relu);
    });
    Ok(())
}

#[inline]
fn affine(y: &mut [f32], x: &[f32], a: f32, b: f32, relu: bool) {
    if relu {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (v * a + b).max(0.0);
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * a + b;
        }
    }
}

/// Backward of [`batchnorm_forward_train`]. `dinp` is overwritten; `dscale`, `dbias` accumulate.
/// With `relu`, `out` (the forward output) masks `dout` — `out > 0` exactly where the ReLU passed.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    dinp: &mut [f32],
    dscale: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    out: &[f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    scale: &[f32],
    relu: bool,
    sh: &BnShape,
) -> Result<(), TensorError> {
    let op = "batchnorm_backward";
    check(
        op,
        sh,
        inp.len(),
        dinp.len(),
        &[("mean", mean.len()), ("rstd", rstd.len()), ("scale", scale.len()), ("dscale", dscale.len()), ("dbias", dbias.len())],
    )?;
    check_len(op, "output gradient", dout.len(), sh.c * sh.m)?;
    check_len(op, "output", out.len(), sh.c * sh.m)?;
    dinp.par_chunks_mut(sh.m)
        .zip(dout.par_chunks(sh.m).zip(out.par_chunks(sh.m)).zip(inp.par_chunks(sh.m)))
        .zip(dscale.par_iter_mut().zip(dbias.par_iter_mut()))
        .enumerate()
        .for_each(|(c, ((dx, ((dy, y), x)), (ds, db)))| {
            let (mu, rs) = (mean[c], rstd[c]);
            // dx first holds the incoming gradient, masked by the ReLU when fused.
            if relu {
                for ((d, &g), &o) in dx.iter_mut().zip(dy).zip(y) {
                    *d = if o > 0.0 { g } else { 0.0 };
                }
            } else {
                dx.copy_from_slice(dy);
            }
            // Σ g and Σ g·x̂ = rstd·(Σ g·x − μ·Σ g)
            let sum_g = sum_lanes(dx, |g| g);
            let sum_gx = sum_lanes_zip(dx, x, |g, v| g * (v - mu));
            let sum_g_xhat = sum_gx * rs as f64;
            *ds += sum_g_xhat as f32;
            *db += sum_g as f32;
            // dx = scale·rstd·(g − mean(g) − x̂·mean(g·x̂)), as one affine map of (g, x).
            let k = scale[c] * rs;
            let mean_g = (sum_g / sh.m as f64) as f32;
            let mean_gxhat = (sum_g_xhat / sh.m as f64) as f32;
            let kx = k * rs * mean_gxhat; // coefficient of (x − μ)
            for (d, &v) in dx.iter_mut().zip(x) {
                *d = k * (*d - mean_g) - kx * (v - mu);
            }
        });
    Ok(())
}

/// Backward of [`batchnorm_forward_eval`] (frozen statistics, as when finetuning): the statistics
/// are constants, so `dx = dy·scale/sqrt(var + eps)`. `dinp` is overwritten; `dscale`, `dbias`
/// accumulate.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_eval(
    dinp: &mut [f32],
    dscale: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    out: &[f32],
    inp: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    scale: &[f32],
    eps: f32,
    relu: bool,
    sh: &BnShape,
) -> Result<(), TensorError> {
    let op = "batchnorm_backward_eval";
    check(
        op,
        sh,
        inp.len(),
        dinp.len(),
        &[
            ("running mean", running_mean.len()),
            ("running var", running_var.len()),
            ("scale", scale.len()),
            ("dscale", dscale.len()),
            ("dbias", dbias.len()),
        ],
    )?;
    check_len(op, "output gradient", dout.len(), sh.c * sh.m)?;
    check_len(op, "output", out.len(), sh.c * sh.m)?;
    dinp.par_chunks_mut(sh.m)
        .zip(dout.par_chunks(sh.m).zip(out.par_chunks(sh.m)).zip(inp.par_chunks(sh.m)))
        .zip(dscale.par_iter_mut().zip(dbias.par_iter_mut()))
        .enumerate()
        .for_each(|(c, ((dx, ((dy, y), x)), (ds, db)))| {
            let rs = 1.0 / (running_var[c] + eps).sqrt();
            let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
            for i in 0..sh.m {
                let g = if relu && y[i] <= 0.0 { 0.0 } else { dy[i] };
                sdy += g as f64;
                sdyx += (g * (x[i] - running_mean[c]) * rs) as f64;
                dx[i] = g * scale[c] * rs;
            }
            *ds += sdyx as f32;
            *db += sdy as f32;
        });
    Ok(())
}

/// Σ f(x) with eight f32 accumulators per block of 1024 values (so the loop vectorizes) and f64
/// across blocks (so a channel of 10⁵ values keeps its precision).
#[inline]
fn sum_lanes(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(1024) {
        let mut lanes = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for l in 0..8 {
                lanes[l] += f(c[l]);
            }
        }
        let tail: f32 = it.remainder().iter().map(|&v| f(v)).sum();
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// Σ f(a, b) over two equal-length slices, accumulated like [`sum_lanes`].
#[inline]
fn sum_lanes_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for (ba, bb) in a.chunks(1024).zip(b.chunks(1024)) {
        let mut lanes = [0.0f32; 8];
        let (mut ia, mut ib) = (ba.chunks_exact(8), bb.chunks_exact(8));
        for (ca, cb) in (&mut ia).zip(&mut ib) {
            for l in 0..8 {
                lanes[l] += f(ca[l], cb[l]);
            }
        }
        let tail: f32 = ia.remainder().iter().zip(ib.remainder()).map(|(&x, &y)| f(x, y)).sum();
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}
