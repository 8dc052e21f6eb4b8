//! Random-weight models of a family member's shapes (for benchmarks and tests): uniform random codes with the
//! scale `g = 1 / sqrt(cols)` a latent weight of standard deviation `~1 / sqrt(cols)` would get, unit norms, and
//! dense tensors uniform in `[-0.05, 0.05]` in a chosen 16-bit or f32 precision. Qwen3-family models are ternary
//! throughout, as the Qwen3-based ternary models ship: every projection, the embedding and the head get one
//! scale per 64 weights, `g` times a factor in `[0.75, 1.25)`, rounded to f16 (what Q2_0 stores exactly).
//! Deterministic from the seed.

use crate::config::BitNetConfig;
use crate::error::Result;
use crate::model::{BitNetModel, ParamFactory, TensorId, TokenMatrix};
use bitnet_backend::{BitLinear, BitNetBackend, TernaryWeight};
use bitnet_kernels::{TernaryCodes, TernaryMatrix};
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

/// A deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

struct RandomPacked<'a, B: Backend> {
    rng: Rng,
    dense_dtype: DType,
    /// Scales per 64 weights and ternary token matrices (the Qwen3 family).
    grouped: bool,
    device: &'a B::Device,
}

impl<B: Backend> RandomPacked<'_, B> {
    fn ternary(&mut self, rows: usize, cols: usize) -> Result<TernaryMatrix> {
        let codes = TernaryCodes::new(rows, cols, (0..rows * cols).map(|_| (self.rng.next() % 3) as u8).collect())?;
        let g = 1.0 / (cols as f32).sqrt();
        if !self.grouped || !cols.is_multiple_of(64) {
            return Ok(TernaryMatrix::from_codes_with_scale(&codes, g)?);
        }
        let scales: Vec<f32> = (0..rows * cols / 64)
            .map(|_| half::f16::from_f32(g * (1.0 + 0.25 * self.rng.uniform())).to_f32())
            .collect();
        Ok(TernaryMatrix::from_codes_grouped(&codes, 64, &scales)?)
    }
}

impl<B: Backend> ParamFactory<B> for RandomPacked<'_, B> {
    fn projection(&mut self, _: TensorId, rows: usize, cols: usize, norm: Option<RmsNorm<B>>) -> Result<BitLinear<B>> {
        let matrix = self.ternary(rows, cols)?;
        Ok(BitLinear::from_packed(TernaryWeight::from_matrix(&matrix, self.device), None, norm)?)
    }

    fn norm(&mut self, _: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNormConfig::new(width).with_epsilon(eps).init(self.device))
    }

    fn matrix(&mut self, _: TensorId, rows: usize, cols: usize) -> Result<TokenMatrix<B>> {
        if self.grouped {
            let matrix = self.ternary(rows, cols)?;
            let weight = TernaryWeight::from_matrix(&matrix, self.device);
            return Ok(TokenMatrix::Ternary(BitLinear::from_packed(weight, None, None)?));
        }
        let n = rows * cols;
        let data = match self.dense_dtype {
            DType::BF16 => {
                TensorData::new((0..n).map(|_| half::bf16::from_f32(self.rng.uniform() * 0.05)).collect(), [rows, cols])
            }
            DType::F16 => {
                TensorData::new((0..n).map(|_| half::f16::from_f32(self.rng.uniform() * 0.05)).collect(), [rows, cols])
            }
            _ => TensorData::new((0..n).map(|_| self.rng.uniform() * 0.05).collect::<Vec<f32>>(), [rows, cols]),
        };
        let dtype = data.dtype;
        Ok(TokenMatrix::dense(Tensor::from_data(data, (self.device, dtype))))
    }
}

/// A packed random-weight model of `config`'s shapes with dense tensors (embedding, head) in `dense_dtype`
/// (F32, F16 or BF16; a Qwen3-family model's are ternary), deterministic from `seed`.
pub fn random_model<B: BitNetBackend>(
    config: &BitNetConfig,
    dense_dtype: DType,
    seed: u64,
    device: &B::Device,
) -> Result<BitNetModel<B>> {
    let grouped = config.family == crate::config::Family::Qwen3;
    BitNetModel::build(config, &mut RandomPacked { rng: Rng(seed), dense_dtype, grouped, device })
}
