//! ringsam-train: the SAM training step and the benchmarks built on it.
//!
//! Files: [`step`] (one replica's SGD/SAM step), [`trainer`] (the loop: data, steps,
//! evaluation, checkpoints, one stop path), [`run`] (its entry points), [`resume`] (whether a
//! checkpoint may be resumed), [`progress`] (bar and plain log lines), [`eval`], [`checkpoint`]
//! (atomic write, verified load), [`tensorboard`] (event files), [`config`] (every flag, typed
//! once), [`data_source`] (memory or shards behind one interface).
//! Data-parallel: [`cluster`] (the rings a replica all-reduces over), [`grad_sync`] (gradient
//! buckets overlapped with backward), [`replica`] (what replicas agree on besides gradients:
//! stop votes, metrics, batch-norm statistics, parameter fingerprints), [`telemetry`]
//! (Prometheus metrics).

pub mod cheap_sam;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod data_source;
pub mod device_grad_sync;
pub mod device_step;
pub mod elastic;
pub mod error;
pub mod eval;
pub mod finished_record;
pub mod generation_record;
pub mod grad_sync;
pub mod init_from;
pub mod memory;
pub mod predict;
pub mod progress;
pub mod replica;
pub mod resume;
pub mod run;
pub mod sample_log;
pub mod sharpness;
pub mod step;
pub mod telemetry;
pub mod tensorboard;
pub mod trainer;

pub use error::TrainError;
pub use ringsam_data::share::BatchShare;
pub use step::{SamStep, StepConfig, StepReport};
