//! Writing models: a packed [`crate::BitNetModel`] to a Hugging Face checkpoint directory
//! ([`write_hf_checkpoint`]) or a GGUF file ([`write_gguf_model`]), any checkpoint to any format ([`convert`]),
//! and random-weight models of a family member's shapes for benchmarks ([`random_model`]).
//!
//! Export of a trained model is `model.pack()` followed by one of the writers: the codes and scales written are
//! exactly those the packed model computes with. Every file is written atomically.

mod convert;
mod gguf;
mod hf;
mod random;
pub mod safetensors;

pub use convert::{convert, ConvertFormat, ConvertReport};
pub use gguf::{write_gguf_model, TernaryGgufType};
pub use hf::{write_hf_checkpoint, write_hf_master, TokenizerFiles};
pub use random::random_model;

use crate::error::{ModelError, Result};
use bitnet_backend::BitLinear;
use bitnet_kernels::TernaryMatrix;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// The packed matrix of a projection, read back from its device.
pub(crate) fn projection_matrix<B: Backend>(what: &str, p: &BitLinear<B>) -> Result<TernaryMatrix> {
    let weight = p.packed_weight().ok_or_else(|| {
        ModelError::Request(format!("{what} holds latent weights: pack the model before writing it"))
    })??;
    Ok(weight.to_matrix()?)
}

/// The scales of `matrix` per `group` weights of each row (row-major), or why `format` cannot store them.
pub(crate) fn scales_per(what: &str, matrix: &TernaryMatrix, group: usize, format: &str) -> Result<Vec<f32>> {
    matrix.view().scales_per(group).map_err(|e| {
        let holds = if group >= matrix.cols() {
            "one scale per row".to_string()
        } else {
            format!("a scale per {group} weights")
        };
        ModelError::Request(format!("{what} cannot be written as {format} ({holds}): {e}"))
    })
}

/// The one scale shared by every weight (the HF packed and I2_S layouts store one scale per tensor).
pub(crate) fn single_scale(what: &str, matrix: &TernaryMatrix, format: &str) -> Result<f32> {
    let scales = scales_per(what, matrix, matrix.cols().max(1), format)?;
    match scales.first() {
        Some(&g) if scales.iter().all(|&s| s.to_bits() == g.to_bits()) => Ok(g),
        _ => Err(ModelError::Request(format!(
            "{what} has a scale per row, which {format} cannot store (it holds one scale per tensor)"
        ))),
    }
}

/// The raw little-endian bytes and dtype of a dense tensor, read back from its device.
pub(crate) fn tensor_bytes<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<u8>, DType) {
    let data = t.into_data();
    let dtype = data.dtype;
    (data.into_bytes().to_vec(), dtype)
}
