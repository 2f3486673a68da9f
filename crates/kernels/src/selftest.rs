//! The kernels against the CPU engine, on whatever runs them: the same checks under emulation
//! (crates/kernels-emu's tests, in CI) and on a GPU (`ringsam selftest kernels --device cuda`,
//! the device check), so the GPU run is rehearsed before GPU time is spent on it.
//!
//! Each check runs one operation of [`crate::flat`] and its `ringsam-optim` counterpart on the
//! same random data. Element-wise results must agree to the bit; norms to 1e-12 relative (double
//! sums in another order), and the element-wise part is then checked bitwise against the CPU's
//! formula at the device's norm.

use std::time::Instant;

use ringsam_optim::{BaseOptimizer, Ema, OptimizerKind};

use crate::activation::{self, Activation};
use crate::batchnorm::{self, BnLayout, BnParams, BnStats};
use crate::conv::{self, ConvShape, DepthwiseWeightSum};
use crate::conv_library::ConvImpl;
use crate::dense;
use crate::dropout;
use crate::flat::{self, OptimizerState};
use crate::gemm::{self, Mat};
use crate::launch::{KernelError, Launcher, Memory, Precision};
use crate::loss::{self, LossShape};
use crate::pool::{self, PoolShape};

/// The CPU engine's kernels that the device's are held to, beyond `ringsam-optim` (which this
/// crate depends on): `ringsam-tensor` will dispatch to this crate, so it cannot be a dependency;
/// its functions come in here (`ringsam_bench::kernels::cpu_reference`).
pub struct CpuReference {
    /// `out = act(inp)`.
    pub activation_forward: fn(Activation, &mut [f32], &[f32]),
    /// `dinp = dout·act'(kept)`.
    pub activation_backward: fn(Activation, &mut [f32], &[f32], &[f32]),
    /// `(losses, probs, logits, labels, smoothing, shape) -> mean loss`.
    pub softmax_xent_forward: XentForward,
    /// `(dlogits, probs, labels, smoothing, scale, shape)`.
    pub softmax_xent_backward: XentBackward,
    /// Dropout's mask from a stream at a rate (the layer's own `draw_mask`).
    pub dropout_mask: fn(&mut [f32], ringsam_rng::Rng, f32),
    /// Batch norm's training forward in (C, N, H, W).
    pub batchnorm_forward_train: BnForward,
    /// Its backward.
    pub batchnorm_backward: BnBackward,
    /// The CPU's SAME pooling window: `(planes, h, w, window, stride)`.
    pub pool_same: fn(usize, usize, usize, usize, usize) -> PoolShape,
    /// Average pooling, forward and backward.
    pub avgpool: [PoolFn; 2],
    /// Max pooling forward `(out, argmax, inp, shape)`.
    pub maxpool_forward: fn(&mut [f32], &mut [u32], &[f32], &PoolShape),
    /// Max pooling backward `(dinp, dout, argmax, shape)`.
    pub maxpool_backward: fn(&mut [f32], &[f32], &[u32], &PoolShape),
    /// Global average pooling, forward and backward: `(out, inp, planes, hw)`, `(dinp, dout, planes, hw)`.
    pub global_avgpool: [GlobalPoolFn; 2],
    /// `out = a + b`.
    pub add: fn(&mut [f32], &[f32], &[f32]),
    /// The CPU's SAME convolution shape: `(n, c, h, w, k, kernel, stride, groups)`.
    pub conv_same: fn(usize, usize, usize, usize, usize, usize, usize, usize) -> ConvShape,
    /// `(col, inp, shape, c0)` and `(dinp, col, shape, c0)`.
    pub im2col: [ColFn; 2],
    /// The dense layer's bias `(out, b)` and its gradient `(db, dout)`.
    pub bias: [BiasFn; 2],
    /// `(out, x, coef, plane)`: example `n` of `x (C, N, H, W)` times `coef[n]`.
    pub scale_examples: fn(&mut [f32], &[f32], &[f32], usize),
    /// `(out, a, b, coef, plane)`: Shake-Shake's mix.
    pub mix_examples: MixFn,
    /// Wrong predictions `(logits, labels, classes)`.
    pub count_errors: fn(&[f32], &[u32], usize) -> usize,
    /// The CPU's reference GEMM: `c (+)= a·b` on strided views (rows, cols, rs, cs).
    pub gemm: GemmFn,
    /// Depthwise convolution forward `(out, inp, weight, shape)`.
    pub depthwise_forward: fn(&mut [f32], &[f32], &[f32], &ConvShape),
    /// Its backward `(dinp, dweight, dout, inp, weight, shape)`.
    pub depthwise_backward: ConvBackward,
    /// The CPU's reference convolution (the sum written out, in double): `(out, inp, weight, shape)`.
    pub conv_forward: fn(&mut [f32], &[f32], &[f32], &ConvShape),
    /// Its backward: `dinp` overwritten, `dweight` accumulated.
    pub conv_backward: ConvBackward,
}

/// A convolution's backward `(dinp, dweight, dout, inp, weight, shape)`, as [`CpuReference`]
/// takes it.
pub type ConvBackward = fn(&mut [f32], &mut [f32], &[f32], &[f32], &[f32], &ConvShape);

/// A view's `(rows, cols, rs, cs)`.
pub type View = (usize, usize, usize, usize);
/// `(c, c's view, a, a's view, b, b's view, accumulate)`.
pub type GemmFn = fn(&mut [f32], View, &[f32], View, &[f32], View, bool);

/// GEMM sums run in another order on a GPU (cuBLAS in float): this much, relative to the sum of
/// the terms' magnitudes (see [`within_bound`]).
pub const GEMM_TOLERANCE: f64 = 1e-5;

/// A GEMM with BF16 products against the CPU's on the same operands rounded to BF16 (whose
/// products are exact in FP32): only the sums' order differs, but cuBLAS may sum in smaller
/// blocks. FP32 operands left unrounded, or truncated, differ by ~1e-2 (2⁻⁹ per operand).
pub const BF16_GEMM_TOLERANCE: f64 = 1e-4;

