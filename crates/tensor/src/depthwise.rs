//! Depthwise convolution (`groups == C == K`), the EfficientNet workhorse.
//!
//! As `C` separate GEMMs each would be a `(1 × R·S) · (R·S × NPQ)` product: all overhead. The
//! direct loop below instead walks each channel's plane once per tap, parallel over channels
//! (each thread owns whole channels, so backward needs no atomics). Kernel layout is Flax's
//! `(R, S, 1, C)`. [`crate::conv::conv2d_forward_ref`] is its reference.

use rayon::prelude::*;

use crate::conv::Conv2dShape;

/// Row range `[lo, hi)` of output positions whose input index `o·stride + tap − pad` lies in `[0, len)`.
fn valid_range(tap: usize, pad: usize, stride: usize, len: usize, out: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(tap).div_ceil(stride).min(out);
    let hi = if len + pad > tap { ((len + pad - tap - 1) / stride + 1).min(out) } else { 0 };
    (lo, hi.max(lo))
}

/// `out (C,N,P,Q)` from `inp (C,N,H,W)` and `weight (R,S,1,C)`.
pub fn depthwise_forward(out: &mut [f32], inp: &[f32], weight: &[f32], sh: &Conv2dShape) {
    let (plane_in, plane_out) = (sh.n * sh.h * sh.w, sh.n * sh.p * sh.q);
    out.par_chunks_mut(plane_out).zip(inp.par_chunks(plane_in)).enumerate().for_each(|(c, (o, x))| {
        o.fill(0.0);
        for r in 0..sh.r {
            let (p_lo, p_hi) = valid_range(r, sh.pad_h, sh.stride, sh.h, sh.p);
            for s in 0..sh.s {
                let wv = weight[(r * sh.s + s) * sh.c + c];
                let (q_lo, q_hi) = valid_range(s, sh.pad_w, sh.stride, sh.w, sh.q);
                for n in 0..sh.n {
                    for p in p_lo..p_hi {
                        let ih = p * sh.stride + r - sh.pad_h;
                        let xrow = &x[(n * sh.h + ih) * sh.w..][..sh.w];
                        let orow = &mut o[(n * sh.p + p) * sh.q..][..sh.q];
                        for q in q_lo..q_hi {
                            orow[q] += wv * xrow[q * sh.stride + s - sh.pad_w];
                        }
                    }
                }
            }
        }
    });
}

/// Backward of [`depthwise_forward`]: `dweight += …`, `dinp = …` (overwritten) when given.
pub fn depthwise_backward(dinp: Option<&mut [f32]>, dweight: &mut [f32], dout: &[f32], inp: &[f32], weight: &[f32], sh: &Conv2dShape) {
    let (plane_in, plane_out) = (sh.n * sh.h * sh.w, sh.n * sh.p * sh.q);
    let taps = sh.r * sh.s;
    // Per-channel tap gradients, gathered then scattered into the (R,S,1,C) layout.
    let dw_per_channel: Vec<Vec<f64>> = dout
        .par_chunks(plane_out)
        .zip(inp.par_chunks(plane_in))
        .map(|(go, x)| {
            let mut acc = vec![0.0f64; taps];
            for r in 0..sh.r {
                let (p_lo, p_hi) = valid_range(r, sh.pad_h, sh.stride, sh.h, sh.p);
                for s in 0..sh.s {
                    let (q_lo, q_hi) = valid_range(s, sh.pad_w, sh.stride, sh.w, sh.q);
                    let mut a = 0.0f32;
                    for n in 0..sh.n {
                        for p in p_lo..p_hi {
                            let ih = p * sh.stride + r - sh.pad_h;
                            let xrow = &x[(n * sh.h + ih) * sh.w..][..sh.w];
                            let grow = &go[(n * sh.p + p) * sh.q..][..sh.q];
                            for q in q_lo..q_hi {
                                a += grow[q] * xrow[q * sh.stride + s - sh.pad_w];
                            }
                        }
                    }
                    acc[r * sh.s + s] = a as f64;
                }
            }
            acc
        })
        .collect();
    for (c, taps_c) in dw_per_channel.iter().enumerate() {
        for (t, v) in taps_c.iter().enumerate() {
            dweight[t * sh.c + c] += *v as f32;
        }
    }
    let Some(dinp) = dinp else { return };
    dinp.par_chunks_mut(plane_in).zip(dout.par_chunks(plane_out)).enumerate().for_each(|(c, (dx, go))| {
        dx.fill(0.0);
        for r in 0..sh.r {
            let (p_lo, p_hi) = valid_range(r, sh.pad_h, sh.stride, sh.h, sh.p);
            for s in 0..sh.s {
                let wv = weight[(r * sh.s + s) * sh.c + c];
                let (q_lo, q_hi) = valid_range(s, sh.pad_w, sh.stride, sh.w, sh.q);
                for n in 0..sh.n {
                    for p in p_lo..p_hi {
                        let ih = p * sh.stride + r - sh.pad_h;
                        let dxrow = &mut dx[(n * sh.h + ih) * sh.w..][..sh.w];
                        let grow = &go[(n * sh.p + p) * sh.q..][..sh.q];
                        for q in q_lo..q_hi {
                            dxrow[q * sh.stride + s - sh.pad_w] += wv * grow[q];
                        }
                    }
                }
            }
        }
    });
}
