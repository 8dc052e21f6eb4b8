//! [`BitNetModel`]: the BitNet b1.58 decoder, one burn module for training (latent `BitLinear`s under
//! `Autodiff`), inference (packed `BitLinear`s) and export.
//!
//! ```text
//! h = E[tokens]                                       # E = token embedding, [vocab, hidden]
//! h = block_l(h) for each layer                       # see Block
//! logits = rms_norm(h, norm) @ W^T                    # W = E (tied) or lm_head
//! ```
//! The embedding and head are dense parameters, kept in the checkpoint's precision (f32, bf16 or f16) and
//! multiplied through [`bitnet_backend::dense_linear`]; activations are f32. Inputs are `[batch, T]` token ids;
//! with a [`KvCache`] every sequence of the batch continues from the cache's length.

use super::attention::{Positions, Segment};
use super::block::Block;
use super::build::{ParamFactory, TensorId};
use super::cache::KvCache;
use super::rope::RopeTables;
use super::token_matrix::{HeadFormat, TokenMatrix};
use crate::config::BitNetConfig;
use crate::error::{ModelError, Result};
use bitnet_backend::kernels::TernaryLayout;
use bitnet_backend::{rms_norm, BitLinear, BitNetBackend};
use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

/// A BitNet b1.58 model (see the module docs).
#[derive(Module, Debug)]
pub struct BitNetModel<B: Backend> {
    embed_tokens: TokenMatrix<B>,
    layers: Vec<Block<B>>,
    norm: RmsNorm<B>,
    /// The output head of an untied model (a tied model multiplies by its embedding).
    lm_head: Option<TokenMatrix<B>>,
    #[module(skip)]
    config: BitNetConfig,
}