/// `(out, a, b, coef, plane)`.
pub type MixFn = fn(&mut [f32], &[f32], &[f32], &[f32], usize);
/// `(out, b)` or `(db, dout)`.
pub type BiasFn = fn(&mut [f32], &[f32]);
/// im2col's `(col, inp, shape, c0)` or col2im's `(dinp, col, shape, c0)`.
pub type ColFn = fn(&mut [f32], &[f32], &ConvShape, usize);

/// `(out, inp, shape)` or `(dinp, dout, shape)`.
pub type PoolFn = fn(&mut [f32], &[f32], &PoolShape);
/// `(out, inp, planes, hw)` or `(dinp, dout, planes, hw)`.
pub type GlobalPoolFn = fn(&mut [f32], &[f32], usize, usize);
/// `(out, mean, var, rstd, inp, scale, bias, eps, relu, channels, values per channel)`.
pub type BnForward = fn(&mut [f32], &mut [f32], &mut [f32], &mut [f32], &[f32], &[f32], &[f32], f32, bool, usize, usize);
/// `(dinp, dscale, dbias, dout, out, inp, mean, rstd, scale, relu, channels, values per channel)`.
pub type BnBackward = fn(&mut [f32], &mut [f32], &mut [f32], &[f32], &[f32], &[f32], &[f32], &[f32], &[f32], bool, usize, usize);

/// Batch norm's outputs and gradients are differences of per-channel sums, summed in another
/// order than the CPU's: this much, relative to max(|value|, 1).
pub const BATCHNORM_TOLERANCE: f64 = 1e-5;

/// The CPU's softmax cross-entropy forward, as [`CpuReference`] takes it.
pub type XentForward = fn(&mut [f32], &mut [f32], &[f32], &[u32], f32, LossShape) -> f32;
/// The CPU's softmax cross-entropy backward, as [`CpuReference`] takes it.
pub type XentBackward = fn(&mut [f32], &[f32], &[u32], f32, f32, LossShape);

/// Element-wise results that use the GPU's `expf`/`exp`/`log` (2 ulp in float, not correctly
/// rounded) may differ from the CPU's by rounding: this much, relative, per element.
pub const TRANSCENDENTAL_TOLERANCE: f64 = 1e-6;

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Check {
    /// The operation.
    pub name: &'static str,
    /// Elements that differ from the CPU engine beyond `tolerance`, plus 1 for a norm out of
    /// [`NORM_TOLERANCE`].
    pub differ: usize,
    /// Elements compared.
    pub elements: usize,
    /// The relative difference allowed per element: 0 is bitwise.
    pub tolerance: f64,
    /// Largest relative difference seen (elements and norms).
    pub max_rel: f64,
    /// Seconds the device took for one more run of the operation, or 0 when not timed.
    pub seconds: f64,
    /// Bytes that run reads and writes (its memory traffic, for GB/s).
    pub bytes: usize,
}

impl Check {
    /// Whether the device agreed with the CPU engine.
    pub fn passed(&self) -> bool {
        self.differ == 0
    }
}

/// Norms may differ by double rounding in another order of summation.
pub const NORM_TOLERANCE: f64 = 1e-12;

/// Deterministic test data in [-1, 1) (the project's own SplitMix64 streams).
pub(crate) fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ringsam_rng::Rng::new(seed);
    (0..n).map(|_| rng.uniform_in(-1.0, 1.0)).collect()
}

fn bitwise(got: &[f32], want: &[f32]) -> usize {
    within(got, want, 0.0).0
}

/// Elements beyond `tol` relative (0: bitwise), and the largest relative difference.
fn within(got: &[f32], want: &[f32], tol: f64) -> (usize, f64) {
    within_floor(got, want, tol, 0.0)
}

/// As [`within`], relative to `max(|want|, floor)`: for values near zero that are the difference
/// of larger ones (batch norm's outputs), where an absolute bound is the meaningful one.
pub(crate) fn within_floor(got: &[f32], want: &[f32], tol: f64, floor: f64) -> (usize, f64) {
    let mut worst = 0.0f64;
    let mut differ = got.len().abs_diff(want.len());
    for (&a, &b) in got.iter().zip(want) {
        if a.to_bits() == b.to_bits() {
            continue;
        }
        let r = (a as f64 - b as f64).abs() / (b as f64).abs().max(floor).max(f64::MIN_POSITIVE);
        worst = worst.max(if r.is_nan() { f64::INFINITY } else { r });
        if r.is_nan() || r > tol {
            differ += 1;
        }
    }
    (differ, worst)
}

/// Elements where `|got − want| > tol · mag`, and the largest `|got − want| / mag`. `mag` is the
/// sum of the magnitudes of the terms that made `want`: a sum computed in another order differs
/// by at most a multiple of it, however much the terms cancel. Where it is 0, bitwise.
pub(crate) fn within_bound(got: &[f32], want: &[f32], mag: &[f32], tol: f64) -> (usize, f64) {
    let mut worst = 0.0f64;
    let mut differ = got.len().abs_diff(want.len()) + got.len().abs_diff(mag.len());
    for ((&a, &b), &m) in got.iter().zip(want).zip(mag) {
        if a.to_bits() == b.to_bits() {
            continue;
        }
        let r = (a as f64 - b as f64).abs() / (m as f64).max(f64::MIN_POSITIVE);
        worst = worst.max(if r.is_nan() { f64::INFINITY } else { r });
        if r.is_nan() || r > tol {
            differ += 1;
        }
    }
    (differ, worst)
}

fn rel(got: f64, want: f64) -> f64 {
    if got == want { 0.0 } else { (got - want).abs() / want.abs().max(f64::MIN_POSITIVE) }
}

