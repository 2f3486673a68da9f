//! Clipping by global norm, as the reference (after the all-reduce): when `‖g‖ ≥ c`, `g ← g·c/‖g‖`.
//! Direction is preserved; `c = 0` disables clipping.

use rayon::prelude::*;

use crate::global_norm;

/// Clips `g` in place; returns the norm before clipping.
pub fn clip_by_global_norm(g: &mut [f32], max_norm: f32) -> f64 {
    let norm = global_norm(g);
    if max_norm > 0.0 && norm >= max_norm as f64 && norm > 0.0 {
        let s = (max_norm as f64 / norm) as f32;
        g.par_chunks_mut(1 << 16).for_each(|c| c.iter_mut().for_each(|v| *v *= s));
    }
    norm
}

#[cfg(test)]
mod tests {
    #[test]
    fn clips_to_the_threshold_and_keeps_direction() {
        let mut g = [3.0f32, 4.0];
        assert_eq!(super::clip_by_global_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-7 && (g[1] - 0.8).abs() < 1e-7);
        let mut g = [0.3f32, 0.4];
        super::clip_by_global_norm(&mut g, 1.0);
        assert_eq!(g, [0.3, 0.4]);
    }
}
