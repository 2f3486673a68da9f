//! The three depthwise passes over one image of one channel, on a padded, phase-split image
//! ([`super::phases`]): every tap of every block of sixteen output columns is one contiguous
//! run, so each pass is vector multiply-adds with no bound tests and no gathers. A pass walks an
//! output row in runs of up to [`BLOCKS`] lane blocks kept in registers, so that a tap's weight
//! (or a block of the gradient) is loaded once per run, not once per block:
//!
//! - forward: a run's outputs accumulate all `R·S` taps in registers, then are stored once;
//! - input gradient at strides above 1: each tap scatters `w · dy` into the padded gradient
//!   (the transposed convolution); at stride 1 it is a forward pass instead (`super::as_forward`);
//! - weight gradient: one lane array of running sums per tap, over every output of the image,
//!   folded to a number by the caller once the whole batch is in.
//!
//! `offsets[t]` is where tap `t` reads relative to its output row ([`Phases::tap`] of row 0).
//! Each pass is written once and compiled per instruction set by
//! [`crate::simd::multiversion!`].

use super::phases::Phases;
use crate::simd::{LANES, Vector};

/// Lane blocks of an output row in registers at once: four accumulators, or four gradient
/// blocks, and a weight, fit in AVX2's sixteen registers as pairs.
const BLOCKS: usize = 4;

pub(super) type Lanes = [f32; LANES];

#[inline(always)]
fn at(buf: &[f32], i: usize) -> &Lanes {
    buf[i..i + LANES].try_into().expect("sixteen values")
}

#[inline(always)]
fn at_mut(buf: &mut [f32], i: usize) -> &mut Lanes {
    (&mut buf[i..i + LANES]).try_into().expect("sixteen values")
}

/// Calls `run(first column, blocks)` over an output row's lane blocks in runs of at most
/// [`BLOCKS`], with `blocks` a constant of each call (so the run's arrays stay in registers).
#[inline(always)]
fn in_runs(q_blocks: usize, mut run: impl FnMut(usize, usize)) {
    let mut qb = 0;
    while qb < q_blocks {
        let blocks = BLOCKS.min((q_blocks - qb) / LANES);
        run(qb, blocks);
        qb += blocks * LANES;
    }
}

/// For each output row of the gradient `dy (P × Q)`: copies the row into `dy_row` (whose tail
/// past `Q` stays zero), then calls `run(dy_row, where the row's taps start + first column,
/// first column, blocks)` over its runs.
#[inline(always)]
fn gradient_runs(dy: &[f32], q: usize, g: &Phases, dy_row: &mut [f32], mut run: impl FnMut(&[f32], usize, usize, usize)) {
    for (p, drow) in dy.chunks_exact(q).enumerate() {
        dy_row[..q].copy_from_slice(drow);
        let (row, dy_row) = (g.row_start(p), &*dy_row);
        in_runs(g.q_blocks, |qb, blocks| run(dy_row, row + qb, qb, blocks));
    }
}

/// Dispatches `$f::<V, B>(args)` on the run length `$blocks`.
macro_rules! by_blocks {
    ($blocks:expr, $f:ident::<$v:ty>($($arg:expr),*)) => {
        match $blocks {
            4 => $f::<$v, 4>($($arg),*),
            3 => $f::<$v, 3>($($arg),*),
            2 => $f::<$v, 2>($($arg),*),
            _ => $f::<$v, 1>($($arg),*),
        }
    };
}

/// Output rows of one image: `out (P × Q)` from the packed input `xp`, taps `w`.
#[inline(always)]
fn forward_body<V: Vector>(out: &mut [f32], xp: &[f32], w: &[f32], offsets: &[usize], g: &Phases, q: usize) {
    for (p, orow) in out.chunks_exact_mut(q).enumerate() {
        let row = g.row_start(p);
        in_runs(g.q_blocks, |qb, blocks| by_blocks!(blocks, forward_run::<V>(orow, xp, w, offsets, row + qb, qb)));
    }
}

