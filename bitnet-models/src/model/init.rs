//! The two ways to make a model from its configuration alone: fresh latent weights to train
//! ([`BitNetConfig::init`]) and a zero packed skeleton to load a saved record into
//! ([`BitNetConfig::init_packed`]).

use super::build::{ParamFactory, TensorId};
use super::decoder::BitNetModel;
use super::token_matrix::TokenMatrix;
use crate::config::BitNetConfig;
use crate::error::Result;
use bitnet_backend::{BitLinear, BitLinearConfig};
use burn::nn::{Initializer, RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

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

    fn matrix(&mut self, _: TensorId, rows: usize, cols: usize) -> Result<TokenMatrix<B>> {
        let init = Initializer::Normal { mean: 0.0, std: INIT_STD };
        Ok(TokenMatrix::Dense(init.init_with([rows, cols], Some(cols), Some(rows), self.device)))
    }
}

/// A packed model with zero weights: the skeleton a saved record is loaded into.
struct PackedSkeleton<'a, B: Backend> {
    device: &'a B::Device,
}

impl<B: bitnet_backend::BitNetBackend> ParamFactory<B> for PackedSkeleton<'_, B> {
    fn projection(&mut self, _: TensorId, o: usize, i: usize, norm: Option<RmsNorm<B>>) -> Result<BitLinear<B>> {
        let layer =
            BitLinearConfig::new(i, o).with_bias(false).init_packed_in(B::preferred_ternary_layout(), self.device);
        let weight = layer.packed_weight().expect("a packed skeleton")?;
        Ok(BitLinear::from_packed(weight, None, norm)?)
    }

    fn norm(&mut self, _: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNormConfig::new(width).with_epsilon(eps).init(self.device))
    }

    fn matrix(&mut self, _: TensorId, rows: usize, cols: usize) -> Result<TokenMatrix<B>> {
        Ok(TokenMatrix::dense(Tensor::zeros([rows, cols], self.device)))
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
    /// (`model.load_record(record)`). The skeleton packs in the backend's preferred layout
    /// (`TernaryBackend::preferred_ternary_layout`); a record names the layout of its words and loads as that layout
    /// either way (repacked into 2 bits where this machine's CPU kernel cannot read it).
    pub fn init_packed<B: bitnet_backend::BitNetBackend>(&self, device: &B::Device) -> Result<BitNetModel<B>> {
        BitNetModel::build(self, &mut PackedSkeleton { device })
    }
}
