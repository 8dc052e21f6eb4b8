//! The BitNet b1.58 decoder (DESIGN.md section 2), generic over any [`TernaryBackend`]:
//!
//! ```text
//! x = rms_norm(h, input_layernorm)
//! q, k, v = BitLinear_q(x), BitLinear_k(x), BitLinear_v(x)      # one activation quantization serves all three
//! q, k = rope(q, k);  a = causal_softmax(q k^T / sqrt(d)) v       # GQA
//! h = h + BitLinear_o(rms_norm(a, attn_sub_norm))
//! x = rms_norm(h, post_attention_layernorm)
//! m = act(BitLinear_gate(x)) * BitLinear_up(x)                   # act = relu^2 (2B-4T) or silu
//! h = h + BitLinear_down(rms_norm(m, ffn_sub_norm))
//! logits = rms_norm(h, norm) @ E^T                               # E = embedding (tied) or lm_head
//! ```
//!
//! Activations are f32; the ternary products use the backend's packed op with per-token int8 activations.

use crate::cache::KvCache;
use crate::config::{Activation, BitNetConfig, Family};
use crate::error::{ModelError, Result};
use crate::rope::Rope;
use bitnet_backend::{dense_linear, ternary_linear, ternary_linear_many, TernaryBackend, TernaryWeight};
use burn::tensor::activation::{relu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

/// RMSNorm: `x / sqrt(mean(x^2) + eps) * weight` over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain.
    pub weight: Tensor<B, 1>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalizes each row of `x` (`[T, D]`).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let variance = x.clone().powi_scalar(2).mean_dim(1);
        x * (variance + self.eps).sqrt().recip() * self.weight.clone().unsqueeze()
    }
}

/// The ternary projections and norms of one decoder block.
#[derive(Debug, Clone)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Query projection `[heads * head_dim, H]`.
    pub q_proj: TernaryWeight<B>,
    /// Key projection `[kv_heads * head_dim, H]`.
    pub k_proj: TernaryWeight<B>,
    /// Value projection `[kv_heads * head_dim, H]`.
    pub v_proj: TernaryWeight<B>,
    /// Norm of the attention output (over `heads * head_dim`), absent in LLaMA-style members.
    pub attn_sub_norm: Option<RmsNorm<B>>,
    /// Output projection `[H, H]`.
    pub o_proj: TernaryWeight<B>,
    /// Norm before the FFN.
    pub post_attention_layernorm: RmsNorm<B>,
    /// Gate projection `[I, H]`.
    pub gate_proj: TernaryWeight<B>,
    /// Up projection `[I, H]`.
    pub up_proj: TernaryWeight<B>,
    /// Norm of the FFN hidden state (over `I`), absent in LLaMA-style members.
    pub ffn_sub_norm: Option<RmsNorm<B>>,
    /// Down projection `[H, I]`.
    pub down_proj: TernaryWeight<B>,
    /// The RMSNorms inside each BitLinear (`quantization_config.use_rms_norm`), in the order q, k, v, o, gate,
    /// up, down.
    pub linear_norms: Option<[RmsNorm<B>; 7]>,
}

/// `norm(x)` when the norm exists, else `x`.
fn maybe_norm<B: Backend>(norm: Option<&RmsNorm<B>>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    match norm {
        Some(n) => n.forward(x),
        None => x,
    }
}

/// The role of a block tensor; the formats name them differently ([`BlockTensor::hf_name`],
/// [`BlockTensor::gguf_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTensor {
    /// Norm before attention.
    InputNorm,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention sub-norm.
    AttnSubNorm,
    /// Output projection.
    O,
    /// Norm before the FFN.
    PostAttentionNorm,
    /// Gate projection.
    Gate,
    /// Up projection.
    Up,
    /// FFN sub-norm.
    FfnSubNorm,
    /// Down projection.
    Down,
}

impl BlockTensor {
    /// Every role, in the order of the block's computation.
    pub const ALL: [BlockTensor; 11] = [
        Self::InputNorm,
        Self::Q,
        Self::K,
        Self::V,
        Self::AttnSubNorm,
        Self::O,
        Self::PostAttentionNorm,
        Self::Gate,
        Self::Up,
        Self::FfnSubNorm,
        Self::Down,
    ];

    /// The seven projections, in the order of [`Block::linear_norms`].
    pub const PROJECTIONS: [BlockTensor; 7] = [Self::Q, Self::K, Self::V, Self::O, Self::Gate, Self::Up, Self::Down];

    /// Whether this role exists in `config`'s family (the sub-norms do not in LLaMA-style members).
    pub fn present(self, c: &BitNetConfig) -> bool {
        !matches!(self, Self::AttnSubNorm | Self::FfnSubNorm) || c.family != Family::LlamaBitNet
    }

