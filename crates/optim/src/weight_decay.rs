//! Weight decay, two ways.
//!
//! - L2 in the loss (the reference): the loss gains `½·wd·Σ w²`, so the gradient gains `wd·w`
//!   ([`add_l2_gradient`]), evaluated at whatever point the gradient is taken (at `w + e` in SAM's
//!   second pass). With `no_weight_decay_on_bn` only tensors with more than one dimension decay.
//! - decoupled (AdamW-style, an option): after the update, `w ← w − lr·wd·w` ([`decay_decoupled`]).

use std::ops::Range;

/// `g[r] += wd·w[r]` for every range `r` that decays.
pub fn add_l2_gradient(g: &mut [f32], w: &[f32], wd: f32, decayed: &[Range<usize>]) {
    for r in decayed {
        for (g, &w) in g[r.clone()].iter_mut().zip(&w[r.clone()]) {
            *g += wd * w;
        }
    }
}

/// `½·wd·Σ w²` over the decayed ranges (for reporting the full loss).
pub fn l2_penalty(w: &[f32], wd: f32, decayed: &[Range<usize>]) -> f64 {
    0.5 * wd as f64 * decayed.iter().map(|r| w[r.clone()].iter().map(|&v| v as f64 * v as f64).sum::<f64>()).sum::<f64>()
}

/// `w[r] −= lr·wd·w[r]` for every decayed range.
pub fn decay_decoupled(w: &mut [f32], lr: f32, wd: f32, decayed: &[Range<usize>]) {
    let f = 1.0 - lr * wd;
    for r in decayed {
        w[r.clone()].iter_mut().for_each(|v| *v *= f);
    }
}
