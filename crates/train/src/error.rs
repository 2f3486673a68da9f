//! The one error type of this crate.

/// What went wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Building the model failed.
    #[error(transparent)]
    Model(#[from] ringsam_models::ModelError),
    /// A layer failed during a pass.
    #[error(transparent)]
    Nn(#[from] ringsam_nn::NnError),
    /// A kernel outside any layer (the loss) failed.
    #[error(transparent)]
    Tensor(#[from] ringsam_tensor::TensorError),
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
}
