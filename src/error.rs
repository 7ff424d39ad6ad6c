//! The library's error type. Every message names the file, layer or setting at fault. Settings
//! are named by their path in the settings JSON ([`crate::settings`]: `size`,
//! `optimizer.lbfgs.history`, `styles[1].blend`...), never by a command-line flag: a front end
//! maps [`Error::Setting`]'s field (and [`Error::Memory`]'s advice) to its own controls, as the
//! CLI maps them to flags. The library never exits the process.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in impasto.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input image that cannot be used (missing, unreadable, not an image, truncated, too large).
    #[error("{}: {message}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A weights file that cannot be used (unknown format, corrupt, wrong shapes).
    #[error("{}: {message}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The default weights could not be fetched or installed.
    #[error("{0}")]
    Fetch(String),
    /// An output path that cannot be written.
    #[error("{}: {message}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A settings file (JSON, or an image's embedded settings) that cannot be used; the message
    /// names the field at fault.
    #[error("{}: {message}", path.display())]
    SettingsFile {
        /// The settings file (or the image carrying them).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A bad setting: `field` is its path in the settings (`loss.style_weight`, `styles[0].blend`)
    /// and `message` follows it ("must be a finite number >= 0, got -1").
    #[error("{field} {message}")]
    Setting {
        /// The setting's path.
        field: String,
        /// What is wrong with its value.
        message: String,
    },
    /// A problem with no single setting at fault (an unknown layer name, no layers at all).
    #[error("{0}")]
    Config(String),
    /// The run would not fit in memory: `message` says what it needs and what there is, `lower`
    /// names the settings that would make it fit (as [`Error::Setting`]'s fields).
    #[error("{message}; lower {}", lower.join(" or "))]
    Memory {
        /// What the run needs and what there is.
        message: String,
        /// The settings that would make it fit.
        lower: Vec<String>,
    },
    /// The GPU could not be used (no adapter, a device error, a kernel that does not compile).
    #[error("GPU: {0}")]
    Gpu(String),
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
    /// An [`Error::Setting`] for `field`.
    pub fn setting(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Setting { field: field.into(), message: message.into() }
    }
}
