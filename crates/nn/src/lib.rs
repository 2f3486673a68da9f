//! ringsam-nn: layers with explicit forward and backward passes, the parameter arena, the
//! initializers of the reference implementation, and a finite-difference gradient checker.
//!
//! The pattern (llm.c's): a model declares each parameter once in a [`ParamLayout`], under the
//! reference's Flax parameter-tree path; all parameters then live in one flat `f32` buffer and
//! their gradients in a second of the same layout ([`Arena`]). Layers hold [`ParamId`]s, not
//! tensors, so the optimizer, the SAM perturbation and the all-reduce each see one contiguous
//! buffer. Batch-norm running statistics are model *state* ([`StateLayout`] / `Vec<f32>`), apart
//! from the parameters: SAM never perturbs them and the per-step gradient exchange never sends them.
//!
//! Every layer's `forward` saves what its `backward` needs (its output, batch statistics, masks)
//! in buffers it owns and reuses from step to step. `backward` *accumulates* into the gradient
//! buffer (`+=`); zeroing it is the caller's separate call ([`Arena::zero_grad`]). The gradient
//! with respect to the layer's input is *written* into the layer's own `dinput` buffer.
//!
//! What it is not: there is no autograd. A model writes its backward as the mirror image of its
//! forward (see `ringsam-models`).

pub mod arena;
pub mod device;
pub mod error;
pub mod gradcheck;
pub mod init;
pub mod layers;
pub mod pass;
pub mod testing;
pub mod workspace;

pub use arena::{Arena, ParamId, ParamLayout, StateLayout};
pub use error::NnError;
pub use layers::Layer;
pub use pass::Pass;
pub use ringsam_rng::Rng;
pub use workspace::Workspace;
