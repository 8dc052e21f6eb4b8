//! How a model is built: [`BitNetModel::build`] walks the module tree once, in a fixed order, and asks a
//! [`ParamFactory`] for every parameter by its [`TensorId`] and shape. The factory decides where the values come
//! from: random latent weights to train ([`BitNetConfig::init`]), a zero packed skeleton to load a saved record
//! into ([`BitNetConfig::init_packed`]), or a checkpoint ([`crate::source`]). So every way of making a model
//! produces the same tree, and the shapes are decided here only.

use super::decoder::BitNetModel;
use crate::config::BitNetConfig;
use crate::error::Result;
use bitnet_backend::{BitLinear, BitLinearConfig};
use burn::module::Param;
use burn::nn::{Initializer, RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

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
    /// The dense matrix `id`, `[rows, cols]`.
    fn dense(&mut self, id: TensorId, rows: usize, cols: usize) -> Result<Param<Tensor<B, 2>>>;
}

/// The standard deviation of the normal initialization of latent weights and embeddings (LLaMA-style recipes).
pub const INIT_STD: f64 = 0.02;

/// Fresh latent weights: projections and embeddings `N(0, 0.02)`, norms one (burn's initializers, seeded by the
/// backend's seed).
struct RandomLatent<'a, B: Backend> {
    device: &'a B::Device,
}

impl<B: Backend> ParamFactory<B> for RandomLatent<'_, B> {
    fn projection(&mut self, _: TensorId, o: usize, i: usize, norm: Option<RmsNorm<B>>) -> Result<BitLinear<B>> {
        let config = BitLinearConfig::new(i, o)
            .with_bias(false)
            .with_initializer(Initializer::Normal { mean: 0.0, std: INIT_STD });
        let layer = config.init(self.device);
        let weight = layer.latent_weight().expect("a fresh layer is latent").val();
        Ok(BitLinear::from_latent(weight, None, norm)?)
    }

    fn norm(&mut self, _: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNormConfig::new(width).with_epsilon(eps).init(self.device))
    }

    fn dense(&mut self, _: TensorId, rows: usize, cols: usize) -> Result<Param<Tensor<B, 2>>> {
        let init = Initializer::Normal { mean: 0.0, std: INIT_STD };
        Ok(init.init_with([rows, cols], Some(cols), Some(rows), self.device))
    }
}

/// A packed model with zero weights: the skeleton a saved record is loaded into.
struct PackedSkeleton<'a, B: Backend> {
    device: &'a B::Device,
}

impl<B: Backend> ParamFactory<B> for PackedSkeleton<'_, B> {
    fn projection(&mut self, _: TensorId, o: usize, i: usize, norm: Option<RmsNorm<B>>) -> Result<BitLinear<B>> {
        let layer = BitLinearConfig::new(i, o).with_bias(false).init_packed(self.device);
        let weight = layer.packed_weight().expect("a packed skeleton")?;
        Ok(BitLinear::from_packed(weight, None, norm)?)
    }

    fn norm(&mut self, _: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNormConfig::new(width).with_epsilon(eps).init(self.device))
    }

    fn dense(&mut self, _: TensorId, rows: usize, cols: usize) -> Result<Param<Tensor<B, 2>>> {
        Ok(Param::from_tensor(Tensor::zeros([rows, cols], self.device)))
    }
}

impl BitNetConfig {
    /// A freshly initialized model in the latent (training) state: every projection a latent `BitLinear`
    /// (`N(0, 0.02)`, no bias), the embedding `N(0, 0.02)`, every norm one. Seed the backend for a reproducible
    /// model.
    pub fn init<B: bitnet_backend::BitNetBackend>(&self, device: &B::Device) -> Result<BitNetModel<B>> {
        BitNetModel::build(self, &mut RandomLatent { device })
    }

    /// A packed model of this configuration with zero weights, to load a saved record into
    /// (`model.load_record(record)`): the record of a packed model fits it exactly.
    pub fn init_packed<B: bitnet_backend::BitNetBackend>(&self, device: &B::Device) -> Result<BitNetModel<B>> {
        BitNetModel::build(self, &mut PackedSkeleton { device })
    }
}
