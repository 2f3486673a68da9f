//! Base optimizers, each one fused pass over `(w, g, state…)`.
//!
//! - Nesterov momentum, the reference's default (flax `optim.Momentum(beta, nesterov=True)`):
//!   `m ← β·m + g;  w ← w − lr·(g + β·m)`;
//! - heavy-ball momentum (`nesterov = false`): `m ← β·m + g;  w ← w − lr·m`;
//! - TF1-style RMSProp, the reference's `use_rmsprop` (sam_jax/efficientnet/optim.py, with its
//!   β₂ = 0.9 and ε = 1e-3): `v ← β₂·v + (1 − β₂)·g²;  m ← β·m + g/√(v + ε);  w ← w − lr·m`,
//!   with `v` starting at 1 (TensorFlow's initialisation), not 0.

use rayon::prelude::*;

const CHUNK: usize = 1 << 16;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Nesterov momentum with coefficient β.
    Nesterov {
        /// β.
        beta: f32,
    },
    /// Heavy-ball momentum with coefficient β.
    Momentum {
        /// β.
        beta: f32,
    },
    /// TF1 RMSProp.
    RmsProp {
        /// Momentum β.
        beta: f32,
        /// Second-moment decay β₂.
        beta2: f32,
        /// ε inside the square root.
        eps: f32,
    },
}

/// An optimizer and its state buffers (same layout as the parameters).
#[derive(Clone, Debug)]
pub struct BaseOptimizer {
    /// The rule.
    pub kind: OptimizerKind,
    /// Momentum (all rules).
    pub momentum: Vec<f32>,
    /// Second moment (RMSProp only; empty otherwise).
    pub second_moment: Vec<f32>,
}

impl BaseOptimizer {
    /// Fresh state for `len` parameters.
    pub fn new(kind: OptimizerKind, len: usize) -> Self {
        let second_moment = if matches!(kind, OptimizerKind::RmsProp { .. }) { vec![1.0; len] } else { Vec::new() };
        BaseOptimizer { kind, momentum: vec![0.0; len], second_moment }
    }

    /// Named state buffers, for checkpoints.
    pub fn state(&self) -> Vec<(&'static str, &[f32])> {
        let mut s = vec![("momentum", &self.momentum[..])];
        if !self.second_moment.is_empty() {
            s.push(("second_moment", &self.second_moment[..]));
        }
        s
    }

    /// Mutable named state buffers, for restoring checkpoints.
    pub fn state_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)> {
        let mut s = vec![("momentum", &mut self.momentum)];
        if !self.second_moment.is_empty() {
            s.push(("second_moment", &mut self.second_moment));
        }
        s
    }

    /// One update of `w` with gradient `g` at learning rate `lr`.
    pub fn update(&mut self, w: &mut [f32], g: &[f32], lr: f32) {
        assert!(w.len() == g.len() && w.len() == self.momentum.len(), "optimizer: buffers of different layouts");
        let m = &mut self.momentum;
        match self.kind {
            OptimizerKind::Nesterov { beta } => {
                w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(m.par_chunks_mut(CHUNK))).for_each(|(w, (g, m))| {
                    for ((w, &g), m) in w.iter_mut().zip(g).zip(m) {
                        *m = beta * *m + g;
                        *w -= lr * (g + beta * *m);
                    }
                })
            }
            OptimizerKind::Momentum { beta } => {
                w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(m.par_chunks_mut(CHUNK))).for_each(|(w, (g, m))| {
                    for ((w, &g), m) in w.iter_mut().zip(g).zip(m) {
                        *m = beta * *m + g;
                        *w -= lr * *m;
                    }
                })
            }
            OptimizerKind::RmsProp { beta, beta2, eps } => {
                let v = &mut self.second_moment;
                w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))).for_each(
                    |(w, (g, (m, v)))| {
                        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                            *v = beta2 * *v + (1.0 - beta2) * g * g;
                            *m = beta * *m + g / (*v + eps).sqrt();
                            *w -= lr * *m;
                        }
                    },
                )
            }
        }
    }
}