    /// The Hugging Face name in `config`'s family (1bitLLM names the sub-norms `inner_attn_ln` and
    /// `ffn_layernorm`).
    pub fn hf_name_in(self, c: &BitNetConfig, layer: usize) -> String {
        match (c.family, self) {
            (Family::OneBitLlm, Self::AttnSubNorm) => format!("model.layers.{layer}.self_attn.inner_attn_ln"),
            (Family::OneBitLlm, Self::FfnSubNorm) => format!("model.layers.{layer}.mlp.ffn_layernorm"),
            _ => self.hf_name(layer),
        }
    }

    /// `[rows, cols]` (rows = output features) of a ternary projection; `None` for a norm.
    pub fn ternary_shape(self, c: &BitNetConfig) -> Option<[usize; 2]> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (q_out, kv_out) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        match self {
            Self::Q => Some([q_out, h]),
            Self::K | Self::V => Some([kv_out, h]),
            Self::O => Some([h, q_out]),
            Self::Gate | Self::Up => Some([i, h]),
            Self::Down => Some([h, i]),
            _ => None,
        }
    }

    /// The width of a norm; `None` for a projection.
    pub fn norm_width(self, c: &BitNetConfig) -> Option<usize> {
        match self {
            Self::InputNorm | Self::PostAttentionNorm => Some(c.hidden_size),
            Self::AttnSubNorm => Some(c.num_attention_heads * c.head_dim),
            Self::FfnSubNorm => Some(c.intermediate_size),
            _ => None,
        }
    }

    /// The Hugging Face name of the tensor in `layer` (without the `.weight` suffix).
    pub fn hf_name(self, layer: usize) -> String {
        let name = match self {
            Self::InputNorm => "input_layernorm",
            Self::Q => "self_attn.q_proj",
            Self::K => "self_attn.k_proj",
            Self::V => "self_attn.v_proj",
            Self::AttnSubNorm => "self_attn.attn_sub_norm",
            Self::O => "self_attn.o_proj",
            Self::PostAttentionNorm => "post_attention_layernorm",
            Self::Gate => "mlp.gate_proj",
            Self::Up => "mlp.up_proj",
            Self::FfnSubNorm => "mlp.ffn_sub_norm",
            Self::Down => "mlp.down_proj",
        };
        format!("model.layers.{layer}.{name}")
    }

    /// The GGUF (llama.cpp) name of the tensor in `layer` (without the `.weight` suffix).
    pub fn gguf_name(self, layer: usize) -> String {
        let name = match self {
            Self::InputNorm => "attn_norm",
            Self::Q => "attn_q",
            Self::K => "attn_k",
            Self::V => "attn_v",
            Self::AttnSubNorm => "attn_sub_norm",
            Self::O => "attn_output",
            Self::PostAttentionNorm => "ffn_norm",
            Self::Gate => "ffn_gate",
            Self::Up => "ffn_up",
            Self::FfnSubNorm => "ffn_sub_norm",
            Self::Down => "ffn_down",
        };
        format!("blk.{layer}.{name}")
    }
}

impl<B: Backend> Block<B> {
    /// Builds block `layer` of `config` from a format's readers: `norm(role, width)` and
    /// `ternary(role, rows, cols)` (rows = output features), and `linear_norm(projection, width)` for members
    /// with an RMSNorm inside each BitLinear. The shapes come from the config, here only.
    pub fn load(
        config: &BitNetConfig,
        norm: &mut dyn FnMut(BlockTensor, usize) -> Result<RmsNorm<B>>,
        ternary: &mut dyn FnMut(BlockTensor, usize, usize) -> Result<TernaryWeight<B>>,
        linear_norm: Option<&mut dyn FnMut(BlockTensor, usize) -> Result<RmsNorm<B>>>,
    ) -> Result<Self> {
        let mut n = |role: BlockTensor| norm(role, role.norm_width(config).unwrap_or_default());
        let input_layernorm = n(BlockTensor::InputNorm)?;
        let attn_sub_norm =
            if BlockTensor::AttnSubNorm.present(config) { Some(n(BlockTensor::AttnSubNorm)?) } else { None };
        let post_attention_layernorm = n(BlockTensor::PostAttentionNorm)?;
        let ffn_sub_norm =
            if BlockTensor::FfnSubNorm.present(config) { Some(n(BlockTensor::FfnSubNorm)?) } else { None };
        let linear_norms = match linear_norm {
            Some(linear_norm) => {
                let mut norms = Vec::with_capacity(7);
                for role in BlockTensor::PROJECTIONS {
                    let [_, cols] = role.ternary_shape(config).unwrap_or_default();
                    norms.push(linear_norm(role, cols)?);
                }
                Some(norms.try_into().unwrap_or_else(|_| unreachable!("seven projections")))
            }
            None => None,
        };
        let mut t = |role: BlockTensor| {
            let [rows, cols] = role.ternary_shape(config).unwrap_or_default();
            ternary(role, rows, cols)
        };
        Ok(Self {
            input_layernorm,
            q_proj: t(BlockTensor::Q)?,
            k_proj: t(BlockTensor::K)?,
            v_proj: t(BlockTensor::V)?,
            attn_sub_norm,
            o_proj: t(BlockTensor::O)?,
            post_attention_layernorm,
            gate_proj: t(BlockTensor::Gate)?,
            up_proj: t(BlockTensor::Up)?,
            ffn_sub_norm,
            down_proj: t(BlockTensor::Down)?,
            linear_norms,
        })
    }
}

