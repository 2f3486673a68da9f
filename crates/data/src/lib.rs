//! ringsam-data: datasets, augmentation and the batch loader.
//!
//! What it does: parses the datasets the reference trains on (CIFAR-10/100 binary, Fashion-MNIST
//! IDX, SVHN `.mat`), the bundled `digits` set and a `synthetic` generator into one in-memory
//! form, [`Dataset`] (u8 pixels, HWC); applies the reference's augmentations; and assembles
//! normalised `f32` batches in the engine's `(C, N, H, W)` order on a background thread.
//!
//! What it does not do: it depends on neither the engine nor the tensor crate. It moves bytes and
//! `f32` slices; the trainer wraps batches into tensors. [`shards`] reads ImageNet-style sharded
//! datasets (TFRecord, WebDataset, image folders) record by record.
//!
//! Errors name the file and the byte offset where the input stopped making sense, and say what
//! was expected ([`DataError::Format`]).

pub mod arrays;
pub mod augment;
pub mod autoaugment;
pub mod batch;
pub mod batch_slots;
pub mod cifar;
pub mod dataset;
pub mod digits;
pub mod epoch_order;
pub mod error;
pub mod fashion_mnist;
pub mod imagefolder;
pub mod imagenet;
pub mod label_noise;
pub mod loader;
pub mod normalize;
pub mod registry;
pub mod shard_loader;
pub mod shards;
pub mod share;
pub mod svhn;
pub mod synthetic;
pub mod verify;

pub use batch::{Batch, Mix};
pub use dataset::{Dataset, Split};
pub use error::DataError;
pub use loader::{Loader, LoaderConfig};
