//! A packed model as a Hugging Face checkpoint directory: `config.json`, `model.safetensors` and the tokenizer
//! files, in the layout microsoft/bitnet-b1.58-2B-4T ships (and transformers' `BitNetForCausalLM` loads with
//! `linear_class` "bitlinear"): each projection as uint8 `[out/4, in]` codes packed along the output dimension
//! with an f32 `weight_scale = 1 / g`; norms, embedding and head in their stored precision.
//!
//! A Qwen3-family model is written as transformers' `Qwen3ForCausalLM` loads it: every ternary matrix
//! (projections, and the embedding and head when ternary) as dense values `(c - 1) * scale`, in f16 when every
//! scale is an f16 value (Q2_0 / PQ2_0 / TQ scales are) and f32 otherwise, so the values are exact.

use super::safetensors::{write_safetensors, TensorSpec};
use super::{projection_matrix, single_scale, tensor_bytes};
use crate::config::{Family, ScaleConvention};
use crate::error::{ModelError, Result};
use crate::model::{BitNetModel, ModelTensor, TokenMatrix};
use crate::source::hf::hf_name;
use bitnet_kernels::formats::hf_packed::pack_hf_packed;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use std::path::Path;

/// The tokenizer files written beside a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    /// `tokenizer.json`.
    pub tokenizer_json: Vec<u8>,
    /// `tokenizer_config.json` (special tokens, chat template), if any.
    pub tokenizer_config: Option<String>,
}

fn safetensors_dtype(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("F32"),
        DType::BF16 => Ok("BF16"),
        DType::F16 => Ok("F16"),
        other => Err(ModelError::Request(format!("tensors of dtype {other:?} cannot be written (F32, BF16, F16)"))),
    }
}

/// A float tensor written in its own dtype.
fn stored<'a, B: Backend, const D: usize>(name: String, t: Tensor<B, D>) -> Result<TensorSpec<'a>> {
    let (shape, dtype) = (t.dims().to_vec(), safetensors_dtype(t.dtype())?);
    Ok(TensorSpec { name, dtype, shape, data: Box::new(move || Ok(tensor_bytes(t).0)) })
}

/// A ternary matrix as dense `[rows, cols]` values, f16 when exact, else f32 (read back when written).
fn dense_ternary<'a, B: Backend>(name: String, layer: &'a bitnet_backend::BitLinear<B>) -> TensorSpec<'a> {
    let shape = vec![layer.d_output(), layer.d_input()];
    // The dtype is decided from the scales alone, before the tensor's turn comes.
    let exact_f16 = layer.packed_weight().and_then(|w| w.ok()).is_some_and(|w| {
        let scales = w.scales().to_data().convert::<f32>();
        scales.as_slice::<f32>().is_ok_and(|s| s.iter().all(|&s| half::f16::from_f32(s).to_f32() == s))
    });
    let what = name.clone();
    let data = Box::new(move || {
        let values = projection_matrix(&what, layer)?.view().dequantize();
        Ok(if exact_f16 {
            values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
        } else {
            values.iter().flat_map(|&v| v.to_le_bytes()).collect()
        })
    });
    TensorSpec { name, dtype: if exact_f16 { "F16" } else { "F32" }, shape, data }
}

/// Writes the tokenizer files (if any) into a checkpoint directory.
fn write_tokenizer_files(dir: &Path, tokenizer: Option<&TokenizerFiles>) -> Result<()> {
    if let Some(t) = tokenizer {
        crate::io::write_atomically(&dir.join("tokenizer.json"), &t.tokenizer_json)?;
        if let Some(config) = &t.tokenizer_config {
            crate::io::write_atomically(&dir.join("tokenizer_config.json"), config.as_bytes())?;
        }
    }
    Ok(())
}

