//! Batch norm on device buffers (crates/tensor/src/batchnorm.rs's, as kernels), in either
//! layout: see `cu/batchnorm.cu`.

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, REDUCE_BLOCK};

/// Channels, values per channel, and where value `j` of channel `c` is: `c·cstride + j·estride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnLayout {
    /// Channels.
    pub c: usize,
    /// Values per channel (N·H·W).
    pub m: usize,
    /// Distance between channels.
    pub cstride: usize,
    /// Distance between a channel's values.
    pub estride: usize,
}

impl BnLayout {
    /// The CPU engine's (C, N, H, W): each channel's values contiguous.
    pub fn cnhw(c: usize, m: usize) -> BnLayout {
        BnLayout { c, m, cstride: m, estride: 1 }
    }

    /// (N, H, W, C): channels interleaved.
    pub fn nhwc(c: usize, m: usize) -> BnLayout {
        BnLayout { c, m, cstride: 1, estride: c }
    }

    fn check(self, op: &'static str, tensors: &[usize], per_channel: &[usize]) -> Result<u32, KernelError> {
        let len = |want: usize, got: usize| if want == got { Ok(()) } else { Err(KernelError::Length { op, got, want }) };
        for &t in tensors {
            len(self.c * self.m, t)?;
        }
        for &p in per_channel {
            len(self.c, p)?;
        }
        if self.m == 0 || self.c == 0 {
            // Also no launch of 0 blocks, which a GPU refuses.
            return Err(KernelError::Launch { kernel: op, why: "batch norm over an empty batch or no channels".into() });
        }
        u32::try_from(self.c).map_err(|_| KernelError::Launch { kernel: op, why: format!("{} channels", self.c) })
    }
}

/// Launches `op`, one block per channel, with `buffers`, `scalars`, then the layout's values per
/// channel and strides (every batch-norm kernel ends its parameters so).
fn per_channel(
    l: &mut impl Launcher,
    op: &'static str,
    lay: BnLayout,
    grid: u32,
    buffers: &[Arg],
    scalars: &[Arg],
) -> Result<(), KernelError> {
    let layout = [Arg::U64(lay.m as u64), Arg::U64(lay.cstride as u64), Arg::U64(lay.estride as u64)];
    let args: Vec<Arg> = buffers.iter().chain(scalars).chain(&layout).copied().collect();
    l.launch(op, Launch { grid, block: REDUCE_BLOCK }, &args)
}

/// The per-channel statistics a training forward writes and its backward reads.
#[derive(Clone, Copy, Debug)]
pub struct BnStats {
    /// Batch mean.
    pub mean: Buf<f32>,
    /// Batch variance (biased).
    pub var: Buf<f32>,
    /// 1/√(var + ε).
    pub rstd: Buf<f32>,
}

/// The affine parameters.
#[derive(Clone, Copy, Debug)]
pub struct BnParams {
    /// γ.
    pub scale: Buf<f32>,
    /// β.
    pub bias: Buf<f32>,
}

/// Training forward: `out = [relu]((x − mean)·rstd·γ + β)`, batch statistics into `stats`.
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn forward_train(
    l: &mut impl Launcher,
    lay: BnLayout,
    out: Buf<f32>,
    stats: BnStats,
    inp: Buf<f32>,
    p: BnParams,
    eps: f32,
    relu: bool,
) -> Result<(), KernelError> {
    let op = "batchnorm_forward_train";
    let grid =
        lay.check(op, &[out.len(), inp.len()], &[stats.mean.len(), stats.var.len(), stats.rstd.len(), p.scale.len(), p.bias.len()])?;
    let args = [out.into(), stats.mean.into(), stats.var.into(), stats.rstd.into(), inp.into(), p.scale.into(), p.bias.into()];
    per_channel(l, op, lay, grid, &args, &[Arg::F32(eps), Arg::U32(relu as u32)])
}

/// Evaluation forward with running statistics.
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn forward_eval(
    l: &mut impl Launcher,
    lay: BnLayout,
    out: Buf<f32>,
    inp: Buf<f32>,
    p: BnParams,
    running_mean: Buf<f32>,
    running_var: Buf<f32>,
    eps: f32,
    relu: bool,
) -> Result<(), KernelError> {
    let op = "batchnorm_forward_eval";
    let grid = lay.check(op, &[out.len(), inp.len()], &[p.scale.len(), p.bias.len(), running_mean.len(), running_var.len()])?;
    let args = [out.into(), inp.into(), p.scale.into(), p.bias.into(), running_mean.into(), running_var.into()];
    per_channel(l, op, lay, grid, &args, &[Arg::F32(eps), Arg::U32(relu as u32)])
}

/// Backward of [`forward_train`]: `dinp` written, `dscale`/`dbias` accumulated.
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn backward(
    l: &mut impl Launcher,
    lay: BnLayout,
    dinp: Buf<f32>,
    dscale: Buf<f32>,
    dbias: Buf<f32>,
    dout: Buf<f32>,
    out: Buf<f32>,
    inp: Buf<f32>,
    stats: BnStats,
    scale: Buf<f32>,
    relu: bool,
) -> Result<(), KernelError> {
    let op = "batchnorm_backward";
    let grid = lay.check(
        op,
        &[dinp.len(), dout.len(), out.len(), inp.len()],
        &[dscale.len(), dbias.len(), stats.mean.len(), stats.rstd.len(), scale.len()],
    )?;
    let args =
        [dinp.into(), dscale.into(), dbias.into(), dout.into(), out.into(), inp.into(), stats.mean.into(), stats.rstd.into(), scale.into()];
    per_channel(l, op, lay, grid, &args, &[Arg::U32(relu as u32)])
}

/// Backward of [`forward_eval`] (frozen statistics: finetuning): `dinp` written, `dscale`/`dbias`
/// accumulated; `mean` and `var` are the running statistics the forward used.
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn backward_eval(
    l: &mut impl Launcher,
    lay: BnLayout,
    [dinp, dscale, dbias]: [Buf<f32>; 3],
    [dout, out, inp]: [Buf<f32>; 3],
    [mean, var]: [Buf<f32>; 2],
    scale: Buf<f32>,
    eps: f32,
    relu: bool,
) -> Result<(), KernelError> {
    let op = "batchnorm_backward_eval";
    let grid =
        lay.check(op, &[dinp.len(), dout.len(), out.len(), inp.len()], &[dscale.len(), dbias.len(), mean.len(), var.len(), scale.len()])?;
    let args = [dinp.into(), dscale.into(), dbias.into(), dout.into(), out.into(), inp.into(), mean.into(), var.into(), scale.into()];
    per_channel(l, op, lay, grid, &args, &[Arg::F32(eps), Arg::U32(relu as u32)])
}
