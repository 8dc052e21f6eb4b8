//! The attention half of a block: ternary q/k/v projections sharing one quantization of their input,
//! rotary positions, grouped-query causal attention, an optional sub-norm, and the ternary output projection.
//!
//! ```text
//! q, k, v = BitLinear_q(x), BitLinear_k(x), BitLinear_v(x)
//! q, k = q_norm(q), k_norm(k)                           # Qwen3: RMSNorm over each head's head_dim values
//! q, k = rope(q, k)
//! a = softmax(q k^T / sqrt(d) + causal mask) v          # query head h uses key/value head h / (heads / kv_heads)
//! y = BitLinear_o(attn_sub_norm(a))
//! ```

use super::build::{block_norm, projection, BlockTensor, ParamFactory};
use super::cache::LayerCache;
use super::rope::RopeTables;
use crate::config::BitNetConfig;
use crate::error::Result;
use bitnet_backend::{causal_attention, rms_norm, swap_tokens_and_heads, BitLinear, BitNetBackend};
use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The attention module of a block.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    q_proj: BitLinear<B>,
    k_proj: BitLinear<B>,
    v_proj: BitLinear<B>,
    q_norm: Option<RmsNorm<B>>,
    k_norm: Option<RmsNorm<B>>,
    attn_sub_norm: Option<RmsNorm<B>>,
    o_proj: BitLinear<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> Attention<B> {
    pub(crate) fn build(config: &BitNetConfig, layer: usize, factory: &mut dyn ParamFactory<B>) -> Result<Self> {
        Ok(Self {
            q_proj: projection(config, layer, BlockTensor::Q, factory)?,
            k_proj: projection(config, layer, BlockTensor::K, factory)?,
            v_proj: projection(config, layer, BlockTensor::V, factory)?,
            q_norm: block_norm(config, layer, BlockTensor::QNorm, factory)?,
            k_norm: block_norm(config, layer, BlockTensor::KNorm, factory)?,
            attn_sub_norm: block_norm(config, layer, BlockTensor::AttnSubNorm, factory)?,
            o_proj: projection(config, layer, BlockTensor::O, factory)?,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        })
    }

    /// The four projections with their roles.
    pub fn projections(&self) -> [(BlockTensor, &BitLinear<B>); 4] {
        [
            (BlockTensor::Q, &self.q_proj),
            (BlockTensor::K, &self.k_proj),
            (BlockTensor::V, &self.v_proj),
            (BlockTensor::O, &self.o_proj),
        ]
    }

    /// The sub-norm before the output projection, if the family has one.
    pub fn sub_norm(&self) -> Option<&RmsNorm<B>> {
        self.attn_sub_norm.as_ref()
    }

    /// The per-head query and key norms, if the family has them (Qwen3).
    pub fn qk_norms(&self) -> Option<(&RmsNorm<B>, &RmsNorm<B>)> {
        self.q_norm.as_ref().zip(self.k_norm.as_ref())
    }

    /// The module with `f` applied to every projection.
    pub(crate) fn map_projections(
        self,
        f: &mut dyn FnMut(BitLinear<B>) -> bitnet_backend::Result<BitLinear<B>>,
    ) -> bitnet_backend::Result<Self> {
        Ok(Self {
            q_proj: f(self.q_proj)?,
            k_proj: f(self.k_proj)?,
            v_proj: f(self.v_proj)?,
            q_norm: self.q_norm,
            k_norm: self.k_norm,
            attn_sub_norm: self.attn_sub_norm,
            o_proj: f(self.o_proj)?,
            ..self
        })
    }
}

/// Where the rows of an attention input sit in their sequences, and the caches they continue.
pub(crate) enum Positions<'a, 'c, B: Backend> {
    /// `[batch, T, hidden]`: every sequence at positions `start..start + T`, with one cache shared by the batch
    /// (`start` = its length), or without a cache (`start` = 0, the training pass).
    Uniform { rope: &'a RopeTables<B>, cache: Option<(&'c mut LayerCache<B>, usize)> },
    /// `[1, N, hidden]`: the rows of several sequences one after another (a continuous-batching step), each with
    /// its own positions and cache.
    Ragged(&'a mut [Segment<'c, B>]),
}

