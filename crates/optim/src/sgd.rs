//! SGD with Nesterov momentum in the reference's form (flax `optim.Momentum(nesterov=True)`):
//! `m ← β·m + g;  w ← w − lr·(g + β·m)`.

use rayon::prelude::*;

/// Nesterov momentum state: one velocity per parameter.
#[derive(Clone, Debug)]
pub struct Nesterov {
    /// β (the reference uses 0.9).
    pub beta: f32,
    velocity: Vec<f32>,
}

impl Nesterov {
    /// Zero velocity for `len` parameters.
    pub fn new(len: usize, beta: f32) -> Self {
        Nesterov { beta, velocity: vec![0.0; len] }
    }

    /// The velocity buffer (checkpoints save it).
    pub fn velocity(&self) -> &[f32] {
        &self.velocity
    }

    /// One update of `w` with gradient `g` at learning rate `lr`.
    pub fn update(&mut self, w: &mut [f32], g: &[f32], lr: f32) {
        assert!(w.len() == self.velocity.len() && g.len() == w.len(), "Nesterov::update: buffers of different layouts");
        let beta = self.beta;
        w.par_chunks_mut(1 << 16).zip(g.par_chunks(1 << 16).zip(self.velocity.par_chunks_mut(1 << 16))).for_each(|(w, (g, m))| {
            for ((w, &g), m) in w.iter_mut().zip(g).zip(m) {
                *m = beta * *m + g;
                *w -= lr * (g + beta * *m);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_by_hand() {
        let mut opt = Nesterov::new(1, 0.9);
        let mut w = [1.0f32];
        opt.update(&mut w, &[0.5], 0.1); // m = 0.5, w = 1 - 0.1(0.5 + 0.45) = 0.905
        assert!((w[0] - 0.905).abs() < 1e-7);
        opt.update(&mut w, &[0.5], 0.1); // m = 0.95, w = 0.905 - 0.1(0.5 + 0.855) = 0.7695
        assert!((w[0] - 0.7695).abs() < 1e-6);
    }
}