/// Runs every check on `n` elements (the loss on `n` logits: n/10 examples of 10 classes and
/// n/1000 of 1000).
pub fn run<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Vec<Check>, KernelError> {
    let mut checks = vec![ascent(l, n)?, asam(l, n)?];
    for kind in [
        OptimizerKind::Nesterov { beta: 0.9 },
        OptimizerKind::Momentum { beta: 0.9 },
        OptimizerKind::RmsProp { beta: 0.9, beta2: 0.99, eps: 1e-3 },
    ] {
        checks.push(update(l, kind, n)?);
    }
    checks.push(clip(l, n)?);
    checks.push(l2_and_ema(l, n)?);
    for act in [Activation::Relu, Activation::Sigmoid, Activation::Silu] {
        checks.push(activation(l, act, n, cpu)?);
    }
    for k in [10, 1000] {
        checks.push(softmax_xent(l, (n / k).max(1), k, cpu)?);
    }
    checks.push(dropout(l, n, cpu)?);
    // Each layout with the blocks per channel the size calls for (one, or split when long:
    // split on a GPU's sizes, one under emulation's), then split in three (uneven chunks).
    for (nhwc, parts) in [(false, None), (true, None), (false, Some(3)), (true, Some(3))] {
        checks.push(batchnorm(l, n, nhwc, parts, cpu)?);
    }
    checks.push(pools(l, n, cpu)?);
    checks.push(global_pool_and_add(l, n, cpu)?);
    for groups in [1, 4] {
        checks.push(im2col(l, n, groups, cpu)?);
    }
    checks.push(dense_parts(l, n, cpu)?);
    checks.push(gemms(l, n, Precision::Fp32, cpu)?);
    // BF16 products where the device has them (every GPU; modelled under emulation).
    let set = l.precision();
    if l.set_precision(Precision::Bf16).is_ok() {
        let bf16 = gemms(l, n, Precision::Bf16, cpu);
        l.set_precision(set)?;
        checks.push(bf16?);
    }
    // The weight gradient as the size calls for it (blocks, one part each under emulation's
    // sizes, split on a GPU's), then forced into three parts, and the reference per-tap form.
    for (stride, sum) in [(1, None), (2, None), (1, Some(DepthwiseWeightSum::Blocks(3))), (2, Some(DepthwiseWeightSum::PerTap))] {
        checks.push(depthwise(l, n, stride, sum, cpu)?);
    }
    // By im2col and GEMM, then by the device's convolution library where it has one (cuDNN;
    // the host reference under emulation), then back to what was set.
    let set = l.conv_impl();
    let mut both = || -> Result<Vec<Check>, KernelError> {
        l.set_conv_impl(ConvImpl::Gemm)?;
        let mut convs = crate::selftest_ops::convs(l, n, cpu)?;
        if l.set_conv_impl(ConvImpl::Library).is_ok() {
            convs.extend(crate::selftest_ops::convs(l, n, cpu)?);
        }
        Ok(convs)
    };
    let convs = both();
    l.set_conv_impl(set)?;
    checks.extend(convs?);
    checks.push(crate::selftest_ops::dense_layer(l, n, cpu)?);
    Ok(checks)
}

fn timed<L: Launcher + Memory>(l: &mut L, op: impl Fn(&mut L) -> Result<(), KernelError>) -> Result<f64, KernelError> {
    l.finish()?;
    let t = Instant::now();
    op(l)?;
    l.finish()?;
    Ok(t.elapsed().as_secs_f64())
}

fn ascent<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let (w, g) = (data(1, n), data(2, n));
    let mut cpu = vec![0.0; n];
    let want = ringsam_optim::ascent_point(&mut cpu, &w, &g, 0.05);
    let (dw, dg, dout) = (l.upload(&w)?, l.upload(&g)?, l.upload(&vec![0.0; n])?);
    let (bw, bg, bout) = (l.buf(&dw), l.buf(&dg), l.buf(&dout));
    let got = flat::ascent_point(l, bout, bw, bg, 0.05)?;
    let seconds = timed(l, |l| flat::ascent_point(l, bout, bw, bg, 0.05).map(drop))?;
    let scale = (0.05f32 as f64 / got) as f32; // ρ is an f32 flag, widened as the CPU engine widens it
    let formula: Vec<f32> = w.iter().zip(&g).map(|(&w, &g)| w + scale * g).collect();
    let norm_rel = rel(got, want);
    let differ = bitwise(&l.download(&dout)?, &formula) + usize::from(norm_rel > NORM_TOLERANCE);
    // The norm reads g; the ascent reads w and g and writes w_adv.
    Ok(Check { name: "SAM ascent w + ρ·g/‖g‖", differ, elements: n, tolerance: 0.0, max_rel: norm_rel, seconds, bytes: 16 * n })
}

fn asam<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let (w, g) = (data(3, n), data(4, n));
    let mut cpu = vec![0.0; n];
    let want = ringsam_optim::asam_ascent_point(&mut cpu, &w, &g, 0.5, 0.01);
    let (dw, dg, dout) = (l.upload(&w)?, l.upload(&g)?, l.upload(&vec![0.0; n])?);
    let got = flat::asam_ascent_point(l, l.buf(&dout), l.buf(&dw), l.buf(&dg), 0.5, 0.01)?;
    let scale = (0.5f32 as f64 / got) as f32;
    let formula: Vec<f32> = w
        .iter()
        .zip(&g)
        .map(|(&w, &g)| {
            let t = w.abs() + 0.01;
            w + scale * t * t * g
        })
        .collect();
    let norm_rel = rel(got, want);
    let differ = bitwise(&l.download(&dout)?, &formula) + usize::from(norm_rel > NORM_TOLERANCE);
    Ok(Check { name: "ASAM ascent", differ, elements: n, tolerance: 0.0, max_rel: norm_rel, seconds: 0.0, bytes: 0 })
}

