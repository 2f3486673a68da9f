//! ringsam-train: the SAM training step and the benchmarks built on it.
//!
//! Status: [`step::SamStep`] (one replica's SGD or SAM step) and [`bench_step`] exist; the
//! training loop, checkpoints, telemetry and replica actors come with later issues.

pub mod bench_step;
pub mod error;
pub mod step;

pub use error::TrainError;
pub use step::{SamStep, StepConfig, StepReport};
