//! Squeeze-excite on device buffers, the CPU layer's arithmetic (`ringsam-nn`'s
//! `layers/squeeze_excite.rs`) in its layouts: the pooled input `s`, the reduced map `z`, its
//! swish `a` and the gates `g` are `(features, N)`; the kernels `(C, R)` and `(R, C)` as the
//! reference stores them. The two 1×1 convolutions are GEMMs, the rest `cu/se.cu`, the pooling
//! and activations their own kernels.

use crate::activation::{self, Activation};
use crate::dense::scale_planes;
use crate::gemm::{Mat, plan};
use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, REDUCE_BLOCK};
use crate::pool::global_avgpool_forward;

/// Its sizes: `C` channels squeezed to `R`, `N` examples, planes of `hw` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeShape {
    /// Channels.
    pub c: usize,
    /// Reduced channels.
    pub r: usize,
    /// Examples.
    pub n: usize,
    /// Values per plane (H·W).
    pub hw: usize,
}

/// The layer's parameters (`w1 (C, R)`, `b1 (R)`, `w2 (R, C)`, `b2 (C)`) or their gradients.
#[derive(Clone, Copy, Debug)]
pub struct SeParams {
    /// `reduce_conv2d_0/kernel`.
    pub w1: Buf<f32>,
    /// `reduce_conv2d_0/bias`.
    pub b1: Buf<f32>,
    /// `expand_conv2d_1/kernel`.
    pub w2: Buf<f32>,
    /// `expand_conv2d_1/bias`.
    pub b2: Buf<f32>,
}

/// What the forward keeps for the backward: `s (C, N)`, `z (R, N)`, `a (R, N)`, `g (C, N)`.
#[derive(Clone, Copy, Debug)]
pub struct SeSaved {
    /// The pooled input.
    pub s: Buf<f32>,
    /// The reduced pre-activation.
    pub z: Buf<f32>,
    /// Its swish.
    pub a: Buf<f32>,
    /// The gates.
    pub g: Buf<f32>,
}

/// The backward's scratch: `dg (C, N)` (then the gates' pre-activation gradient), `da (R, N)`
/// (then the reduced map's), `ds (C, N)`.
#[derive(Clone, Copy, Debug)]
pub struct SeScratch {
    /// `(C, N)`.
    pub dg: Buf<f32>,
    /// `(R, N)`.
    pub da: Buf<f32>,
    /// `(C, N)`.
    pub ds: Buf<f32>,
}

impl SeShape {
    fn check(&self, op: &'static str, lens: &[(usize, usize)]) -> Result<(), KernelError> {
        match lens.iter().find(|(got, want)| got != want) {
            Some(&(got, want)) => Err(KernelError::Length { op, got, want }),
            None if self.hw == 0 || self.n == 0 => Err(KernelError::Length { op, got: 0, want: 1 }),
            None => Ok(()),
        }
    }

    fn params(&self, p: &SeParams) -> [(usize, usize); 4] {
        let SeShape { c, r, .. } = *self;
        [(p.w1.len(), c * r), (p.b1.len(), r), (p.w2.len(), r * c), (p.b2.len(), c)]
    }

    fn saved(&self, s: &SeSaved) -> [(usize, usize); 4] {
        let SeShape { c, r, n, .. } = *self;
        [(s.s.len(), c * n), (s.z.len(), r * n), (s.a.len(), r * n), (s.g.len(), c * n)]
    }
}

/// `out = x·g`, `g = σ(W₂ᵀ·swish(W₁ᵀ·pool(x) + b₁) + b₂)` per (channel, example); `x` and `out`
/// are `(C, N, H, W)`.
pub fn forward(l: &mut impl Launcher, out: Buf<f32>, x: Buf<f32>, p: &SeParams, keep: &SeSaved, sh: SeShape) -> Result<(), KernelError> {
    let SeShape { c, r, n, hw } = sh;
    let mut lens = vec![(out.len(), c * n * hw), (x.len(), c * n * hw)];
    lens.extend(sh.params(p).into_iter().chain(sh.saved(keep)));
    sh.check("squeeze_excite::forward", &lens)?;
    global_avgpool_forward(l, keep.s, x, hw)?;
    l.sgemm(&plan(&Mat::row_major(keep.z, r, n), &Mat::row_major(p.w1, c, r).t(), &Mat::row_major(keep.s, c, n), false)?)?;
    add_row_bias(l, keep.z, p.b1, n)?;
    activation::forward(l, Activation::Silu, keep.a, keep.z)?;
    // The expanded pre-activation goes where the gates will be: σ is applied in place.
    l.sgemm(&plan(&Mat::row_major(keep.g, c, n), &Mat::row_major(p.w2, r, c).t(), &Mat::row_major(keep.a, r, n), false)?)?;
    add_row_bias(l, keep.g, p.b2, n)?;
    activation::forward(l, Activation::Sigmoid, keep.g, keep.g)?;
    scale_planes(l, out, x, keep.g, hw)
}

