//! The FFN half of a block: gated, with ternary projections and an optional sub-norm.
//!
//! ```text
//! m = act(BitLinear_gate(x)) * BitLinear_up(x)       # act = relu² (2B-4T) or silu (LLaMA-style members)
//! y = BitLinear_down(ffn_sub_norm(m))
//! ```
//! relu² overflows f16, so activations stay f32.

use super::build::{block_norm, projection, BlockTensor, ParamFactory};
use crate::config::{Activation, BitNetConfig};
use crate::error::Result;
use bitnet_backend::{gated_activation, rms_norm, BitLinear, BitNetBackend, GateActivation};
use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The FFN module of a block.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    gate_proj: BitLinear<B>,
    up_proj: BitLinear<B>,
    ffn_sub_norm: Option<RmsNorm<B>>,
    down_proj: BitLinear<B>,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> Mlp<B> {
    pub(crate) fn build(config: &BitNetConfig, layer: usize, factory: &mut dyn ParamFactory<B>) -> Result<Self> {
        Ok(Self {
            gate_proj: projection(config, layer, BlockTensor::Gate, factory)?,
            up_proj: projection(config, layer, BlockTensor::Up, factory)?,
            ffn_sub_norm: block_norm(config, layer, BlockTensor::FfnSubNorm, factory)?,
            down_proj: projection(config, layer, BlockTensor::Down, factory)?,
            activation: config.activation,
        })
    }

    /// The three projections with their roles.
    pub fn projections(&self) -> [(BlockTensor, &BitLinear<B>); 3] {
        [(BlockTensor::Gate, &self.gate_proj), (BlockTensor::Up, &self.up_proj), (BlockTensor::Down, &self.down_proj)]
    }

    /// The sub-norm before the down projection, if the family has one.
    pub fn sub_norm(&self) -> Option<&RmsNorm<B>> {
        self.ffn_sub_norm.as_ref()
    }

    /// The module with `f` applied to every projection.
    pub(crate) fn map_projections(
        self,
        f: &mut dyn FnMut(BitLinear<B>) -> bitnet_backend::Result<BitLinear<B>>,
    ) -> bitnet_backend::Result<Self> {
        Ok(Self {
            gate_proj: f(self.gate_proj)?,
            up_proj: f(self.up_proj)?,
            ffn_sub_norm: self.ffn_sub_norm,
            down_proj: f(self.down_proj)?,
            activation: self.activation,
        })
    }
}

impl<B: BitNetBackend> Mlp<B> {
    /// The FFN of `x` (`[batch, T, hidden]`).
    pub(crate) fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [gate, up]: [Tensor<B, 3>; 2] = BitLinear::forward_shared(&[&self.gate_proj, &self.up_proj], x)
            .try_into()
            .unwrap_or_else(|_| unreachable!("two layers give two outputs"));
        let act = match self.activation {
            Activation::Relu2 => GateActivation::ReluSquared,
            Activation::Silu => GateActivation::Silu,
        };
        let m = gated_activation(gate, up, act);
        let m = match &self.ffn_sub_norm {
            Some(norm) => rms_norm(m, &norm.gamma.val(), norm.epsilon),
            None => m,
        };
        self.down_proj.forward(m)
    }
}
