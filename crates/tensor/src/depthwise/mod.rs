//! Depthwise convolution (`groups == C == K`), the EfficientNet workhorse.
//!
//! As `C` separate GEMMs each would be a `(1 × R·S) · (R·S × NPQ)` product: all overhead. The
//! kernels here work directly instead, parallel over channels (each thread owns whole channels,
//! so backward needs no atomics), one image of one channel at a time: the image is copied into a
//! zero-padded buffer split by column phase ([`phases`]) where every tap of sixteen neighbouring
//! outputs is one contiguous run, then [`image`]'s vector loops do the arithmetic. Activations are
//! the engine's `(C, N, H, W)`: an image of a channel is contiguous, so the vectors run along its
//! rows. Kernel layout is Flax's `(R, S, 1, C)`.
//!
//! [`crate::conv::conv2d_forward_ref`] and [`crate::conv::conv2d_backward_ref`] (f64) are the
//! references the tests hold these to.

mod image;
mod phases;

use std::cell::RefCell;

use rayon::prelude::*;

use crate::conv::Conv2dShape;
use crate::simd::LANES;
use image::{Lanes, forward_image, input_grad_image, weight_grad_image};
use phases::Phases;

/// A thread's scratch: the packed input image, the packed input gradient, one gradient row
/// padded to whole lane blocks.
#[derive(Default)]
struct Scratch {
    xp: Vec<f32>,
    dxp: Vec<f32>,
    dy_row: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch holding at least `xp` and `dxp` values and a zeroed
/// gradient row of `row` values (grown, never shrunk: no allocation per step once the largest
/// layer has run).
fn with_scratch<T>(xp: usize, dxp: usize, row: usize, f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|cell| {
        let mut s = cell.borrow_mut();
        if s.xp.len() < xp {
            s.xp.resize(xp, 0.0);
        }
        if s.dxp.len() < dxp {
            s.dxp.resize(dxp, 0.0);
        }
        s.dy_row.clear();
        s.dy_row.resize(row, 0.0);
        f(&mut s)
    })
}

/// A stride-1 input gradient is itself a forward convolution: of `dy`, padded by the rest of
/// the kernel (`R − 1 − pad`), with the kernel turned by 180°. Computed that way it accumulates
/// in registers like the forward pass instead of scattering; other strides scatter.
fn as_forward(sh: &Conv2dShape) -> Option<Conv2dShape> {
    (sh.stride == 1 && sh.pad_h < sh.r && sh.pad_w < sh.s).then(|| Conv2dShape {
        h: sh.p,
        w: sh.q,
        p: sh.h,
        q: sh.w,
        pad_h: sh.r - 1 - sh.pad_h,
        pad_w: sh.s - 1 - sh.pad_w,
        ..*sh
    })
}

/// Channel `c`'s `R·S` taps from the `(R, S, 1, C)` kernel.
fn taps(weight: &[f32], sh: &Conv2dShape, c: usize) -> Vec<f32> {
    (0..sh.r * sh.s).map(|t| weight[t * sh.c + c]).collect()
}

/// `out (C,N,P,Q)` from `inp (C,N,H,W)` and `weight (R,S,1,C)`.
pub fn depthwise_forward(out: &mut [f32], inp: &[f32], weight: &[f32], sh: &Conv2dShape) {
    let g = Phases::of(sh);
    let (img_in, img_out) = (sh.h * sh.w, sh.p * sh.q);
    let offsets = g.offsets(sh.r, sh.s);
    out.par_chunks_mut(sh.n * img_out).zip(inp.par_chunks(sh.n * img_in)).enumerate().for_each(|(c, (o, x))| {
        let w = taps(weight, sh, c);
        with_scratch(g.len(), 0, 0, |s| {
            for (o, x) in o.chunks_exact_mut(img_out).zip(x.chunks_exact(img_in)) {
                g.pack(&mut s.xp, x);
                forward_image(o, &s.xp, &w, &offsets, &g, sh.q);
            }
        })
    });
}

/// Backward of [`depthwise_forward`]: `dweight += …`, `dinp = …` (overwritten) when given.
pub fn depthwise_backward(dinp: Option<&mut [f32]>, dweight: &mut [f32], dout: &[f32], inp: &[f32], weight: &[f32], sh: &Conv2dShape) {
    let g = Phases::of(sh);
    let (img_in, img_out) = (sh.h * sh.w, sh.p * sh.q);
    let offsets = g.offsets(sh.r, sh.s);
    let transposed = as_forward(sh).map(|t| {
        let gt = Phases::of(&t);
        (t, gt.offsets(t.r, t.s), gt)
    });
    let dxp_len = transposed.as_ref().map_or(g.len(), |(_, _, gt)| gt.len());
    // One channel: its tap gradients (summed in f64 from the lanes), and its input gradient.
    let channel = |c: usize, mut dx: Option<&mut [f32]>, dy: &[f32], x: &[f32]| -> Vec<f64> {
        let w = taps(weight, sh, c);
        // The kernel turned by 180° for the stride-1 input gradient ([`as_forward`]), if needed.
        let turned: Vec<f32> = if dx.is_some() && transposed.is_some() { w.iter().rev().copied().collect() } else { Vec::new() };
        let mut acc: Vec<Lanes> = vec![[0.0; LANES]; w.len()];
        with_scratch(g.len(), if dx.is_some() { dxp_len } else { 0 }, g.q_blocks, |s| {
            for (n, (dy, x)) in dy.chunks_exact(img_out).zip(x.chunks_exact(img_in)).enumerate() {
                g.pack(&mut s.xp, x);
                weight_grad_image(&mut acc, dy, &s.xp, &offsets, &g, sh.q, &mut s.dy_row);
                let Some(dx) = dx.as_deref_mut() else { continue };
                let dx = &mut dx[n * img_in..(n + 1) * img_in];
                if let Some((t, turned_offsets, gt)) = &transposed {
                    gt.pack(&mut s.dxp, dy);
                    forward_image(dx, &s.dxp, &turned, turned_offsets, gt, t.q);
                } else {
                    input_grad_image(&mut s.dxp, dy, &w, &offsets, &g, sh.q, &mut s.dy_row);
                    g.unpack(dx, &s.dxp);
                }
            }
        });
        acc.iter().map(|a| a.iter().map(|&v| v as f64).sum()).collect()
    };
    let (plane_in, plane_out) = (sh.n * img_in, sh.n * img_out);
    let per_channel: Vec<Vec<f64>> = match dinp {
        Some(dinp) => dinp
            .par_chunks_mut(plane_in)
            .zip(dout.par_chunks(plane_out).zip(inp.par_chunks(plane_in)))
            .enumerate()
            .map(|(c, (dx, (dy, x)))| channel(c, Some(dx), dy, x))
            .collect(),
        None => dout.par_chunks(plane_out).zip(inp.par_chunks(plane_in)).enumerate().map(|(c, (dy, x))| channel(c, None, dy, x)).collect(),
    };
    for (c, taps_c) in per_channel.iter().enumerate() {
        for (t, v) in taps_c.iter().enumerate() {
            dweight[t * sh.c + c] += *v as f32;
        }
    }
}
