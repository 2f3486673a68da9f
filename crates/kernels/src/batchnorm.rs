//! Batch norm on device buffers (crates/tensor/src/batchnorm.rs's, as kernels), in either
//! layout: see `cu/batchnorm.cu`.

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, REDUCE_BLOCK, SCRATCH_DOUBLES};

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

/// Blocks per channel for the training forward and backward ([`forward_train_in`]): about a
/// thousand blocks in all, none with fewer than 4096 values, within the launcher's scratch; 1 is
/// the one-block-per-channel kernel.
pub fn split_parts(lay: BnLayout) -> usize {
    let c = lay.c.max(1);
    let want = (1024 / c).max(1).min(lay.m / 4096);
    let fits = SCRATCH_DOUBLES.saturating_sub(scratch_need(c, 0, 2)) / (2 * c); // the backward's, the larger
    want.min(fits).max(1)
}

/// Doubles of scratch the split kernels use: `sums_per_block` per block (1 forward, 2 backward),
/// then three per channel (the mean and two coefficients forward, three coefficients backward).
fn scratch_need(c: usize, parts: usize, sums_per_block: usize) -> usize {
    sums_per_block * c * parts + 3 * c
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
    forward_train_in(l, split_parts(lay), lay, out, stats, inp, p, eps, relu)
}

/// [`forward_train`] with each channel in `parts` blocks: 1 is the one-block kernel (the
/// reference), more the split kernels (`bn_part_*` in `cu/batchnorm.cu`), the same arithmetic
/// with the sums in another order.
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn forward_train_in(
    l: &mut impl Launcher,
    parts: usize,
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
    if parts <= 1 {
        let args = [out.into(), stats.mean.into(), stats.var.into(), stats.rstd.into(), inp.into(), p.scale.into(), p.bias.into()];
        return per_channel(l, op, lay, grid, &args, &[Arg::F32(eps), Arg::U32(relu as u32)]);
    }
    let (scratch, blocks) = split_scratch(l, op, lay, parts, 1)?;
    let (c, m) = (Arg::U64(lay.c as u64), Arg::U64(lay.m as u64));
    let strides = [Arg::U64(lay.cstride as u64), Arg::U64(lay.estride as u64)];
    let stats_args = |stage: u32| {
        [scratch.into(), stats.mean.into(), stats.var.into(), stats.rstd.into(), p.scale.into(), p.bias.into(), Arg::F32(eps)]
            .into_iter()
            .chain([Arg::U32(stage), Arg::U64(parts as u64), m, c])
            .collect::<Vec<Arg>>()
    };
    for (stage, square) in [(0u32, 0u32), (1, 1)] {
        let sums = [scratch.into(), scratch.slice(lay.c * parts..lay.c * parts + lay.c).into(), inp.into(), Arg::U32(square)];
        let args: Vec<Arg> = sums.into_iter().chain([Arg::U64(parts as u64), m]).chain(strides).collect();
        l.launch("bn_part_sums", Launch { grid: blocks, block: REDUCE_BLOCK }, &args)?;
        l.launch("bn_part_stats", Launch::elementwise(lay.c), &stats_args(stage))?;
    }
    let coef = scratch.slice(lay.c * parts + lay.c..lay.c * parts + 3 * lay.c);
    let args: Vec<Arg> = [out.into(), inp.into(), coef.into(), Arg::U32(relu as u32), c, m].into_iter().chain(strides).collect();
    l.launch("bn_part_apply", Launch::elementwise(lay.c * lay.m), &args)
}

/// The launcher's scratch for the split kernels ([`scratch_need`]), and the number of blocks;
/// refuses what 32-bit channel arithmetic or the scratch cannot hold.
fn split_scratch(
    l: &mut impl Launcher,
    op: &'static str,
    lay: BnLayout,
    parts: usize,
    sums_per_block: usize,
) -> Result<(Buf<f64>, u32), KernelError> {
    let (scratch, _) = l.reduction_scratch()?;
    let need = scratch_need(lay.c, parts, sums_per_block);
    let why = if lay.c * lay.m > u32::MAX as usize {
        Some(format!("{} values: past 32-bit indexing", lay.c * lay.m))
    } else if need > scratch.len() {
        Some(format!("{} channels in {parts} parts need {need} doubles of scratch, there are {}", lay.c, scratch.len()))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(KernelError::Launch { kernel: op, why });
    }
    let blocks = u32::try_from(lay.c * parts).map_err(|_| KernelError::Launch { kernel: op, why: format!("{} blocks", lay.c * parts) })?;
    Ok((scratch, blocks))
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
    backward_in(l, split_parts(lay), lay, [dinp, dscale, dbias], [dout, out, inp], stats, scale, relu)
}

/// [`backward`] with each channel in `parts` blocks, as [`forward_train_in`].
#[allow(clippy::too_many_arguments)] // the kernel's buffers, each named
pub fn backward_in(
    l: &mut impl Launcher,
    parts: usize,
    lay: BnLayout,
    [dinp, dscale, dbias]: [Buf<f32>; 3],
    [dout, out, inp]: [Buf<f32>; 3],
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
    if parts <= 1 {
        let args = [dinp, dscale, dbias, dout, out, inp, stats.mean, stats.rstd, scale].map(Arg::from);
        return per_channel(l, op, lay, grid, &args, &[Arg::U32(relu as u32)]);
    }
    let (scratch, blocks) = split_scratch(l, op, lay, parts, 2)?;
    let (c, m, relu) = (Arg::U64(lay.c as u64), Arg::U64(lay.m as u64), Arg::U32(relu as u32));
    let strides = [Arg::U64(lay.cstride as u64), Arg::U64(lay.estride as u64)];
    let sums: Vec<Arg> = [scratch.into(), dout.into(), out.into(), inp.into(), stats.mean.into(), relu, Arg::U64(parts as u64), m]
        .into_iter()
        .chain(strides)
        .collect();
    l.launch("bn_part_grad_sums", Launch { grid: blocks, block: REDUCE_BLOCK }, &sums)?;
    let stats_args = [scratch.into(), dscale.into(), dbias.into(), stats.rstd.into(), scale.into(), Arg::U64(parts as u64), m, c];
    l.launch("bn_part_grad_stats", Launch::elementwise(lay.c), &stats_args)?;
    let coef = scratch.slice(2 * lay.c * parts..2 * lay.c * parts + 3 * lay.c);
    let apply: Vec<Arg> =
        [dinp.into(), dout.into(), out.into(), inp.into(), stats.mean.into(), coef.into(), relu, c, m].into_iter().chain(strides).collect();
    l.launch("bn_part_grad_apply", Launch::elementwise(lay.c * lay.m), &apply)
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
