//! ringsam-models: the model zoo, built from `ringsam-nn` layers, and the registry by name.
//!
//! Each model declares its parameters under the reference implementation's Flax parameter-tree
//! paths, so checkpoints and fixtures share keys one-to-one. Every model is a [`Network`]: a stem,
//! a body (usually residual blocks, themselves layers made of layers) and a head, three chains of
//! layers. Forward runs them in order and backward in reverse, so the two read as mirror images;
//! the chains also report gradients as final and free spent buffers, so a family only says which
//! layers it has.
//!
//! Models (`ringsam models` lists them): WideResNet-d-k (any `d = 6n + 4`), Shake-Shake,
//! PyramidNet with ShakeDrop, ResNet-50/101/152 (v1), EfficientNet B0–B8 and L2, and a SmallCnn
//! for tests. docs/ARCHITECTURE.md, "How to add a model", says how to add one.

mod chain;
pub mod efficientnet;
pub mod error;
pub mod init;
mod layer_factory;
pub mod model;
mod network;
pub mod pyramid_net;
pub mod registry;
mod residual;
pub mod resnet;
pub mod shake_shake;
pub mod small_cnn;
mod stem_head;
pub mod wide_resnet;

pub use error::ModelError;
pub use model::{Model, ModelConfig};
pub use network::Network;
pub use registry::{ModelInfo, build, forward_gflops, input_size, list};
