//! The key/value cache: preallocated for the requested context at creation, so decoding a token allocates no
//! cache memory; each step writes its keys and values in place ([`bitnet_backend::cache_write`]) and attends
//! over the filled prefix. Every sequence of a batch shares the cache's length (they advance together).

use bitnet_backend::CacheWriteBackend;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Keys and values of one layer, `[batch * kv_heads, capacity, head_dim]`. The tensors are held in `Option`s
/// so that an append can move them out, write in place (the buffer is not shared then, so a copy-on-write
/// backend does not copy the whole cache) and put them back.
#[derive(Debug, Clone)]
pub(crate) struct LayerCache<B: Backend> {
    keys: Option<Tensor<B, 3>>,
    values: Option<Tensor<B, 3>>,
}

impl<B: CacheWriteBackend> LayerCache<B> {
    /// Writes `keys`/`values` (`[batch * kv_heads, T, head_dim]`) at positions `start..start + T` and returns
    /// views of the keys and values of positions `0..start + T`, `[batch * kv_heads, start + T, head_dim]` (3-D
    /// strided views that burn's matmul reads in place; drop them before the next append).
    pub fn append(&mut self, start: usize, keys: Tensor<B, 3>, values: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [bh, t, d] = keys.dims();
        let end = start + t;
        let write = |slot: &mut Option<Tensor<B, 3>>, new: Tensor<B, 3>| {
            let cache = slot.take().expect("a layer cache always holds its tensors");
            let filled = bitnet_backend::cache_write(cache, start, new);
            let prefix = filled.clone().slice([0..bh, 0..end, 0..d]);
            *slot = Some(filled);
            prefix
        };
        (write(&mut self.keys, keys), write(&mut self.values, values))
    }
}

/// The cache of every layer and the number of positions filled.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
    batch: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers, `batch` sequences of `kv_heads` heads of `head_dim`, holding
    /// `capacity` positions.
    pub(crate) fn new(
        layers: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &B::Device,
    ) -> Self {
        let zeros = || Tensor::zeros([batch * kv_heads, capacity, head_dim], device);
        Self {
            layers: (0..layers).map(|_| LayerCache { keys: Some(zeros()), values: Some(zeros()) }).collect(),
            len: 0,
            capacity,
            batch,
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
    /// Sequences the cache holds.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Forgets everything (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Drops positions from `len` on (e.g. to rewind a chat turn).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes of keys and values one position holds over all layers and sequences: what attention reads per
    /// position each decode step.
    pub fn bytes_per_position(&self) -> u64 {
        let bytes = |t: &Option<Tensor<B, 3>>| {
            t.as_ref().map_or(0, |t| {
                let [rows, _, width] = t.dims();
                (rows * width) as u64 * t.dtype().size() as u64
            })
        };
        self.layers.iter().map(|l| bytes(&l.keys) + bytes(&l.values)).sum()
    }

    /// The cache of layer `layer`.
    pub(crate) fn layer(&mut self, layer: usize) -> &mut LayerCache<B> {
        &mut self.layers[layer]
    }

    /// Marks `t` more positions as filled.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
