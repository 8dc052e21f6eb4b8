//! GGUF files as a [`TensorSource`]: llama.cpp's tensor names (`token_embd`, `blk.N.attn_q`, ...), ternary
//! projections in TQ1_0, TQ2_0, I2_S, Q2_0 or PQ2_0 (repacked into the kernel layout), float projections
//! (ternary values times a scale per row or per 64 weights, as converters write them, or latent weights), F32 / F16 / BF16 / Q8_0 norms and token
//! matrices, and Q6_K token matrices (16-bit and Q6_K matrices are read in place from the mapping).
//! Dimensions are innermost first: a `[rows, cols]` weight has ggml dims `[cols, rows]`.

use super::{ProjectionData, TensorSource};
use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile, GgufTensorInfo, SharedBytes};
use crate::model::{BlockTensor, MatrixData, TensorId};
use bitnet_kernels::formats::q2_0::Q2Group::{G128, G64};
use bitnet_kernels::q4::from_ggml_q4_0;
use bitnet_kernels::{BlockFormat, TernaryMatrix};
use burn::tensor::DType;
use std::path::Path;

/// Why PTQ1_0 tensors are refused.
pub(crate) const PTQ1_0_UNSUPPORTED: &str = "type PTQ1_0 (143, PrismML's private base-3 format at group 128) is \
    not supported: its trit order is not established from a public source; use the PQ2_0 or Q2_0 file of the model";

/// The GGUF (llama.cpp) name of `id`, without the `.weight` suffix.
pub fn gguf_name(id: TensorId) -> String {
    let block = |layer: usize, tensor: BlockTensor| {
        let name = match tensor {
            BlockTensor::InputNorm => "attn_norm",
            BlockTensor::Q => "attn_q",
            BlockTensor::K => "attn_k",
            BlockTensor::V => "attn_v",
            BlockTensor::QNorm => "attn_q_norm",
            BlockTensor::KNorm => "attn_k_norm",
            BlockTensor::AttnSubNorm => "attn_sub_norm",
            BlockTensor::O => "attn_output",
            BlockTensor::PostAttentionNorm => "ffn_norm",
            BlockTensor::Gate => "ffn_gate",
            BlockTensor::Up => "ffn_up",
            BlockTensor::FfnSubNorm => "ffn_sub_norm",
            BlockTensor::Down => "ffn_down",
        };
        format!("blk.{layer}.{name}")
    };
    match id {
        TensorId::Embedding => "token_embd".into(),
        TensorId::Head => "output".into(),
        TensorId::FinalNorm => "output_norm".into(),
        TensorId::Block { layer, tensor } => block(layer, tensor),
        TensorId::ProjectionNorm { layer, projection } => format!("{}_norm_in", block(layer, projection)),
    }
}

impl GgufFile {
    fn info_of(&self, name: &str, dims: &[u64]) -> Result<&GgufTensorInfo> {
        let info = self
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor { path: self.path().into(), name: name.into() })?;
        if info.dims != dims {
            return Err(self.tensor_error(name, format!("dims {:?}, expected {dims:?}", info.dims)));
        }
        Ok(info)
    }

    fn tensor_error(&self, name: &str, message: String) -> ModelError {
        ModelError::Tensor { path: self.path().into(), name: name.into(), message }
    }

    /// A tensor of a ternary type repacked into the kernel layout; `None` for other types.
    fn ternary(&self, name: &str, info: &GgufTensorInfo, rows: usize, cols: usize) -> Result<Option<TernaryMatrix>> {
        let data = self.data(info);
        let matrix = match info.ggml_type {
            GgmlType::TQ1_0 => TernaryMatrix::from_tq1_0(data, rows, cols),
            GgmlType::TQ2_0 => TernaryMatrix::from_tq2_0(data, rows, cols),
            GgmlType::I2_S => TernaryMatrix::from_i2s(data, rows, cols),
            GgmlType::Q2_0 => TernaryMatrix::from_q2_0(data, rows, cols, G64),
            GgmlType::PQ2_0 => TernaryMatrix::from_q2_0(data, rows, cols, G128),
            GgmlType::PTQ1_0 => return Err(self.tensor_error(name, PTQ1_0_UNSUPPORTED.into())),
            _ => return Ok(None),
        };
        matrix.map(Some).map_err(|e| self.tensor_error(name, e.to_string()))
    }

    /// A float tensor (F32, F16, BF16 or Q8_0) as f32.
    fn floats(&self, name: &str, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        let data = self.data(info);
        Ok(match info.ggml_type {
            GgmlType::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            GgmlType::F16 => super::widen(data, DType::F16),
            GgmlType::BF16 => super::widen(data, DType::BF16),
            GgmlType::Q8_0 => data
                .chunks_exact(34)
                .flat_map(|b| {
                    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                    b[2..].iter().map(move |&q| q as i8 as f32 * d)
                })
                .collect(),
            other => {
                return Err(self.tensor_error(name, format!("type {other} is not a float type (F32, F16, BF16, Q8_0)")))
            }
        })
    }
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }

    fn last_layer(&self) -> Option<usize> {
        self.tensors().iter().filter_map(|t| super::layer_of(&t.name)).max()
    }

    fn norm(&self, id: TensorId, width: usize) -> Result<Vec<f32>> {
        let name = format!("{}.weight", gguf_name(id));
        let info = self.info_of(&name, &[width as u64])?;
        self.floats(&name, info)
    }

    fn matrix(&self, id: TensorId, rows: usize, cols: usize) -> Result<MatrixData> {
        let name = format!("{}.weight", gguf_name(id));
        let info = self.info_of(&name, &[cols as u64, rows as u64])?;
        Ok(match info.ggml_type {
            GgmlType::F16 => MatrixData::Half(self.shared_data(info), DType::F16),
            GgmlType::BF16 => MatrixData::Half(self.shared_data(info), DType::BF16),
            GgmlType::Q6_K => MatrixData::Blocks(BlockFormat::Q6K, self.shared_data(info)),
            GgmlType::Q4_0 => {
                let q4 =
                    from_ggml_q4_0(self.data(info), rows, cols).map_err(|e| self.tensor_error(&name, e.to_string()))?;
                MatrixData::Blocks(BlockFormat::Q4, SharedBytes::from_vec(q4.into_bytes()))
            }
            _ => match self.ternary(&name, info, rows, cols)? {
                Some(m) => MatrixData::Ternary(m),
                None => MatrixData::F32(self.floats(&name, info)?),
            },
        })
    }

    fn release(&self, id: TensorId) {
        if let Some(info) = self.tensor(&format!("{}.weight", gguf_name(id))) {
            self.shared_data(info).release_pages();
        }
    }

    fn release_all(&self) {
        GgufFile::release_pages(self);
    }

    fn projection(&self, id: TensorId, rows: usize, cols: usize) -> Result<ProjectionData> {
        let name = format!("{}.weight", gguf_name(id));
        let info = self.info_of(&name, &[cols as u64, rows as u64])?;
        if let Some(m) = self.ternary(&name, info, rows, cols)? {
            return Ok(ProjectionData::Ternary(m));
        }
        // Float weights: ternary values times scales (converted checkpoints), or latent weights.
        let values = self.floats(&name, info)?;
        let recognized = TernaryMatrix::from_scaled_ternary(&values, rows, cols)
            .map_err(|e| self.tensor_error(&name, e.to_string()))?;
        Ok(match recognized {
            Some(m) => ProjectionData::Ternary(m),
            None => ProjectionData::Float(values),
        })
    }
}
