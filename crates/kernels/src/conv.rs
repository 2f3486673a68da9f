//! Convolution's operands on device buffers: im2col and col2im (crates/tensor/src/im2col.rs's,
//! as kernels; see `cu/im2col.cu`). The GEMM between them is cuBLAS's (not written yet).

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};

/// A convolution's sizes: the CPU engine's `Conv2dShape`, field for field (made from it:
/// `ringsam_bench::kernels`); `pad_h`/`pad_w` are the top and left padding (SAME pads more after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
