//! The Hugging Face checkpoint layout: `config.json` + `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), memory-mapped (or held in memory, as the embedded default model is).
//!
//! BitLinear weights come in three forms, told apart by dtype and by the presence of a `weight_scale` tensor:
//! * packed `uint8 [out/4, in]` + `weight_scale` (microsoft/bitnet-b1.58-2B-4T): 2-bit codes `c = w + 1` packed
//!   along the OUTPUT dimension (byte `[r, k]` holds rows `r`, `r + R`, `r + 2R`, `r + 3R` at bits 1-0, 3-2,
//!   5-4, 7-6, `R = out/4`), repacked into the kernel layout;
//! * dense float `[out, in]` ternary values + `weight_scale` (transformers' offline `autobitlinear`);
//! * dense float `[out, in]` latent master weights without a scale (the `-bf16` checkpoints, 1bitLLM's fp16
//!   weights, online-quantized LLaMA members).
//!
//! `weight_scale` follows `quantization_config.linear_class` as transformers reads it: "bitlinear" (the default)
//! divides, `y = y_int / (s · weight_scale)`, so the absmean scale is `g = 1 / weight_scale`; "autobitlinear"
//! multiplies, `g = weight_scale`. Public reports disagree on which one the released 2B-4T config names, so
//! [`WEIGHT_SCALE_ENV`] overrides it.

use super::{ProjectionData, TensorSource};
use crate::config::{BitNetConfig, Family, ScaleConvention};
use crate::error::{ModelError, Result};
use crate::gguf::SharedBytes;
use crate::model::{BlockTensor, MatrixData, TensorId};
use bitnet_kernels::{TernaryCodes, TernaryMatrix};
use burn::tensor::DType;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the checkpoint's `linear_class` reading of `weight_scale`:
/// `divide` (weight_scale = 1/g, "bitlinear") or `multiply` (weight_scale = g, "autobitlinear").
pub const WEIGHT_SCALE_ENV: &str = "BITNET_WEIGHT_SCALE";

/// One tensor of a shard.
#[derive(Debug, Clone)]
pub struct HfTensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    shard: usize,
    range: std::ops::Range<usize>,
}

/// An opened checkpoint: its configuration and an index of every tensor across the shards.
pub struct HfCheckpoint {
    dir: PathBuf,
    config: BitNetConfig,
    /// Names without the `model.` prefix (transformers' bare `Qwen3Model`, as embedding models are saved).
    bare: bool,
    shards: Vec<(PathBuf, SharedBytes)>,
    index: HashMap<String, HfTensorInfo>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCheckpoint").field("dir", &self.dir).field("tensors", &self.index.len()).finish()
    }
}

fn scale_convention_override(dir: &Path) -> Result<Option<ScaleConvention>> {
    match std::env::var(WEIGHT_SCALE_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("divide") => Ok(Some(ScaleConvention::Divide)),
        Ok("multiply") => Ok(Some(ScaleConvention::Multiply)),
        Ok(other) => Err(ModelError::Config {
            path: dir.into(),
            message: format!("{WEIGHT_SCALE_ENV}='{other}': expected 'divide' or 'multiply'"),
        }),
    }
}

/// The weight files of a directory: `model.safetensors`, or the shards its index lists.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = crate::io::read_regular_file(&index)?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| ModelError::Config { path: index.clone(), message: format!("invalid JSON: {e}") })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config { path: index.clone(), message: "missing 'weight_map' object".into() })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for value in map.values() {
        let name = value
            .as_str()
            .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('\\') && !n.starts_with('.'))
            .ok_or_else(|| ModelError::Config { path: index.clone(), message: format!("bad shard name {value}") })?;
        let path = dir.join(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ModelError::Config { path: index, message: "'weight_map' lists no shard".into() });
    }
    Ok(files)
}

