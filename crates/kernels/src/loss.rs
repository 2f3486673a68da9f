//! Softmax cross-entropy with label smoothing on device buffers (crates/tensor/src/loss.rs's, as
//! kernels). Labels must be below the class count: the caller checks them on the host, where
//! they come from (a label out of range would not fault here, only mean a target of ε/k).

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, REDUCE_BLOCK};

/// `n` examples of `k` classes; logits are `(n × k)` row-major.
#[derive(Clone, Copy, Debug)]
pub struct LossShape {
    /// Examples.
    pub n: usize,
    /// Classes.
    pub k: usize,
}

fn check(op: &'static str, want: usize, got: usize) -> Result<(), KernelError> {
    if want == got { Ok(()) } else { Err(KernelError::Length { op, got, want }) }
}

/// Writes `probs` and the per-example `losses` (also in double, `losses64`), and their sum,
/// reduced in double as the CPU engine reduces it, into `sum[0]` on the device.
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn softmax_xent_forward_into(
    l: &mut impl Launcher,
    logits: Buf<f32>,
    labels: Buf<u32>,
    smoothing: f32,
    sh: LossShape,
    [probs, losses]: [Buf<f32>; 2],
    losses64: Buf<f64>,
    sum: Buf<f64>,
) -> Result<(), KernelError> {
    let op = "softmax_xent_forward";
    check(op, sh.n * sh.k, logits.len())?;
    check(op, sh.n * sh.k, probs.len())?;
    check(op, sh.n, labels.len())?;
    check(op, sh.n, losses.len())?;
    check(op, sh.n, losses64.len())?;
    check(op, 1, sum.len().min(1))?;
    if sh.n > 0 {
        // (No launch of 0 blocks, which a GPU refuses; the sum of no losses is 0.)
        let rows = u32::try_from(sh.n).map_err(|_| KernelError::Launch { kernel: op, why: format!("{} examples in one launch", sh.n) })?;
        let args = [logits.into(), labels.into(), Arg::F32(smoothing), Arg::U64(sh.k as u64), probs.into(), losses.into(), losses64.into()];
        l.launch(op, Launch { grid: rows, block: REDUCE_BLOCK }, &args)?;
    }
    l.launch("sum_partials", Launch::final_sum(), &[losses64.into(), Arg::U64(sh.n as u64), sum.into()])
}

/// [`softmax_xent_forward_into`], returning the mean loss (the host waits for it).
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn softmax_xent_forward(
    l: &mut impl Launcher,
    logits: Buf<f32>,
    labels: Buf<u32>,
    smoothing: f32,
    sh: LossShape,
    probs: Buf<f32>,
    losses: Buf<f32>,
    losses64: Buf<f64>,
) -> Result<f32, KernelError> {
    let (_, total) = l.reduction_scratch()?;
    softmax_xent_forward_into(l, logits, labels, smoothing, sh, [probs, losses], losses64, total)?;
    let sum = l.read_f64(total)?[0];
    Ok(if sh.n == 0 { 0.0 } else { (sum / sh.n as f64) as f32 })
}

/// `dlogits = (probs − t)·scale` (`scale` is 1/N for the mean loss).
pub fn softmax_xent_backward(
    l: &mut impl Launcher,
    dlogits: Buf<f32>,
    probs: Buf<f32>,
    labels: Buf<u32>,
    smoothing: f32,
    scale: f32,
    sh: LossShape,
) -> Result<(), KernelError> {
    let op = "softmax_xent_backward";
    check(op, sh.n * sh.k, dlogits.len())?;
    check(op, sh.n * sh.k, probs.len())?;
    check(op, sh.n, labels.len())?;
    let nk = sh.n * sh.k;
    let args =
        [dlogits.into(), probs.into(), labels.into(), Arg::F32(smoothing), Arg::F32(scale), Arg::U64(sh.k as u64), Arg::U64(nk as u64)];
    l.launch(op, Launch::elementwise(nk), &args)
}
