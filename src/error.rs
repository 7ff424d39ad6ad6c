//! The library's error type. Every message names the file, layer or option at fault and, where
//! there is one, the flag or command that fixes it. The library never exits the process.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in impasto.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input image that cannot be used (missing, unreadable, not an image, truncated, too large).
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A weights file that cannot be used (unknown format, corrupt, wrong shapes).
    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    /// The default weights could not be fetched or installed.
    #[error("{0}")]
    Fetch(String),
    /// An output path that cannot be written.
    #[error("{}: {message}", path.display())]
    Output { path: PathBuf, message: String },
    /// A bad option value (layer name, weight, size...).
    #[error("{0}")]
    Config(String),
    /// The run would not fit in memory.
    #[error("{0}")]
    Memory(String),
}

/// `Result` with impasto's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn image(path: &Path, message: impl Into<String>) -> Self {
        Error::Image { path: path.to_path_buf(), message: message.into() }
    }
    pub(crate) fn weights(path: &Path, message: impl Into<String>) -> Self {
        Error::Weights { path: path.to_path_buf(), message: message.into() }
    }
    pub(crate) fn output(path: &Path, message: impl Into<String>) -> Self {
        Error::Output { path: path.to_path_buf(), message: message.into() }
    }
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }
}
