//! Convolution's operands on device buffers: im2col and col2im (crates/tensor/src/im2col.rs's,
//! as kernels; see `cu/im2col.cu`). The GEMM between them is cuBLAS's (not written yet).

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, REDUCE_BLOCK, SCRATCH_DOUBLES};

/// A convolution's sizes: the CPU engine's `Conv2dShape`, field for field (made from it:
/// `ringsam_bench::kernels`); `pad_h`/`pad_w` are the top and left padding (SAME pads more after).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub r: usize,
    pub s: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub p: usize,
    pub q: usize,
    pub groups: usize,
}

impl ConvShape {
    /// Values of `col` for one channel group: `(R·S·C/groups) × (N·P·Q)`.
    pub fn col_len(&self) -> usize {
        self.r * self.s * (self.c / self.groups) * self.n * self.p * self.q
    }

    fn args(&self, c0: usize) -> [Arg; 13] {
        let sh = self;
        [sh.n, sh.c, sh.h, sh.w, sh.r, sh.s, sh.stride, sh.pad_h, sh.pad_w, sh.p, sh.q, sh.groups, c0].map(|v| Arg::U64(v as u64))
    }

    fn check(&self, op: &'static str, col: usize, inp: usize, c0: usize) -> Result<(), KernelError> {
        let len = |want: usize, got: usize| if want == got { Ok(()) } else { Err(KernelError::Length { op, got, want }) };
        len(self.col_len(), col)?;
        len(self.n * self.c * self.h * self.w, inp)?;
        if self.groups == 0 || !self.c.is_multiple_of(self.groups) || c0 + self.c / self.groups > self.c {
            return Err(KernelError::Launch { kernel: op, why: format!("group at channel {c0} of {} in {} groups", self.c, self.groups) });
        }
        // The kernels index in 32 bits (cu/im2col.cu says why).
        let largest = col.max(inp).max(self.n * self.k * self.p * self.q);
        if largest > u32::MAX as usize {
            return Err(KernelError::Launch { kernel: op, why: format!("{largest} values: past 32-bit indexing (use a smaller batch)") });
        }
        Ok(())
    }
}

/// Fills `col` from the group of input channels starting at `c0`.
pub fn im2col(l: &mut impl Launcher, col: Buf<f32>, inp: Buf<f32>, sh: &ConvShape, c0: usize) -> Result<(), KernelError> {
    sh.check("im2col", col.len(), inp.len(), c0)?;
    let args: Vec<Arg> = [col.into(), inp.into()].into_iter().chain(sh.args(c0)).collect();
    l.launch("im2col", Launch::elementwise(col.len()), &args)
}

/// Adds `col` back into the input-gradient channels starting at `c0`.
pub fn col2im(l: &mut impl Launcher, dinp: Buf<f32>, col: Buf<f32>, sh: &ConvShape, c0: usize) -> Result<(), KernelError> {
    sh.check("col2im", col.len(), dinp.len(), c0)?;
    let args: Vec<Arg> = [dinp.into(), col.into()].into_iter().chain(sh.args(c0)).collect();
    l.launch("col2im", Launch::elementwise(sh.c / sh.groups * sh.n * sh.h * sh.w), &args)
}

fn check_depthwise(sh: &ConvShape, op: &'static str, bufs: [(usize, usize); 3]) -> Result<(), KernelError> {
    if sh.groups != sh.c || sh.k != sh.c {
        return Err(KernelError::Launch { kernel: op, why: format!("{} groups for {} channels: not depthwise", sh.groups, sh.c) });
    }
    for (want, got) in bufs {
        if want != got {
            return Err(KernelError::Length { op, got, want });
        }
    }
    Ok(())
}

impl ConvShape {
    fn input_len(&self) -> usize {
        self.c * self.n * self.h * self.w
    }
    fn output_len(&self) -> usize {
        self.c * self.n * self.p * self.q
    }
}

/// Depthwise convolution: `out` from `inp` and `weight` `(R, S, C)`.
pub fn depthwise_forward(l: &mut impl Launcher, out: Buf<f32>, inp: Buf<f32>, weight: Buf<f32>, sh: &ConvShape) -> Result<(), KernelError> {
    let op = "depthwise_forward";
    check_depthwise(sh, op, [(sh.output_len(), out.len()), (sh.input_len(), inp.len()), (sh.r * sh.s * sh.c, weight.len())])?;
    let args: Vec<Arg> = [out.into(), inp.into(), weight.into()].into_iter().chain(sh.args(0).into_iter().take(12)).collect();
    l.launch(op, Launch::elementwise(out.len()), &args)
}

/// The largest depthwise kernel side the block form of the weight gradient takes
/// (`DW_MAX_SIDE` in `cu/depthwise.cu`): every zoo model's (3×3, 5×5).
pub const DW_MAX_SIDE: usize = 5;

/// How the depthwise weight gradient is summed (`cu/depthwise.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthwiseWeightSum {
    /// One thread per (channel, tap) over the whole batch, in order: the reference.
    PerTap,
    /// Each channel's outputs in this many chunks, one block each summing every tap.
    Blocks(usize),
}

