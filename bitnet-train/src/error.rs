//! Errors of the training crate.

use thiserror::Error;

/// A training, data or export error, with a one-line message.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// Bad or insufficient data.
    #[error("{0}")]
    Data(String),
    /// File system failure.
    #[error("{0}")]
    Io(String),
    /// Export failure.
    #[error("export: {0}")]
    Export(String),
    /// From the model crate.
    #[error(transparent)]
    Model(#[from] bitnet_models::ModelError),
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
