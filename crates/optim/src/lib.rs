//! ringsam-optim: SAM and the base optimizers, on the flat buffers of the parameter arena.
//!
//! Every update is one fused pass over `w`, `g` and state buffers of the same length (llm.c's
//! `gpt2_update`). Nothing here knows about layers: a model's parameters are one `&mut [f32]`,
//! and per-tensor rules (no weight decay on batch norm) arrive as ranges.
//!
//! Files: [`sam`] (ascent point, SAM and ASAM), [`base`] (Nesterov / momentum / RMSProp),
//! [`schedule`] (learning-rate schedules, pure functions of the step), [`clip`] (global-norm
//! clipping), [`ema`] (weight averaging), [`weight_decay`] (L2-in-loss and decoupled), [`norm`],
//! [`looksam`] (LookSAM's reused direction).

pub mod base;
pub mod clip;
pub mod ema;
pub mod looksam;
pub mod norm;
pub mod sam;
pub mod schedule;
pub mod weight_decay;

pub use base::{BaseOptimizer, OptimizerKind};
pub use clip::clip_by_global_norm;
pub use ema::Ema;
pub use norm::global_norm;
pub use sam::{asam_ascent_point, ascent_point};
pub use schedule::{LrSchedule, ScheduleKind};
