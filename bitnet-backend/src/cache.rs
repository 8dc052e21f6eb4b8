//! [`CacheWriteBackend`]: the append of a key/value cache, written in place.
//!
//! A decode step adds one position to every layer's cache. burn-flex 0.21's `slice_assign` keeps a second handle
//! to its destination while it writes, so its copy-on-write copies the whole cache on every call: a 2048-position
//! cache made each decoded token copy hundreds of megabytes. Backends whose `slice_assign` behaves like that
//! override [`CacheWriteBackend::cache_write`] to write the new positions into the buffer they own.

use crate::ops::float_tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

/// A burn backend that appends to a preallocated cache tensor.
pub trait CacheWriteBackend: Backend {
    /// Writes `values` (`[H, T, D]`) into `cache` (`[H, C, D]`) at positions `start..start + T` of dimension 1
    /// and returns the cache. The default is burn's `slice_assign`.
    fn cache_write(cache: FloatTensor<Self>, start: usize, values: FloatTensor<Self>) -> FloatTensor<Self> {
        cache_write_slice_assign::<Self>(cache, start, values)
    }
}

/// [`CacheWriteBackend::cache_write`] with burn's `slice_assign` (the default).
pub(crate) fn cache_write_slice_assign<B: Backend>(
    cache: FloatTensor<B>,
    start: usize,
    values: FloatTensor<B>,
) -> FloatTensor<B> {
    let values = float_tensor::<B, 3>(values);
    let [h, t, d] = values.dims();
    float_tensor::<B, 3>(cache).slice_assign([0..h, start..start + t, 0..d], values).into_primitive().tensor()
}

/// Writes `values` (`[H, T, D]`) into `cache` (`[H, C, D]`) at positions `start..start + T` and returns the
/// cache, in place where the backend can (see [`CacheWriteBackend::cache_write`]). Views of the cache that are
/// still alive make the write copy the buffer first (copy-on-write), so drop them before the next write.
///
/// # Panics
/// If the head counts or widths differ, or `start + T` exceeds `C`, naming the shapes.
pub fn cache_write<B: CacheWriteBackend>(cache: Tensor<B, 3>, start: usize, values: Tensor<B, 3>) -> Tensor<B, 3> {
    let ([h, c, d], [hv, t, dv]) = (cache.dims(), values.dims());
    assert!(
        h == hv && d == dv && start.checked_add(t).is_some_and(|end| end <= c),
        "cache_write: values [{hv}, {t}, {dv}] at position {start} do not fit a cache of shape [{h}, {c}, {d}]"
    );
    float_tensor(B::cache_write(cache.into_primitive().tensor(), start, values.into_primitive().tensor()))
}
