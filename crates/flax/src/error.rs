//! What can go wrong reading a Flax checkpoint, each with where.

use std::path::PathBuf;

/// A Flax checkpoint that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FlaxError {
    /// The file, directory or archive could not be read.
    #[error("{path}: {what}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// Doing what.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// Not a checkpoint this reader understands (which file, why).
    #[error("{path}: {why}")]
    Source {
        /// The path given.
        path: PathBuf,
        /// What was expected.
        why: String,
    },
    /// The msgpack stream is malformed at `offset`.
    #[error("msgpack byte {offset}: {why}")]
    Decode {
        /// Byte offset in the checkpoint file (or in an array's payload, see `why`).
        offset: usize,
        /// What was expected there.
        why: String,
    },
    /// A value at `path` is not what a Flax state dict holds there.
    #[error("at {path}: {why}")]
    Tree {
        /// Key path from the root, `/`-joined.
        path: String,
        /// What was expected.
        why: String,
    },
}
