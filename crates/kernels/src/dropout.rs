//! Dropout on device buffers, with the CPU engine's masks (see `cu/dropout.cu`).

use ringsam_rng::Rng;

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};

fn check(op: &'static str, want: usize, got: usize) -> Result<(), KernelError> {
    if want == got { Ok(()) } else { Err(KernelError::Length { op, got, want }) }
}

/// `out = inp·mask` with the mask of stream `rng` (the one the CPU layer draws from:
/// `Rng::stream(seed, step, key)`) at `rate`; `mask` is kept for [`backward`].
pub fn forward(l: &mut impl Launcher, out: Buf<f32>, mask: Buf<f32>, inp: Buf<f32>, rng: &Rng, rate: f32) -> Result<(), KernelError> {
    check("dropout forward", inp.len(), out.len())?;
    check("dropout forward", inp.len(), mask.len())?;
    let keep = 1.0 / (1.0 - rate); // in f32, as the CPU computes it
    let n = Arg::U64(inp.len() as u64);
    let args = [out.into(), mask.into(), inp.into(), Arg::U64(rng.counter_base()), Arg::F32(rate), Arg::F32(keep), n];
    l.launch("dropout_forward", Launch::elementwise(inp.len()), &args)
}

/// `dinp = dout·mask`.
pub fn backward(l: &mut impl Launcher, dinp: Buf<f32>, dout: Buf<f32>, mask: Buf<f32>) -> Result<(), KernelError> {
    check("dropout backward", dinp.len(), dout.len())?;
    check("dropout backward", dinp.len(), mask.len())?;
    let args = [dinp.into(), dout.into(), mask.into(), Arg::U64(dinp.len() as u64)];
    l.launch("dropout_backward", Launch::elementwise(dinp.len()), &args)
}