fn update<L: Launcher + Memory>(l: &mut L, kind: OptimizerKind, n: usize) -> Result<Check, KernelError> {
    let mut cpu = BaseOptimizer::new(kind, n);
    let mut w = data(6, n);
    let (dw, dm) = (l.upload(&w)?, l.upload(&cpu.momentum)?);
    let dv = if cpu.second_moment.is_empty() { None } else { Some(l.upload(&cpu.second_moment)?) };
    let state = OptimizerState { momentum: l.buf(&dm), second_moment: dv.as_ref().map(|v| l.buf(v)) };
    let bw = l.buf(&dw);
    for step in 0..3 {
        let g = data(10 + step, n);
        let dg = l.upload(&g)?;
        cpu.update(&mut w, &g, 0.1);
        flat::update(l, kind, bw, l.buf(&dg), state, 0.1)?;
        l.finish()?; // `dg` is freed at the end of this iteration
    }
    let mut differ = bitwise(&l.download(&dw)?, &w) + bitwise(&l.download(&dm)?, &cpu.momentum);
    if let Some(v) = &dv {
        differ += bitwise(&l.download(v)?, &cpu.second_moment);
    }
    // Timed on the state reached, with a fixed gradient.
    let dg = l.upload(&data(20, n))?;
    let bg = l.buf(&dg);
    let seconds = timed(l, |l| flat::update(l, kind, bw, bg, state, 0.1))?;
    // Reads w, g and the state, writes w and the state.
    let (name, bytes) = match kind {
        OptimizerKind::Nesterov { .. } => ("Nesterov update, 3 steps", 20 * n),
        OptimizerKind::Momentum { .. } => ("momentum update, 3 steps", 20 * n),
        OptimizerKind::RmsProp { .. } => ("RMSProp update, 3 steps", 28 * n),
    };
    Ok(Check { name, differ, elements: n, tolerance: 0.0, max_rel: 0.0, seconds, bytes })
}

fn clip<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let g = data(21, n);
    let mut cpu = g.clone();
    let want = ringsam_optim::clip_by_global_norm(&mut cpu, 1.0);
    let dg = l.upload(&g)?;
    let got = flat::clip_by_global_norm(l, l.buf(&dg), 1.0)?;
    let s = (1.0f64 / got) as f32;
    let formula: Vec<f32> = g.iter().map(|&v| v * s).collect();
    let norm_rel = rel(got, want);
    let differ = bitwise(&l.download(&dg)?, &formula) + usize::from(norm_rel > NORM_TOLERANCE);
    Ok(Check { name: "clip to norm 1", differ, elements: n, tolerance: 0.0, max_rel: norm_rel, seconds: 0.0, bytes: 0 })
}

fn l2_and_ema<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let (w, mut g) = (data(22, n), data(23, n));
    let ranges = [0..n / 3, n / 2..n];
    let (dw, dg) = (l.upload(&w)?, l.upload(&g)?);
    ringsam_optim::weight_decay::add_l2_gradient(&mut g, &w, 5e-4, &ranges);
    flat::add_l2_gradient(l, l.buf(&dg), l.buf(&dw), 5e-4, &ranges)?;
    let mut differ = bitwise(&l.download(&dg)?, &g);
    let mut ema = Ema::new(0.999, 2, &w, &[]);
    let davg = l.upload(&w)?;
    for (step, x) in [(1, &g), (5, &w)] {
        let d = ema.decay_at(step);
        ema.update(step, x, &[]);
        let dx = l.upload(x)?;
        flat::ema_update(l, l.buf(&davg), l.buf(&dx), d)?;
        l.finish()?;
    }
    differ += bitwise(&l.download(&davg)?, &ema.params);
    Ok(Check { name: "L2 gradient over ranges, EMA", differ, elements: n, tolerance: 0.0, max_rel: 0.0, seconds: 0.0, bytes: 0 })
}

/// The caching allocator on the device's own memory: values round-trip, a reused block is zeroed
/// on request, and a repeated pattern of requests allocates nothing new after its first round.
pub fn memory(mem: &crate::DeviceMemory, n: usize) -> Result<Check, KernelError> {
    let values = data(400, n);
    let before = mem.stats();
    let round = |mem: &crate::DeviceMemory| -> Result<usize, KernelError> {
        let v = mem.upload(&values)?;
        let mut differ = bitwise(&v.download()?, &values);
        drop(v);
        let z = mem.zeros::<f32>(n)?; // the block just dropped, holding `values`
        differ += z.download()?.iter().filter(|&&x| x != 0.0).count();
        let small: Vec<_> = (1..8).map(|i| mem.alloc::<f32>(i * 1000)).collect::<Result<_, _>>()?;
        drop(small);
        Ok(differ)
    };
    let mut differ = round(mem)?;
    let first = mem.stats();
    for _ in 0..3 {
        differ += round(mem)?;
    }
    let later = mem.stats();
    differ += usize::from(later.device_allocs != first.device_allocs) + usize::from(first.device_allocs == before.device_allocs);
    let seconds = {
        let t = Instant::now();
        round(mem)?;
        t.elapsed().as_secs_f64()
    };
    let name = "device memory: copies, zeroing, cache reuse";
    Ok(Check { name, differ, elements: 2 * n, tolerance: 0.0, max_rel: 0.0, seconds, bytes: 12 * n })
}

/// The checks as a table, one line each.
pub fn report(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let timing = if c.seconds > 0.0 {
            format!("  {:8.3} ms  {:7.1} GB/s", c.seconds * 1e3, c.bytes as f64 / c.seconds / 1e9)
        } else {
            String::new()
        };
        let agreement = match (c.passed(), c.tolerance) {
            (false, _) => format!("{} DIFFER", c.differ),
            (true, 0.0) => "bitwise".to_string(),
            (true, t) => format!("within {t:.0e}"),
        };
        // A bitwise check that failed has no meaningful largest difference to show.
        let rel = if c.tolerance == 0.0 && !c.passed() { String::new() } else { format!(" max rel {:.1e}", c.max_rel) };
        out.push_str(&format!("{:<34} {:>10} elements  {agreement:<12}{rel}{timing}\n", c.name, c.elements));
    }
    out
}

