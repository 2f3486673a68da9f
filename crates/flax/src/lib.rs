//! Flax checkpoints read into named tensors.
//!
//! `flax.training.checkpoints` (before Orbax) writes one file, `checkpoint_<step>`: the msgpack
//! encoding of a state dict ([`msgpack`]), arrays as msgpack extensions ([`array`]). The SAM
//! reference publishes its EfficientNets that way, packed as `checkpoint.tar.gz` ([`source`]).
//! [`tensors`] turns the decoded tree into flat `a/b/c` names: the parameters and batch-norm
//! statistics of the two layouts Flax models are saved in — `flax.nn`'s `(model, state)` tuple
//! and linen's `{"params", "batch_stats"}` variables.
//!
//! Nothing here knows a ringsam model: matching names and shapes onto one is the trainer's job.
//! Every length the file states is checked against the bytes that are really there before
//! anything is allocated, and every error says where: the byte offset while decoding, the key
//! path (`0/params/Stem_0/conv2d/kernel`) afterwards.

pub mod array;
mod error;
pub mod msgpack;
pub mod source;
pub mod tensors;

pub use array::{ArrayRef, Dtype};
pub use error::FlaxError;
pub use source::{CheckpointBytes, read_checkpoint};
pub use tensors::{FlaxTensors, Layout, tensors};