/// One sequence's rows of a ragged input.
pub(crate) struct Segment<'c, B: Backend> {
    /// Its rows of the input.
    pub rows: std::ops::Range<usize>,
    /// The rotary tables of its positions `start..start + rows.len()`.
    pub rope: &'c RopeTables<B>,
    /// Its cache of this layer.
    pub cache: &'c mut LayerCache<B>,
    /// Positions its cache held before this pass.
    pub start: usize,
}

impl<B: BitNetBackend> Attention<B> {
    /// Attention over `x` at the positions `positions` gives: with a cache, the new keys and values are appended
    /// and every cached position is attended to; without, the T tokens attend causally among themselves. The
    /// projections run once over every row; the attention itself runs per sequence.
    pub(crate) fn forward(&self, x: Tensor<B, 3>, positions: Positions<'_, '_, B>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let [q, k, v]: [Tensor<B, 3>; 3] = BitLinear::forward_shared(&[&self.q_proj, &self.k_proj, &self.v_proj], x)
            .try_into()
            .unwrap_or_else(|_| unreachable!("three layers give three outputs"));
        let attn = match positions {
            Positions::Uniform { rope, cache } => self.attend(q, k, v, rope, cache),
            Positions::Ragged(segments) => {
                let width = |y: &Tensor<B, 3>| y.dims()[2];
                let (wq, wkv) = (width(&q), width(&k));
                let parts = segments
                    .iter_mut()
                    .map(|s| {
                        let rows = |y: &Tensor<B, 3>, w: usize| y.clone().slice([0..1, s.rows.clone(), 0..w]);
                        self.attend(rows(&q, wq), rows(&k, wkv), rows(&v, wkv), s.rope, Some((&mut *s.cache, s.start)))
                    })
                    .collect();
                Tensor::cat(parts, 1)
            }
        };
        debug_assert_eq!(attn.dims()[..2], [b, t]);
        let attn = match &self.attn_sub_norm {
            Some(norm) => rms_norm(attn, &norm.gamma.val(), norm.epsilon),
            None => attn,
        };
        self.o_proj.forward(attn)
    }

    /// Rotary positions and causal attention of projected `q`, `k`, `v` (`[batch, T, heads * head_dim]`) at
    /// positions `start..start + T`, returning `[batch, T, heads * head_dim]`.
    fn attend(
        &self,
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        rope: &RopeTables<B>,
        cache: Option<(&mut LayerCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = q.dims();
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        // `[batch, T, n * d]` -> `[batch, n, T, d]`, laid out head-major (one pass of row copies, so the reshapes
        // below and their gradients are views).
        let split = |y: Tensor<B, 3>, n: usize| swap_tokens_and_heads(y.reshape([b, t, n, d]));
        let norm = |y: Tensor<B, 4>, norm: &Option<RmsNorm<B>>| match norm {
            Some(norm) => rms_norm(y, &norm.gamma.val(), norm.epsilon),
            None => y,
        };
        let q = rope.apply(norm(split(q, heads), &self.q_norm));
        // Keys and values as `[batch * kv_heads, T, d]`, the cache's layout.
        let k = rope.apply(norm(split(k, kv_heads), &self.k_norm)).reshape([b * kv_heads, t, d]);
        let v = split(v, kv_heads).reshape([b * kv_heads, t, d]);
        let (keys, values, start) = match cache {
            Some((cache, start)) => {
                let (keys, values) = cache.append(start, k, v);
                (keys, values, start)
            }
            None => (k, v, 0),
        };
        // GQA without copying keys: query head h uses key/value head h / rep, so the `rep` query heads of a group
        // are stacked as extra rows, `[batch * kv_heads, rep * T, d]`, against that group's keys and values (the
        // cache's strided prefix views, read in place).
        let rep = heads / kv_heads;
        let q = q.reshape([b * kv_heads, rep * t, d]);
        let attn = causal_attention(q, keys, values, t, start, 1.0 / (d as f64).sqrt());
        swap_tokens_and_heads(attn.reshape([b, heads, t, d])).reshape([b, t, heads * d])
    }
}
