//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong reading or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not what the format requires.
    #[error("{}: offset {offset}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset where the problem was found.
        offset: u64,
        /// What was expected and what was found, and what to do.
        msg: String,
    },
    /// A dataset's files are missing from the data directory.
    #[error("{}: {msg}", dir.display())]
    Missing {
        /// The directory searched.
        dir: PathBuf,
        /// Which files were expected, and where to get them.
        msg: String,
    },
    /// A configuration value the data pipeline cannot honour.
    #[error("{0}")]
    Config(String),
}

impl DataError {
    /// A format error at `offset` of `path`.
    pub fn format(path: impl Into<PathBuf>, offset: u64, msg: impl Into<String>) -> Self {
        DataError::Format { path: path.into(), offset, msg: msg.into() }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}

/// Reads a whole file of at most `max` bytes, naming it in the error. The size is checked from
/// the file's metadata before anything is allocated or read, and the read itself stops at
/// `max + 1` bytes (a file that grows, or a device that has no size, cannot exceed it either).
pub fn read_file(path: &std::path::Path, max: u64) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let too_big = |len: u64| DataError::Format { path: path.into(), offset: 0, msg: format!("{len} bytes; at most {max} expected here") };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut out).map_err(|e| DataError::io(path, e))?;
    if out.len() as u64 > max {
        return Err(too_big(out.len() as u64));
    }
    Ok(out)
}
