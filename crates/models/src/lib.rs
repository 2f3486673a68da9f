//! ringsam-models: the model zoo, built from `ringsam-nn` layers, and the registry by name.
//!
//! Each model declares its parameters under the reference implementation's Flax parameter-tree
//! paths, so checkpoints and fixtures share keys one-to-one. Forward is a flat sequence of layer
//! calls; backward is the same sequence reversed, so the two read as mirror images.
//!
//! Models (`ringsam models` lists them): WideResNet-d-k (any `d = 6n + 4`), Shake-Shake,
//! PyramidNet with ShakeDrop, ResNet-50/101/152 (v1), EfficientNet B0–B8 and L2, and a SmallCnn
//! for tests. docs/ARCHITECTURE.md, "How to add a model", says how to add one.

pub mod efficientnet;
pub mod error;
pub mod init;
pub mod model;
pub mod pyramid_net;
pub mod registry;
mod residual_stack;
pub mod resnet;
pub mod shake_shake;
pub mod small_cnn;
pub mod wide_resnet;

pub use error::ModelError;
pub use model::{Model, ModelConfig};
pub use registry::{ModelInfo, build, forward_gflops, input_size, list};
