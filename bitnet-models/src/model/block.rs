//! One decoder block: pre-norm attention and pre-norm FFN, each added to the residual stream.
//!
//! ```text
//! h = h + attention(input_layernorm(h))
//! h = h + mlp(post_attention_layernorm(h))
//! ```

use super::attention::{Attention, Positions};
use super::build::{block_norm, BlockTensor, ParamFactory};
use super::mlp::Mlp;
use crate::config::BitNetConfig;
use crate::error::Result;
use bitnet_backend::{rms_norm, BitLinear, BitNetBackend};
use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A decoder block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    input_layernorm: RmsNorm<B>,
    self_attn: Attention<B>,
    post_attention_layernorm: RmsNorm<B>,
    mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    pub(crate) fn build(config: &BitNetConfig, layer: usize, factory: &mut dyn ParamFactory<B>) -> Result<Self> {
        let required = |n: Option<RmsNorm<B>>| n.expect("every family has the two pre-norms");
        Ok(Self {
            input_layernorm: required(block_norm(config, layer, BlockTensor::InputNorm, factory)?),
            self_attn: Attention::build(config, layer, factory)?,
            post_attention_layernorm: required(block_norm(config, layer, BlockTensor::PostAttentionNorm, factory)?),
            mlp: Mlp::build(config, layer, factory)?,
        })
    }

    /// The attention module.
    pub fn attention(&self) -> &Attention<B> {
        &self.self_attn
    }

    /// The FFN module.
    pub fn mlp(&self) -> &Mlp<B> {
        &self.mlp
    }

    /// Every norm of the block with its role, in the order of the computation.
    pub fn norms(&self) -> Vec<(BlockTensor, &RmsNorm<B>)> {
        let mut norms = vec![(BlockTensor::InputNorm, &self.input_layernorm)];
        if let Some((q, k)) = self.self_attn.qk_norms() {
            norms.extend([(BlockTensor::QNorm, q), (BlockTensor::KNorm, k)]);
        }
        norms.extend(self.self_attn.sub_norm().map(|n| (BlockTensor::AttnSubNorm, n)));
        norms.push((BlockTensor::PostAttentionNorm, &self.post_attention_layernorm));
        norms.extend(self.mlp.sub_norm().map(|n| (BlockTensor::FfnSubNorm, n)));
        norms
    }

    /// Every projection of the block with its role, in the order of the computation.
    pub fn projections(&self) -> Vec<(BlockTensor, &BitLinear<B>)> {
        let mut all = self.self_attn.projections().to_vec();
        all.extend(self.mlp.projections());
        all
    }

    /// The block with `f` applied to every projection.
    pub(crate) fn map_projections(
        self,
        f: &mut dyn FnMut(BitLinear<B>) -> bitnet_backend::Result<BitLinear<B>>,
    ) -> bitnet_backend::Result<Self> {
        Ok(Self {
            input_layernorm: self.input_layernorm,
            self_attn: self.self_attn.map_projections(f)?,
            post_attention_layernorm: self.post_attention_layernorm,
            mlp: self.mlp.map_projections(f)?,
        })
    }
}

impl<B: BitNetBackend> Block<B> {
    /// The block applied to the residual stream `h` (`[batch, T, hidden]`); see [`Attention`] for `positions`.
    pub(crate) fn forward(&self, h: Tensor<B, 3>, positions: Positions<'_, '_, B>) -> Tensor<B, 3> {
        let norm = |n: &RmsNorm<B>, x| rms_norm(x, &n.gamma.val(), n.epsilon);
        let h = h.clone() + self.self_attn.forward(norm(&self.input_layernorm, h), positions);
        h.clone() + self.mlp.forward(norm(&self.post_attention_layernorm, h))
    }
}
