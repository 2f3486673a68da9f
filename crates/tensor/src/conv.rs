//! 2-D convolution: forward, backward-data and backward-weights.
//!
//! Layouts: input `(C, N, H, W)`, output `(K, N, P, Q)`, kernel in Flax's HWIO order
//! `(R, S, C/groups, K)`, so checkpoints map one-to-one. Per channel group the convolution is one
//! GEMM over an im2col buffer (see [`crate::im2col`]):
//!
//! ```text
//! forward     out_g  (Kg × NPQ)   = W_gᵀ (Kg × RSCg) · col_g (RSCg × NPQ)
//! backward    dW_g   (RSCg × Kg) += col_g · dout_gᵀ
//!             dcol_g (RSCg × NPQ) = W_g · dout_g          then col2im into dinp
//! ```
//!
//! The im2col buffer is recomputed in backward rather than kept from forward: keeping it would
//! cost `R·S` times the input's memory for every convolution of the network.
//! 1×1 stride-1 convolutions skip im2col (the input already is `col`), and depthwise convolutions
//! (`groups == C == K`) go to a direct kernel in [`crate::depthwise`] instead of `C` tiny GEMMs.

use crate::gemm::{MatMut, MatRef, gemm};
use crate::im2col::{col2im, im2col};
use crate::{TensorError, check_len, depthwise};

/// Sizes of one convolution. Padding is given as the amount before the image (`pad_h` rows on
/// top, `pad_w` columns on the left); the amount after is whatever makes the output `P × Q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Stride (same in both directions).
    pub stride: usize,
    /// Rows of zero padding above the image.
    pub pad_h: usize,
    /// Columns of zero padding left of the image.
    pub pad_w: usize,
    /// Output height.
    pub p: usize,
    /// Output width.
    pub q: usize,
    /// Channel groups (1: ordinary convolution; `c`: depthwise).
    pub groups: usize,
}

impl Conv2dShape {
    /// TensorFlow/Flax `padding='SAME'`: output `ceil(H / stride)`; when the total padding is odd
    /// the extra row/column goes after the image (so a stride-2 3×3 on an even size pads 0 before
    /// and 1 after — not PyTorch's symmetric 1).
    #[allow(clippy::too_many_arguments)]
    pub fn same(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        r: usize,
        s: usize,
        stride: usize,
        groups: usize,
    ) -> Result<Self, TensorError> {
        if stride == 0 {
            return Err(shape_err("stride must be at least 1".into()));
        }
        let p = h.div_ceil(stride);
        let q = w.div_ceil(stride);
        let pad_h = ((p.saturating_sub(1)) * stride + r).saturating_sub(h) / 2;
        let pad_w = ((q.saturating_sub(1)) * stride + s).saturating_sub(w) / 2;
        Conv2dShape { n, c, h, w, k, r, s, stride, pad_h, pad_w, p, q, groups }.validated()
    }

    /// Explicit symmetric padding `pad` (PyTorch style): output `(H + 2·pad − R) / stride + 1`.
    /// `pad = 0` is Flax's `padding='VALID'`.
    #[allow(clippy::too_many_arguments)]
    pub fn padded(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        r: usize,
        s: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Result<Self, TensorError> {
        if stride == 0 {
            return Err(shape_err("stride must be at least 1".into()));
        }
        if h + 2 * pad < r || w + 2 * pad < s {
            return Err(shape_err(format!("kernel {r}x{s} larger than padded input {}x{}", h + 2 * pad, w + 2 * pad)));
        }
        let p = (h + 2 * pad - r) / stride + 1;
        let q = (w + 2 * pad - s) / stride + 1;
        Conv2dShape { n, c, h, w, k, r, s, stride, pad_h: pad, pad_w: pad, p, q, groups }.validated()
    }

    fn validated(self) -> Result<Self, TensorError> {
        let Conv2dShape { c, k, r, s, groups, .. } = self;
        if groups == 0 || c % groups != 0 || k % groups != 0 {
            return Err(shape_err(format!("{groups} groups must divide input channels {c} and output channels {k}")));
        }
        if self.n == 0 || c == 0 || k == 0 {
            return Err(shape_err(format!("empty batch or channels: n {}, c {c}, k {k}", self.n)));
        }
        if r == 0 || s == 0 || self.p == 0 || self.q == 0 {
            return Err(shape_err(format!("empty kernel or output: kernel {r}x{s}, output {}x{}", self.p, self.q)));
        }
        Ok(self)
    }

    /// Elements of the input `(C, N, H, W)`.
    pub fn input_len(&self) -> usize {
        self.c * self.n * self.h * self.w
    }
    /// Elements of the output `(K, N, P, Q)`.
    pub fn output_len(&self) -> usize {
        self.k * self.n * self.p * self.q
    }
    /// Elements of the HWIO kernel `(R, S, C/groups, K)`.
    pub fn weight_len(&self) -> usize {
        self.r * self.s * (self.c / self.groups) * self.k
    }
    /// Elements of one group's im2col buffer.
    pub fn col_len(&self) -> usize {
        self.r * self.s * (self.c / self.groups) * self.n * self.p * self.q
    }
    /// Multiply-adds of the forward pass (FLOPs are twice this).
    pub fn macs(&self) -> usize {
        self.output_len() * self.r * self.s * (self.c / self.groups)
    }
    /// True for a depthwise convolution (one input channel per group, one output per input).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.k == self.c
    }
    fn is_pointwise(&self) -> bool {
        self.r == 1 && self.s == 1 && self.stride == 1 && self.pad_h == 0 && self.pad_w == 0
    }
}

