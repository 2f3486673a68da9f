//! Convolutions by the device's library (cuDNN on a GPU) instead of im2col and a GEMM: no column
//! matrix is written (on an H200, im2col and col2im were 47 % of a WRN-28-10 step and most of
//! ResNet-50's memory above PyTorch's).
//!
//! The activations stay in the engine's `(C, N, H, W)`: the library is given them as a strided
//! 4-D tensor (N stride H·W, C stride N·H·W), which cuDNN's descriptors express, so nothing else
//! on the device changes layout. Filters are HWIO in the arena (Flax's layout, the checkpoints');
//! cuDNN takes KCRS, so a pass transposes the weights into scratch (`cu/weights.cu`) and adds
//! the filter gradient back transposed. Both are small beside the convolutions.
//!
//! Depthwise convolutions go to the library as grouped convolutions (one group per channel; the
//! HWIO kernel `(R, S, 1, C)` is transposed to KCRS `(C, 1, R, S)` as any other). What the library
//! cannot express runs by the engine's own kernels ([`ConvShape::library_fits`]): TensorFlow's
//! SAME padding where it is asymmetric (a stride-2 3×3 on an even size pads one row after and
//! none before; cuDNN pads both sides alike) runs by im2col, or by the depthwise kernels.
//!
//! Under emulation, [`conv_reference`] computes a call on the host: the tests hold the
//! transposes, the accumulation and the groups to the CPU engine; only a GPU checks cuDNN
//! itself (the device check's kernel self-test and engine check).

use crate::conv::ConvShape;
use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, Precision};

/// Which convolution a device runs for the layers the library fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvImpl {
    /// im2col and one GEMM per group: the reference, and the path of every launcher.
    #[default]
    Gemm,
    /// The device's library (cuDNN): opt-in (`--conv_impl cudnn`) until a GPU's device check
    /// has held it to the CPU engine.
    Library,
}

impl std::str::FromStr for ConvImpl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gemm" => Ok(ConvImpl::Gemm),
            "cudnn" => Ok(ConvImpl::Library),
            _ => Err(format!("unknown convolution implementation {s:?}: expected gemm or cudnn")),
        }
    }
}

impl std::fmt::Display for ConvImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvImpl::Gemm => "gemm",
            ConvImpl::Library => "cudnn",
        })
    }
}

/// Whether convolutions by `imp` can run in `precision`. The library is given the engine's FP32
/// tensors, which cuDNN computes in FP32 or TF32 only: its BF16 convolutions take BF16 tensors,
/// which the engine does not keep. BF16 runs convolutions by im2col and the BF16 GEMM instead.
pub fn check_precision(imp: ConvImpl, precision: Precision) -> Result<(), KernelError> {
    match (imp, precision) {
        (ConvImpl::Library, Precision::Bf16) => Err(KernelError::Launch {
            kernel: "library convolution",
            why: "cuDNN's BF16 convolutions need BF16 tensors, which the engine does not keep: use --conv_impl gemm with --precision bf16"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// What a library call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvOp {
    /// `y = conv(x, w)`.
    Forward,
    /// `x = ∂L/∂x` from `y = ∂L/∂y` and `w`.
    BackwardData,
    /// `w = ∂L/∂w` from `x` and `y = ∂L/∂y`.
    BackwardFilter,
}

/// One library convolution: `x` `(C, N, H, W)`, `w` KCRS `(K, C/groups, R, S)`; `y` is the
/// output `(K, N, P, Q)` forward, and the output gradient packed `(N, K, P, Q)` backward (cuDNN's
/// backward algorithms take it so only). The operation's output is overwritten.
#[derive(Clone, Copy, Debug)]
pub struct ConvCall {
    /// What it computes.
    pub op: ConvOp,
    /// Its sizes.
    pub shape: ConvShape,
    /// The input (or its gradient).
    pub x: Buf<f32>,
    /// The filters (or their gradient), KCRS.
    pub w: Buf<f32>,
    /// The output (or its gradient).
    pub y: Buf<f32>,
}

/// How a library call's tensors lie in memory. The engine's is the only one the layers use; the
/// others are for timing cuDNN in the layouts it is tuned for (`ringsam bench conv`), the
/// measurement that decides whether the device should keep its activations another way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvLayouts {
    /// Activations `(C, N, H, W)`, filters KCRS, the output gradient packed `(N, K, P, Q)`.
    Engine,
    /// Everything packed `(N, C, H, W)`, filters KCRS: PyTorch's default.
    Nchw,
    /// Everything `(N, H, W, C)`, filters KRSC: PyTorch's channels_last, tensor cores' layout.
    Nhwc,
}

impl std::fmt::Display for ConvLayouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvLayouts::Engine => "CNHW (engine)",
            ConvLayouts::Nchw => "NCHW",
            ConvLayouts::Nhwc => "NHWC",
        })
    }
}

