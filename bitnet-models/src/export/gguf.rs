//! A packed model as a GGUF file that bitnet.cpp-style readers (and [`crate::gguf`]) load: architecture as
//! [`written_architecture`] says, projections (and ternary token matrices) as TQ2_0 or TQ1_0 (llama.cpp, types
//! 35 and 34; input widths a multiple of 256), I2_S (bitnet.cpp, type 36; one scale per tensor), Q2_0 (ggml, type 42; a scale per
//! 64 weights) or PQ2_0 (PrismML, type 142; a scale per 128 weights), norms and dense tensors in their stored
//! precision, and the tokenizer in `tokenizer.ggml.*` metadata when given.

use super::{projection_matrix, scales_per, single_scale, tensor_bytes};
use crate::config::BitNetConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{metadata_from_config, write_gguf, written_architecture, GgmlType, GgufTensorSpec, GgufVocab};
use crate::model::{BitNetModel, ModelTensor, TokenMatrix};
use crate::source::gguf::gguf_name;
use bitnet_kernels::formats::i2s::pack_i2s;
use bitnet_kernels::formats::q2_0::{pack_q2_0, Q2Group};
use bitnet_kernels::formats::tq1_0::pack_tq1_0;
use bitnet_kernels::formats::tq2_0::pack_tq2_0;
use bitnet_kernels::q4::to_ggml_q4_0;
use bitnet_kernels::{BlockFormat, BlockView, TernaryMatrix};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use std::path::Path;

/// The ternary encoding of a GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryGgufType {
    /// llama.cpp TQ2_0: 2.06 bits/weight, an f16 scale per 256-weight block; rows must be a multiple of 256 wide.
    Tq2_0,
    /// llama.cpp TQ1_0: 1.69 bits/weight (base-3), an f16 scale per 256-weight block; rows a multiple of 256.
    Tq1_0,
    /// bitnet.cpp I2_S: 2 bits/weight, one f32 scale per tensor.
    I2s,
    /// ggml Q2_0: 2.25 bits/weight, an f16 scale per 64 weights; rows must be a multiple of 64 wide.
    Q2_0,
    /// PrismML PQ2_0: 2.125 bits/weight, an f16 scale per 128 weights; rows must be a multiple of 128 wide.
    Pq2_0,
}

impl TernaryGgufType {
    /// The ggml type.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            Self::Tq2_0 => GgmlType::TQ2_0,
            Self::Tq1_0 => GgmlType::TQ1_0,
            Self::I2s => GgmlType::I2_S,
            Self::Q2_0 => GgmlType::Q2_0,
            Self::Pq2_0 => GgmlType::PQ2_0,
        }
    }

    /// Weights per scale block, where the type's rows must be a multiple of it.
    fn block(self) -> Option<usize> {
        match self {
            Self::Tq2_0 | Self::Tq1_0 => Some(256),
            Self::I2s => None,
            Self::Q2_0 => Some(64),
            Self::Pq2_0 => Some(128),
        }
    }

    /// Whether every projection of `config` can be stored in this type; the error says why not.
    pub fn check_shapes(self, config: &BitNetConfig) -> std::result::Result<(), String> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let q = config.num_attention_heads * config.head_dim;
        if let Some(b) = self.block() {
            if !(h.is_multiple_of(b) && i.is_multiple_of(b) && q.is_multiple_of(b)) {
                return Err(format!(
                    "{} needs hidden_size, intermediate_size and heads * head_dim multiples of {b} (got {h}, {i} and \
                     {q}); I2_S has no such limit",
                    self.ggml_type()
                ));
            }
        }
        Ok(())
    }

    /// Encodes a packed matrix; fails when its scales are finer than the type stores.
    pub fn encode(self, what: &str, matrix: &TernaryMatrix) -> Result<Vec<u8>> {
        let name = self.ggml_type().name();
        let codes = matrix.to_codes();
        let bytes = match self {
            Self::Tq2_0 => pack_tq2_0(&codes, &scales_per(what, matrix, 256, name)?),
            Self::Tq1_0 => pack_tq1_0(&codes, &scales_per(what, matrix, 256, name)?),
            Self::I2s => pack_i2s(&codes, single_scale(what, matrix, name)?),
            Self::Q2_0 => pack_q2_0(&codes, &scales_per(what, matrix, 64, name)?, Q2Group::G64),
            Self::Pq2_0 => pack_q2_0(&codes, &scales_per(what, matrix, 128, name)?, Q2Group::G128),
        };
        bytes.map_err(|e| ModelError::Request(format!("encoding {what}: {e}")))
    }
}

