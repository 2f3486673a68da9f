//! Activations on device buffers (crates/tensor/src/activation.rs's, as kernels).

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};

/// Which activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// 1/(1 + e^−x).
    Sigmoid,
    /// x·σ(x) (swish).
    Silu,
}

impl Activation {
    fn kernels(self) -> (&'static str, &'static str) {
        match self {
            Activation::Relu => ("relu_forward", "relu_backward"),
            Activation::Sigmoid => ("sigmoid_forward", "sigmoid_backward"),
            Activation::Silu => ("silu_forward", "silu_backward"),
        }
    }
}

fn check(op: &'static str, a: usize, b: usize) -> Result<(), KernelError> {
    if a == b { Ok(()) } else { Err(KernelError::Length { op, got: b, want: a }) }
}

/// `out = act(inp)`.
pub fn forward(l: &mut impl Launcher, act: Activation, out: Buf<f32>, inp: Buf<f32>) -> Result<(), KernelError> {
    check("activation forward", out.len(), inp.len())?;
    l.launch(act.kernels().0, Launch::elementwise(out.len()), &[out.into(), inp.into(), Arg::U64(out.len() as u64)])
}

/// `dinp = dout·act'`, from what the CPU engine keeps: the output for ReLU and sigmoid, the
/// input for SiLU.
pub fn backward(l: &mut impl Launcher, act: Activation, dinp: Buf<f32>, dout: Buf<f32>, kept: Buf<f32>) -> Result<(), KernelError> {
    check("activation backward", dinp.len(), dout.len())?;
    check("activation backward", dinp.len(), kept.len())?;
    let args = [dinp.into(), dout.into(), kept.into(), Arg::U64(dinp.len() as u64)];
    l.launch(act.kernels().1, Launch::elementwise(dinp.len()), &args)
}