impl ConvShape {
    /// Whether the library computes this convolution as the engine defines it: padding the same
    /// on both sides reproduces its output size (TensorFlow's SAME padding puts the odd row
    /// after). Depthwise convolutions fit as grouped ones.
    pub fn library_fits(&self) -> bool {
        let out = |size: usize, pad: usize, k: usize| (size + 2 * pad).checked_sub(k).map(|v| v / self.stride + 1);
        self.stride > 0 && out(self.h, self.pad_h, self.r) == Some(self.p) && out(self.w, self.pad_w, self.s) == Some(self.q)
    }

    /// Scratch the library path takes: the transposed weights, their gradient, and the output
    /// gradient packed `(N, K, P, Q)`.
    pub fn library_scratch_len(&self) -> usize {
        2 * self.weight_len() + self.out_len()
    }

    /// Refuses a call whose buffers are not this shape's, or a shape the library does not fit.
    pub fn check_call(&self, call: &ConvCall) -> Result<(), KernelError> {
        let lens = [(call.x.len(), self.n * self.c * self.h * self.w), (call.w.len(), self.weight_len()), (call.y.len(), self.out_len())];
        for (got, want) in lens {
            if got != want {
                return Err(KernelError::Length { op: "library convolution", got, want });
            }
        }
        if !self.library_fits() {
            return Err(KernelError::Launch { kernel: "library convolution", why: format!("{self:?}: not a shape the library fits") });
        }
        Ok(())
    }
}