/// A loaded BitNet b1.58 model.
#[derive(Debug, Clone)]
pub struct BitNetModel<B: TernaryBackend> {
    /// Hyper-parameters.
    pub config: BitNetConfig,
    /// Token embedding `[V, H]`.
    pub embed_tokens: Tensor<B, 2>,
    /// Output projection `[V, H]` when not tied to the embedding.
    pub lm_head: Option<Tensor<B, 2>>,
    /// Decoder blocks.
    pub layers: Vec<Block<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    rope: Rope<B>,
    device: B::Device,
}

impl<B: TernaryBackend> BitNetModel<B> {
    /// Assembles a model from its parts (the loaders call this after checking every shape).
    pub fn new(
        config: BitNetConfig,
        embed_tokens: Tensor<B, 2>,
        lm_head: Option<Tensor<B, 2>>,
        layers: Vec<Block<B>>,
        norm: RmsNorm<B>,
        device: &B::Device,
    ) -> Self {
        let rope = Rope::new(config.head_dim, config.max_position_embeddings, config.rope_theta, device);
        Self { config, embed_tokens, lm_head, layers, norm, rope, device: device.clone() }
    }

    /// An empty KV cache for up to `capacity` positions (at most `max_position_embeddings`).
    pub fn new_cache(&self, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        let capacity = capacity.min(c.max_position_embeddings);
        KvCache::new(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, capacity, &self.device)
    }

    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Bytes of weights one decode step streams: every packed projection (codes and row scales), every norm
    /// gain, and the output head in its stored precision. The embedding lookup reads one row and is not
    /// counted; with a tied head the embedding is counted once, as the head. `bytes / memory read rate` is the
    /// shortest possible time per token (`bitnet bench` reports decode against it).
    pub fn decode_weight_bytes(&self) -> u64 {
        let dense = |t: &Tensor<B, 2>| t.shape().num_elements() as u64 * t.dtype().size() as u64;
        let norm = |n: &RmsNorm<B>| n.weight.shape().num_elements() as u64 * n.weight.dtype().size() as u64;
        let blocks: u64 = self
            .layers
            .iter()
            .map(|b| {
                let projections = [&b.q_proj, &b.k_proj, &b.v_proj, &b.o_proj, &b.gate_proj, &b.up_proj, &b.down_proj];
                let norms = [Some(&b.input_layernorm), Some(&b.post_attention_layernorm)]
                    .into_iter()
                    .chain([b.attn_sub_norm.as_ref(), b.ffn_sub_norm.as_ref()])
                    .flatten()
                    .chain(b.linear_norms.iter().flatten());
                projections.iter().map(|w| w.packed_bytes()).sum::<u64>() + norms.map(norm).sum::<u64>()
            })
            .sum();
        blocks + norm(&self.norm) + dense(self.lm_head.as_ref().unwrap_or(&self.embed_tokens))
    }