impl HfCheckpoint {
    /// Opens a checkpoint directory: reads and validates `config.json` (with the [`WEIGHT_SCALE_ENV`] override)
    /// and maps and indexes every shard.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = crate::io::read_regular_file(&config_path)?;
        let text = String::from_utf8(text)
            .map_err(|_| ModelError::Config { path: config_path.clone(), message: "not UTF-8".into() })?;
        let mut config = BitNetConfig::from_json(&text)
            .map_err(|message| ModelError::Config { path: config_path.clone(), message })?;
        if let Some(convention) = scale_convention_override(dir)? {
            config.scale_convention = convention;
        }
        let mut shards = Vec::new();
        for path in weight_files(dir)? {
            let bytes = SharedBytes::map_file(&path)?;
            shards.push((path, bytes));
        }
        Self::from_shards(dir, config, shards)
    }

    /// A checkpoint held in memory (`dir` names it in messages).
    pub fn from_memory(dir: &Path, config: BitNetConfig, safetensors: SharedBytes) -> Result<Self> {
        Self::from_shards(dir, config, vec![(dir.join("model.safetensors"), safetensors)])
    }

    fn from_shards(dir: &Path, config: BitNetConfig, shards: Vec<(PathBuf, SharedBytes)>) -> Result<Self> {
        let mut index = HashMap::new();
        for (shard, (path, bytes)) in shards.iter().enumerate() {
            let (header_len, metadata) = SafeTensors::read_metadata(bytes.as_slice()).map_err(|e| {
                ModelError::Weights { path: path.clone(), message: format!("invalid safetensors: {e}") }
            })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let (s, e) = info.data_offsets;
                let entry = HfTensorInfo {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    shard,
                    range: data_start + s..data_start + e,
                };
                if index.insert(name.clone(), entry).is_some() {
                    return Err(ModelError::Weights {
                        path: path.clone(),
                        message: format!("tensor '{name}' appears in two shards"),
                    });
                }
            }
        }
        // A Qwen3 embedding model (microsoft's BitNet embeddings) is a bare `Qwen3Model` whose projections
        // each normalize their input: found by its tensors, since its config says only "qwen3".
        let mut config = config;
        let bare = !index.contains_key("model.embed_tokens.weight") && index.contains_key("embed_tokens.weight");
        if config.family == Family::Qwen3 {
            let prefix = if bare { "" } else { "model." };
            if index.contains_key(&format!("{prefix}layers.0.self_attn.q_proj.norm.weight")) {
                config.linear_rms_norm_eps = Some(config.rms_norm_eps);
            }
        }
        Ok(Self { dir: dir.into(), config, bare, shards, index })
    }

    /// The model configuration.
    pub fn config(&self) -> &BitNetConfig {
        &self.config
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor: name, dtype and shape.
    pub fn tensor_infos(&self) -> impl Iterator<Item = (&str, &HfTensorInfo)> {
        self.index.iter().map(|(n, i)| (n.as_str(), i))
    }

    fn get(&self, name: &str) -> Option<(&HfTensorInfo, &[u8], &Path)> {
        let info = self.index.get(name)?;
        let (path, bytes) = &self.shards[info.shard];
        Some((info, &bytes.as_slice()[info.range.clone()], path))
    }

    fn require(&self, name: &str) -> Result<(&HfTensorInfo, &[u8], &Path)> {
        self.get(name).ok_or_else(|| ModelError::MissingTensor { path: self.dir.clone(), name: name.into() })
    }

    /// The name of tensor `id` in this checkpoint's family, without the `.weight` suffix.
    pub fn name(&self, id: TensorId) -> String {
        let name = hf_name(&self.config, id);
        match name.strip_prefix("model.") {
            Some(bare) if self.bare => bare.to_string(),
            _ => name,
        }
    }
}

/// The Hugging Face name of `id` for `config`'s family, without the `.weight` suffix (1bitLLM names the
/// sub-norms `inner_attn_ln` and `ffn_layernorm`).
pub fn hf_name(config: &BitNetConfig, id: TensorId) -> String {
    let block = |layer: usize, tensor: BlockTensor| {
        let name = match (config.family, tensor) {
            (Family::OneBitLlm, BlockTensor::AttnSubNorm) => "self_attn.inner_attn_ln",
            (Family::OneBitLlm, BlockTensor::FfnSubNorm) => "mlp.ffn_layernorm",
            (_, BlockTensor::InputNorm) => "input_layernorm",
            (_, BlockTensor::Q) => "self_attn.q_proj",
            (_, BlockTensor::K) => "self_attn.k_proj",
            (_, BlockTensor::V) => "self_attn.v_proj",
            (_, BlockTensor::QNorm) => "self_attn.q_norm",
            (_, BlockTensor::KNorm) => "self_attn.k_norm",
            (_, BlockTensor::AttnSubNorm) => "self_attn.attn_sub_norm",
            (_, BlockTensor::O) => "self_attn.o_proj",
            (_, BlockTensor::PostAttentionNorm) => "post_attention_layernorm",
            (_, BlockTensor::Gate) => "mlp.gate_proj",
            (_, BlockTensor::Up) => "mlp.up_proj",
            (_, BlockTensor::FfnSubNorm) => "mlp.ffn_sub_norm",
            (_, BlockTensor::Down) => "mlp.down_proj",
        };
        format!("model.layers.{layer}.{name}")
    };
    match id {
        TensorId::Embedding => "model.embed_tokens".into(),
        TensorId::Head => "lm_head".into(),
        TensorId::FinalNorm => "model.norm".into(),
        TensorId::Block { layer, tensor } => block(layer, tensor),
        TensorId::ProjectionNorm { layer, projection } if config.family == Family::Qwen3 => {
            format!("{}.norm", block(layer, projection))
        }
        TensorId::ProjectionNorm { layer, projection } => format!("{}.rms_norm", block(layer, projection)),
    }
}

fn tensor_error(path: &Path, name: &str, message: String) -> ModelError {
    ModelError::Tensor { path: path.into(), name: name.into(), message }
}

fn check_shape(path: &Path, name: &str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got != expected {
        return Err(tensor_error(path, name, format!("shape {got:?}, expected {expected:?}")));
    }
    Ok(())
}

/// f32 values of a float tensor (F32, F16 or BF16).
fn to_f32(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => super::widen(data, DType::BF16),
        Dtype::F16 => super::widen(data, DType::F16),
        other => return Err(tensor_error(path, name, format!("dtype {other:?}, expected F32, F16 or BF16"))),
    })
}

