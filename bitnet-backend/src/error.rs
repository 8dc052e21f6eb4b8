//! Errors of the backend extension.

use thiserror::Error;

/// What building, loading or packing ternary weights can reject.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The compute core rejected shapes, codes or scales.
    #[error(transparent)]
    Kernel(#[from] bitnet_kernels::KernelError),
    /// A tensor's shape does not match what the operation needs.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// What was checked.
        what: &'static str,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A tensor holds another dtype than the operation needs.
    #[error("{what}: expected dtype {expected}, got {got}")]
    DType {
        /// What was checked.
        what: &'static str,
        /// The expected dtype.
        expected: String,
        /// The dtype found.
        got: String,
    },
    /// Reading a tensor back from its device failed.
    #[error("reading {what} from the device: {message}")]
    Read {
        /// Which tensor.
        what: &'static str,
        /// The backend's message.
        message: String,
    },
    /// The module is in the wrong state for the call (e.g. packing an already packed BitLinear).
    #[error("{0}")]
    State(&'static str),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, BackendError>;
