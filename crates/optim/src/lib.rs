//! ringsam-optim: SAM and the base optimizers, on the flat buffers of the parameter arena.
//!
//! Every update is one fused pass over `w`, `g` and state buffers of the same length (llm.c's
//! `gpt2_update`). Nothing here knows about layers: a model's parameters are one `&mut [f32]`.
//!
//! Status: the pieces the step benchmark needs — the global norm, SAM's ascent point, and the
//! reference's Nesterov momentum. Schedules, clipping, RMSProp, ASAM and EMA come with the trainer.

pub mod norm;
pub mod sam;
pub mod sgd;

pub use norm::global_norm;
pub use sam::ascent_point;
pub use sgd::Nesterov;
