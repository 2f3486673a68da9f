//! Batch normalization over `(C, M)` activations (`M = N·H·W` contiguous values per channel),
//! optionally fused with the ReLU that follows it in every pre-activation block.
//!
//! Training mode normalises with the batch's mean and *biased* variance (as Flax does) and saves
//! `mean` and `rstd = 1/sqrt(var + eps)` per channel for backward; the caller updates running
//! statistics from them (`running = momentum·running + (1 − momentum)·batch`, Flax's convention).
//! Eval mode normalises with the running statistics. Statistics are accumulated in f64: a channel
//! of a 128-image batch at 32×32 sums 131 072 values.

use rayon::prelude::*;

use crate::simd::{Vector, madd, sum_lanes, sum_lanes_zip};
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
    crate::profile::timed("batch norm forward", 0.0, || {
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
            .for_each(|(c, ((y, x), ((mu, va), rs)))| [*mu, *va, *rs] = train_channel(y, x, scale[c], bias[c], eps, relu));
        Ok(())
    })
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
    crate::profile::timed("batch norm forward (running statistics)", 0.0, || {
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
    })
}

/// One channel of the training forward: its statistics, then the affine map. Returns
/// `[mean, biased variance, rstd]`.
#[inline(always)]
fn train_channel_body<V: Vector>(y: &mut [f32], x: &[f32], scale: f32, bias: f32, eps: f32, relu: bool) -> [f32; 3] {
    let m = x.len() as f64;
    let mean = sum_lanes::<V>(x, |v| v) / m;
    let mf = mean as f32;
    let var = sum_lanes::<V>(x, |v| (v - mf) * (v - mf)) / m;
    let r = 1.0 / (var + eps as f64).sqrt();
    let a = (r * scale as f64) as f32;
    let b = (bias as f64 - mean * r * scale as f64) as f32;
    affine_body::<V>(y, x, a, b, relu);
    [mean as f32, var as f32, r as f32]
}
crate::simd::multiversion!(fn train_channel(y: &mut [f32], x: &[f32], scale: f32, bias: f32, eps: f32, relu: bool) -> [f32; 3] => train_channel_body);

/// `y = [relu](x·a + b)`.
#[inline(always)]
fn affine_body<V: Vector>(y: &mut [f32], x: &[f32], a: f32, b: f32, relu: bool) {
    if relu {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = madd::<V>(v, a, b).max(0.0);
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = madd::<V>(v, a, b);
        }
    }
}
crate::simd::multiversion!(fn affine(y: &mut [f32], x: &[f32], a: f32, b: f32, relu: bool) => affine_body);

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
    crate::profile::timed("batch norm backward", 0.0, || {
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
        let grads = Grads { dinp, dscale, dbias };
        backward_channels(grads, [dout, out, inp], |c| (mean[c], rstd[c]), scale, relu, false, sh);
        Ok(())
    })
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
    crate::profile::timed("batch norm backward (frozen statistics)", 0.0, || {
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
        let grads = Grads { dinp, dscale, dbias };
        let stats = |c: usize| (running_mean[c], 1.0 / (running_var[c] + eps).sqrt());
        backward_channels(grads, [dout, out, inp], stats, scale, relu, true, sh);
        Ok(())
    })
}

/// What a backward writes: the input gradient (overwritten), the scale and bias gradients
/// (accumulated).
struct Grads<'a> {
    dinp: &'a mut [f32],
    dscale: &'a mut [f32],
    dbias: &'a mut [f32],
}

/// Both backwards, channel by channel in parallel: `stats(c)` gives channel `c`'s `(mean, rstd)`
/// as the forward normalised with them.
fn backward_channels(
    g: Grads,
    [dout, out, inp]: [&[f32]; 3],
    stats: impl Fn(usize) -> (f32, f32) + Sync,
    scale: &[f32],
    relu: bool,
    frozen: bool,
    sh: &BnShape,
) {
    g.dinp
        .par_chunks_mut(sh.m)
        .zip(dout.par_chunks(sh.m).zip(out.par_chunks(sh.m)).zip(inp.par_chunks(sh.m)))
        .zip(g.dscale.par_iter_mut().zip(g.dbias.par_iter_mut()))
        .enumerate()
        .for_each(|(c, ((dx, ((dy, y), x)), (ds, db)))| {
            let [dscale_c, dbias_c] = backward_channel(dx, dy, y, x, stats(c), scale[c], relu, frozen);
            *ds += dscale_c;
            *db += dbias_c;
        });
}

/// The incoming gradient `g` — `dy`, masked by the ReLU when fused (`y > 0` exactly where it
/// passed) — and its sums `Σ g` and `Σ g·x̂ = rstd·Σ g·(x − μ)`. With the ReLU, `g` is written
/// to `dx`; without, it is `dy` itself, read in place (no copy).
#[inline(always)]
fn gradient_sums<V: Vector>(dx: &mut [f32], dy: &[f32], y: &[f32], x: &[f32], mu: f32, rs: f32, relu: bool) -> (f64, f64) {
    if relu {
        for ((d, &g), &o) in dx.iter_mut().zip(dy).zip(y) {
            *d = if o > 0.0 { g } else { 0.0 };
        }
    }
    let g: &[f32] = if relu { dx } else { dy };
    (sum_lanes::<V>(g, |g| g), sum_lanes_zip::<V>(g, x, |g, v| g * (v - mu)) * rs as f64)
}

/// `dx = f(g, x)` for the `g` of [`gradient_sums`].
#[inline(always)]
fn map_gradient(dx: &mut [f32], dy: &[f32], x: &[f32], relu: bool, f: impl Fn(f32, f32) -> f32) {
    if relu {
        dx.iter_mut().zip(x).for_each(|(d, &v)| *d = f(*d, v));
    } else {
        dx.iter_mut().zip(dy.iter().zip(x)).for_each(|(d, (&g, &v))| *d = f(g, v));
    }
}

/// One channel's backward; returns `[dscale, dbias]`. With batch statistics,
/// `dx = scale·rstd·(g − mean(g) − x̂·mean(g·x̂))`; with `frozen` statistics (constants),
/// `dx = g·scale·rstd`. `(mu, rs)` are the statistics the forward normalised with.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_channel_body<V: Vector>(
    dx: &mut [f32],
    dy: &[f32],
    y: &[f32],
    x: &[f32],
    (mu, rs): (f32, f32),
    scale: f32,
    relu: bool,
    frozen: bool,
) -> [f32; 2] {
    let (sum_g, sum_g_xhat) = gradient_sums::<V>(dx, dy, y, x, mu, rs, relu);
    let k = scale * rs;
    if frozen {
        map_gradient(dx, dy, x, relu, |g, _| g * k);
    } else {
        // One affine map of (g, x).
        let m = x.len() as f64;
        let mean_g = (sum_g / m) as f32;
        let kx = k * rs * (sum_g_xhat / m) as f32; // coefficient of (x − μ)
        map_gradient(dx, dy, x, relu, |g, v| k * (g - mean_g) - kx * (v - mu));
    }
    [sum_g_xhat as f32, sum_g as f32]
}
crate::simd::multiversion!(
    #[allow(clippy::too_many_arguments)]
    fn backward_channel(dx: &mut [f32], dy: &[f32], y: &[f32], x: &[f32], stats: (f32, f32), scale: f32, relu: bool, frozen: bool) -> [f32; 2] => backward_channel_body
);
