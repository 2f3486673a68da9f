//! LookSAM's reused direction (Liu et al., CVPR 2022, "Towards Efficient and Scalable
//! Sharpness-Aware Minimization", Algorithm 1; docs/SAM.md, "Cheaper SAM").
//!
//! On a SAM step, with `g` the gradient at `w` and `g_s` the gradient at the ascent point, the
//! part of `g_s` that `g` does not explain is kept:
//! `g_v = g_s − ‖g_s‖·cos θ · g/‖g‖ = g_s − (g_s·g / ‖g‖²)·g`.
//! On the steps between, which compute only `g`, the update uses
//! `g + α·(‖g‖/‖g_v‖)·g_v`: `g_v`'s direction, at the current gradient's scale.
//!
//! Dot products and norms accumulate in f64 (a WRN-28-10 gradient has 36 M values).

use rayon::prelude::*;

const CHUNK: usize = 1 << 16;

/// The kept part is taken as none when its norm is below this fraction of `‖g_s‖`: `g_s` was
/// parallel to `g` up to f32 rounding, and scaling rounding noise up to `α‖g‖` would add noise.
pub const PARALLEL: f64 = 1e-6;

/// Writes `g_s − (g_s·g/‖g‖²)·g` into `g_v`; returns `‖g_v‖`, or 0 when that is below
/// [`PARALLEL`]`·‖g_s‖`. A zero `g` leaves `g_v = g_s`. Sums are in chunk order (replicas
/// agree to the bit; [`crate::norm::ordered_sum`]).
pub fn orthogonal_part(g_v: &mut [f32], g_s: &[f32], g: &[f32]) -> f64 {
    assert!(g_v.len() == g.len() && g_s.len() == g.len(), "orthogonal_part: buffers of different layouts");
    let partials: Vec<[f64; 3]> = g_s
        .par_chunks(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .map(|(s, g)| {
            s.iter().zip(g).fold([0.0f64; 3], |[d, n, ss], (&s, &g)| {
                let (s, g) = (s as f64, g as f64);
                [d + s * g, n + g * g, ss + s * s]
            })
        })
        .collect();
    let [dot, gg, ss] = partials.iter().fold([0.0f64; 3], |a, p| [a[0] + p[0], a[1] + p[1], a[2] + p[2]]);
    let c = if gg > 0.0 { (dot / gg) as f32 } else { 0.0 };
    let norm =
        crate::norm::ordered_sum(g_v.par_chunks_mut(CHUNK).zip(g_s.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).map(|(v, (s, g))| {
            let mut sq = 0.0f64;
            for ((v, &s), &g) in v.iter_mut().zip(s).zip(g) {
                *v = s - c * g;
                sq += *v as f64 * *v as f64;
            }
            sq
        }))
        .sqrt();
    if norm <= PARALLEL * ss.sqrt() { 0.0 } else { norm }
}

/// Adds `alpha·(‖g‖/‖g_v‖)·g_v` to `g`; `g_v_norm` is `‖g_v‖`. A zero `g_v_norm` (no direction
/// yet, or `g_s` parallel to `g`) adds nothing, and so does a scale that is not finite. Returns
/// `‖g‖` before the addition.
pub fn add_reused(g: &mut [f32], g_v: &[f32], g_v_norm: f64, alpha: f32) -> f64 {
    assert!(g_v.len() == g.len(), "add_reused: buffers of different layouts");
    let g_norm = crate::global_norm(g);
    let s = alpha as f64 * g_norm / g_v_norm;
    if g_v_norm <= 0.0 || alpha == 0.0 || !(s as f32).is_finite() {
        return g_norm;
    }
    let s = s as f32;
    g.par_chunks_mut(CHUNK).zip(g_v.par_chunks(CHUNK)).for_each(|(g, v)| {
        for (g, &v) in g.iter_mut().zip(v) {
            *g += s * v;
        }
    });
    g_norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    #[test]
    fn the_kept_part_is_orthogonal_to_g_and_completes_g_s() {
        let g: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let g_s: Vec<f32> = (0..1000).map(|i| ((i * 53 % 97) as f32 - 40.0) / 13.0).collect();
        let mut g_v = vec![0.0; 1000];
        let n = orthogonal_part(&mut g_v, &g_s, &g);
        assert!(dot(&g_v, &g).abs() < 1e-6 * dot(&g, &g).sqrt() * n, "g_v·g = {}", dot(&g_v, &g));
        assert!((n - dot(&g_v, &g_v).sqrt()).abs() < 1e-9 * n);
        // The paper's form: g_s − ‖g_s‖·cos θ·g/‖g‖, recomputed in f64.
        let (ns, ng) = (dot(&g_s, &g_s).sqrt(), dot(&g, &g).sqrt());
        let cos = dot(&g_s, &g) / (ns * ng);
        for i in 0..1000 {
            let want = g_s[i] as f64 - ns * cos * g[i] as f64 / ng;
            assert!((g_v[i] as f64 - want).abs() < 1e-5, "{i}: {} vs {want}", g_v[i]);
        }
    }

    #[test]
    fn reuse_adds_the_direction_at_the_gradients_scale() {
        let mut g = vec![3.0f32, 4.0, 0.0];
        let g_v = [0.0f32, 0.0, 2.0];
        assert_eq!(add_reused(&mut g, &g_v, 2.0, 0.5), 5.0);
        assert_eq!(g, [3.0, 4.0, 0.5 * 5.0 / 2.0 * 2.0]);
        let before = g.clone();
        add_reused(&mut g, &[0.0; 3], 0.0, 0.7);
        assert_eq!(g, before, "a zero direction adds nothing");
    }

    #[test]
    fn a_g_s_parallel_to_g_up_to_rounding_keeps_nothing() {
        let g: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin()).collect();
        let g_s: Vec<f32> = g.iter().map(|&x| x * 3.0).collect();
        let mut g_v = vec![0.0; 5000];
        assert_eq!(orthogonal_part(&mut g_v, &g_s, &g), 0.0);
        let mut h = g.clone();
        add_reused(&mut h, &g_v, 0.0, 0.7);
        assert_eq!(h, g);
    }

    #[test]
    fn zero_g_keeps_all_of_g_s() {
        let mut g_v = [9.0f32; 2];
        assert_eq!(orthogonal_part(&mut g_v, &[3.0, 4.0], &[0.0, 0.0]), 5.0);
        assert_eq!(g_v, [3.0, 4.0]);
    }
}
