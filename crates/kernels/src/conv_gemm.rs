//! The convolution on the device as the CPU engine computes it: per channel group, im2col and one
//! GEMM (crates/tensor/src/conv.rs, same layouts: activations `(C, N, H, W)`, kernels HWIO), and
//! the depthwise kernels when every group has one channel.
//!
//! ```text
//! forward     out_g  (Kg × NPQ)   = W_gᵀ (Kg × RSCg) · col_g (RSCg × NPQ)
//! backward    dW_g   (RSCg × Kg) += col_g · dout_gᵀ
//!             dcol_g (RSCg × NPQ) = W_g · dout_g          then col2im into dinp
//! ```
//!
//! This is the engine's reference convolution on a GPU and its path under emulation; where the
//! launcher runs its library's convolutions ([`crate::conv_library`], cuDNN) and the shape fits
//! them, [`forward`] and [`backward`] hand the convolution over. The GEMMs are the same views as the
//! CPU's, planned by [`crate::gemm::plan`], so the results differ from the CPU's only by the order
//! of each dot product's additions.

use crate::conv::{ConvShape, col2im, depthwise_backward, depthwise_forward, im2col};
use crate::conv_library::{self, ConvImpl};
use crate::flat::fill;
use crate::gemm::{Mat, plan};
use crate::launch::{Buf, KernelError, Launcher};

impl ConvShape {
    /// Values of the kernel `(R, S, C/groups, K)`.
    pub fn weight_len(&self) -> usize {
        self.r * self.s * (self.c / self.groups) * self.k
    }

    /// Values of the output `(K, N, P, Q)`.
    pub fn out_len(&self) -> usize {
        self.k * self.n * self.p * self.q
    }

    /// Whether the depthwise kernels serve it (as on the CPU: one channel per group, as many
    /// outputs as inputs, more than one group).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.k == self.c
    }

    /// A 1×1 stride-1 unpadded convolution: its input already is `col`.
    fn is_pointwise(&self) -> bool {
        self.r == 1 && self.s == 1 && self.stride == 1 && self.pad_h == 0 && self.pad_w == 0
    }

    /// (input channels per group, output channels per group, N·P·Q, R·S·Cg)
    fn group_dims(&self) -> (usize, usize, usize, usize) {
        let cg = self.c / self.groups;
        (cg, self.k / self.groups, self.n * self.p * self.q, self.r * self.s * cg)
    }

    /// Scratch the GEMM path needs (0 for pointwise and depthwise convolutions).
    pub fn scratch_len(&self) -> usize {
        if self.is_pointwise() || self.is_depthwise() { 0 } else { self.col_len() }
    }
}

/// Whether `l` runs convolutions of shape `sh` by its library: set to, and taking the shape.
fn by_library(l: &mut impl Launcher, sh: &ConvShape) -> bool {
    l.conv_impl() == ConvImpl::Library && l.library_takes(sh)
}

/// Scratch a convolution of shape `sh` takes on `l`: the column matrix by im2col (none for
/// pointwise and depthwise convolutions), the transposed weights and their gradient by the
/// library.
pub fn scratch_need(l: &mut impl Launcher, sh: &ConvShape) -> usize {
    scratch_by(sh, by_library(l, sh))
}

fn scratch_by(sh: &ConvShape, library: bool) -> usize {
    if library { sh.library_scratch_len() } else { sh.scratch_len() }
}

fn check(op: &'static str, sh: &ConvShape, bufs: &[(usize, usize)], need: usize, col: usize) -> Result<(), KernelError> {
    if sh.groups == 0 || !sh.c.is_multiple_of(sh.groups) || !sh.k.is_multiple_of(sh.groups) {
        return Err(KernelError::Launch { kernel: op, why: format!("{} groups for {} → {} channels", sh.groups, sh.c, sh.k) });
    }
    for &(got, want) in bufs {
        if got != want {
            return Err(KernelError::Length { op, got, want });
        }
    }
    if col < need {
        return Err(KernelError::Length { op, got: col, want: need });
    }
    Ok(())
}

/// Group `g`'s slice of the HWIO kernel as an `(R·S·Cg × Kg)` view.
fn weight_group(weight: Buf<f32>, sh: &ConvShape, g: usize) -> Mat {
    let (_, kg, _, rsc) = sh.group_dims();
    Mat { buf: weight.slice(g * kg..weight.len()), rows: rsc, cols: kg, rs: sh.k, cs: 1 }
}

