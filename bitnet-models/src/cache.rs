//! The key/value cache: preallocated for the whole context at creation, so decoding a token allocates no cache
//! memory; each step writes its keys and values in place (`slice_assign`) and attends over the filled prefix.

use bitnet_backend::TernaryBackend;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Keys and values of one layer, `[kv_heads, capacity, head_dim]`. The tensors are held in `Option`s so that
/// `append` can move them out, write in place through [`bitnet_backend::cache_write`] (the buffer is not shared
/// then, so a copy-on-write backend does not copy the whole cache) and put them back.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    keys: Option<Tensor<B, 3>>,
    values: Option<Tensor<B, 3>>,
}

/// The cache of every layer and the number of positions filled.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
}

impl<B: TernaryBackend> KvCache<B> {
    /// An empty cache for `layers` layers of `kv_heads` heads of `head_dim`, holding `capacity` positions.
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize, device: &B::Device) -> Self {
        let zeros = || Tensor::zeros([kv_heads, capacity, head_dim], device);
        Self {
            layers: (0..layers).map(|_| LayerCache { keys: Some(zeros()), values: Some(zeros()) }).collect(),
            len: 0,
            capacity,
        }
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
        let write = |slot: &mut Option<Tensor<B, 3>>, new: Tensor<B, 3>| {
            let filled =
                bitnet_backend::cache_write(slot.take().expect("a layer cache always holds its tensors"), start, new);
            let prefix = filled.clone().slice([0..h, 0..end, 0..d]);
            *slot = Some(filled);
            prefix
        };
        (write(&mut cache.keys, keys), write(&mut cache.values, values))
    }

    /// Marks `t` more positions as filled.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