fn shape_err(msg: String) -> TensorError {
    TensorError::Shape { op: "conv2d", msg }
}

fn check_shapes(sh: &Conv2dShape, inp: usize, weight: usize, out: usize) -> Result<(), TensorError> {
    check_len("conv2d", "input", inp, sh.input_len())?;
    check_len("conv2d", "kernel", weight, sh.weight_len())?;
    check_len("conv2d", "output", out, sh.output_len())
}

/// `out (K,N,P,Q) = conv(inp (C,N,H,W), weight (R,S,C/g,K))`. `col` is scratch the caller keeps
/// between calls so no step allocates.
pub fn conv2d_forward(out: &mut [f32], inp: &[f32], weight: &[f32], col: &mut Vec<f32>, sh: &Conv2dShape) -> Result<(), TensorError> {
    crate::profile::timed(conv_label(sh, false), 2.0 * sh.macs() as f64, || {
        check_shapes(sh, inp.len(), weight.len(), out.len())?;
        if sh.is_depthwise() {
            depthwise::depthwise_forward(out, inp, weight, sh);
            return Ok(());
        }
        let (cg, kg, npq, rsc) = group_dims(sh);
        for g in 0..sh.groups {
            let b = if sh.is_pointwise() {
                &inp[g * cg * npq..(g + 1) * cg * npq]
            } else {
                col.resize(sh.col_len(), 0.0);
                im2col(col, inp, sh, g * cg);
                &col[..]
            };
            gemm(
                MatMut::row_major(&mut out[g * kg * npq..(g + 1) * kg * npq], kg, npq),
                weight_group(weight, sh, g, rsc, kg).t(),
                MatRef::row_major(b, rsc, npq),
                false,
            )?;
        }
        Ok(())
    })
}

/// Backward of [`conv2d_forward`]: `dweight += ∂L/∂W`; `dinp = ∂L/∂x` (overwritten) when given.
/// Pass `None` for the first layer, whose input needs no gradient.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    col: &mut Vec<f32>,
    sh: &Conv2dShape,
) -> Result<(), TensorError> {
    crate::profile::timed(conv_label(sh, true), if dinp.is_some() { 4.0 } else { 2.0 } * sh.macs() as f64, || {
        check_shapes(sh, inp.len(), weight.len(), dout.len())?;
        check_len("conv2d_backward", "kernel gradient", dweight.len(), sh.weight_len())?;
        if let Some(d) = &dinp {
            check_len("conv2d_backward", "input gradient", d.len(), sh.input_len())?;
        }
        if sh.is_depthwise() {
            depthwise::depthwise_backward(dinp, dweight, dout, inp, weight, sh);
            return Ok(());
        }
        let (cg, kg, npq, rsc) = group_dims(sh);
        let mut dinp = dinp;
        // col2im accumulates; the pointwise path writes its GEMM result directly.
        if let Some(d) = dinp.as_deref_mut().filter(|_| !sh.is_pointwise()) {
            d.fill(0.0);
        }
        for g in 0..sh.groups {
            let dout_g = MatRef::row_major(&dout[g * kg * npq..(g + 1) * kg * npq], kg, npq);
            // dW_g += col_g · dout_gᵀ
            let dw = MatMut { data: &mut dweight[g * kg..], rows: rsc, cols: kg, rs: sh.k, cs: 1 };
            if sh.is_pointwise() {
                gemm(dw, MatRef::row_major(&inp[g * cg * npq..(g + 1) * cg * npq], rsc, npq), dout_g.t(), true)?;
            } else {
                col.resize(sh.col_len(), 0.0);
                im2col(col, inp, sh, g * cg);
                gemm(dw, MatRef::row_major(col, rsc, npq), dout_g.t(), true)?;
            }
            let Some(d) = dinp.as_deref_mut() else { continue };
            let wg = weight_group(weight, sh, g, rsc, kg);
            if sh.is_pointwise() {
                // dinp_g (Cg × NPQ) = W_g · dout_g, written in place: no col2im needed.
                gemm(MatMut::row_major(&mut d[g * cg * npq..(g + 1) * cg * npq], rsc, npq), wg, dout_g, false)?;
            } else {
                gemm(MatMut::row_major(col, rsc, npq), wg, dout_g, false)?;
                col2im(d, col, sh, g * cg);
            }
        }
        Ok(())
    })
}

