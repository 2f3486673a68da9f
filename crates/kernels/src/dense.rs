//! The dense layer (its GEMMs and bias), per-plane scaling and error counting on device buffers
//! (see `cu/dense.cu`).

use crate::gemm::{Mat, plan};
use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};

fn len(op: &'static str, want: usize, got: usize) -> Result<(), KernelError> {
    if want == got { Ok(()) } else { Err(KernelError::Length { op, got, want }) }
}

fn rows_of(op: &'static str, total: usize, k: usize) -> Result<usize, KernelError> {
    if k == 0 || !total.is_multiple_of(k) {
        return Err(KernelError::Length { op, got: total, want: k * total.div_ceil(k.max(1)) });
    }
    Ok(total / k)
}

/// Every row of `out` (`N × K`) set to `b` (`K`).
pub fn broadcast_bias(l: &mut impl Launcher, out: Buf<f32>, b: Buf<f32>) -> Result<(), KernelError> {
    rows_of("broadcast_bias", out.len(), b.len())?;
    let n = out.len();
    l.launch("broadcast_bias", Launch::elementwise(n), &[out.into(), b.into(), Arg::U64(b.len() as u64), Arg::U64(n as u64)])
}

/// `db += Σ_rows dout` (`dout` is `N × K`).
pub fn add_bias_gradient(l: &mut impl Launcher, db: Buf<f32>, dout: Buf<f32>) -> Result<(), KernelError> {
    let rows = rows_of("add_bias_gradient", dout.len(), db.len())?;
    let args = [db.into(), dout.into(), Arg::U64(rows as u64), Arg::U64(db.len() as u64)];
    l.launch("add_bias_gradient", Launch::elementwise(db.len()), &args)
}

/// The dense layer's sizes: features `(C, N)` in, logits `(N, K)` out, kernel `(C, K)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseShape {
    /// Input features.
    pub c: usize,
    /// Examples.
    pub n: usize,
    /// Outputs.
    pub k: usize,
}

impl DenseShape {
    fn check(&self, op: &'static str, bufs: &[(usize, usize)]) -> Result<(), KernelError> {
        bufs.iter().try_for_each(|&(got, want)| len(op, want, got))
    }
}

/// `out (N × K) = xᵀ·W + b`, as the CPU's `Linear` computes it (bias first, then the GEMM adds).
pub fn dense_forward(
    l: &mut impl Launcher,
    out: Buf<f32>,
    x: Buf<f32>,
    w: Buf<f32>,
    b: Buf<f32>,
    sh: DenseShape,
) -> Result<(), KernelError> {
    let DenseShape { c, n, k } = sh;
    sh.check("dense_forward", &[(out.len(), n * k), (x.len(), c * n), (w.len(), c * k), (b.len(), k)])?;
    broadcast_bias(l, out, b)?;
    let call = plan(&Mat::row_major(out, n, k), &Mat::row_major(x, c, n).t(), &Mat::row_major(w, c, k), true)?;
    l.sgemm(&call)
}

/// Its backward: `dw += x·dout`, `db += Σ_rows dout`, `dx = W·doutᵀ` (overwritten).
#[allow(clippy::too_many_arguments)] // the layer's buffers, each named
pub fn dense_backward(
    l: &mut impl Launcher,
    dx: Buf<f32>,
    dw: Buf<f32>,
    db: Buf<f32>,
    dout: Buf<f32>,
    x: Buf<f32>,
    w: Buf<f32>,
    sh: DenseShape,
) -> Result<(), KernelError> {
    let DenseShape { c, n, k } = sh;
    let lens = [(dx.len(), c * n), (dw.len(), c * k), (db.len(), k), (dout.len(), n * k), (x.len(), c * n), (w.len(), c * k)];
    sh.check("dense_backward", &lens)?;
    let g = Mat::row_major(dout, n, k);
    l.sgemm(&plan(&Mat::row_major(dw, c, k), &Mat::row_major(x, c, n), &g, true)?)?;
    add_bias_gradient(l, db, dout)?;
    l.sgemm(&plan(&Mat::row_major(dx, c, n), &Mat::row_major(w, c, k), &g.t(), false)?)
}

/// `out = coef[plane mod coef.len()]·x` over planes of `hw` values.
pub fn scale_planes(l: &mut impl Launcher, out: Buf<f32>, x: Buf<f32>, coef: Buf<f32>, hw: usize) -> Result<(), KernelError> {
    len("scale_planes", x.len(), out.len())?;
    rows_of("scale_planes", x.len(), hw)?;
    if coef.is_empty() {
        return Err(KernelError::Length { op: "scale_planes (coefficients)", got: 0, want: 1 });
    }
    let args = [out.into(), x.into(), coef.into(), Arg::U64(hw as u64), Arg::U64(coef.len() as u64), Arg::U64(x.len() as u64)];
    l.launch("scale_planes", Launch::elementwise(x.len()), &args)
}

/// Shake-Shake's mix: `out = g·a + (1 − g)·b` with `g = coef[plane mod coef.len()]` over planes
/// of `hw` values.
pub fn mix_planes(l: &mut impl Launcher, out: Buf<f32>, a: Buf<f32>, b: Buf<f32>, coef: Buf<f32>, hw: usize) -> Result<(), KernelError> {
    len("mix_planes", out.len(), a.len())?;
    len("mix_planes", out.len(), b.len())?;
    rows_of("mix_planes", out.len(), hw)?;
    if coef.is_empty() {
        return Err(KernelError::Length { op: "mix_planes (coefficients)", got: 0, want: 1 });
    }
    let args = [out.into(), a.into(), b.into(), coef.into(), Arg::U64(hw as u64), Arg::U64(coef.len() as u64), Arg::U64(out.len() as u64)];
    l.launch("mix_planes", Launch::elementwise(out.len()), &args)
}

/// `wrong[row]` = 1 where the row's first largest logit is not its label (logits `N × K`).
pub fn count_errors(l: &mut impl Launcher, wrong: Buf<u32>, logits: Buf<f32>, labels: Buf<u32>) -> Result<(), KernelError> {
    len("count_errors", wrong.len(), labels.len())?;
    let k = logits.len() / wrong.len().max(1);
    len("count_errors", wrong.len() * k, logits.len())?;
    let args = [wrong.into(), logits.into(), labels.into(), Arg::U64(k as u64), Arg::U64(wrong.len() as u64)];
    l.launch("count_errors", Launch::elementwise(wrong.len()), &args)
}

/// [`count_errors`], and their number into `count[0]` (a double) on the device.
pub fn count_errors_into(
    l: &mut impl Launcher,
    wrong: Buf<u32>,
    logits: Buf<f32>,
    labels: Buf<u32>,
    count: Buf<f64>,
) -> Result<(), KernelError> {
    count_errors(l, wrong, logits, labels)?;
    len("count_errors (count)", 1, count.len().min(1))?;
    l.launch("count_flags", Launch::final_sum(), &[wrong.into(), Arg::U64(wrong.len() as u64), count.into()])
}