/// Runs `call` on the host, over the addresses its buffers hold (the emulation's library):
/// direct loops, sums in double.
///
/// # Safety
/// The buffers are host memory of their stated lengths, and the output does not overlap the
/// inputs.
pub unsafe fn conv_reference(call: &ConvCall) -> Result<(), KernelError> {
    let sh = call.shape;
    sh.check_call(call)?;
    // SAFETY: the caller's contract; the lengths were just checked.
    let view = |b: Buf<f32>| unsafe { std::slice::from_raw_parts_mut(b.addr() as *mut f32, b.len()) };
    let (x, w, y) = (view(call.x), view(call.w), view(call.y));
    let (cg, kg) = (sh.c / sh.groups, sh.k / sh.groups);
    let x_at = |c: usize, n: usize, ih: isize, iw: isize| -> Option<usize> {
        let inside = ih >= 0 && iw >= 0 && (ih as usize) < sh.h && (iw as usize) < sh.w;
        inside.then(|| ((c * sh.n + n) * sh.h + ih as usize) * sh.w + iw as usize)
    };
    let taps = |p: usize, q: usize, r: usize, s: usize| {
        ((p * sh.stride + r) as isize - sh.pad_h as isize, (q * sh.stride + s) as isize - sh.pad_w as isize)
    };
    let w_at = |k: usize, r: usize, s: usize, c: usize| ((k * cg + c) * sh.r + r) * sh.s + s;
    let y_at = |k: usize, n: usize, p: usize, q: usize| match call.op {
        ConvOp::Forward => ((k * sh.n + n) * sh.p + p) * sh.q + q,
        ConvOp::BackwardData | ConvOp::BackwardFilter => ((n * sh.k + k) * sh.p + p) * sh.q + q,
    };
    // One pass over every (output, tap, input channel) product, each added in double to the
    // value the operation computes.
    let out_len = match call.op {
        ConvOp::Forward => y.len(),
        ConvOp::BackwardData => x.len(),
        ConvOp::BackwardFilter => w.len(),
    };
    let mut acc = vec![0.0f64; out_len];
    for k in 0..sh.k {
        let g = k / kg;
        for n in 0..sh.n {
            for p in 0..sh.p {
                for q in 0..sh.q {
                    let yi = y_at(k, n, p, q);
                    for r in 0..sh.r {
                        for s in 0..sh.s {
                            let (ih, iw) = taps(p, q, r, s);
                            for c in 0..cg {
                                let Some(xi) = x_at(g * cg + c, n, ih, iw) else { continue };
                                let wi = w_at(k, r, s, c);
                                match call.op {
                                    ConvOp::Forward => acc[yi] += x[xi] as f64 * w[wi] as f64,
                                    ConvOp::BackwardData => acc[xi] += y[yi] as f64 * w[wi] as f64,
                                    ConvOp::BackwardFilter => acc[wi] += y[yi] as f64 * x[xi] as f64,
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let out = match call.op {
        ConvOp::Forward => y,
        ConvOp::BackwardData => x,
        ConvOp::BackwardFilter => w,
    };
    out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
    Ok(())
}

/// The KCRS copy of an HWIO kernel, for the library.
fn to_kcrs(l: &mut impl Launcher, kcrs: Buf<f32>, hwio: Buf<f32>, sh: &ConvShape) -> Result<(), KernelError> {
    let dims = [sh.r * sh.s, sh.c / sh.groups, sh.k].map(|v| Arg::U64(v as u64));
    let args: Vec<Arg> = [kcrs.into(), hwio.into()].into_iter().chain(dims).collect();
    l.launch("hwio_to_kcrs", Launch::elementwise(hwio.len()), &args)
}

/// `hwio += kcrs` transposed: a filter gradient from the library into the arena's.
fn add_from_kcrs(l: &mut impl Launcher, hwio: Buf<f32>, kcrs: Buf<f32>, sh: &ConvShape) -> Result<(), KernelError> {
    let dims = [sh.r * sh.s, sh.c / sh.groups, sh.k].map(|v| Arg::U64(v as u64));
    let args: Vec<Arg> = [hwio.into(), kcrs.into()].into_iter().chain(dims).collect();
    l.launch("kcrs_add_to_hwio", Launch::elementwise(hwio.len()), &args)
}

/// The scratch's parts: the KCRS weights, their gradient, the packed output gradient.
fn scratch_parts(scratch: Buf<f32>, sh: &ConvShape) -> Result<[Buf<f32>; 3], KernelError> {
    let (w, y) = (sh.weight_len(), sh.out_len());
    if scratch.len() < sh.library_scratch_len() {
        return Err(KernelError::Length { op: "library convolution (scratch)", got: scratch.len(), want: sh.library_scratch_len() });
    }
    Ok([scratch.slice(0..w), scratch.slice(w..2 * w), scratch.slice(2 * w..2 * w + y)])
}

/// `nchw` = `cnhw` with its first two axes swapped: the output gradient as cuDNN's backward
/// algorithms take it.
fn to_nchw(l: &mut impl Launcher, nchw: Buf<f32>, cnhw: Buf<f32>, sh: &ConvShape) -> Result<(), KernelError> {
    let dims = [sh.k, sh.n, sh.p * sh.q].map(|v| Arg::U64(v as u64));
    let args: Vec<Arg> = [nchw.into(), cnhw.into()].into_iter().chain(dims).collect();
    l.launch("cnhw_to_nchw", Launch::elementwise(cnhw.len()), &args)
}

/// `out = conv(inp, weight)` by the library (`weight` HWIO); `scratch` holds at least
/// [`ConvShape::library_scratch_len`] values.
pub fn forward(
    l: &mut impl Launcher,
    out: Buf<f32>,
    inp: Buf<f32>,
    weight: Buf<f32>,
    scratch: Buf<f32>,
    sh: &ConvShape,
) -> Result<(), KernelError> {
    let [w, _, _] = scratch_parts(scratch, sh)?;
    to_kcrs(l, w, weight, sh)?;
    l.library_conv(&ConvCall { op: ConvOp::Forward, shape: *sh, x: inp, w, y: out })
}

/// The gradients by the library: `dweight += ∂L/∂W` (HWIO), and `dinp = ∂L/∂x` (overwritten)
/// when given.
#[allow(clippy::too_many_arguments)] // the convolution's buffers, each named
pub fn backward(
    l: &mut impl Launcher,
    dinp: Option<Buf<f32>>,
    dweight: Buf<f32>,
    dout: Buf<f32>,
    inp: Buf<f32>,
    weight: Buf<f32>,
    scratch: Buf<f32>,
    sh: &ConvShape,
) -> Result<(), KernelError> {
    let [w, dw, dy] = scratch_parts(scratch, sh)?;
    if dout.len() != sh.out_len() {
        return Err(KernelError::Length { op: "library convolution", got: dout.len(), want: sh.out_len() });
    }
    to_nchw(l, dy, dout, sh)?;
    l.library_conv(&ConvCall { op: ConvOp::BackwardFilter, shape: *sh, x: inp, w: dw, y: dy })?;
    add_from_kcrs(l, dweight, dw, sh)?;
    if let Some(dinp) = dinp {
        to_kcrs(l, w, weight, sh)?;
        l.library_conv(&ConvCall { op: ConvOp::BackwardData, shape: *sh, x: dinp, w, y: dy })?;
    }
    Ok(())
}