/// Its backward: the four parameter gradients accumulate into `grads`; `dinp` is overwritten.
#[allow(clippy::too_many_arguments)] // the layer's buffers, each named
pub fn backward(
    l: &mut impl Launcher,
    dinp: Buf<f32>,
    grads: &SeParams,
    dout: Buf<f32>,
    x: Buf<f32>,
    p: &SeParams,
    saved: &SeSaved,
    tmp: &SeScratch,
    sh: SeShape,
) -> Result<(), KernelError> {
    let SeShape { c, r, n, hw } = sh;
    let mut lens = vec![(dinp.len(), c * n * hw), (dout.len(), c * n * hw), (x.len(), c * n * hw)];
    lens.extend(sh.params(p).into_iter().chain(sh.params(grads)).chain(sh.saved(saved)));
    lens.extend([(tmp.dg.len(), c * n), (tmp.da.len(), r * n), (tmp.ds.len(), c * n)]);
    sh.check("squeeze_excite::backward", &lens)?;
    plane_dot(l, tmp.dg, dout, x, hw)?;
    let de = tmp.dg; // σ's backward in place: de = dg·g(1 − g)
    activation::backward(l, Activation::Sigmoid, de, tmp.dg, saved.g)?;
    let de_m = Mat::row_major(de, c, n);
    l.sgemm(&plan(&Mat::row_major(grads.w2, r, c), &Mat::row_major(saved.a, r, n), &de_m.t(), true)?)?;
    add_row_sums(l, grads.b2, de, n)?;
    l.sgemm(&plan(&Mat::row_major(tmp.da, r, n), &Mat::row_major(p.w2, r, c), &de_m, false)?)?;
    let dz = tmp.da; // swish's backward in place, from its input z
    activation::backward(l, Activation::Silu, dz, tmp.da, saved.z)?;
    let dz_m = Mat::row_major(dz, r, n);
    l.sgemm(&plan(&Mat::row_major(grads.w1, c, r), &Mat::row_major(saved.s, c, n), &dz_m.t(), true)?)?;
    add_row_sums(l, grads.b1, dz, n)?;
    l.sgemm(&plan(&Mat::row_major(tmp.ds, c, n), &Mat::row_major(p.w1, c, r), &dz_m, false)?)?;
    let total = dinp.len();
    let args = [dinp.into(), dout.into(), saved.g.into(), tmp.ds.into(), Arg::U64(hw as u64), Arg::U64(total as u64)];
    l.launch("se_input_backward", Launch::elementwise(total), &args)
}

/// `out (rows × n) += b[row]`.
fn add_row_bias(l: &mut impl Launcher, out: Buf<f32>, b: Buf<f32>, n: usize) -> Result<(), KernelError> {
    let total = out.len();
    l.launch("add_row_bias", Launch::elementwise(total), &[out.into(), b.into(), Arg::U64(n as u64), Arg::U64(total as u64)])
}

/// `db[row] += Σ_n d[row, n]`.
fn add_row_sums(l: &mut impl Launcher, db: Buf<f32>, d: Buf<f32>, n: usize) -> Result<(), KernelError> {
    let rows = db.len();
    l.launch("add_row_sums", Launch::elementwise(rows), &[db.into(), d.into(), Arg::U64(n as u64), Arg::U64(rows as u64)])
}

/// `out[plane] = Σ_hw dout·x`, one block a plane.
fn plane_dot(l: &mut impl Launcher, out: Buf<f32>, dout: Buf<f32>, x: Buf<f32>, hw: usize) -> Result<(), KernelError> {
    let op = "plane_dot";
    let planes = u32::try_from(out.len()).map_err(|_| KernelError::Launch { kernel: op, why: format!("{} planes", out.len()) })?;
    l.launch(op, Launch { grid: planes, block: REDUCE_BLOCK }, &[out.into(), dout.into(), x.into(), Arg::U64(hw as u64)])
}