fn activation<L: Launcher + Memory>(l: &mut L, act: Activation, n: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let (x, dy) = (data(30, n).iter().map(|v| 6.0 * v).collect::<Vec<f32>>(), data(31, n));
    let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
    (cpu.activation_forward)(act, &mut y, &x);
    let kept = if act == Activation::Silu { &x } else { &y };
    (cpu.activation_backward)(act, &mut dx, &dy, kept);
    let (dxin, ddy, dout, ddx) = (l.upload(&x)?, l.upload(&dy)?, l.zeros::<f32>(n)?, l.zeros::<f32>(n)?);
    activation::forward(l, act, l.buf(&dout), l.buf(&dxin))?;
    // The backward from the CPU's kept tensor, so that it is checked on its own.
    let dkept = l.upload(kept)?;
    activation::backward(l, act, l.buf(&ddx), l.buf(&ddy), l.buf(&dkept))?;
    let tol = if act == Activation::Relu { 0.0 } else { TRANSCENDENTAL_TOLERANCE };
    let (d1, r1) = within(&l.download(&dout)?, &y, tol);
    // The gradient relative to max(|value|, 1), the incoming gradient's scale: SiLU's is
    // g·σ(x)·(1 + x·(1 − σ(x))), which cancels near x ≈ −1.28, and a GPU fuses the multiply-add.
    let (d2, r2) = within_floor(&l.download(&ddx)?, &dx, tol, 1.0);
    let name = match act {
        Activation::Relu => "ReLU forward and backward",
        Activation::Sigmoid => "sigmoid forward and backward",
        Activation::Silu => "SiLU forward and backward",
    };
    Ok(Check { name, differ: d1 + d2, elements: 2 * n, tolerance: tol, max_rel: r1.max(r2), seconds: 0.0, bytes: 0 })
}

fn softmax_xent<L: Launcher + Memory>(l: &mut L, rows: usize, k: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let sh = LossShape { n: rows, k };
    let logits: Vec<f32> = data(40 + k as u64, rows * k).iter().map(|v| 8.0 * v).collect();
    let labels: Vec<u32> = (0..rows).map(|i| ((i * 7 + 3) % k) as u32).collect();
    let (mut losses, mut probs, mut dlogits) = (vec![0.0; rows], vec![0.0; rows * k], vec![0.0; rows * k]);
    let scale = 1.0 / rows as f32;
    let want = (cpu.softmax_xent_forward)(&mut losses, &mut probs, &logits, &labels, 0.1, sh);
    (cpu.softmax_xent_backward)(&mut dlogits, &probs, &labels, 0.1, scale, sh);
    let (dz, dl) = (l.upload(&logits)?, l.upload(&labels)?);
    let (dp, dlo, dlo64, ddz) = (l.zeros::<f32>(rows * k)?, l.zeros::<f32>(rows)?, l.zeros::<f64>(rows)?, l.zeros::<f32>(rows * k)?);
    let got = loss::softmax_xent_forward(l, l.buf(&dz), l.buf(&dl), 0.1, sh, l.buf(&dp), l.buf(&dlo), l.buf(&dlo64))?;
    // The backward from the CPU's probabilities: element-wise, so bitwise.
    let cpu_probs = l.upload(&probs)?;
    loss::softmax_xent_backward(l, l.buf(&ddz), l.buf(&cpu_probs), l.buf(&dl), 0.1, scale, sh)?;
    let tol = TRANSCENDENTAL_TOLERANCE;
    let (d1, r1) = within(&l.download(&dp)?, &probs, tol);
    let (d2, r2) = within(&l.download(&dlo)?, &losses, tol);
    let d3 = bitwise(&l.download(&ddz)?, &dlogits);
    let mean_rel = rel(got as f64, want as f64);
    let differ = d1 + d2 + d3 + usize::from(mean_rel.is_nan() || mean_rel > tol);
    let name = if k == 10 { "softmax CE, ε 0.1, 10 classes" } else { "softmax CE, ε 0.1, 1000 classes" };
    Ok(Check { name, differ, elements: rows * k, tolerance: tol, max_rel: r1.max(r2).max(mean_rel), seconds: 0.0, bytes: 0 })
}

fn dropout<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let (x, dy, rate) = (data(50, n), data(51, n), 0.3f32);
    let rng = ringsam_rng::Rng::stream(7, 1234, 99); // (seed, step, the layer's key)
    let mut mask = vec![0.0; n];
    (cpu.dropout_mask)(&mut mask, rng.clone(), rate);
    let y: Vec<f32> = x.iter().zip(&mask).map(|(&v, &m)| v * m).collect();
    let dx: Vec<f32> = dy.iter().zip(&mask).map(|(&g, &m)| g * m).collect();
    let (dxin, ddy) = (l.upload(&x)?, l.upload(&dy)?);
    let (dout, dmask, ddx) = (l.zeros::<f32>(n)?, l.zeros::<f32>(n)?, l.zeros::<f32>(n)?);
    dropout::forward(l, l.buf(&dout), l.buf(&dmask), l.buf(&dxin), &rng, rate)?;
    dropout::backward(l, l.buf(&ddx), l.buf(&ddy), l.buf(&dmask))?;
    let differ = bitwise(&l.download(&dmask)?, &mask) + bitwise(&l.download(&dout)?, &y) + bitwise(&l.download(&ddx)?, &dx);
    Ok(Check {
        name: "dropout 0.3: mask, forward, backward",
        differ,
        elements: 3 * n,
        tolerance: 0.0,
        max_rel: 0.0,
        seconds: 0.0,
        bytes: 0,
    })
}

/// (C, M) to (M, C) and back (`c` channels).
fn transpose(x: &[f32], c: usize) -> Vec<f32> {
    let m = x.len() / c;
    (0..x.len()).map(|i| x[(i % c) * m + i / c]).collect()
}

fn untranspose(x: &[f32], c: usize) -> Vec<f32> {
    let m = x.len() / c;
    (0..x.len()).map(|i| x[(i % m) * c + i / m]).collect()
}