/// Writes packed `model` into `dir` (created if needed) as an HF checkpoint, with `tokenizer` if given.
pub fn write_hf_checkpoint<B: Backend>(
    model: &BitNetModel<B>,
    dir: &Path,
    tokenizer: Option<&TokenizerFiles>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io { path: dir.into(), cause })?;
    let mut config = model.config().clone();
    config.scale_convention = ScaleConvention::Divide;
    let mut tensors: Vec<TensorSpec<'_>> = Vec::new();
    for (id, tensor) in model.tensors() {
        let name = hf_name(&config, id);
        let qwen3 = config.family == Family::Qwen3;
        match tensor {
            ModelTensor::Matrix(TokenMatrix::Dense(p)) => tensors.push(stored(format!("{name}.weight"), p.val())?),
            ModelTensor::Matrix(TokenMatrix::Ternary(layer)) if qwen3 => {
                tensors.push(dense_ternary(format!("{name}.weight"), layer))
            }
            ModelTensor::Projection(p) if qwen3 => {
                if !p.is_packed() {
                    return Err(ModelError::Request(format!("{name} holds latent weights: pack the model first")));
                }
                tensors.push(dense_ternary(format!("{name}.weight"), p))
            }
            ModelTensor::Matrix(m) => {
                return Err(ModelError::Request(format!(
                    "{name} is {}, which Hugging Face checkpoints do not store: write it as loaded (without --head)",
                    m.format_name()
                )))
            }
            ModelTensor::Norm(n) => tensors.push(stored(format!("{name}.weight"), n.gamma.val())?),
            ModelTensor::Projection(p) => {
                let (rows, cols) = (p.d_output(), p.d_input());
                if !p.is_packed() {
                    return Err(ModelError::Request(format!("{name} holds latent weights: pack the model first")));
                }
                if !rows.is_multiple_of(4) {
                    return Err(ModelError::Request(format!(
                        "{name}: {rows} outputs is not a multiple of 4, which the HF packed layout needs"
                    )));
                }
                // Read back and encoded when the tensor's turn comes: one projection in memory at a time.
                let what = name.clone();
                tensors.push(TensorSpec {
                    name: format!("{name}.weight"),
                    dtype: "U8",
                    shape: vec![rows / 4, cols],
                    data: Box::new(move || Ok(pack_hf_packed(&projection_matrix(&what, p)?.to_codes())?)),
                });
                let what = name.clone();
                tensors.push(TensorSpec {
                    name: format!("{name}.weight_scale"),
                    dtype: "F32",
                    shape: vec![1],
                    data: Box::new(move || {
                        let g = single_scale(&what, &projection_matrix(&what, p)?, "the HF packed layout")?;
                        Ok((1.0 / g).to_le_bytes().to_vec())
                    }),
                });
            }
        }
    }
    write_safetensors(&dir.join("model.safetensors"), tensors)?;
    write_tokenizer_files(dir, tokenizer)?;
    // Last: a directory with config.json is complete.
    crate::io::write_atomically(&dir.join("config.json"), config.to_json().as_bytes())
}

/// Writes a LATENT `model` (a training run's master weights) into `dir` as a bf16 Hugging Face checkpoint that
/// transformers' `BitNetForCausalLM` (and LLaMA-layout members) load with online quantization
/// (`quantization_config`: `quant_method` "bitnet", `linear_class` "autobitlinear", `quantization_mode`
/// "online"), so a run can continue in PyTorch tools: every projection as `[out, in]` bf16 latent weights,
/// norms and token matrices in bf16. Loaded back here, the projections are quantized at load (absmean, as the
/// training forward pass does; bf16 rounding of the masters may flip a code at a rounding boundary).
pub fn write_hf_master<B: Backend>(
    model: &BitNetModel<B>,
    dir: &Path,
    tokenizer: Option<&TokenizerFiles>,
) -> Result<()> {
    use burn::tensor::FloatDType;
    std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io { path: dir.into(), cause })?;
    let config = model.config().clone();
    let bf16 = |name: String, t: Tensor<B, 2>| stored(name, t.cast(FloatDType::BF16));
    let mut tensors: Vec<TensorSpec<'_>> = Vec::new();
    for (id, tensor) in model.tensors() {
        let name = format!("{}.weight", hf_name(&config, id));
        match tensor {
            ModelTensor::Matrix(TokenMatrix::Dense(p)) => tensors.push(bf16(name, p.val())?),
            ModelTensor::Matrix(m) => {
                return Err(ModelError::Request(format!(
                    "{name} is {}: a master checkpoint needs dense matrices",
                    m.format_name()
                )))
            }
            ModelTensor::Norm(n) => tensors.push(stored(name, n.gamma.val().cast(FloatDType::BF16))?),
            ModelTensor::Projection(p) => match p.latent_weight() {
                // BitLinear keeps latent weights as burn's Linear does, [in, out].
                Some(w) => tensors.push(bf16(name, w.val().transpose())?),
                None => return Err(ModelError::Request(format!("{name} is packed: master weights are latent"))),
            },
        }
    }
    write_safetensors(&dir.join("model.safetensors"), tensors)?;
    write_tokenizer_files(dir, tokenizer)?;
    let mut json: serde_json::Value = serde_json::from_str(&config.to_json())
        .map_err(|e| ModelError::Request(format!("the configuration's own JSON: {e}")))?;
    json["torch_dtype"] = "bfloat16".into();
    if config.family != Family::Qwen3 {
        json["quantization_config"]["linear_class"] = "autobitlinear".into();
        json["quantization_config"]["quantization_mode"] = "online".into();
    }
    let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
    crate::io::write_atomically(&dir.join("config.json"), text.as_bytes())
}
