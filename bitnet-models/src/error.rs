//! Errors of model configuration and loading.

use std::path::PathBuf;
use thiserror::Error;

/// What loading or running a model can reject. Every variant names the file and the problem, so the CLI prints
/// it as a one-line cause.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A config file is not valid JSON or misses a field.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A weights file is malformed (truncated, bad header, offsets past the end, ...).
    #[error("{}: {message}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{}: missing tensor '{name}'", path.display())]
    MissingTensor {
        /// The file or directory.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor has the wrong shape or dtype.
    #[error("{}: tensor '{name}': {message}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The backend rejected packed weights.
    #[error(transparent)]
    Backend(#[from] bitnet_backend::BackendError),
    /// The kernels rejected packed weights.
    #[error(transparent)]
    Kernel(#[from] bitnet_kernels::KernelError),
    /// A request the model cannot serve (token id out of range, context full, ...).
    #[error("{0}")]
    Request(String),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, ModelError>;