fn batchnorm<L: Launcher + Memory>(
    l: &mut L,
    n: usize,
    nhwc: bool,
    parts: Option<usize>,
    cpu: &CpuReference,
) -> Result<Check, KernelError> {
    let c = 8;
    let m = (n / c).max(1);
    let lay = if nhwc { BnLayout::nhwc(c, m) } else { BnLayout::cnhw(c, m) };
    let parts = parts.unwrap_or_else(|| batchnorm::split_parts(lay));
    let x: Vec<f32> = data(60, c * m).iter().enumerate().map(|(i, v)| 3.0 * v + (i / m) as f32).collect();
    let (scale, bias, dy) = (data(61, c), data(62, c), data(63, c * m));
    // The CPU, in (C, N, H, W).
    let (mut y, mut mean, mut var, mut rstd) = (vec![0.0; c * m], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    (cpu.batchnorm_forward_train)(&mut y, &mut mean, &mut var, &mut rstd, &x, &scale, &bias, 1e-5, true, c, m);
    let (mut dx, mut dscale, mut dbias) = (vec![0.0; c * m], vec![0.5; c], vec![0.25; c]);
    (cpu.batchnorm_backward)(&mut dx, &mut dscale, &mut dbias, &dy, &y, &x, &mean, &rstd, &scale, true, c, m);
    // The device, in the layout asked for: the CPU's tensors transposed there and back.
    let to = |t: &[f32]| if nhwc { transpose(t, c) } else { t.to_vec() };
    let from = |t: Vec<f32>| if nhwc { untranspose(&t, c) } else { t };
    let (dxin, ddy, dsc, dbi) = (l.upload(&to(&x))?, l.upload(&to(&dy))?, l.upload(&scale)?, l.upload(&bias)?);
    let (dout, dmean, dvar, drstd) = (l.zeros::<f32>(c * m)?, l.zeros::<f32>(c)?, l.zeros::<f32>(c)?, l.zeros::<f32>(c)?);
    let (ddx, ddscale, ddbias) = (l.zeros::<f32>(c * m)?, l.upload(&[0.5f32; 8][..c])?, l.upload(&[0.25f32; 8][..c])?);
    let stats = BnStats { mean: l.buf(&dmean), var: l.buf(&dvar), rstd: l.buf(&drstd) };
    let p = BnParams { scale: l.buf(&dsc), bias: l.buf(&dbi) };
    batchnorm::forward_train_in(l, parts, lay, l.buf(&dout), stats, l.buf(&dxin), p, 1e-5, true)?;
    let grads = [l.buf(&ddx), l.buf(&ddscale), l.buf(&ddbias)];
    batchnorm::backward_in(l, parts, lay, grads, [l.buf(&ddy), l.buf(&dout), l.buf(&dxin)], stats, l.buf(&dsc), true)?;
    let tol = BATCHNORM_TOLERANCE;
    let mut differ = 0;
    let mut worst = 0.0f64;
    for (got, want) in [
        (from(l.download(&dout)?), &y),
        (l.download(&dmean)?, &mean),
        (l.download(&dvar)?, &var),
        (l.download(&drstd)?, &rstd),
        (from(l.download(&ddx)?), &dx),
        (l.download(&ddscale)?, &dscale),
        (l.download(&ddbias)?, &dbias),
    ] {
        let (d, r) = within_floor(&got, want, tol, 1.0);
        differ += d;
        worst = worst.max(r);
    }
    let name = match (nhwc, parts) {
        (false, 1) => "batch norm + ReLU, (C, N, H, W)",
        (true, 1) => "batch norm + ReLU, NHWC",
        (false, _) => "batch norm + ReLU split, (C, N, H, W)",
        (true, _) => "batch norm + ReLU split, NHWC",
    };
    Ok(Check { name, differ, elements: 2 * c * m, tolerance: tol, max_rel: worst, seconds: 0.0, bytes: 0 })
}

fn pools<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let (h, w) = (15, 15);
    let sh = (cpu.pool_same)((n / (h * w)).max(1), h, w, 3, 2);
    let (x, dy) = (data(70, sh.planes * h * w), data(71, sh.planes * sh.p * sh.q));
    let (mut y, mut dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
    let (mut my, mut am, mut mdx) = (vec![0.0; dy.len()], vec![0u32; dy.len()], vec![0.0; x.len()]);
    (cpu.avgpool[0])(&mut y, &x, &sh);
    (cpu.avgpool[1])(&mut dx, &dy, &sh);
    (cpu.maxpool_forward)(&mut my, &mut am, &x, &sh);
    (cpu.maxpool_backward)(&mut mdx, &dy, &am, &sh);
    let (dxin, ddy) = (l.upload(&x)?, l.upload(&dy)?);
    let (gy, gdx, gmy, gam, gmdx) =
        (l.zeros::<f32>(y.len())?, l.zeros::<f32>(x.len())?, l.zeros::<f32>(y.len())?, l.zeros::<u32>(y.len())?, l.zeros::<f32>(x.len())?);
    pool::avgpool_forward(l, l.buf(&gy), l.buf(&dxin), &sh)?;
    pool::avgpool_backward(l, l.buf(&gdx), l.buf(&ddy), &sh)?;
    pool::maxpool_forward(l, l.buf(&gmy), l.buf(&gam), l.buf(&dxin), &sh)?;
    pool::maxpool_backward(l, l.buf(&gmdx), l.buf(&ddy), l.buf(&gam), &sh)?;
    let argmax_differ = l.download(&gam)?.iter().zip(&am).filter(|(a, b)| a != b).count();
    let differ = bitwise(&l.download(&gy)?, &y)
        + bitwise(&l.download(&gdx)?, &dx)
        + bitwise(&l.download(&gmy)?, &my)
        + bitwise(&l.download(&gmdx)?, &mdx)
        + argmax_differ;
    let elements = 2 * (x.len() + y.len());
    Ok(Check { name: "avg and max pool 3×3/2 SAME, fwd+bwd", differ, elements, tolerance: 0.0, max_rel: 0.0, seconds: 0.0, bytes: 0 })
}

fn global_pool_and_add<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let hw = 64;
    let planes = (n / hw).max(1);
    let (x, dy, b) = (data(80, planes * hw), data(81, planes), data(82, planes * hw));
    let (mut y, mut dx, mut sum) = (vec![0.0; planes], vec![0.0; planes * hw], vec![0.0; planes * hw]);
    (cpu.global_avgpool[0])(&mut y, &x, planes, hw);
    (cpu.global_avgpool[1])(&mut dx, &dy, planes, hw);
    (cpu.add)(&mut sum, &x, &b);
    let (dxin, ddy, db) = (l.upload(&x)?, l.upload(&dy)?, l.upload(&b)?);
    let (gy, gdx, gsum) = (l.zeros::<f32>(planes)?, l.zeros::<f32>(planes * hw)?, l.zeros::<f32>(planes * hw)?);
    pool::global_avgpool_forward(l, l.buf(&gy), l.buf(&dxin), hw)?;
    pool::global_avgpool_backward(l, l.buf(&gdx), l.buf(&ddy), hw)?;
    pool::add(l, l.buf(&gsum), l.buf(&dxin), l.buf(&db))?;
    // The forward's sum is a tree in double where the CPU's runs in order: rounding apart.
    let (d1, r1) = within(&l.download(&gy)?, &y, TRANSCENDENTAL_TOLERANCE);
    let differ = d1 + bitwise(&l.download(&gdx)?, &dx) + bitwise(&l.download(&gsum)?, &sum);
    let name = "global avg pool fwd+bwd, residual add";
    Ok(Check { name, differ, elements: planes * (1 + 2 * hw), tolerance: TRANSCENDENTAL_TOLERANCE, max_rel: r1, seconds: 0.0, bytes: 0 })
}

