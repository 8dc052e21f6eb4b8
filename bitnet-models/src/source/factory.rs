//! The factory that fills the module tree of [`crate::model`] from a [`TensorSource`], packed or latent, and the
//! loading entry points.

use super::{hf, widen, DenseData, LoadAs, ProjectionData, TensorSource};
use crate::config::BitNetConfig;
use crate::error::{ModelError, Result};
use crate::model::{describe, BitNetModel, ParamFactory, TensorId};
use bitnet_backend::{BitLinear, BitNetBackend, TernaryWeight};
use bitnet_kernels::TernaryMatrix;
use burn::module::Param;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use std::path::Path;

/// Fills a model from a [`TensorSource`].
struct SourceFactory<'a, B: Backend> {
    source: &'a dyn TensorSource,
    load_as: LoadAs,
    device: &'a B::Device,
}

/// Checks that every value of `values` is finite (NaN or infinite weights turn every logit into NaN).
fn check_finite(source: &dyn TensorSource, id: TensorId, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::Weights {
            path: source.path().into(),
            message: format!("{}: element {i} is {} (weights must be finite)", describe(id), values[i]),
        }),
    }
}

impl<B: Backend> ParamFactory<B> for SourceFactory<'_, B> {
    fn projection(&mut self, id: TensorId, rows: usize, cols: usize, norm: Option<RmsNorm<B>>) -> Result<BitLinear<B>> {
        let data = self.source.projection(id, rows, cols)?;
        let layer = match (data, self.load_as) {
            (ProjectionData::Ternary(m), LoadAs::Packed) => {
                BitLinear::from_packed(TernaryWeight::from_matrix(&m, self.device), None, norm)?
            }
            (ProjectionData::Float(values), LoadAs::Packed) => {
                check_finite(self.source, id, &values)?;
                let m = TernaryMatrix::quantize_absmean(&values, rows, cols)?;
                BitLinear::from_packed(TernaryWeight::from_matrix(&m, self.device), None, norm)?
            }
            (ProjectionData::Ternary(m), LoadAs::Latent) => {
                let values = m.view().dequantize();
                let w = Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), self.device);
                BitLinear::from_latent(w.transpose(), None, norm)?
            }
            (ProjectionData::Float(values), LoadAs::Latent) => {
                check_finite(self.source, id, &values)?;
                let w = Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), self.device);
                BitLinear::from_latent(w.transpose(), None, norm)?
            }
        };
        Ok(layer)
    }

    fn norm(&mut self, id: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        let values = self.source.norm(id, width)?;
        check_finite(self.source, id, &values)?;
        let gamma = Tensor::from_data(TensorData::new(values, [width]), self.device);
        Ok(RmsNorm { gamma: Param::from_tensor(gamma), epsilon: eps })
    }

    fn dense(&mut self, id: TensorId, rows: usize, cols: usize) -> Result<Param<Tensor<B, 2>>> {
        let tensor = match self.source.dense(id, rows, cols)? {
            // 16-bit values stay 16-bit where the backend stores them (half the bytes for the head's GEMV, and
            // exactly the checkpoint's values); training widens them to f32 latent parameters.
            DenseData::Half(bytes, dtype)
                if self.load_as == LoadAs::Packed && B::supports_dtype(self.device, dtype) =>
            {
                check_finite_half(self.source, id, &bytes, dtype)?;
                Tensor::from_data(TensorData::from_bytes_vec(bytes, [rows, cols], dtype), (self.device, dtype))
            }
            DenseData::Half(bytes, dtype) => {
                let values = widen(&bytes, dtype);
                check_finite(self.source, id, &values)?;
                Tensor::from_data(TensorData::new(values, [rows, cols]), self.device)
            }
            DenseData::F32(values) => {
                check_finite(self.source, id, &values)?;
                Tensor::from_data(TensorData::new(values, [rows, cols]), self.device)
            }
        };
        Ok(Param::from_tensor(tensor))
    }
}

fn check_finite_half(source: &dyn TensorSource, id: TensorId, bytes: &[u8], dtype: DType) -> Result<()> {
    // A 16-bit float is not finite when its exponent bits are all ones.
    let exponent_mask: u16 = if dtype == DType::BF16 { 0x7f80 } else { 0x7c00 };
    let bad = bytes.chunks_exact(2).position(|b| u16::from_le_bytes([b[0], b[1]]) & exponent_mask == exponent_mask);
    match bad {
        None => Ok(()),
        Some(i) => Err(ModelError::Weights {
            path: source.path().into(),
            message: format!("{}: element {i} is not finite (weights must be finite)", describe(id)),
        }),
    }
}

/// Builds a model of `config` from `source`, its projections packed or latent as `load_as` says.
pub fn build_model<B: BitNetBackend>(
    config: &BitNetConfig,
    source: &dyn TensorSource,
    load_as: LoadAs,
    device: &B::Device,
) -> Result<BitNetModel<B>> {
    BitNetModel::build(config, &mut SourceFactory { source, load_as, device })
}

/// Loads a Hugging Face checkpoint directory onto `device`, packed for inference.
pub fn load_hf_dir<B: BitNetBackend>(dir: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    let checkpoint = hf::HfCheckpoint::open(dir)?;
    build_model(checkpoint.config(), &checkpoint, LoadAs::Packed, device)
}

/// Loads a GGUF file onto `device`, packed for inference.
pub fn load_gguf<B: BitNetBackend>(path: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    let file = crate::gguf::GgufFile::open(path)?;
    build_model(&crate::gguf::config_from_metadata(&file)?, &file, LoadAs::Packed, device)
}

/// Loads a Hugging Face directory or a `.gguf` file onto `device`, packed for inference.
pub fn load_model<B: BitNetBackend>(path: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    if path.is_dir() {
        load_hf_dir(path, device)
    } else {
        load_gguf(path, device)
    }
}