#[inline(always)]
fn forward_run<V: Vector, const B: usize>(orow: &mut [f32], xp: &[f32], w: &[f32], offsets: &[usize], from: usize, qb: usize) {
    let mut acc = [V::zero(); B];
    for (&wv, &off) in w.iter().zip(offsets) {
        let (wv, base) = (V::splat(wv), from + off);
        for (b, a) in acc.iter_mut().enumerate() {
            *a = wv.mul_add(V::load(at(xp, base + b * LANES)), *a);
        }
    }
    let q = orow.len();
    for (b, a) in acc.iter().enumerate() {
        let start = qb + b * LANES;
        if start + LANES <= q {
            a.store(at_mut(orow, start));
        } else if start < q {
            orow[start..].copy_from_slice(&a.to_array()[..q - start]);
        }
    }
}

crate::simd::multiversion!(
    /// See [`forward_body`].
    pub(super) fn forward_image(out: &mut [f32], xp: &[f32], w: &[f32], offsets: &[usize], g: &Phases, q: usize) => forward_body
);

/// Adds this image's weight gradient to `acc` (one lane array per tap) from `dy (P × Q)` and the
/// packed input `xp`. `dy_row` is `q_blocks` values of scratch whose tail past `Q` is zero.
#[inline(always)]
fn weight_grad_body<V: Vector>(acc: &mut [Lanes], dy: &[f32], xp: &[f32], offsets: &[usize], g: &Phases, q: usize, dy_row: &mut [f32]) {
    gradient_runs(dy, q, g, dy_row, |dy_row, from, qb, blocks| {
        by_blocks!(blocks, weight_grad_run::<V>(acc, dy_row, xp, offsets, from, qb))
    });
}

#[inline(always)]
fn weight_grad_run<V: Vector, const B: usize>(acc: &mut [Lanes], dy_row: &[f32], xp: &[f32], offsets: &[usize], from: usize, qb: usize) {
    let d: [V; B] = std::array::from_fn(|b| V::load(at(dy_row, qb + b * LANES)));
    for (a, &off) in acc.iter_mut().zip(offsets) {
        let base = from + off;
        let mut sum = V::load(a);
        for (b, d) in d.iter().enumerate() {
            sum = d.mul_add(V::load(at(xp, base + b * LANES)), sum);
        }
        sum.store(a);
    }
}

crate::simd::multiversion!(
    /// See [`weight_grad_body`].
    pub(super) fn weight_grad_image(acc: &mut [Lanes], dy: &[f32], xp: &[f32], offsets: &[usize], g: &Phases, q: usize, dy_row: &mut [f32]) => weight_grad_body
);

/// `dxp` (packed, zeroed here) = the transposed convolution of `dy (P × Q)` with taps `w`.
/// `dy_row` as for [`weight_grad_image`].
#[inline(always)]
fn input_grad_body<V: Vector>(dxp: &mut [f32], dy: &[f32], w: &[f32], offsets: &[usize], g: &Phases, q: usize, dy_row: &mut [f32]) {
    dxp[..g.len()].fill(0.0);
    gradient_runs(dy, q, g, dy_row, |dy_row, from, qb, blocks| by_blocks!(blocks, input_grad_run::<V>(dxp, dy_row, w, offsets, from, qb)));
}

#[inline(always)]
fn input_grad_run<V: Vector, const B: usize>(dxp: &mut [f32], dy_row: &[f32], w: &[f32], offsets: &[usize], from: usize, qb: usize) {
    let d: [V; B] = std::array::from_fn(|b| V::load(at(dy_row, qb + b * LANES)));
    for (&wv, &off) in w.iter().zip(offsets) {
        let (wv, base) = (V::splat(wv), from + off);
        for (b, d) in d.iter().enumerate() {
            let dst = at_mut(dxp, base + b * LANES);
            wv.mul_add(*d, V::load(dst)).store(dst);
        }
    }
}

crate::simd::multiversion!(
    /// See [`input_grad_body`].
    pub(super) fn input_grad_image(dxp: &mut [f32], dy: &[f32], w: &[f32], offsets: &[usize], g: &Phases, q: usize, dy_row: &mut [f32]) => input_grad_body
);