fn im2col<L: Launcher + Memory>(l: &mut L, n: usize, groups: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    // 3×3 stride 2 SAME on an even size: TensorFlow's asymmetric padding (0 before, 1 after).
    let (c, h) = (4, 8);
    let sh = (cpu.conv_same)((n / (c * h * h)).max(1), c, h, h, c, 3, 2, groups);
    let x = data(90, sh.n * c * h * h);
    let dinp0 = data(91, x.len());
    let (dx, ddinp) = (l.upload(&x)?, l.upload(&dinp0)?);
    let mut cpu_dinp = dinp0.clone();
    let (mut differ, mut elements) = (0, 0);
    for c0 in (0..c).step_by(c / groups) {
        let mut col = vec![0.0; sh.col_len()];
        (cpu.im2col[0])(&mut col, &x, &sh, c0);
        (cpu.im2col[1])(&mut cpu_dinp, &col, &sh, c0);
        let dcol = l.zeros::<f32>(sh.col_len())?;
        conv::im2col(l, l.buf(&dcol), l.buf(&dx), &sh, c0)?;
        conv::col2im(l, l.buf(&ddinp), l.buf(&dcol), &sh, c0)?;
        differ += bitwise(&l.download(&dcol)?, &col);
        elements += col.len();
        l.finish()?; // `dcol` is freed at the end of this iteration
    }
    differ += bitwise(&l.download(&ddinp)?, &cpu_dinp);
    elements += x.len();
    let name = if groups == 1 { "im2col + col2im, 3×3/2 SAME" } else { "im2col + col2im, 4 groups" };
    Ok(Check { name, differ, elements, tolerance: 0.0, max_rel: 0.0, seconds: 0.0, bytes: 0 })
}

fn dense_parts<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let k = 10;
    let rows = (n / k).max(1);
    let (logits, b, coef) = (data(100, rows * k), data(101, k), data(102, 4));
    let labels: Vec<u32> = (0..rows).map(|i| ((i * 3) % k) as u32).collect();
    // The CPU: bias, its gradient, per-example scaling over 4 examples of 5-value planes, errors.
    let mut out = vec![0.0; rows * k];
    (cpu.bias[0])(&mut out, &b);
    let mut db = data(103, k);
    (cpu.bias[1])(&mut db, &logits);
    let x = &logits[..(rows * k / 20) * 20];
    let mut scaled = vec![0.0; x.len()];
    (cpu.scale_examples)(&mut scaled, x, &coef, 5);
    let errors = (cpu.count_errors)(&logits, &labels, k);
    let other: Vec<f32> = x.iter().map(|v| 0.5 - v).collect();
    let mut mixed = vec![0.0; x.len()];
    (cpu.mix_examples)(&mut mixed, x, &other, &coef, 5);
    // The device.
    let (dl, db_in, dcoef, dlab, dx) = (l.upload(&logits)?, l.upload(&b)?, l.upload(&coef)?, l.upload(&labels)?, l.upload(x)?);
    let (gout, gdb, gscaled, gwrong) =
        (l.zeros::<f32>(rows * k)?, l.upload(&data(103, k))?, l.zeros::<f32>(x.len())?, l.zeros::<u32>(rows)?);
    dense::broadcast_bias(l, l.buf(&gout), l.buf(&db_in))?;
    dense::add_bias_gradient(l, l.buf(&gdb), l.buf(&dl))?;
    dense::scale_planes(l, l.buf(&gscaled), l.buf(&dx), l.buf(&dcoef), 5)?;
    dense::count_errors(l, l.buf(&gwrong), l.buf(&dl), l.buf(&dlab))?;
    let (dother, gmixed) = (l.upload(&other)?, l.zeros::<f32>(x.len())?);
    dense::mix_planes(l, l.buf(&gmixed), l.buf(&dx), l.buf(&dother), l.buf(&dcoef), 5)?;
    let got_errors: u32 = l.download(&gwrong)?.iter().sum();
    let differ = bitwise(&l.download(&gout)?, &out)
        + bitwise(&l.download(&gdb)?, &db)
        + bitwise(&l.download(&gscaled)?, &scaled)
        + bitwise(&l.download(&gmixed)?, &mixed)
        + usize::from(got_errors as usize != errors);
    let elements = 2 * rows * k + k + 2 * x.len();
    Ok(Check { name: "dense bias, scale/mix per example, errors", differ, elements, tolerance: 0.0, max_rel: 0.0, seconds: 0.0, bytes: 0 })
}