/// The profile's name for a convolution's forward or backward ([`crate::profile`]).
fn conv_label(sh: &Conv2dShape, backward: bool) -> &'static str {
    match (sh.is_depthwise(), sh.is_pointwise(), backward) {
        (true, _, false) => "depthwise conv forward",
        (true, _, true) => "depthwise conv backward",
        (false, true, false) => "1×1 conv forward (GEMM)",
        (false, true, true) => "1×1 conv backward (GEMMs)",
        (false, false, false) => "conv forward (im2col, GEMM)",
        (false, false, true) => "conv backward (im2col, GEMMs, col2im)",
    }
}

/// (input channels per group, output channels per group, N·P·Q, R·S·Cg)
fn group_dims(sh: &Conv2dShape) -> (usize, usize, usize, usize) {
    let cg = sh.c / sh.groups;
    (cg, sh.k / sh.groups, sh.n * sh.p * sh.q, sh.r * sh.s * cg)
}

/// Group `g`'s slice of the HWIO kernel as an `(R·S·Cg × Kg)` view.
fn weight_group<'a>(weight: &'a [f32], sh: &Conv2dShape, g: usize, rsc: usize, kg: usize) -> MatRef<'a> {
    MatRef { data: &weight[g * kg..], rows: rsc, cols: kg, rs: sh.k, cs: 1 }
}

/// The reference: the convolution sum written out, accumulated in f64. For tests.
pub fn conv2d_forward_ref(out: &mut [f32], inp: &[f32], weight: &[f32], sh: &Conv2dShape) -> Result<(), TensorError> {
    check_shapes(sh, inp.len(), weight.len(), out.len())?;
    let (cg, kg, _, _) = group_dims(sh);
    for k in 0..sh.k {
        let g = k / kg;
        for n in 0..sh.n {
            for p in 0..sh.p {
                for q in 0..sh.q {
                    let mut acc = 0.0f64;
                    for_each_tap(sh, p, q, |r, s, ih, iw| {
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            acc +=
                                inp[((c * sh.n + n) * sh.h + ih) * sh.w + iw] as f64 * weight[((r * sh.s + s) * cg + ci) * sh.k + k] as f64;
                        }
                    });
                    out[((k * sh.n + n) * sh.p + p) * sh.q + q] = acc as f32;
                }
            }
        }
    }
    Ok(())
}

/// The reference backward: `dweight += …`, `dinp = …`, both accumulated in f64. For tests.
pub fn conv2d_backward_ref(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    sh: &Conv2dShape,
) -> Result<(), TensorError> {
    check_shapes(sh, inp.len(), weight.len(), dout.len())?;
    let (cg, kg, _, _) = group_dims(sh);
    let mut di = vec![0.0f64; dinp.len()];
    let mut dw: Vec<f64> = dweight.iter().map(|&v| v as f64).collect();
    for k in 0..sh.k {
        let g = k / kg;
        for n in 0..sh.n {
            for p in 0..sh.p {
                for q in 0..sh.q {
                    let go = dout[((k * sh.n + n) * sh.p + p) * sh.q + q] as f64;
                    for_each_tap(sh, p, q, |r, s, ih, iw| {
                        for ci in 0..cg {
                            let c = g * cg + ci;
                            let xi = ((c * sh.n + n) * sh.h + ih) * sh.w + iw;
                            let wi = ((r * sh.s + s) * cg + ci) * sh.k + k;
                            di[xi] += go * weight[wi] as f64;
                            dw[wi] += go * inp[xi] as f64;
                        }
                    });
                }
            }
        }
    }
    for (d, v) in dinp.iter_mut().zip(di) {
        *d = v as f32;
    }
    for (d, v) in dweight.iter_mut().zip(dw) {
        *d = v as f32;
    }
    Ok(())
}

