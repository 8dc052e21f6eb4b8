//! The attention half of a block: ternary q/k/v projections sharing one quantization of their input,
//! rotary positions, grouped-query causal attention, an optional sub-norm, and the ternary output projection.
//!
//! ```text
//! q, k, v = BitLinear_q(x), BitLinear_k(x), BitLinear_v(x)
//! q, k = rope(q, k)
//! a = softmax(q k^T / sqrt(d) + causal mask) v          # query head h uses key/value head h / (heads / kv_heads)
//! y = BitLinear_o(attn_sub_norm(a))
//! ```

use super::build::{block_norm, projection, BlockTensor, ParamFactory};
use super::cache::LayerCache;
use super::rope::RopeTables;
use crate::config::BitNetConfig;
use crate::error::Result;
use bitnet_backend::{causal_attention, rms_norm, BitLinear, BitNetBackend};
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

    /// The module with `f` applied to every projection.
    pub(crate) fn map_projections(
        self,
        f: &mut dyn FnMut(BitLinear<B>) -> bitnet_backend::Result<BitLinear<B>>,
    ) -> bitnet_backend::Result<Self> {
        Ok(Self {
            q_proj: f(self.q_proj)?,
            k_proj: f(self.k_proj)?,
            v_proj: f(self.v_proj)?,
            attn_sub_norm: self.attn_sub_norm,
            o_proj: f(self.o_proj)?,
            ..self
        })
    }
}

impl<B: BitNetBackend> Attention<B> {
    /// Attention over `x` (`[batch, T, hidden]`) at positions `start..start + T`: with a cache, the new keys and
    /// values are appended and every cached position is attended to; without, `start` is 0 and the T tokens
    /// attend causally among themselves.
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        cache: Option<(&mut LayerCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        let [q, k, v]: [Tensor<B, 3>; 3] = BitLinear::forward_shared(&[&self.q_proj, &self.k_proj, &self.v_proj], x)
            .try_into()
            .unwrap_or_else(|_| unreachable!("three layers give three outputs"));
        let split = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, d]).swap_dims(1, 2);
        let q = rope.apply(split(q, heads));
        // Keys and values as `[batch * kv_heads, T, d]`, the cache's layout.
        let k = rope.apply(split(k, kv_heads)).reshape([b * kv_heads, t, d]);
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
        let attn = attn.reshape([b, heads, t, d]).swap_dims(1, 2).reshape([b, t, heads * d]);
        let attn = match &self.attn_sub_norm {
            Some(norm) => rms_norm(attn, &norm.gamma.val(), norm.epsilon),
            None => attn,
        };
        self.o_proj.forward(attn)
    }
}