impl DepthwiseWeightSum {
    /// The form for a shape: blocks where the kernel fits, about a thousand of them in all and
    /// none with fewer than 8192 outputs, within the launcher's scratch.
    pub fn for_shape(sh: &ConvShape) -> DepthwiseWeightSum {
        if sh.r > DW_MAX_SIDE || sh.s > DW_MAX_SIDE {
            return DepthwiseWeightSum::PerTap;
        }
        let (c, taps) = (sh.c.max(1), sh.r * sh.s);
        let want = (1024 / c).min(sh.n * sh.p * sh.q / 8192).max(1);
        DepthwiseWeightSum::Blocks(want.min(SCRATCH_DOUBLES / (c * taps).max(1)).max(1))
    }
}

/// Its backward: `dinp` overwritten (when given), `dweight` accumulated.
#[allow(clippy::too_many_arguments)] // the kernels' buffers, each named
pub fn depthwise_backward(
    l: &mut impl Launcher,
    dinp: Option<Buf<f32>>,
    dweight: Buf<f32>,
    dout: Buf<f32>,
    inp: Buf<f32>,
    weight: Buf<f32>,
    sh: &ConvShape,
) -> Result<(), KernelError> {
    depthwise_backward_in(l, DepthwiseWeightSum::for_shape(sh), dinp, dweight, dout, inp, weight, sh)
}

/// [`depthwise_backward`] with the weight gradient summed as `sum` says (the self-test forces
/// each form).
#[allow(clippy::too_many_arguments)] // the kernels' buffers, each named
pub fn depthwise_backward_in(
    l: &mut impl Launcher,
    sum: DepthwiseWeightSum,
    dinp: Option<Buf<f32>>,
    dweight: Buf<f32>,
    dout: Buf<f32>,
    inp: Buf<f32>,
    weight: Buf<f32>,
    sh: &ConvShape,
) -> Result<(), KernelError> {
    let op = "depthwise_backward";
    check_depthwise(sh, op, [(sh.output_len(), dout.len()), (sh.input_len(), inp.len()), (sh.r * sh.s * sh.c, weight.len())])?;
    check_depthwise(sh, op, [(weight.len(), dweight.len()), (inp.len(), dinp.map_or(inp.len(), |d| d.len())), (0, 0)])?;
    let shape: Vec<Arg> = sh.args(0).into_iter().take(12).collect();
    match sum {
        DepthwiseWeightSum::PerTap => {
            let args: Vec<Arg> = [dweight.into(), dout.into(), inp.into()].into_iter().chain(shape.iter().copied()).collect();
            l.launch("depthwise_backward_weight", Launch::elementwise(dweight.len()), &args)?;
        }
        DepthwiseWeightSum::Blocks(parts) => depthwise_weight_blocks(l, parts, dweight, dout, inp, sh, &shape)?,
    }
    if let Some(dinp) = dinp {
        let args: Vec<Arg> = [dinp.into(), dout.into(), weight.into()].into_iter().chain(shape).collect();
        l.launch("depthwise_backward_data", Launch::elementwise(dinp.len()), &args)?;
    }
    Ok(())
}

/// The block form of the weight gradient: `parts` blocks per channel, their sums added in order
/// by a second kernel (or by the blocks themselves when there is one part).
fn depthwise_weight_blocks(
    l: &mut impl Launcher,
    parts: usize,
    dweight: Buf<f32>,
    dout: Buf<f32>,
    inp: Buf<f32>,
    sh: &ConvShape,
    shape: &[Arg],
) -> Result<(), KernelError> {
    let op = "depthwise_weight_parts";
    let (parts, taps) = (parts.max(1), sh.r * sh.s);
    let (partials, _) = l.reduction_scratch()?;
    let why = if sh.r > DW_MAX_SIDE || sh.s > DW_MAX_SIDE {
        Some(format!("a {}×{} kernel: the block form takes up to {DW_MAX_SIDE}×{DW_MAX_SIDE}", sh.r, sh.s))
    } else if sh.input_len().max(sh.output_len()) > u32::MAX as usize - (1 << 20) {
        // (With room for a chunk's rounding and a thread's last stride past the end.)
        Some(format!("{} values: past 32-bit indexing", sh.input_len().max(sh.output_len())))
    } else if parts > 1 && sh.c * parts * taps > partials.len() {
        Some(format!("{} channels in {parts} parts need {} doubles of scratch, there are {}", sh.c, sh.c * parts * taps, partials.len()))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(KernelError::Launch { kernel: op, why });
    }
    let blocks = u32::try_from(sh.c * parts).map_err(|_| KernelError::Launch { kernel: op, why: format!("{} blocks", sh.c * parts) })?;
    let args: Vec<Arg> = [dweight.into(), partials.into(), dout.into(), inp.into()]
        .into_iter()
        .chain(shape.iter().copied())
        .chain([Arg::U64(parts as u64)])
        .collect();
    l.launch(op, Launch { grid: blocks, block: REDUCE_BLOCK }, &args)?;
    if parts > 1 {
        let sizes = [sh.c, taps, parts].map(|v| Arg::U64(v as u64));
        let args: Vec<Arg> = [dweight.into(), partials.into()].into_iter().chain(sizes).collect();
        l.launch("depthwise_weight_add", Launch::elementwise(dweight.len()), &args)?;
    }
    Ok(())
}
