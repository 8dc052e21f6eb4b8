//! [`BitNetBackend`]: every op a BitNet model runs, as one bound.

use crate::cache::CacheWriteBackend;
use crate::dense::DenseLinearBackend;
use crate::ops::TernaryBackend;

/// A backend that runs a whole BitNet model: the ternary ops ([`TernaryBackend`]), the dense head in its stored
/// precision ([`DenseLinearBackend`]), the in-place cache append ([`CacheWriteBackend`]) and the block's other
/// ops ([`crate::TransformerBackend`], implied by [`TernaryBackend`]). Implemented for every backend that implements
/// the three.
pub trait BitNetBackend: TernaryBackend + DenseLinearBackend + CacheWriteBackend {}

impl<B: TernaryBackend + DenseLinearBackend + CacheWriteBackend> BitNetBackend for B {}
