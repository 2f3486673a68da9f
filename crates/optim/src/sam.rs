//! SAM's ascent step (Foret et al. 2020; docs/SAM.md, "The step, in order"), and ASAM's.
//!
//! SAM: `w_adv = w + ρ·g/‖g‖₂` with the norm over the whole model and no epsilon, as the
//! reference; a zero gradient gives `e = 0`. ASAM (Kwon et al. 2021): with `T = |w| + η`,
//! `e = ρ·T²·g/‖T·g‖₂`, which makes the neighbourhood scale-invariant.
//!
//! The perturbed weights go into a second buffer with the arena's layout: pass 2 reads `w_adv`,
//! the update later applies to the untouched `w`. Restoring `w` by subtracting `e` is avoided on
//! purpose: in f32, `(w + e) − e` is not always `w`.

use rayon::prelude::*;

use crate::global_norm;

const CHUNK: usize = 1 << 16;

/// Writes `w + rho·g/‖g‖` into `w_adv`; returns `‖g‖`.
pub fn ascent_point(w_adv: &mut [f32], w: &[f32], g: &[f32], rho: f32) -> f64 {
    assert!(w_adv.len() == w.len() && g.len() == w.len(), "ascent_point: buffers of different layouts");
    let norm = global_norm(g);
    let scale = if norm > 0.0 { (rho as f64 / norm) as f32 } else { 0.0 };
    w_adv.par_chunks_mut(CHUNK).zip(w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(a, (w, g))| {
        for ((a, &w), &g) in a.iter_mut().zip(w).zip(g) {
            *a = w + scale * g;
        }
    });
    norm
}

/// ASAM: writes `w + ρ·T²g/‖Tg‖` with `T = |w| + eta` into `w_adv`; returns `‖Tg‖`.
pub fn asam_ascent_point(w_adv: &mut [f32], w: &[f32], g: &[f32], rho: f32, eta: f32) -> f64 {
    assert!(w_adv.len() == w.len() && g.len() == w.len(), "asam_ascent_point: buffers of different layouts");
    let tg_norm = crate::norm::ordered_sum(
        w.par_chunks(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .map(|(w, g)| w.iter().zip(g).map(|(&w, &g)| ((w.abs() + eta) as f64 * g as f64).powi(2)).sum::<f64>()),
    )
    .sqrt();
    let scale = if tg_norm > 0.0 { (rho as f64 / tg_norm) as f32 } else { 0.0 };
    w_adv.par_chunks_mut(CHUNK).zip(w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(a, (w, g))| {
        for ((a, &w), &g) in a.iter_mut().zip(w).zip(g) {
            let t = w.abs() + eta;
            *a = w + scale * t * t * g;
        }
    });
    tg_norm
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
        asam_ascent_point(&mut a, &[1.0, 2.0], &[0.0, 0.0], 0.5, 0.01);
        assert_eq!(a, [1.0, 2.0]);
    }

    #[test]
    fn asam_by_hand() {
        // T = (1.01, 2.01); Tg = (3.03, 8.04); e = rho·T²g/‖Tg‖
        let (w, g) = ([1.0f32, -2.0], [3.0f32, 4.0]);
        let mut a = [0.0; 2];
        let n = asam_ascent_point(&mut a, &w, &g, 0.5, 0.01);
        let want_n = (3.03f64.powi(2) + 8.04f64.powi(2)).sqrt();
        assert!((n - want_n).abs() < 1e-6); // T is formed in f32
        let e0 = 0.5 * 1.01f64.powi(2) * 3.0 / want_n;
        let e1 = 0.5 * 2.01f64.powi(2) * 4.0 / want_n;
        assert!((a[0] as f64 - (1.0 + e0)).abs() < 1e-6 && (a[1] as f64 - (-2.0 + e1)).abs() < 1e-6);
    }
}