impl HfCheckpoint {
    /// The absmean scale `g` a projection's `weight_scale` encodes, if it has one.
    fn weight_scale(&self, prefix: &str) -> Result<Option<f32>> {
        let name = format!("{prefix}.weight_scale");
        let Some((info, data, path)) = self.get(&name) else { return Ok(None) };
        let values = to_f32(path, &name, info.dtype, data)?;
        let &[ws] = values.as_slice() else {
            return Err(tensor_error(path, &name, format!("{} values, expected 1", values.len())));
        };
        let g = match self.config.scale_convention {
            ScaleConvention::Divide => 1.0 / ws,
            ScaleConvention::Multiply => ws,
        };
        if !g.is_finite() || g <= 0.0 {
            return Err(tensor_error(path, &name, format!("weight_scale {ws} gives the invalid weight scale {g}")));
        }
        Ok(Some(g))
    }
}

impl TensorSource for HfCheckpoint {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn last_layer(&self) -> Option<usize> {
        self.index.keys().filter_map(|name| super::layer_of(name)).max()
    }

    fn norm(&self, id: TensorId, width: usize) -> Result<Vec<f32>> {
        let name = format!("{}.weight", self.name(id));
        let (info, data, path) = self.require(&name)?;
        check_shape(path, &name, &info.shape, &[width])?;
        to_f32(path, &name, info.dtype, data)
    }

    fn matrix(&self, id: TensorId, rows: usize, cols: usize) -> Result<MatrixData> {
        let name = format!("{}.weight", self.name(id));
        let (info, data, path) = self.require(&name)?;
        check_shape(path, &name, &info.shape, &[rows, cols])?;
        let shared =
            || self.shards[info.shard].1.slice(info.range.clone()).expect("tensor ranges are checked when indexed");
        // Qwen3-based ternary models ship ternary embeddings and heads (as unpacked values times group scales
        // here): they stay ternary.
        if self.config.family == Family::Qwen3 {
            let values = to_f32(path, &name, info.dtype, data)?;
            if let Some(m) = TernaryMatrix::from_scaled_ternary(&values, rows, cols)
                .map_err(|e| tensor_error(path, &name, e.to_string()))?
            {
                return Ok(MatrixData::Ternary(m));
            }
        }
        Ok(match info.dtype {
            Dtype::BF16 => MatrixData::Half(shared(), DType::BF16),
            Dtype::F16 => MatrixData::Half(shared(), DType::F16),
            dtype => MatrixData::F32(to_f32(path, &name, dtype, data)?),
        })
    }

    fn release(&self, id: TensorId) {
        if let Some(info) = self.index.get(&format!("{}.weight", self.name(id))) {
            if let Some(bytes) = self.shards[info.shard].1.slice(info.range.clone()) {
                bytes.release_pages();
            }
        }
    }

    fn release_all(&self) {
        self.shards.iter().for_each(|(_, bytes)| bytes.release_pages());
    }

    fn projection(&self, id: TensorId, rows: usize, cols: usize) -> Result<ProjectionData> {
        let prefix = self.name(id);
        let name = format!("{prefix}.weight");
        let (info, data, path) = self.require(&name)?;
        let scale = self.weight_scale(&prefix)?;
        Ok(match (info.dtype, scale) {
            (Dtype::U8, Some(g)) => {
                check_shape(path, &name, &info.shape, &[rows.div_ceil(4), cols])?;
                let m = TernaryMatrix::from_hf_packed(data, rows, cols, g)
                    .map_err(|e| tensor_error(path, &name, e.to_string()))?;
                ProjectionData::Ternary(m)
            }
            (Dtype::U8, None) => {
                return Err(ModelError::MissingTensor { path: path.into(), name: format!("{prefix}.weight_scale") })
            }
            (dtype, Some(g)) => {
                check_shape(path, &name, &info.shape, &[rows, cols])?;
                let values = to_f32(path, &name, dtype, data)?;
                let mut codes = Vec::with_capacity(values.len());
                for (i, &w) in values.iter().enumerate() {
                    if w != -1.0 && w != 0.0 && w != 1.0 {
                        return Err(tensor_error(
                            path,
                            &name,
                            format!("element {i} is {w}: a scaled weight must hold -1, 0 or 1"),
                        ));
                    }
                    codes.push((w + 1.0) as u8);
                }
                ProjectionData::Ternary(TernaryMatrix::from_codes_with_scale(
                    &TernaryCodes::new(rows, cols, codes)?,
                    g,
                )?)
            }
            (dtype, None) => {
                check_shape(path, &name, &info.shape, &[rows, cols])?;
                // Unpacked ternary checkpoints (ternary values times per-row or per-group scales) load as such;
                // anything else is latent master weights.
                let values = to_f32(path, &name, dtype, data)?;
                match TernaryMatrix::from_scaled_ternary(&values, rows, cols)
                    .map_err(|e| tensor_error(path, &name, e.to_string()))?
                {
                    Some(m) => ProjectionData::Ternary(m),
                    None => ProjectionData::Float(values),
                }
            }
        })
    }
}
