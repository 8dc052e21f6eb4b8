//! The key/value cache: preallocated for the whole context at creation, so decoding a token allocates no cache
//! memory; each step writes its keys and values in place (`slice_assign`) and attends over the filled prefix.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Keys and values of one layer, `[kv_heads, capacity, head_dim]`.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    keys: Tensor<B, 3>,
    values: Tensor<B, 3>,
}

/// The cache of every layer and the number of positions filled.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers of `kv_heads` heads of `head_dim`, holding `capacity` positions.
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize, device: &B::Device) -> Self {
        let zeros = || Tensor::zeros([kv_heads, capacity, head_dim], device);
        Self { layers: (0..layers).map(|_| LayerCache { keys: zeros(), values: zeros() }).collect(), len: 0, capacity }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Forgets everything (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Drops positions from `len` on (e.g. to rewind a chat turn).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Writes `keys`/`values` (`[kv_heads, T, head_dim]`) of `layer` at positions `len..len + T` and returns the
    /// keys and values of positions `0..len + T`. The caller advances `len` with [`KvCache::advance`] after the
    /// last layer.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: Tensor<B, 3>,
        values: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [h, t, d] = keys.dims();
        let (start, end) = (self.len, self.len + t);
        let cache = &mut self.layers[layer];
        cache.keys = cache.keys.clone().slice_assign([0..h, start..end, 0..d], keys);
        cache.values = cache.values.clone().slice_assign([0..h, start..end, 0..d], values);
        (cache.keys.clone().slice([0..h, 0..end, 0..d]), cache.values.clone().slice([0..h, 0..end, 0..d]))
    }

    /// Marks `t` more positions as filled.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