/// Group `g`'s `(R·S·Cg × NPQ)` GEMM operand: its input channels themselves for a pointwise
/// convolution, else im2col of them into `col`.
fn group_columns(l: &mut impl Launcher, inp: Buf<f32>, col: Buf<f32>, sh: &ConvShape, g: usize) -> Result<Buf<f32>, KernelError> {
    let (cg, _, npq, _) = sh.group_dims();
    if sh.is_pointwise() {
        return Ok(inp.slice(g * cg * npq..(g + 1) * cg * npq));
    }
    let col = col.slice(0..sh.col_len());
    im2col(l, col, inp, sh, g * cg)?;
    Ok(col)
}

fn gemm(l: &mut impl Launcher, c: Mat, a: Mat, b: Mat, accumulate: bool) -> Result<(), KernelError> {
    l.sgemm(&plan(&c, &a, &b, accumulate)?)
}

/// `out = conv(inp, weight)`; `col` is scratch of at least [`ConvShape::scratch_len`] values.
pub fn forward(
    l: &mut impl Launcher,
    out: Buf<f32>,
    inp: Buf<f32>,
    weight: Buf<f32>,
    col: Buf<f32>,
    sh: &ConvShape,
) -> Result<(), KernelError> {
    let input_len = sh.n * sh.c * sh.h * sh.w;
    let library = by_library(l, sh);
    let need = scratch_by(sh, library);
    check("conv_forward", sh, &[(out.len(), sh.out_len()), (inp.len(), input_len), (weight.len(), sh.weight_len())], need, col.len())?;
    if library {
        return conv_library::forward(l, out, inp, weight, col, sh);
    }
    if sh.is_depthwise() {
        return depthwise_forward(l, out, inp, weight, sh);
    }
    let (_, kg, npq, rsc) = sh.group_dims();
    for g in 0..sh.groups {
        let b = group_columns(l, inp, col, sh, g)?;
        let out_g = Mat::row_major(out.slice(g * kg * npq..(g + 1) * kg * npq), kg, npq);
        gemm(l, out_g, weight_group(weight, sh, g).t(), Mat::row_major(b, rsc, npq), false)?;
    }
    Ok(())
}

/// The gradients: `dweight += ∂L/∂W`, and `dinp = ∂L/∂x` (overwritten) when given.
#[allow(clippy::too_many_arguments)] // the convolution's buffers, each named
pub fn backward(
    l: &mut impl Launcher,
    dinp: Option<Buf<f32>>,
    dweight: Buf<f32>,
    dout: Buf<f32>,
    inp: Buf<f32>,
    weight: Buf<f32>,
    col: Buf<f32>,
    sh: &ConvShape,
) -> Result<(), KernelError> {
    let input_len = sh.n * sh.c * sh.h * sh.w;
    let lens = [
        (dout.len(), sh.out_len()),
        (inp.len(), input_len),
        (weight.len(), sh.weight_len()),
        (dweight.len(), sh.weight_len()),
        (dinp.map_or(input_len, |d| d.len()), input_len),
    ];
    let library = by_library(l, sh);
    let need = scratch_by(sh, library);
    check("conv_backward", sh, &lens, need, col.len())?;
    if library {
        return conv_library::backward(l, dinp, dweight, dout, inp, weight, col, sh);
    }
    if sh.is_depthwise() {
        return depthwise_backward(l, dinp, dweight, dout, inp, weight, sh);
    }
    let (cg, kg, npq, rsc) = sh.group_dims();
    if let Some(d) = dinp.filter(|_| !sh.is_pointwise()) {
        fill(l, d, 0.0)?; // col2im adds into it
    }
    for g in 0..sh.groups {
        let dout_g = Mat::row_major(dout.slice(g * kg * npq..(g + 1) * kg * npq), kg, npq);
        let dw = Mat { buf: dweight.slice(g * kg..dweight.len()), rows: rsc, cols: kg, rs: sh.k, cs: 1 };
        let col_g = group_columns(l, inp, col, sh, g)?;
        gemm(l, dw, Mat::row_major(col_g, rsc, npq), dout_g.t(), true)?;
        let Some(d) = dinp else { continue };
        if sh.is_pointwise() {
            let d_g = Mat::row_major(d.slice(g * cg * npq..(g + 1) * cg * npq), rsc, npq);
            gemm(l, d_g, weight_group(weight, sh, g), dout_g, false)?;
        } else {
            let col = col.slice(0..sh.col_len());
            gemm(l, Mat::row_major(col, rsc, npq), weight_group(weight, sh, g), dout_g, false)?;
            col2im(l, d, col, sh, g * cg)?;
        }
    }
    Ok(())
}
