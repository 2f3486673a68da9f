//! The one error type of this crate.

use ringsam_tensor::TensorError;

/// What went wrong in a layer.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// The layer was given a tensor of the wrong shape.
    #[error("layer {layer}: expected input of shape {expected}, got {got:?}")]
    Shape {
        /// The layer's name (its Flax path).
        layer: String,
        /// What the layer accepts, in words (e.g. "(16, N, H, W)").
        expected: String,
        /// The shape it got.
        got: Vec<usize>,
    },
    /// A kernel rejected its arguments.
    #[error("layer {layer}: {source}")]
    Kernel {
        /// The layer's name.
        layer: String,
        /// The kernel's error.
        #[source]
        source: TensorError,
    },
    /// `backward` was called without a matching `forward`.
    #[error("layer {layer}: backward called before forward")]
    NoForward {
        /// The layer's name.
        layer: String,
    },
    /// A parameter buffer does not have the arena's layout.
    #[error("parameter buffer has {got} values, the layout needs {expected}")]
    ParamLen {
        /// Layout total.
        expected: usize,
        /// Buffer length.
        got: usize,
    },
    /// A name is not in the layout.
    #[error("no parameter or state named {0:?}")]
    UnknownName(String),
}

/// Attaches the layer name to a kernel error.
pub(crate) trait KernelContext<T> {
    fn in_layer(self, layer: &str) -> Result<T, NnError>;
}

impl<T> KernelContext<T> for Result<T, TensorError> {
    fn in_layer(self, layer: &str) -> Result<T, NnError> {
        self.map_err(|source| NnError::Kernel { layer: layer.to_string(), source })
    }
}
