//! How a model is built: `BitNetModel::build` walks the module tree once, in a fixed order, and asks a
//! [`ParamFactory`] for every parameter by its [`TensorId`] and shape. The factory decides where the values come
//! from: random latent weights to train (`BitNetConfig::init`), a zero packed skeleton to load a saved record
//! into (`BitNetConfig::init_packed`), or a checkpoint ([`crate::source`]). So every way of making a model
//! produces the same tree, and the shapes are decided here only.

use crate::config::BitNetConfig;
use crate::error::Result;
use bitnet_backend::BitLinear;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;

/// A tensor of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockTensor {
    /// Norm before attention.
    InputNorm,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Per-head RMSNorm of the queries, before RoPE (Qwen3).
    QNorm,
    /// Per-head RMSNorm of the keys, before RoPE (Qwen3).
    KNorm,
    /// Norm of the attention output, before the output projection (2B-4T and 1bitLLM members).
    AttnSubNorm,
    /// Output projection.
    O,
    /// Norm before the FFN.
    PostAttentionNorm,
    /// Gate projection.
    Gate,
    /// Up projection.
    Up,
    /// Norm of the gated FFN state, before the down projection (2B-4T and 1bitLLM members).
    FfnSubNorm,
    /// Down projection.
    Down,
}

impl BlockTensor {
    /// Every tensor, in the order of the block's computation.
    pub const ALL: [BlockTensor; 13] = [
        Self::InputNorm,
        Self::Q,
        Self::K,
        Self::V,
        Self::QNorm,
        Self::KNorm,
        Self::AttnSubNorm,
        Self::O,
        Self::PostAttentionNorm,
        Self::Gate,
        Self::Up,
        Self::FfnSubNorm,
        Self::Down,
    ];

    /// `[d_output, d_input]` of a projection of `config`'s blocks; `None` for a norm.
    pub fn projection_shape(self, c: &BitNetConfig) -> Option<[usize; 2]> {
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

    /// The width of a norm of `config`'s blocks; `None` for a projection, or a sub-norm the family lacks.
    pub fn norm_width(self, c: &BitNetConfig) -> Option<usize> {
        match self {
            Self::InputNorm | Self::PostAttentionNorm => Some(c.hidden_size),
            Self::AttnSubNorm if c.family.has_sub_norms() => Some(c.num_attention_heads * c.head_dim),
            Self::FfnSubNorm if c.family.has_sub_norms() => Some(c.intermediate_size),
            Self::QNorm | Self::KNorm if c.family.has_qk_norm() => Some(c.head_dim),
            _ => None,
        }
    }
}

/// Which tensor of a model a parameter is (the formats name them differently: see [`crate::source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorId {
    /// Token embedding `[vocab, hidden]`.
    Embedding,
    /// Untied output projection `[vocab, hidden]`.
    Head,
    /// Final norm `[hidden]`.
    FinalNorm,
    /// A norm or projection of block `layer`.
    Block {
        /// Layer index.
        layer: usize,
        /// Which tensor.
        tensor: BlockTensor,
    },
    /// The RMSNorm inside the BitLinear `projection` of block `layer` (`quantization_config.use_rms_norm`).
    ProjectionNorm {
        /// Layer index.
        layer: usize,
        /// Which projection.
        projection: BlockTensor,
    },
}

/// A source of parameters for [`BitNetModel::build`].
pub(crate) trait ParamFactory<B: Backend> {
    /// The projection `id`, `[d_output, d_input]`, with its input norm (if the family has one).
    fn projection(
        &mut self,
        id: TensorId,
        d_output: usize,
        d_input: usize,
        input_norm: Option<RmsNorm<B>>,
    ) -> Result<BitLinear<B>>;
    /// The norm `id` of `width` gains.
    fn norm(&mut self, id: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>>;
    /// The token matrix `id` (embedding, head), `[rows, cols]`.
    fn matrix(&mut self, id: TensorId, rows: usize, cols: usize) -> Result<super::TokenMatrix<B>>;
}

/// Builds projection `tensor` of block `layer`, with its input norm where the family has one.
pub(crate) fn projection<B: Backend>(
    config: &BitNetConfig,
    layer: usize,
    tensor: BlockTensor,
    factory: &mut dyn ParamFactory<B>,
) -> Result<BitLinear<B>> {
    let [d_output, d_input] = tensor.projection_shape(config).expect("a projection");
    let norm = match config.linear_rms_norm_eps {
        Some(eps) => Some(factory.norm(TensorId::ProjectionNorm { layer, projection: tensor }, d_input, eps)?),
        None => None,
    };
    factory.projection(TensorId::Block { layer, tensor }, d_output, d_input, norm)
}

/// Builds norm `tensor` of block `layer` if the family has it.
pub(crate) fn block_norm<B: Backend>(
    config: &BitNetConfig,
    layer: usize,
    tensor: BlockTensor,
    factory: &mut dyn ParamFactory<B>,
) -> Result<Option<RmsNorm<B>>> {
    match tensor.norm_width(config) {
        Some(width) => Ok(Some(factory.norm(TensorId::Block { layer, tensor }, width, config.rms_norm_eps)?)),
        None => Ok(None),
    }
}
