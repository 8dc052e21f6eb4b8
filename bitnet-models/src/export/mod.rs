//! Writing models: a packed [`crate::BitNetModel`] to a Hugging Face checkpoint directory
//! ([`write_hf_checkpoint`]) or a GGUF file ([`write_gguf_model`]), and random-weight models of a family member's
//! shapes for benchmarks ([`random_model`]).
//!
//! Export of a trained model is `model.pack()` followed by one of the writers: the codes and scales written are
//! exactly those the packed model computes with. Every file is written atomically.

mod gguf;
mod hf;
mod random;
pub mod safetensors;

pub use gguf::{write_gguf_model, TernaryGgufType};
pub use hf::{write_hf_checkpoint, TokenizerFiles};
pub use random::random_model;

use crate::error::{ModelError, Result};
use bitnet_backend::BitLinear;
use bitnet_kernels::TernaryCodes;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// The codes `[rows, cols]` and per-row scales of a packed projection, read back from its device.
pub(crate) fn projection_codes<B: Backend>(what: &str, p: &BitLinear<B>) -> Result<(TernaryCodes, Vec<f32>)> {
    let weight = p.packed_weight().ok_or_else(|| {
        ModelError::Request(format!("{what} holds latent weights: pack the model before writing it"))
    })??;
    let matrix = weight.to_matrix()?;
    Ok((matrix.to_codes(), matrix.row_scales().to_vec()))
}

/// The one scale shared by every row (the HF packed and I2_S layouts store one scale per tensor).
pub(crate) fn single_scale(what: &str, row_scales: &[f32], format: &str) -> Result<f32> {
    match row_scales.first() {
        Some(&g) if row_scales.iter().all(|&s| s.to_bits() == g.to_bits()) => Ok(g),
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

/// f32 values of a float tensor, read back from its device.
pub(crate) fn tensor_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ModelError::Request(format!("reading a tensor: {e:?}")))
}
