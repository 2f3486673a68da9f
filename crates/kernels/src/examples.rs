//! Per-example coefficients drawn on the device (see `cu/examples.cu`): Shake-Shake's, ShakeDrop's
//! and drop-connect's, bitwise the values their CPU layers draw, so a device pass never waits
//! for a copy of them from the host.

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};

/// Whose coefficients, with its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExampleCoefficients {
    /// Shake-Shake's mix: `g`, then `h` (`g` when tied), then `1 − h`.
    ShakeMix,
    /// ShakeDrop with this survival probability: the forward's scale, then the backward's.
    ShakeDrop {
        /// p, the chance a branch passes unchanged.
        survival: f32,
    },
    /// Drop-connect keeping an example with this probability: `1/keep` or 0.
    DropConnect {
        /// 1 − the drop rate.
        keep: f32,
    },
}

impl ExampleCoefficients {
    /// Values per example in the output.
    pub fn per_example(self) -> usize {
        match self {
            ExampleCoefficients::ShakeMix => 3,
            ExampleCoefficients::ShakeDrop { .. } => 2,
            ExampleCoefficients::DropConnect { .. } => 1,
        }
    }

    fn kind_and_param(self) -> (u32, f32) {
        match self {
            ExampleCoefficients::ShakeMix => (0, 0.0),
            ExampleCoefficients::ShakeDrop { survival } => (1, survival),
            ExampleCoefficients::DropConnect { keep } => (2, keep),
        }
    }
}

/// Where a pass's draws come from: `ringsam_nn::Pass`'s seed, step and first example, and the
/// layer's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExampleDraws {
    /// The run's seed.
    pub seed: u64,
    /// The step.
    pub step: u64,
    /// The layer's key (from its name).
    pub key: u64,
    /// The batch's first example in the global batch.
    pub first_example: u64,
    /// Whether the backward reuses the forward's coefficients.
    pub tied: bool,
}

/// Fills `out` with `what`'s coefficients for `n` examples (`out` holds
/// [`ExampleCoefficients::per_example`]`·n` values).
pub fn draw(l: &mut impl Launcher, out: Buf<f32>, n: usize, what: ExampleCoefficients, at: ExampleDraws) -> Result<(), KernelError> {
    let want = what.per_example() * n;
    if out.len() != want || n == 0 {
        return Err(KernelError::Length { op: "example_coefficients", got: out.len(), want: want.max(1) });
    }
    let (kind, param) = what.kind_and_param();
    let draws = [at.seed, at.step, at.key, at.first_example, n as u64].map(Arg::U64);
    let args: Vec<Arg> = [out.into()].into_iter().chain(draws).chain([Arg::U32(kind), Arg::F32(param), Arg::U32(at.tied as u32)]).collect();
    l.launch("example_coefficients", Launch::elementwise(n), &args)
}