/// Calls `f(r, s, ih, iw)` for every kernel tap of output pixel `(p, q)` that lands inside the image.
fn for_each_tap(sh: &Conv2dShape, p: usize, q: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    for r in 0..sh.r {
        let ih = (p * sh.stride + r) as isize - sh.pad_h as isize;
        if ih < 0 || ih >= sh.h as isize {
            continue;
        }
        for s in 0..sh.s {
            let iw = (q * sh.stride + s) as isize - sh.pad_w as isize;
            if iw < 0 || iw >= sh.w as isize {
                continue;
            }
            f(r, s, ih as usize, iw as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Fast kernels against the f64 reference on the cases the models use.
    #[test]
    fn conv_matches_reference() {
        let cases = [
            Conv2dShape::same(2, 3, 8, 8, 4, 3, 3, 1, 1).unwrap(),        // 3x3 stride 1
            Conv2dShape::same(2, 4, 8, 8, 6, 3, 3, 2, 1).unwrap(),        // 3x3 stride 2, SAME (0 before, 1 after)
            Conv2dShape::same(2, 4, 7, 9, 5, 3, 3, 2, 1).unwrap(),        // odd sizes
            Conv2dShape::same(3, 6, 5, 5, 4, 1, 1, 1, 1).unwrap(),        // 1x1 pointwise
            Conv2dShape::same(2, 6, 8, 8, 4, 1, 1, 2, 1).unwrap(),        // 1x1 stride 2 (projection shortcut)
            Conv2dShape::same(2, 6, 6, 6, 4, 3, 3, 1, 2).unwrap(),        // grouped
            Conv2dShape::same(2, 5, 9, 9, 5, 3, 3, 1, 5).unwrap(),        // depthwise 3x3
            Conv2dShape::same(2, 5, 9, 9, 5, 5, 5, 2, 5).unwrap(),        // depthwise 5x5 stride 2
            Conv2dShape::same(2, 3, 40, 36, 3, 3, 3, 2, 3).unwrap(),      // depthwise, two lane blocks per row
            Conv2dShape::same(3, 2, 20, 33, 2, 5, 5, 1, 2).unwrap(),      // depthwise 5x5, a partial third block
            Conv2dShape::same(1, 4, 7, 7, 4, 7, 7, 1, 4).unwrap(),        // depthwise 7x7 on a 7x7 image
            Conv2dShape::padded(2, 3, 11, 10, 3, 3, 3, 3, 1, 3).unwrap(), // depthwise stride 3, explicit padding
            Conv2dShape::padded(2, 2, 9, 9, 2, 3, 3, 2, 0, 2).unwrap(),   // depthwise VALID (last row unread)
            Conv2dShape::padded(2, 3, 9, 9, 4, 7, 7, 2, 3, 1).unwrap(),   // ResNet stem 7x7/2, pad 3
            Conv2dShape::padded(1, 2, 4, 4, 3, 3, 3, 1, 0, 1).unwrap(),   // VALID
        ];
        for sh in cases {
            let inp = fill(sh.input_len(), 1);
            let w = fill(sh.weight_len(), 2);
            let dout = fill(sh.output_len(), 3);
            let mut out = vec![0.0; sh.output_len()];
            let mut out_ref = out.clone();
            let mut col = Vec::new();
            conv2d_forward(&mut out, &inp, &w, &mut col, &sh).unwrap();
            conv2d_forward_ref(&mut out_ref, &inp, &w, &sh).unwrap();
            assert!(max_diff(&out, &out_ref) < 1e-4, "{sh:?} forward: {}", max_diff(&out, &out_ref));

            let mut dinp = vec![7.0; sh.input_len()]; // overwritten
            let mut dw = fill(sh.weight_len(), 4); // accumulated into
            let mut dinp_ref = vec![0.0; sh.input_len()];
            let mut dw_ref = dw.clone();
            conv2d_backward(Some(&mut dinp), &mut dw, &dout, &inp, &w, &mut col, &sh).unwrap();
            conv2d_backward_ref(&mut dinp_ref, &mut dw_ref, &dout, &inp, &w, &sh).unwrap();
            assert!(max_diff(&dinp, &dinp_ref) < 1e-4, "{sh:?} dinp: {}", max_diff(&dinp, &dinp_ref));
            assert!(max_diff(&dw, &dw_ref) < 1e-3, "{sh:?} dw: {}", max_diff(&dw, &dw_ref));
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        let sh = Conv2dShape::same(1, 1, 32, 32, 1, 3, 3, 2, 1).unwrap();
        assert_eq!((sh.p, sh.q, sh.pad_h, sh.pad_w), (16, 16, 0, 0));
        let sh = Conv2dShape::same(1, 1, 32, 32, 1, 3, 3, 1, 1).unwrap();
        assert_eq!((sh.p, sh.pad_h), (32, 1));
        let sh = Conv2dShape::same(1, 1, 7, 7, 1, 3, 3, 2, 1).unwrap();
        assert_eq!((sh.p, sh.pad_h), (4, 1));
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let sh = Conv2dShape::same(1, 2, 4, 4, 3, 3, 3, 1, 1).unwrap();
        let mut out = vec![0.0; sh.output_len()];
        let err = conv2d_forward(&mut out, &[0.0; 5], &vec![0.0; sh.weight_len()], &mut Vec::new(), &sh).unwrap_err();
        assert!(err.to_string().contains("input has 5 elements, expected 32"), "{err}");
        assert!(Conv2dShape::same(1, 3, 4, 4, 4, 3, 3, 1, 2).is_err());
    }
}