    /// Runs `tokens` at positions `cache.len()..`, appends their keys and values to `cache`, and returns the
    /// logits of every token, `[T, V]`. Fails (without touching the cache) on an out-of-range token id or when
    /// the cache cannot hold the tokens.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let h = self.hidden_states(tokens, cache, &mut |_| {})?;
        Ok(self.logits(h))
    }

    /// [`BitNetModel::forward`] that also returns every decoder block's output `[T, H]` (before the final
    /// norm), for per-layer comparisons against a reference implementation.
    pub fn forward_traced(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<(Tensor<B, 2>, Vec<Tensor<B, 2>>)> {
        let mut layers = Vec::with_capacity(self.layers.len());
        let h = self.hidden_states(tokens, cache, &mut |h| layers.push(h.clone()))?;
        Ok((self.logits(h), layers))
    }

    /// Like [`BitNetModel::forward`] but returns only the last token's logits, `[1, V]` (what decoding needs;
    /// skips the output projection of the other tokens).
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let h = self.hidden_states(tokens, cache, &mut |_| {})?;
        let [t, d] = h.dims();
        Ok(self.logits(h.slice([t - 1..t, 0..d])))
    }

    /// The final-normed hidden states of `tokens`; `on_layer` sees each block's output.
    fn hidden_states(
        &self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        on_layer: &mut dyn FnMut(&Tensor<B, 2>),
    ) -> Result<Tensor<B, 2>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(ModelError::Request("no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::Request(format!(
                "token id {bad} is outside the vocabulary (size {})",
                c.vocab_size
            )));
        }
        if cache.len() + tokens.len() > cache.capacity() {
            return Err(ModelError::Request(format!(
                "context full: {} cached + {} new tokens exceed the cache capacity {} (max_position_embeddings {})",
                cache.len(),
                tokens.len(),
                cache.capacity(),
                c.max_position_embeddings
            )));
        }
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [tokens.len()]), &self.device);
        // The embedding may be stored in bf16 (as checkpoints ship it); activations are f32.
        let mut h = self.embed_tokens.clone().select(0, ids).cast(FloatDType::F32);
        let start = cache.len();
        for (i, layer) in self.layers.iter().enumerate() {
            h = self.block(layer, i, h, start, cache);
            on_layer(&h);
        }
        cache.advance(tokens.len());
        Ok(self.norm.forward(h))
    }

    fn logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        dense_linear(h, head)
    }

    fn block(
        &self,
        layer: &Block<B>,
        index: usize,
        h: Tensor<B, 2>,
        start: usize,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 2> {
        let c = &self.config;
        let [t, hidden] = h.dims();
        let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);

        let ln = layer.linear_norms.as_ref();
        let ln_at = |i: usize| ln.map(|n| &n[i]);
        let x = layer.input_layernorm.forward(h.clone());
        let [q, k, v]: [Tensor<B, 2>; 3] = match ln {
            // One activation quantization serves all three projections.
            None => ternary_linear_many(x, &[&layer.q_proj, &layer.k_proj, &layer.v_proj])
                .try_into()
                .unwrap_or_else(|_| unreachable!("three weights give three outputs")),
            // Each BitLinear normalizes (and so quantizes) its own input.
            Some(n) => [
                ternary_linear(n[0].forward(x.clone()), &layer.q_proj),
                ternary_linear(n[1].forward(x.clone()), &layer.k_proj),
                ternary_linear(n[2].forward(x), &layer.v_proj),
            ],
        };
        let q = self.rope.apply(q.reshape([t, heads, d]).swap_dims(0, 1), start);
        let k = self.rope.apply(k.reshape([t, kv_heads, d]).swap_dims(0, 1), start);
        let v = v.reshape([t, kv_heads, d]).swap_dims(0, 1);
        let (keys, values) = cache.append(index, k, v);
        // GQA without copying the cache: query head h uses key/value head h / rep, so the `rep` query heads of
        // a group are stacked as extra rows, `[kv_heads, rep * T, d]`, against that group's keys and values.
        let rep = c.kv_groups();
        let q = q.reshape([kv_heads, rep * t, d]);
        let mut scores = q.matmul(keys.swap_dims(1, 2)) * (1.0 / (d as f64).sqrt());
        if t > 1 {
            scores = scores + self.causal_mask(t, start).repeat_dim(0, rep).unsqueeze::<3>();
        }
        let attn = softmax(scores, 2).matmul(values).reshape([heads, t, d]).swap_dims(0, 1).reshape([t, heads * d]);
        let attn = maybe_norm(ln_at(3), maybe_norm(layer.attn_sub_norm.as_ref(), attn));
        let h = h + ternary_linear(attn, &layer.o_proj);
        debug_assert_eq!(h.dims()[1], hidden);

        let x = layer.post_attention_layernorm.forward(h.clone());
        let [gate, up]: [Tensor<B, 2>; 2] = match ln {
            None => ternary_linear_many(x, &[&layer.gate_proj, &layer.up_proj])
                .try_into()
                .unwrap_or_else(|_| unreachable!("two weights give two outputs")),
            Some(n) => [
                ternary_linear(n[4].forward(x.clone()), &layer.gate_proj),
                ternary_linear(n[5].forward(x), &layer.up_proj),
            ],
        };
        let gate = match c.activation {
            Activation::Relu2 => relu(gate).powi_scalar(2),
            Activation::Silu => silu(gate),
        };
        let m = maybe_norm(ln_at(6), maybe_norm(layer.ffn_sub_norm.as_ref(), gate * up));
        h + ternary_linear(m, &layer.down_proj)
    }

    /// `[T, start + T]` additive mask: query `i` (position `start + i`) sees keys `0..=start + i`.
    fn causal_mask(&self, t: usize, start: usize) -> Tensor<B, 2> {
        let len = start + t;
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..len).map(move |j| if j > start + i { f32::NEG_INFINITY } else { 0.0 })).collect();
        Tensor::from_data(TensorData::new(mask, [t, len]), &self.device)
    }
}