/// A parameter of a model, by kind (what the writers need to store it).
#[derive(Debug)]
pub enum ModelTensor<'a, B: Backend> {
    /// A token matrix (embedding, head) in its format.
    Matrix(&'a TokenMatrix<B>),
    /// An RMSNorm's gains.
    Norm(&'a RmsNorm<B>),
    /// A ternary projection.
    Projection(&'a BitLinear<B>),
}

impl<B: Backend> BitNetModel<B> {
    /// Builds the module tree of `config`, asking `factory` for every parameter (the only place the model's
    /// structure is spelled out; see [`super::build`]).
    pub(crate) fn build(config: &BitNetConfig, factory: &mut dyn ParamFactory<B>) -> Result<Self> {
        config.check().map_err(|message| ModelError::Request(format!("invalid configuration: {message}")))?;
        let (v, h) = (config.vocab_size, config.hidden_size);
        let embed_tokens = factory.matrix(TensorId::Embedding, v, h)?;
        let layers =
            (0..config.num_hidden_layers).map(|l| Block::build(config, l, factory)).collect::<Result<Vec<_>>>()?;
        let norm = factory.norm(TensorId::FinalNorm, h, config.rms_norm_eps)?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(factory.matrix(TensorId::Head, v, h)?) };
        Ok(Self { embed_tokens, layers, norm, lm_head, config: config.clone() })
    }

    /// The model's configuration.
    pub fn config(&self) -> &BitNetConfig {
        &self.config
    }

    /// The decoder blocks.
    pub fn layers(&self) -> &[Block<B>] {
        &self.layers
    }

    /// The token embedding `[vocab, hidden]` (also the output head of a tied model).
    pub fn embedding(&self) -> &TokenMatrix<B> {
        &self.embed_tokens
    }

    /// The output head: the untied head, or the embedding of a tied model.
    pub fn head(&self) -> &TokenMatrix<B> {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// The model with its output head in `format`. A tied model converts its one matrix, which the embedding
    /// lookup then reads too (as llama.cpp does with a Q6_K `token_embd`); an untied model converts its head.
    pub fn with_head(self, format: HeadFormat) -> Result<Self>
    where
        B: BitNetBackend,
    {
        match self.lm_head {
            None => Ok(Self { embed_tokens: self.embed_tokens.convert(format)?, ..self }),
            Some(head) => Ok(Self { lm_head: Some(head.convert(format)?), ..self }),
        }
    }

    /// The final norm.
    pub fn final_norm(&self) -> &RmsNorm<B> {
        &self.norm
    }

    /// Every parameter with its id, in the model's order: embedding, blocks (norms, projection input norms,
    /// projections), final norm, untied head.
    pub fn tensors(&self) -> Vec<(TensorId, ModelTensor<'_, B>)> {
        let mut out = vec![(TensorId::Embedding, ModelTensor::Matrix(&self.embed_tokens))];
        for (layer, block) in self.layers.iter().enumerate() {
            for (tensor, norm) in block.norms() {
                out.push((TensorId::Block { layer, tensor }, ModelTensor::Norm(norm)));
            }
            for (tensor, proj) in block.projections() {
                if let Some(norm) = proj.input_norm() {
                    out.push((TensorId::ProjectionNorm { layer, projection: tensor }, ModelTensor::Norm(norm)));
                }
                out.push((TensorId::Block { layer, tensor }, ModelTensor::Projection(proj)));
            }
        }
        out.push((TensorId::FinalNorm, ModelTensor::Norm(&self.norm)));
        if let Some(head) = &self.lm_head {
            out.push((TensorId::Head, ModelTensor::Matrix(head)));
        }
        out
    }

    /// Whether every projection holds packed ternary weights.
    pub fn is_packed(&self) -> bool {
        self.layers.iter().all(|b| b.projections().iter().all(|(_, p)| p.is_packed()))
    }

    fn map_projections(self, mut f: impl FnMut(BitLinear<B>) -> bitnet_backend::Result<BitLinear<B>>) -> Result<Self> {
        let layers =
            self.layers.into_iter().map(|b| b.map_projections(&mut f)).collect::<std::result::Result<_, _>>()?;
        Ok(Self { layers, ..self })
    }

    /// The inference model: every projection quantized (absmean, per tensor) and packed; packed ones are kept.
    pub fn pack(self) -> Result<Self> {
        self.map_projections(BitLinear::pack)
    }

    /// The model with the fake-quantization warm-up factor `λ` of every latent projection set (1 = ternary,
    /// 0 = full precision).
    pub fn with_lambda(self, lambda: f32) -> Self {
        self.map_projections(|p| Ok(p.with_lambda(lambda))).expect("setting λ cannot fail")
    }

    /// Bytes of weights one decode step streams: every projection (packed codes and row scales, or the latent
    /// weight), every norm gain, and the output head in its format. The embedding lookup reads one row
    /// and is not counted; with a tied head the embedding is counted once, as the head. `bytes / memory read
    /// rate` is the shortest possible time per token (`bitnet bench` reports decode against it).
    pub fn decode_weight_bytes(&self) -> u64 {
        let bytes = |shape: burn::tensor::Shape, dtype: DType| shape.num_elements() as u64 * dtype.size() as u64;
        let norm = |n: &RmsNorm<B>| {
            let g = n.gamma.val();
            bytes(g.shape(), g.dtype())
        };
        let projection = |p: &BitLinear<B>| -> u64 {
            let weights = match (p.packed_weight(), p.latent_weight()) {
                (Some(Ok(w)), _) => w.packed_bytes(),
                (_, Some(w)) => {
                    let w = w.val();
                    bytes(w.shape(), w.dtype())
                }
                _ => 0,
            };
            weights + p.input_norm().map_or(0, norm)
        };
        let blocks: u64 = self
            .layers
            .iter()
            .map(|b| {
                b.norms().iter().map(|(_, n)| norm(n)).sum::<u64>()
                    + b.projections().iter().map(|(_, p)| projection(p)).sum::<u64>()
            })
            .sum();
        blocks + norm(&self.norm) + self.head().bytes()
    }

    /// The layouts of the packed ternary projections, each once, in the order the layers first use them: one for
    /// a model a backend packed, two where matrices with group scales stayed 2-bit or a record mixed them, none
    /// for a latent model.
    pub fn ternary_layouts(&self) -> Vec<TernaryLayout> {
        let mut layouts = Vec::new();
        for block in &self.layers {
            for (_, projection) in block.projections() {
                if let Some(Ok(weight)) = projection.packed_weight() {
                    if !layouts.contains(&weight.layout()) {
                        layouts.push(weight.layout());
                    }
                }
            }
        }
        layouts
    }
}

impl<B: BitNetBackend> BitNetModel<B> {
    /// The device the model lives on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.device()
    }

    /// An empty KV cache for `batch` sequences of up to `capacity` positions (at most `max_position_embeddings`).
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>> {
        let c = &self.config;
        if batch == 0 || capacity == 0 {
            return Err(ModelError::Request(format!(
                "a cache of {batch} sequences x {capacity} positions holds nothing"
            )));
        }
        if capacity > c.max_position_embeddings {
            return Err(ModelError::Request(format!(
                "a context of {capacity} positions exceeds the model's max_position_embeddings {}",
                c.max_position_embeddings
            )));
        }
        Ok(KvCache::new(c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, capacity, &self.device()))
    }

    /// Logits `[batch, T, vocab]` of `tokens` (`[batch, T]`) from an empty context, every position (the training
    /// forward pass: no cache, causal attention among the T tokens).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let h = self.hidden_states(tokens, None, &mut |_| {});
        self.logits(h)
    }

    /// Runs `batch` (sequences of equal length) at positions `cache.len()..`, appends their keys and values, and
    /// returns the logits of every token, `[batch, T, vocab]`. Fails, without touching the cache, on an empty or
    /// ragged batch, an out-of-range token id, or a full cache.
    pub fn forward_cached(&self, batch: &[&[u32]], cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        let tokens = self.checked_tokens(batch, cache)?;
        let h = self.hidden_states(tokens, Some(cache), &mut |_| {});
        Ok(self.logits(h))
    }

    /// Like [`BitNetModel::forward_cached`] but returns only the last position's logits, `[batch, vocab]` (what
    /// decoding needs: the head runs on one token per sequence).
    pub fn forward_cached_last(&self, batch: &[&[u32]], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let tokens = self.checked_tokens(batch, cache)?;
        let h = self.hidden_states(tokens, Some(cache), &mut |_| {});
        let [b, t, d] = h.dims();
        let last = h.slice([0..b, t - 1..t, 0..d]);
        Ok(self.logits(last).reshape([b, self.config.vocab_size]))
    }

    /// Logits `[T, vocab]` of one sequence continuing `cache` (a cache of one sequence).
    pub fn forward_ids(&self, ids: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let logits = self.forward_cached(&[ids], cache)?;
        let [_, t, v] = logits.dims();
        Ok(logits.reshape([t, v]))
    }

    /// [`BitNetModel::forward_ids`] that also returns every block's output `[T, hidden]` (before the final norm),
    /// for per-layer comparisons against a reference implementation.
    pub fn forward_traced(&self, ids: &[u32], cache: &mut KvCache<B>) -> Result<(Tensor<B, 2>, Vec<Tensor<B, 2>>)> {
        let tokens = self.checked_tokens(&[ids], cache)?;
        let (t, d) = (ids.len(), self.config.hidden_size);
        let mut layers = Vec::with_capacity(self.layers.len());
        let h = self.hidden_states(tokens, Some(cache), &mut |h| layers.push(h.clone().reshape([t, d])));
        Ok((self.logits(h).reshape([t, self.config.vocab_size]), layers))
    }

    /// The final-normed hidden states `[T, hidden]` of one sequence from an empty context (what an embedding
    /// pools); fails on an empty, too long or out-of-vocabulary sequence.
    pub fn final_hidden_states(&self, ids: &[u32]) -> Result<Tensor<B, 2>> {
        let c = &self.config;
        if ids.is_empty() || ids.len() > c.max_position_embeddings {
            return Err(ModelError::Request(format!(
                "{} tokens: a text needs 1 to max_position_embeddings ({}) tokens",
                ids.len(),
                c.max_position_embeddings
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::Request(format!(
                "token id {bad} is outside the vocabulary (size {})",
                c.vocab_size
            )));
        }
        let data: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &self.device());
        Ok(self.hidden_states(tokens, None, &mut |_| {}).reshape([ids.len(), c.hidden_size]))
    }

    /// The ids of `batch` as a `[batch, T]` tensor, after checking them against the vocabulary and the cache.
    fn checked_tokens(&self, batch: &[&[u32]], cache: &KvCache<B>) -> Result<Tensor<B, 2, Int>> {
        let t = batch.first().map_or(0, |s| s.len());
        if t == 0 || batch.iter().any(|s| s.len() != t) {
            return Err(ModelError::Request("a batch needs sequences of one, non-zero length".into()));
        }
        if batch.len() != cache.batch() {
            return Err(ModelError::Request(format!(
                "{} sequences for a cache of {} sequences",
                batch.len(),
                cache.batch()
            )));
        }
        for ids in batch {
            self.check_ids(ids, cache)?;
        }
        let ids: Vec<i32> = batch.iter().flat_map(|s| s.iter().map(|&id| id as i32)).collect();
        Ok(Tensor::from_data(TensorData::new(ids, [batch.len(), t]), &self.device()))
    }

    /// Fails unless every id of `ids` is in the vocabulary and `cache` has room for them.
    fn check_ids(&self, ids: &[u32], cache: &KvCache<B>) -> Result<()> {
        let vocab = self.config.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Request(format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        if cache.len() + ids.len() > cache.capacity() {
            return Err(ModelError::Request(format!(
                "context full: {} cached + {} new tokens exceed the cache capacity {}",
                cache.len(),
                ids.len(),
                cache.capacity()
            )));
        }
        Ok(())
    }

    /// One step of several independent sequences, each continuing its own cache (of one sequence) with its own
    /// number of new tokens: the continuous-batching forward pass. The rows of every sequence go through each
    /// projection and the head together (one ternary GEMM for the whole step); attention runs per sequence over
    /// its own cache. Returns the last position's logits of each sequence, `[sequences, vocab]`, equal row for
    /// row to what [`BitNetModel::forward_cached_last`] gives that sequence alone. Fails, touching no cache, on
    /// an empty step or sequence, a cache of more than one sequence, an out-of-range id, or a full cache.
    pub fn forward_sequences(&self, steps: &mut [SequenceStep<'_, B>]) -> Result<Tensor<B, 2>> {
        let c = &self.config;
        if steps.is_empty() || steps.iter().any(|s| s.tokens.is_empty()) {
            return Err(ModelError::Request("a step needs at least one sequence of at least one token".into()));
        }
        for s in steps.iter() {
            if s.cache.batch() != 1 {
                return Err(ModelError::Request(format!(
                    "a sequence of a step needs a cache of one sequence, not {}",
                    s.cache.batch()
                )));
            }
            self.check_ids(s.tokens, s.cache)?;
        }
        let device = self.device();
        let ids: Vec<i32> = steps.iter().flat_map(|s| s.tokens.iter().map(|&id| id as i32)).collect();
        let n = ids.len();
        let mut rows = Vec::with_capacity(steps.len());
        let mut first = 0;
        for s in steps.iter() {
            rows.push(first..first + s.tokens.len());
            first += s.tokens.len();
        }
        let ropes: Vec<RopeTables<B>> = steps
            .iter()
            .map(|s| RopeTables::new(c.head_dim, c.rope_theta, s.cache.len(), s.tokens.len(), &device))
            .collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), &device);
        let mut h = self.embed_tokens.rows(ids).reshape([1, n, c.hidden_size]);
        for (i, layer) in self.layers.iter().enumerate() {
            let mut segments: Vec<Segment<'_, B>> = steps
                .iter_mut()
                .zip(&ropes)
                .zip(&rows)
                .map(|((s, rope), rows)| {
                    let start = s.cache.len();
                    Segment { rows: rows.clone(), rope, cache: s.cache.layer(i), start }
                })
                .collect();
            h = layer.forward(h, Positions::Ragged(&mut segments));
        }
        for s in steps.iter_mut() {
            s.cache.advance(s.tokens.len());
        }
        let h = rms_norm(h, &self.norm.gamma.val(), self.norm.epsilon).reshape([n, c.hidden_size]);
        let last: Vec<i32> = rows.iter().map(|r| (r.end - 1) as i32).collect();
        let last = Tensor::<B, 1, Int>::from_data(TensorData::new(last, [rows.len()]), &device);
        Ok(self.head().logits(h.select(0, last)))
    }

    /// The final-normed hidden states `[batch, T, hidden]` of `tokens`; `on_layer` sees each block's output.
    fn hidden_states(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
        on_layer: &mut dyn FnMut(&Tensor<B, 3>),
    ) -> Tensor<B, 3> {
        let c = &self.config;
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let start = cache.as_ref().map_or(0, |cache| cache.len());
        let mut h = self.embed_tokens.rows(tokens.reshape([b * t])).reshape([b, t, c.hidden_size]);
        let rope = RopeTables::new(c.head_dim, c.rope_theta, start, t, &device);
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|cache| (cache.layer(i), start));
            h = layer.forward(h, Positions::Uniform { rope: &rope, cache: layer_cache });
            on_layer(&h);
        }
        if let Some(cache) = cache {
            cache.advance(t);
        }
        rms_norm(h, &self.norm.gamma.val(), self.norm.epsilon)
    }

    /// Logits `[batch, T, vocab]` of final-normed hidden states.
    fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = h.dims();
        let h = h.reshape([b * t, d]);
        self.head().logits(h).reshape([b, t, self.config.vocab_size])
    }
}

/// One sequence of a [`BitNetModel::forward_sequences`] step: its new tokens and its own cache.
#[derive(Debug)]
pub struct SequenceStep<'a, B: Backend> {
    /// The tokens the sequence adds this step (a prompt chunk, or the last sampled token).
    pub tokens: &'a [u32],
    /// The sequence's cache (of one sequence), advanced by `tokens.len()`.
    pub cache: &'a mut KvCache<B>,
}

/// The role of a block tensor in the computation, for messages.
pub(crate) fn describe(id: TensorId) -> String {
    match id {
        TensorId::Embedding => "token embedding".into(),
        TensorId::Head => "output head".into(),
        TensorId::FinalNorm => "final norm".into(),
        TensorId::Block { layer, tensor } => format!("layer {layer} {tensor:?}"),
        TensorId::ProjectionNorm { layer, projection } => format!("layer {layer} {projection:?} input norm"),
    }
}