fn gguf_dtype(dtype: DType) -> Result<GgmlType> {
    match dtype {
        DType::F32 => Ok(GgmlType::F32),
        DType::F16 => Ok(GgmlType::F16),
        DType::BF16 => Ok(GgmlType::BF16),
        other => Err(ModelError::Request(format!("tensors of dtype {other:?} cannot be written (F32, F16, BF16)"))),
    }
}

/// A float tensor written in its own dtype (ggml dimensions innermost first).
fn stored<'a, B: Backend, const D: usize>(name: String, t: Tensor<B, D>) -> Result<GgufTensorSpec<'a>> {
    let dims = t.dims().iter().rev().map(|&d| d as u64).collect();
    let ggml_type = gguf_dtype(t.dtype())?;
    Ok(GgufTensorSpec { name, dims, ggml_type, data: Box::new(move || Ok(tensor_bytes(t).0)) })
}

/// Writes packed `model` to `path` as a GGUF file with projections of type `ty`, named `name`, with `vocab` (and
/// its chat template) in the metadata if given.
pub fn write_gguf_model<B: Backend>(
    model: &BitNetModel<B>,
    path: &Path,
    ty: TernaryGgufType,
    name: &str,
    vocab: Option<&GgufVocab>,
) -> Result<()> {
    let config = model.config();
    written_architecture(config).map_err(ModelError::Request)?;
    ty.check_shapes(config).map_err(ModelError::Request)?;
    let mut tensors: Vec<GgufTensorSpec<'_>> = Vec::new();
    for (id, tensor) in model.tensors() {
        let name = format!("{}.weight", gguf_name(id));
        match tensor {
            ModelTensor::Matrix(TokenMatrix::Dense(p)) => tensors.push(stored(name, p.val())?),
            ModelTensor::Matrix(m @ TokenMatrix::Blocks(table)) => {
                let (blocks, format) = (table.blocks(), table.format());
                let [rows, cols] = m.dims();
                let dims = vec![cols as u64, rows as u64];
                let (ggml_type, data): (_, Box<dyn FnOnce() -> Result<Vec<u8>>>) = match format {
                    BlockFormat::Q6K => (GgmlType::Q6_K, Box::new(move || Ok(blocks.into_data().as_bytes().to_vec()))),
                    // The same numbers in ggml's Q4_0 block order.
                    BlockFormat::Q4 => (
                        GgmlType::Q4_0,
                        Box::new(move || {
                            let data = blocks.into_data();
                            BlockView::new(BlockFormat::Q4, data.as_bytes(), rows, cols)
                                .and_then(to_ggml_q4_0)
                                .map_err(|e| ModelError::Request(format!("reading the Q4 blocks back: {e}")))
                        }),
                    ),
                };
                tensors.push(GgufTensorSpec { name, dims, ggml_type, data });
            }
            ModelTensor::Matrix(m @ TokenMatrix::Ternary(layer)) => {
                let dims = m.dims().iter().rev().map(|&d| d as u64).collect();
                let what = name.clone();
                let data = Box::new(move || ty.encode(&what, &projection_matrix(&what, layer)?));
                tensors.push(GgufTensorSpec { name, dims, ggml_type: ty.ggml_type(), data });
            }
            ModelTensor::Matrix(TokenMatrix::Int8(_)) => {
                return Err(ModelError::Request(format!(
                    "{name} is int8, which GGUF files do not store: write it as loaded (without --head int8), or \
                     as q6k or q4"
                )))
            }
            ModelTensor::Norm(n) => tensors.push(stored(name, n.gamma.val())?),
            ModelTensor::Projection(p) => {
                if !p.is_packed() {
                    return Err(ModelError::Request(format!("{name} holds latent weights: pack the model first")));
                }
                let dims = vec![p.d_input() as u64, p.d_output() as u64];
                let what = name.clone();
                // Read back and encoded when the tensor's turn comes: one projection in memory at a time.
                let data = Box::new(move || ty.encode(&what, &projection_matrix(&what, p)?));
                tensors.push(GgufTensorSpec { name, dims, ggml_type: ty.ggml_type(), data });
            }
        }
    }
    let mut metadata = metadata_from_config(config, name).map_err(ModelError::Request)?;
    metadata.extend(vocab.map(GgufVocab::metadata).unwrap_or_default());
    write_gguf(path, &metadata, tensors)
}
