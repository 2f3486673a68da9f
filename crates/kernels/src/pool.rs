//! Pooling and the residual sum on device buffers (crates/tensor/src/pool.rs's, as kernels), on
//! contiguous planes: see `cu/pool.cu`.

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher, REDUCE_BLOCK};

/// A pooling window over `planes` planes of `h × w`: the CPU engine's `PoolShape`, field for field
/// (made from it: `ringsam_bench::kernels`), with `pad_h`/`pad_w` the top and left padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PoolShape {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub r: usize,
    pub s: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub p: usize,
    pub q: usize,
}

impl PoolShape {
    fn args(&self) -> [Arg; 10] {
        [self.planes, self.h, self.w, self.r, self.s, self.stride, self.pad_h, self.pad_w, self.p, self.q].map(|v| Arg::U64(v as u64))
    }

    fn check(&self, op: &'static str, inp: usize, out: usize) -> Result<(), KernelError> {
        let len = |want: usize, got: usize| if want == got { Ok(()) } else { Err(KernelError::Length { op, got, want }) };
        len(self.planes * self.h * self.w, inp)?;
        len(self.planes * self.p * self.q, out)
    }
}

fn launch_with_shape(l: &mut impl Launcher, op: &'static str, n: usize, bufs: &[Arg], sh: &PoolShape) -> Result<(), KernelError> {
    let args: Vec<Arg> = bufs.iter().copied().chain(sh.args()).collect();
    l.launch(op, Launch::elementwise(n), &args)
}

/// Average pooling (the window's count includes no padding: the CPU divides by r·s).
pub fn avgpool_forward(l: &mut impl Launcher, out: Buf<f32>, inp: Buf<f32>, sh: &PoolShape) -> Result<(), KernelError> {
    sh.check("avgpool_forward", inp.len(), out.len())?;
    launch_with_shape(l, "avgpool_forward", out.len(), &[out.into(), inp.into()], sh)
}

/// Its backward (`dinp` written).
pub fn avgpool_backward(l: &mut impl Launcher, dinp: Buf<f32>, dout: Buf<f32>, sh: &PoolShape) -> Result<(), KernelError> {
    sh.check("avgpool_backward", dinp.len(), dout.len())?;
    launch_with_shape(l, "avgpool_backward", dinp.len(), &[dinp.into(), dout.into()], sh)
}

/// Max pooling; `argmax` keeps where each maximum was, for the backward.
pub fn maxpool_forward(l: &mut impl Launcher, out: Buf<f32>, argmax: Buf<u32>, inp: Buf<f32>, sh: &PoolShape) -> Result<(), KernelError> {
    sh.check("maxpool_forward", inp.len(), out.len())?;
    sh.check("maxpool_forward (argmax)", inp.len(), argmax.len())?;
    launch_with_shape(l, "maxpool_forward", out.len(), &[out.into(), argmax.into(), inp.into()], sh)
}

/// Its backward (`dinp` written).
pub fn maxpool_backward(
    l: &mut impl Launcher,
    dinp: Buf<f32>,
    dout: Buf<f32>,
    argmax: Buf<u32>,
    sh: &PoolShape,
) -> Result<(), KernelError> {
    sh.check("maxpool_backward", dinp.len(), dout.len())?;
    sh.check("maxpool_backward (argmax)", dinp.len(), argmax.len())?;
    launch_with_shape(l, "maxpool_backward", dinp.len(), &[dinp.into(), dout.into(), argmax.into()], sh)
}

/// `out[plane]` = the plane's mean, `planes` planes of `hw` values.
pub fn global_avgpool_forward(l: &mut impl Launcher, out: Buf<f32>, inp: Buf<f32>, hw: usize) -> Result<(), KernelError> {
    let op = "global_avgpool_forward";
    if inp.len() != out.len() * hw || hw == 0 {
        return Err(KernelError::Length { op, got: inp.len(), want: out.len() * hw });
    }
    if out.is_empty() {
        return Ok(()); // no planes: nothing to launch (a GPU refuses a grid of 0 blocks)
    }
    let planes = u32::try_from(out.len()).map_err(|_| KernelError::Launch { kernel: op, why: format!("{} planes", out.len()) })?;
    l.launch(op, Launch { grid: planes, block: REDUCE_BLOCK }, &[out.into(), inp.into(), Arg::U64(hw as u64)])
}

/// Its backward: each value of a plane gets the plane's gradient over `hw`.
pub fn global_avgpool_backward(l: &mut impl Launcher, dinp: Buf<f32>, dout: Buf<f32>, hw: usize) -> Result<(), KernelError> {
    let op = "global_avgpool_backward";
    if dinp.len() != dout.len() * hw || hw == 0 {
        return Err(KernelError::Length { op, got: dinp.len(), want: dout.len() * hw });
    }
    let n = dinp.len();
    l.launch(op, Launch::elementwise(n), &[dinp.into(), dout.into(), Arg::U64(hw as u64), Arg::U64(n as u64)])
}

/// `out = a + b`.
pub fn add(l: &mut impl Launcher, out: Buf<f32>, a: Buf<f32>, b: Buf<f32>) -> Result<(), KernelError> {
    if a.len() != out.len() || b.len() != out.len() {
        return Err(KernelError::Length { op: "add", got: a.len().max(b.len()), want: out.len() });
    }
    l.launch("add", Launch::elementwise(out.len()), &[out.into(), a.into(), b.into(), Arg::U64(out.len() as u64)])
}

/// Shake-Shake's shortcut path: every `stride`-th value of each `h × w` plane from (`o`, `o`), 0
/// past the edge; `out` holds `planes` planes of `p × q`.
#[allow(clippy::too_many_arguments)] // the kernel's sizes, each named
pub fn shift_subsample_forward(
    l: &mut impl Launcher,
    out: Buf<f32>,
    inp: Buf<f32>,
    [planes, h, w]: [usize; 3],
    stride: usize,
    o: usize,
    [p, q]: [usize; 2],
) -> Result<(), KernelError> {
    subsample("shift_subsample_forward", l, [out, inp], [planes, h, w], stride, o, [p, q], out.len())
}

/// Its backward: each input value's gradient is the output's that read it, or 0.
#[allow(clippy::too_many_arguments)] // the kernel's sizes, each named
pub fn shift_subsample_backward(
    l: &mut impl Launcher,
    dinp: Buf<f32>,
    dout: Buf<f32>,
    [planes, h, w]: [usize; 3],
    stride: usize,
    o: usize,
    [p, q]: [usize; 2],
) -> Result<(), KernelError> {
    subsample("shift_subsample_backward", l, [dinp, dout], [planes, h, w], stride, o, [p, q], dinp.len())
}

#[allow(clippy::too_many_arguments)]
fn subsample(
    op: &'static str,
    l: &mut impl Launcher,
    [written, read]: [Buf<f32>; 2],
    [planes, h, w]: [usize; 3],
    stride: usize,
    o: usize,
    [p, q]: [usize; 2],
    n: usize,
) -> Result<(), KernelError> {
    let (big, small) = (planes * h * w, planes * p * q);
    let (want_written, want_read) = if op.ends_with("forward") { (small, big) } else { (big, small) };
    if written.len() != want_written || read.len() != want_read || stride == 0 {
        return Err(KernelError::Length { op, got: written.len(), want: want_written });
    }
    let sizes = [planes, h, w, stride, o, p, q].map(|v| Arg::U64(v as u64));
    let args: Vec<Arg> = [written.into(), read.into()].into_iter().chain(sizes).collect();
    l.launch(op, Launch::elementwise(n), &args)
}
