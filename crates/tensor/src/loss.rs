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
    check_labels(op, labels, sh)?;
    forward_with(op, losses, probs, logits, sh, |i, j| smoothed(labels[i], j, smoothing, sh.k))
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
    crate::profile::timed("softmax cross-entropy", 0.0, || {
        crate::profile::timed("softmax cross-entropy", 0.0, || {
            let op = "softmax_cross_entropy_backward";
            check_labels(op, labels, sh)?;
            backward_with(op, dlogits, probs, scale, sh, |i, j| smoothed(labels[i], j, smoothing, sh.k))
        })
    })
}

/// Mixup's targets: example `i`'s target is `λ·t(labels[i]) + (1 − λ)·t(partner[i])`, each
/// smoothed, so the loss is `λ·CE(labels) + (1 − λ)·CE(partner)` and the gradient
/// `(probs − mixed t)·scale`.
#[derive(Clone, Copy, Debug)]
pub struct Mixed<'a> {
    /// The other example's labels.
    pub partner: &'a [u32],
    /// The weight of `labels`.
    pub lambda: f32,
}

/// [`softmax_cross_entropy_forward`] with mixup's targets.
pub fn softmax_cross_entropy_mixed_forward(
    losses: &mut [f32],
    probs: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    mix: Mixed<'_>,
    smoothing: f32,
    sh: &LossShape,
) -> Result<f32, TensorError> {
    let op = "softmax_cross_entropy_mixed_forward";
    check_labels(op, labels, sh)?;
    check_labels(op, mix.partner, sh)?;
    forward_with(op, losses, probs, logits, sh, |i, j| mixed(labels, mix, i, j, smoothing, sh.k))
}

/// [`softmax_cross_entropy_backward`] with mixup's targets.
pub fn softmax_cross_entropy_mixed_backward(
    dlogits: &mut [f32],
    probs: &[f32],
    labels: &[u32],
    mix: Mixed<'_>,
    smoothing: f32,
    scale: f32,
    sh: &LossShape,
) -> Result<(), TensorError> {
    crate::profile::timed("softmax cross-entropy", 0.0, || {
        crate::profile::timed("softmax cross-entropy", 0.0, || {
            let op = "softmax_cross_entropy_mixed_backward";
            check_labels(op, labels, sh)?;
            check_labels(op, mix.partner, sh)?;
            backward_with(op, dlogits, probs, scale, sh, |i, j| mixed(labels, mix, i, j, smoothing, sh.k))
        })
    })
}

/// The smoothed one-hot target of class `label` at class `j`.
fn smoothed(label: u32, j: usize, smoothing: f32, k: usize) -> f64 {
    smoothing as f64 / k as f64 + if j == label as usize { 1.0 - smoothing as f64 } else { 0.0 }
}

fn mixed(labels: &[u32], mix: Mixed<'_>, i: usize, j: usize, smoothing: f32, k: usize) -> f64 {
    let l = mix.lambda as f64;
    l * smoothed(labels[i], j, smoothing, k) + (1.0 - l) * smoothed(mix.partner[i], j, smoothing, k)
}

fn forward_with(
    op: &'static str,
    losses: &mut [f32],
    probs: &mut [f32],
    logits: &[f32],
    sh: &LossShape,
    target: impl Fn(usize, usize) -> f64,
) -> Result<f32, TensorError> {
    check_len(op, "logits", logits.len(), sh.n * sh.k)?;
    check_len(op, "probs", probs.len(), sh.n * sh.k)?;
    check_len(op, "losses", losses.len(), sh.n)?;
    if sh.n == 0 {
        return Ok(0.0);
    }
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
            loss -= target(i, j) * logp;
        }
        losses[i] = loss as f32;
        total += loss;
    }
    Ok((total / sh.n as f64) as f32)
}

fn backward_with(
    op: &'static str,
    dlogits: &mut [f32],
    probs: &[f32],
    scale: f32,
    sh: &LossShape,
    target: impl Fn(usize, usize) -> f64,
) -> Result<(), TensorError> {
    check_len(op, "dlogits", dlogits.len(), sh.n * sh.k)?;
    check_len(op, "probs", probs.len(), sh.n * sh.k)?;
    for i in 0..sh.n {
        for j in 0..sh.k {
            dlogits[i * sh.k + j] = (probs[i * sh.k + j] - target(i, j) as f32) * scale;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(n: usize, k: usize) -> Vec<f32> {
        (0..n * k).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.17).collect()
    }

    #[test]
    fn mixed_loss_is_the_lambda_weighted_sum_and_its_gradient_matches_finite_differences() {
        let (n, k, ls, lambda) = (4, 5, 0.1, 0.7f32);
        let sh = LossShape { n, k };
        let z = logits(n, k);
        let (labels, partner) = ([0u32, 3, 4, 1], [1u32, 4, 3, 0]);
        let mix = Mixed { partner: &partner, lambda };
        let (mut l, mut p) = (vec![0.0; n], vec![0.0; n * k]);
        let mixed = softmax_cross_entropy_mixed_forward(&mut l, &mut p, &z, &labels, mix, ls, &sh).unwrap() as f64;
        let a = softmax_cross_entropy_forward(&mut l, &mut p, &z, &labels, ls, &sh).unwrap() as f64;
        let b = softmax_cross_entropy_forward(&mut l, &mut p, &z, &partner, ls, &sh).unwrap() as f64;
        assert!((mixed - (lambda as f64 * a + (1.0 - lambda as f64) * b)).abs() < 1e-6, "{mixed} vs {a}, {b}");
        // λ = 1 is the plain loss.
        let one =
            softmax_cross_entropy_mixed_forward(&mut l, &mut p, &z, &labels, Mixed { partner: &partner, lambda: 1.0 }, ls, &sh).unwrap();
        assert_eq!(one as f64, a as f32 as f64);
        // Gradient of the mean loss against central differences in f64.
        softmax_cross_entropy_mixed_forward(&mut l, &mut p, &z, &labels, mix, ls, &sh).unwrap();
        let mut d = vec![0.0; n * k];
        softmax_cross_entropy_mixed_backward(&mut d, &p, &labels, mix, ls, 1.0 / n as f32, &sh).unwrap();
        let f = |z: &[f32]| {
            let (mut l, mut p) = (vec![0.0; n], vec![0.0; n * k]);
            softmax_cross_entropy_mixed_forward(&mut l, &mut p, z, &labels, mix, ls, &sh).unwrap() as f64
        };
        let eps = 1e-2f32;
        for i in 0..n * k {
            let (mut hi, mut lo) = (z.clone(), z.clone());
            hi[i] += eps;
            lo[i] -= eps;
            let fd = (f(&hi) - f(&lo)) / (2.0 * eps as f64);
            assert!((fd - d[i] as f64).abs() < 2e-4, "logit {i}: analytic {} vs numeric {fd}", d[i]);
        }
    }

    #[test]
    fn mixed_targets_refuse_partner_labels_out_of_range() {
        let sh = LossShape { n: 2, k: 3 };
        let (mut l, mut p) = (vec![0.0; 2], vec![0.0; 6]);
        let err =
            softmax_cross_entropy_mixed_forward(&mut l, &mut p, &[0.0; 6], &[0, 1], Mixed { partner: &[2, 3], lambda: 0.5 }, 0.0, &sh);
        assert!(err.is_err());
    }
}
