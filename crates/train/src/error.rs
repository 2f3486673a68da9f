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
    /// A checkpoint could not be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// `--init_from` / `--efficientnet_checkpoint_path` names weights that cannot start this
    /// model (unreadable, or names and shapes that do not fit): the user's input, not a fault.
    #[error("initial weights: {0}")]
    InitFrom(String),
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] ringsam_data::DataError),
    /// An output file could not be written.
    #[error("{path}: {source}")]
    Output {
        /// The file or directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Training stopped on a signal (a checkpoint was written first).
    #[error("interrupted (checkpoint written at step {step})")]
    Interrupted {
        /// The step checkpointed.
        step: u64,
    },
    /// Stopped by a signal before training started (nothing to checkpoint yet; resumable).
    #[error("stopped by a signal {0}, before any step (nothing to checkpoint)")]
    Stopped(String),
    /// An all-reduce with the other replicas failed (a peer lost, stalled or misbehaving).
    #[error("ring: {0}")]
    Ring(String),
    /// A newer membership generation leads the run: this worker's generation is over, and it must
    /// not write (it rejoins instead).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The replicas' parameters are no longer identical.
    #[error("replicas diverged: {0}")]
    Diverged(String),
    /// A configuration value is out of range, or settings contradict each other or the data: the
    /// user must change a flag (exit code 2; docs/ARCHITECTURE.md, "Exit codes").
    #[error("{0}")]
    Config(String),
    /// Training produced a non-finite value: the run cannot go on from this state.
    #[error("step {step}: {what} (lower --learning_rate, or set --gradient_clipping)")]
    NonFinite {
        /// The step that produced it.
        step: u64,
        /// Which values were non-finite.
        what: String,
    },
    /// Something failed at run time that no flag caused (a loader thread, an unexpected shape).
    #[error("{0}")]
    Runtime(String),
}
