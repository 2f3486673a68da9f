//! Softmax cross-entropy with label smoothing, the reference's training loss.
//!
//! Targets are `(1 − ls)·onehot + ls/K` (the reference's smoothing: the `ls/K` mass includes the
//! true class). The per-example loss is `−Σ_k t_k·log softmax(z)_k`, computed with the max-shifted
//! log-sum-exp in f64. The batch loss is the mean, so the gradient is `(softmax − t)/N`.

use crate::{TensorError, check_len};

/// Sizes of a loss call: `n` examples, `k` classes; logits are `(n × k)` row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossShape {
    /// Examples.
    pub n: usize,
    /// Classes.
    pub k: usize,
}

fn check_labels(op: &'static str, labels: &[u32], sh: &LossShape) -> Result<(), TensorError> {
    check_len(op, "labels", labels.len(), sh.n)?;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= sh.k) {
        return Err(TensorError::Shape { op, msg: format!("label {l} of example {i} is out of range for {} classes", sh.k) });
    }
    Ok(())
}

/// Writes `probs` (softmax) and `losses` (per example); returns the mean loss.
pub fn softmax_cross_entropy_forward(
    losses: &mut [f32],
    probs: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    smoothing: f32,
    sh: &LossShape,
) -> Result<f32, TensorError> {
    let op = "softmax_cross_entropy_forward";
    check_len(op, "logits", logits.len(), sh.n * sh.k)?;
    check_len(op, "probs", probs.len(), sh.n * sh.k)?;
    check_len(op, "losses", losses.len(), sh.n)?;
    check_labels(op, labels, sh)?;
    if sh.n == 0 {
        return Ok(0.0);
    }
    let off = smoothing as f64 / sh.k as f64;
    let mut total = 0.0f64;
    for i in 0..sh.n {
        let z = &logits[i * sh.k..][..sh.k];
        let zmax = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let sum: f64 = z.iter().map(|&v| (v as f64 - zmax).exp()).sum();
        let lse = zmax + sum.ln();
        let mut loss = 0.0;
        for (j, p) in probs[i * sh.k..][..sh.k].iter_mut().enumerate() {
            let logp = z[j] as f64 - lse;
            *p = logp.exp() as f32;
            let t = off + if j == labels[i] as usize { 1.0 - smoothing as f64 } else { 0.0 };
            loss -= t * logp;
        }
        losses[i] = loss as f32;
        total += loss;
    }
    Ok((total / sh.n as f64) as f32)
}

/// `dlogits = (probs − t)·scale` (overwritten). `scale` is `1/N` for the mean loss.
pub fn softmax_cross_entropy_backward(
    dlogits: &mut [f32],
    probs: &[f32],
    labels: &[u32],
    smoothing: f32,
    scale: f32,
    sh: &LossShape,
) -> Result<(), TensorError> {
    let op = "softmax_cross_entropy_backward";
    check_len(op, "dlogits", dlogits.len(), sh.n * sh.k)?;
    check_len(op, "probs", probs.len(), sh.n * sh.k)?;
    check_labels(op, labels, sh)?;
    let off = smoothing / sh.k as f32;
    for i in 0..sh.n {
        for j in 0..sh.k {
            let t = off + if j == labels[i] as usize { 1.0 - smoothing } else { 0.0 };
            dlogits[i * sh.k + j] = (probs[i * sh.k + j] - t) * scale;
        }
    }
    Ok(())
}
