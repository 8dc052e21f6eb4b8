//! The one error type of the crate.

use thiserror::Error;

/// Everything the safe API of `bitnet-kernels` can reject.
///
/// Every public function that takes sizes or buffers from a caller validates them and returns one of
/// these instead of panicking; the unsafe SIMD code only ever runs on inputs that passed these checks.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    /// Weights of one scale group that carry different scales, which a coarser layout cannot store.
    #[error("row {row}: the weights of a {group}-weight group carry different scales ({first} vs {other})")]
    NonUniformScales {
        /// The row.
        row: usize,
        /// The group size asked for.
        group: usize,
        /// The group's first scale.
        first: f32,
        /// A different scale in the same group.
        other: f32,
    },
    /// Two sizes that must agree do not.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// What was being checked (e.g. "activation width").
        what: &'static str,
        /// The size the operation needs.
        expected: usize,
        /// The size that was given.
        got: usize,
    },
    /// A buffer is shorter than its shape requires.
    #[error("buffer too short for {what}: need {needed} elements, got {got}")]
    BufferTooShort {
        /// Which buffer.
        what: &'static str,
        /// How many elements the shape requires.
        needed: usize,
        /// How many were given.
        got: usize,
    },
    /// A dimension violates a format's block-size rule.
    #[error("{format}: {what} = {got} must be a multiple of {multiple}")]
    NotAMultiple {
        /// The format or operation.
        format: &'static str,
        /// Which dimension.
        what: &'static str,
        /// The size that was given.
        got: usize,
        /// The block size it must be a multiple of.
        multiple: usize,
    },
    /// A 2-bit ternary code outside {0, 1, 2} (code 3 is unused by every format).
    #[error("invalid ternary code {code} at element {index} (codes are 0, 1, 2 for -1, 0, +1)")]
    InvalidCode {
        /// The offending code.
        code: u8,
        /// Its flat index.
        index: usize,
    },
    /// A scale that is NaN or infinite.
    #[error("{what} is not finite: {value}")]
    NonFiniteScale {
        /// Which scale.
        what: &'static str,
        /// The value found.
        value: f32,
    },
    /// A dimension beyond what the kernels accumulate exactly.
    #[error("{what} = {got} exceeds the supported maximum {max}")]
    TooLarge {
        /// Which dimension.
        what: &'static str,
        /// The size that was given.
        got: usize,
        /// The largest supported size.
        max: usize,
    },
    /// Blocks of one format handed to an operation on another.
    #[error("{what}: {got} blocks where {expected} blocks are expected")]
    WrongBlockFormat {
        /// Which operation.
        what: &'static str,
        /// The format it takes.
        expected: &'static str,
        /// The format it got.
        got: &'static str,
    },
    /// A ternary layout asked for something it does not have: group scales, or a kernel that cannot read it.
    #[error("the {layout} ternary layout does not support {what}")]
    LayoutUnsupported {
        /// The layout's name.
        layout: &'static str,
        /// What was asked of it.
        what: &'static str,
    },
    /// An unknown ternary layout name (`BITNET_TERNARY_LAYOUT`).
    #[error("unknown ternary layout '{0}': expected 2bit or trits5")]
    UnknownLayout(String),
    /// A kernel was requested that this CPU (or this build) cannot run.
    #[error("kernel '{0}' is not available on this CPU")]
    KernelUnavailable(&'static str),
    /// An unknown kernel name (e.g. in `BITNET_KERNEL`).
    #[error("unknown kernel '{0}': expected one of scalar, avx2, avx512, avx512bw, avx512vnni, neon, neon-plain, neon-dotprod")]
    UnknownKernel(String),
    /// A thread pool could not be created.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Checks that `got >= needed`, naming the buffer in the error.
pub(crate) fn ensure_len(what: &'static str, needed: usize, got: usize) -> Result<()> {
    if got < needed {
        return Err(KernelError::BufferTooShort { what, needed, got });
    }
    Ok(())
}

/// Checks that `got == expected`, naming the dimension in the error.
pub(crate) fn ensure_eq(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if got != expected {
        return Err(KernelError::ShapeMismatch { what, expected, got });
    }
    Ok(())
}

/// Checks that `got` is a multiple of `multiple`.
pub(crate) fn ensure_multiple(format: &'static str, what: &'static str, got: usize, multiple: usize) -> Result<()> {
    if !got.is_multiple_of(multiple) {
        return Err(KernelError::NotAMultiple { format, what, got, multiple });
    }
    Ok(())
}

/// `rows * cols` without overflow.
pub(crate) fn checked_elems(what: &'static str, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or(KernelError::BufferTooShort { what, needed: usize::MAX, got: 0 })
}
