//! Per-plane reductions and broadcasts over `(C, N, H, W)` activations, a plane being the `H·W`
//! values of one channel of one example: squeeze-excite's pooling and gating, and their
//! gradients. Parallel over groups of planes (a 7×7 plane alone is too little work for a task),
//! vectorised within a plane; sums in lanes, folded in f64 ([`crate::simd::sum_lanes`]).

use rayon::prelude::*;

use crate::simd::{Vector, dot_lanes, madd, sum_lanes};
use crate::{TensorError, check_len};

/// Values per parallel task, about.
const TASK: usize = 1 << 14;

fn planes_per_task(hw: usize) -> usize {
    (TASK / hw.max(1)).max(1)
}

fn check(
    op: &'static str,
    planes: usize,
    hw: usize,
    lens: &[(&'static str, usize)],
    per_plane: &[(&'static str, usize)],
) -> Result<(), TensorError> {
    if hw == 0 {
        return Err(TensorError::Shape { op, msg: "empty planes".into() });
    }
    for &(what, len) in lens {
        check_len(op, what, len, planes * hw)?;
    }
    for &(what, len) in per_plane {
        check_len(op, what, len, planes)?;
    }
    Ok(())
}

#[inline(always)]
fn means_body<V: Vector>(out: &mut [f32], x: &[f32], hw: usize) {
    for (o, x) in out.iter_mut().zip(x.chunks_exact(hw)) {
        *o = (sum_lanes::<V>(x, |v| v) / hw as f64) as f32;
    }
}
crate::simd::multiversion!(fn means_group(out: &mut [f32], x: &[f32], hw: usize) => means_body);

/// `out[i]` = the mean of plane `i` of `x`.
pub fn plane_means(out: &mut [f32], x: &[f32], hw: usize) -> Result<(), TensorError> {
    crate::profile::timed("squeeze-excite: plane means", 0.0, || {
        check("plane_means", out.len(), hw, &[("input", x.len())], &[])?;
        let k = planes_per_task(hw);
        out.par_chunks_mut(k).zip(x.par_chunks(k * hw)).for_each(|(o, x)| means_group(o, x, hw));
        Ok(())
    })
}

#[inline(always)]
fn dots_body<V: Vector>(out: &mut [f32], a: &[f32], b: &[f32], hw: usize) {
    for ((o, a), b) in out.iter_mut().zip(a.chunks_exact(hw)).zip(b.chunks_exact(hw)) {
        *o = dot_lanes::<V>(a, b) as f32;
    }
}
crate::simd::multiversion!(fn dots_group(out: &mut [f32], a: &[f32], b: &[f32], hw: usize) => dots_body);

/// `out[i]` = Σ `a·b` over plane `i`.
pub fn plane_dots(out: &mut [f32], a: &[f32], b: &[f32], hw: usize) -> Result<(), TensorError> {
    crate::profile::timed("squeeze-excite: plane dots", 0.0, || {
        check("plane_dots", out.len(), hw, &[("first input", a.len()), ("second input", b.len())], &[])?;
        let k = planes_per_task(hw);
        out.par_chunks_mut(k).zip(a.par_chunks(k * hw).zip(b.par_chunks(k * hw))).for_each(|(o, (a, b))| dots_group(o, a, b, hw));
        Ok(())
    })
}

#[inline(always)]
fn affine_body<V: Vector>(out: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32], hw: usize) {
    for (((o, x), &a), &b) in out.chunks_exact_mut(hw).zip(x.chunks_exact(hw)).zip(scale).zip(shift) {
        o.iter_mut().zip(x).for_each(|(o, &v)| *o = madd::<V>(v, a, b));
    }
}
crate::simd::multiversion!(fn affine_group(out: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32], hw: usize) => affine_body);

/// `out = x · scale[i] + shift[i]` on each plane `i`; an empty `shift` means zero.
pub fn plane_affine(out: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32], hw: usize) -> Result<(), TensorError> {
    crate::profile::timed("squeeze-excite: plane scales", 0.0, || {
        let planes = scale.len();
        let zeros;
        let shift = if shift.is_empty() {
            zeros = vec![0.0; planes];
            &zeros[..]
        } else {
            shift
        };
        check("plane_affine", planes, hw, &[("input", x.len()), ("output", out.len())], &[("shift", shift.len())])?;
        let k = planes_per_task(hw);
        out.par_chunks_mut(k * hw)
            .zip(x.par_chunks(k * hw))
            .zip(scale.par_chunks(k).zip(shift.par_chunks(k)))
            .for_each(|((o, x), (a, b))| affine_group(o, x, a, b, hw));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_match_plain_loops() {
        for hw in [1, 7, 49, 196, 12544] {
            let planes = 37;
            let a: Vec<f32> = (0..planes * hw).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let b: Vec<f32> = (0..planes * hw).map(|i| ((i * 104729) % 777) as f32 / 388.0 - 1.0).collect();
            let (mut m, mut d) = (vec![0.0; planes], vec![0.0; planes]);
            plane_means(&mut m, &a, hw).unwrap();
            plane_dots(&mut d, &a, &b, hw).unwrap();
            for i in 0..planes {
                let (pa, pb) = (&a[i * hw..(i + 1) * hw], &b[i * hw..(i + 1) * hw]);
                let mean = pa.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
                let dot: f64 = pa.iter().zip(pb).map(|(&x, &y)| x as f64 * y as f64).sum();
                let magnitude: f64 = pa.iter().zip(pb).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
                assert!((m[i] as f64 - mean).abs() < 1e-6, "hw {hw} plane {i}: mean {} vs {mean}", m[i]);
                assert!((d[i] as f64 - dot).abs() < 1e-6 * magnitude.max(1.0), "hw {hw} plane {i}: dot {} vs {dot}", d[i]);
            }
            let scale: Vec<f32> = (0..planes).map(|i| i as f32 * 0.1 - 1.0).collect();
            let shift: Vec<f32> = (0..planes).map(|i| i as f32).collect();
            let mut out = vec![0.0; planes * hw];
            plane_affine(&mut out, &a, &scale, &shift, hw).unwrap();
            for (i, (o, x)) in out.iter().zip(&a).enumerate() {
                let want = x * scale[i / hw] + shift[i / hw];
                assert!((o - want).abs() <= 1e-6 * want.abs().max(1.0), "hw {hw} at {i}: {o} vs {want}");
            }
            plane_affine(&mut out, &a, &scale, &[], hw).unwrap();
            assert!(out.iter().zip(&a).enumerate().all(|(i, (o, x))| (o - x * scale[i / hw]).abs() <= 1e-6));
        }
        assert!(plane_means(&mut [0.0; 2], &[0.0; 5], 2).is_err());
    }
}
