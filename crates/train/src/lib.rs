//! ringsam-train: the SAM training step and the benchmarks built on it.
//!
//! Files: [`step`] (one replica's SGD/SAM step), [`run`] (the loop: data, steps, evaluation,
//! checkpoints, resume), [`eval`], [`checkpoint`] (atomic write, verified load),
//! [`tensorboard`] (event files), [`config`] (the reference's flags), [`bench_step`].
//! Replica actors over the ring come with the distributed issue.

pub mod bench_step;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod run;
pub mod step;
pub mod tensorboard;

pub use error::TrainError;
pub use step::{SamStep, StepConfig, StepReport};