/// Every arrangement the engine's GEMMs use: C row-major or a transposed view, A and B each
/// row-major or transposed, overwrite and accumulate; `products` the launcher's precision now
/// (FP32, or BF16: the CPU then multiplies the operands rounded to BF16).
fn gemms<L: Launcher + Memory>(l: &mut L, n: usize, products: Precision, cpu: &CpuReference) -> Result<Check, KernelError> {
    let (m, k, nn) = (37, 64, (n / 64).clamp(1, 300));
    let (mut differ, mut worst, mut elements) = (0, 0.0f64, 0);
    let rounded = |v: Vec<f32>| if products == Precision::Bf16 { v.into_iter().map(gemm::round_to_bf16).collect() } else { v };
    let tolerance = if products == Precision::Bf16 { BF16_GEMM_TOLERANCE } else { GEMM_TOLERANCE };
    for case in 0..16 {
        let (c_t, a_t, b_t, acc) = (case & 1 != 0, case & 2 != 0, case & 4 != 0, case & 8 != 0);
        // Storage shapes: a transposed view of an (x × y) matrix is stored (y × x).
        let view = |rows: usize, cols: usize, t: bool| if t { (rows, cols, 1, rows) } else { (rows, cols, cols, 1) };
        let (va, vb, vc) = (view(m, k, a_t), view(k, nn, b_t), view(m, nn, c_t));
        let (a, b, c0) = (data(110 + case, m * k), data(120 + case, k * nn), data(130 + case, m * nn));
        let mut want = c0.clone();
        (cpu.gemm)(&mut want, vc, &rounded(a.clone()), va, &rounded(b.clone()), vb, acc);
        let (da, db, dc) = (l.upload(&a)?, l.upload(&b)?, l.upload(&c0)?);
        let mat = |buf, (rows, cols, rs, cs): View| Mat { buf, rows, cols, rs, cs };
        let call = gemm::plan(&mat(l.buf(&dc), vc), &mat(l.buf(&da), va), &mat(l.buf(&db), vb), acc)?;
        l.sgemm(&call)?;
        let (d, r) = within_floor(&l.download(&dc)?, &want, tolerance, 1.0);
        differ += d;
        worst = worst.max(r);
        elements += want.len();
        l.finish()?; // the buffers are freed at the end of this iteration
    }
    let name = if products == Precision::Bf16 { "GEMM with BF16 products, 16 arrangements" } else { "SGEMM, 16 arrangements" };
    Ok(Check { name, differ, elements, tolerance, max_rel: worst, seconds: 0.0, bytes: 0 })
}

fn depthwise<L: Launcher + Memory>(
    l: &mut L,
    n: usize,
    stride: usize,
    sum: Option<DepthwiseWeightSum>,
    cpu: &CpuReference,
) -> Result<Check, KernelError> {
    // 3×3 (stride 1) or 5×5 (stride 2, asymmetric SAME padding on an even size), EfficientNet's.
    let (c, h, kernel) = (8, 10, if stride == 1 { 3 } else { 5 });
    let sh = (cpu.conv_same)((n / (c * h * h)).max(1), c, h, h, c, kernel, stride, c);
    let (x, wt) = (data(140 + stride as u64, c * sh.n * h * h), data(150 + stride as u64, kernel * kernel * c));
    let dy = data(160 + stride as u64, c * sh.n * sh.p * sh.q);
    let (mut y, mut dx, mut dw) = (vec![0.0; dy.len()], vec![0.0; x.len()], data(170, wt.len()));
    (cpu.depthwise_forward)(&mut y, &x, &wt, &sh);
    (cpu.depthwise_backward)(&mut dx, &mut dw, &dy, &x, &wt, &sh);
    let (dxin, dwt, ddy) = (l.upload(&x)?, l.upload(&wt)?, l.upload(&dy)?);
    let (gy, gdx, gdw) = (l.zeros::<f32>(y.len())?, l.zeros::<f32>(x.len())?, l.upload(&data(170, wt.len()))?);
    conv::depthwise_forward(l, l.buf(&gy), l.buf(&dxin), l.buf(&dwt), &sh)?;
    let sum = sum.unwrap_or(DepthwiseWeightSum::for_shape(&sh));
    conv::depthwise_backward_in(l, sum, Some(l.buf(&gdx)), l.buf(&gdw), l.buf(&ddy), l.buf(&dxin), l.buf(&dwt), &sh)?;
    // The CPU engine's depthwise kernels are vectorised (sixteen outputs, or one tap's sixteen
    // lanes of sums, at a time): the same sums in another order, relative to max(|value|, 1).
    let (mut differ, mut worst) = (0, 0.0f64);
    for (got, want) in [(l.download(&gy)?, &y), (l.download(&gdx)?, &dx), (l.download(&gdw)?, &dw)] {
        let (d, r) = within_floor(&got, want, GEMM_TOLERANCE, 1.0);
        differ += d;
        worst = worst.max(r);
    }
    let name = match (stride, sum) {
        (1, DepthwiseWeightSum::Blocks(1)) => "depthwise 3×3/1 SAME, fwd+bwd, weight sum in 1 block",
        (1, DepthwiseWeightSum::Blocks(_)) => "depthwise 3×3/1 SAME, fwd+bwd, weight sum in blocks",
        (1, DepthwiseWeightSum::PerTap) => "depthwise 3×3/1 SAME, fwd+bwd, weight sum per tap",
        (_, DepthwiseWeightSum::Blocks(1)) => "depthwise 5×5/2 SAME, fwd+bwd, weight sum in 1 block",
        (_, DepthwiseWeightSum::Blocks(_)) => "depthwise 5×5/2 SAME, fwd+bwd, weight sum in blocks",
        (_, DepthwiseWeightSum::PerTap) => "depthwise 5×5/2 SAME, fwd+bwd, weight sum per tap",
    };
    let elements = y.len() + x.len() + wt.len();
    Ok(Check { name, differ, elements, tolerance: GEMM_TOLERANCE, max_rel: worst, seconds: 0.0, bytes: 0 })
}
