//! Unfolding image patches into GEMM operands, and folding their gradients back.
//!
//! `im2col` writes, for one channel group, the matrix `col` of shape `(R·S·Cg) × (N·P·Q)`: row
//! `(r, s, ci)` (in the Flax HWIO kernel order, so the kernel needs no reordering), column
//! `(n, p, q)`, value `x[c0 + ci, n, p·stride − pad_h + r, q·stride − pad_w + s]`, or zero outside
//! the image. `col2im` is its adjoint: it adds each column entry back into the pixel it came from.

use rayon::prelude::*;

use crate::conv::Conv2dShape;

/// Fills `col` `(R·S·Cg × N·P·Q)` from the group of input channels starting at `c0`.
/// Parallel over rows; each row is written by one thread.
pub fn im2col(col: &mut [f32], inp: &[f32], sh: &Conv2dShape, c0: usize) {
    let cg = sh.c / sh.groups;
    let npq = sh.n * sh.p * sh.q;
    debug_assert_eq!(col.len(), sh.r * sh.s * cg * npq);
    let (h, w, p, q, stride) = (sh.h, sh.w, sh.p, sh.q, sh.stride);
    let plane = sh.n * h * w;
    col.par_chunks_mut(npq).enumerate().for_each(|(row, dst)| {
        let ci = row % cg;
        let s = (row / cg) % sh.s;
        let r = row / (cg * sh.s);
        let src = &inp[(c0 + ci) * plane..][..plane];
        // q range whose input column lies inside the image: 0 <= q*stride + s - pad_w < w
        let q_lo = (sh.pad_w.saturating_sub(s)).div_ceil(stride).min(q);
        let q_hi = if w + sh.pad_w > s { ((w + sh.pad_w - s - 1) / stride + 1).min(q) } else { 0 }.max(q_lo);
        for ni in 0..sh.n {
            for pi in 0..p {
                let d = &mut dst[(ni * p + pi) * q..][..q];
                let ih = (pi * stride + r) as isize - sh.pad_h as isize;
                if ih < 0 || ih >= h as isize {
                    d.fill(0.0);
                    continue;
                }
                let srow = &src[(ni * h + ih as usize) * w..][..w];
                d[..q_lo].fill(0.0);
                d[q_hi..].fill(0.0);
                if q_hi == q_lo {
                    continue;
                }
                let iw0 = q_lo * stride + s - sh.pad_w;
                if stride == 1 {
                    d[q_lo..q_hi].copy_from_slice(&srow[iw0..iw0 + (q_hi - q_lo)]);
                } else {
                    for (k, v) in d[q_lo..q_hi].iter_mut().enumerate() {
                        *v = srow[iw0 + k * stride];
                    }
                }
            }
        }
    });
}

/// Adds `col` `(R·S·Cg × N·P·Q)` back into the input-gradient channels starting at `c0`.
/// Parallel over input channels: each thread owns one channel plane, so there are no races.
pub fn col2im(dinp: &mut [f32], col: &[f32], sh: &Conv2dShape, c0: usize) {
    let cg = sh.c / sh.groups;
    let npq = sh.n * sh.p * sh.q;
    let (h, w, p, q, stride) = (sh.h, sh.w, sh.p, sh.q, sh.stride);
    let plane = sh.n * h * w;
    dinp[c0 * plane..(c0 + cg) * plane].par_chunks_mut(plane).enumerate().for_each(|(ci, dst)| {
        for r in 0..sh.r {
            for s in 0..sh.s {
                let row = (r * sh.s + s) * cg + ci;
                let src = &col[row * npq..][..npq];
                let q_lo = (sh.pad_w.saturating_sub(s)).div_ceil(stride).min(q);
                let q_hi = if w + sh.pad_w > s { ((w + sh.pad_w - s - 1) / stride + 1).min(q) } else { 0 }.max(q_lo);
                for ni in 0..sh.n {
                    for pi in 0..p {
                        let ih = (pi * stride + r) as isize - sh.pad_h as isize;
                        if ih < 0 || ih >= h as isize {
                            continue;
                        }
                        let drow = &mut dst[(ni * h + ih as usize) * w..][..w];
                        let srow = &src[(ni * p + pi) * q..][..q];
                        if q_hi == q_lo {
                            continue;
                        }
                        let iw0 = q_lo * stride + s - sh.pad_w;
                        let vals = &srow[q_lo..q_hi];
                        if stride == 1 {
                            for (d, &v) in drow[iw0..iw0 + vals.len()].iter_mut().zip(vals) {
                                *d += v;
                            }
                        } else {
                            for (k, &v) in vals.iter().enumerate() {
                                drow[iw0 + k * stride] += v;
                            }
                        }
                    }
                }
            }
        }
    });
}
