//! The one error type of this crate.

/// What went wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The name is not in the registry.
    #[error("unknown model {name:?} (known: {known}; `ringsam models` lists them)")]
    Unknown {
        /// As given.
        name: String,
        /// Comma-separated registered names.
        known: String,
    },
    /// The configuration cannot build this model.
    #[error("model {name}: {why}")]
    Config {
        /// The model.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A layer failed.
    #[error(transparent)]
    Nn(#[from] ringsam_nn::NnError),
}
