//! The dense layer's bias, per-plane scaling and error counting on device buffers (see
//! `cu/dense.cu`).

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
