//! SAM's ascent step (Foret et al. 2020, reference/sam.md §1.6).
//!
//! `w_adv = w + ρ·g/‖g‖₂` with the norm over the whole model and no epsilon, as the reference; a
//! zero gradient gives `e = 0`. The perturbed weights go into a second buffer with the arena's
//! layout: pass 2 reads `w_adv`, the update later applies to the untouched `w`. Restoring `w` by
//! subtracting `e` is avoided on purpose: in f32, `(w + e) − e` is not always `w`.

use rayon::prelude::*;

use crate::global_norm;

/// Writes `w + rho·g/‖g‖` into `w_adv`; returns `‖g‖`.
pub fn ascent_point(w_adv: &mut [f32], w: &[f32], g: &[f32], rho: f32) -> f64 {
    assert!(w_adv.len() == w.len() && g.len() == w.len(), "ascent_point: buffers of different layouts");
    let norm = global_norm(g);
    let scale = if norm > 0.0 { (rho as f64 / norm) as f32 } else { 0.0 };
    w_adv.par_chunks_mut(1 << 16).zip(w.par_chunks(1 << 16).zip(g.par_chunks(1 << 16))).for_each(|(a, (w, g))| {
        for ((a, &w), &g) in a.iter_mut().zip(w).zip(g) {
            *a = w + scale * g;
        }
    });
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascent_moves_rho_along_the_unit_gradient() {
        let (w, g) = ([1.0f32, 2.0], [3.0f32, 4.0]);
        let mut a = [0.0; 2];
        assert_eq!(ascent_point(&mut a, &w, &g, 0.5), 5.0);
        assert_eq!(a, [1.0 + 0.5 * 0.6, 2.0 + 0.5 * 0.8]);
    }

    #[test]
    fn zero_gradient_means_no_perturbation() {
        let mut a = [9.0; 2];
        ascent_point(&mut a, &[1.0, 2.0], &[0.0, 0.0], 0.05);
        assert_eq!(a, [1.0, 2.0]);
    }
}
