//! The Hugging Face directory layout: `config.json` + `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), memory-mapped.
//!
//! BitLinear weights come in three forms, told apart by dtype and by the presence of a `weight_scale` tensor:
//! * packed `uint8 [out/4, in]` + `weight_scale` (microsoft/bitnet-b1.58-2B-4T): 2-bit codes packed along the
//!   output dimension, repacked into the kernel layout; `g` follows the config's `linear_class`
//!   ([`ScaleConvention`]);
//! * dense float `[out, in]` ternary values + `weight_scale` (transformers' offline `autobitlinear`);
//! * dense float `[out, in]` latent master weights without a scale (the `-bf16` checkpoints): quantized at load
//!   with absmean, as training did.

use crate::config::{BitNetConfig, ScaleConvention};
use crate::error::{ModelError, Result};
use crate::model::{BitNetModel, Block, BlockTensor, RmsNorm};
use bitnet_backend::{TernaryBackend, TernaryWeight};
use bitnet_kernels::{TernaryCodes, TernaryMatrix};
use burn::tensor::{DType, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Loads a model directory onto `device`.
pub fn load_hf_dir<B: TernaryBackend>(dir: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    let mut config = BitNetConfig::from_file(&dir.join("config.json"))?;
    if let Some(convention) = scale_convention_override(dir)? {
        config.scale_convention = convention;
    }
    let files = weight_files(dir)?;
    let maps = files.iter().map(|p| map_file(p)).collect::<Result<Vec<_>>>()?;
    let parsed = files
        .iter()
        .zip(&maps)
        .map(|(path, map)| {
            SafeTensors::deserialize(map)
                .map_err(|e| ModelError::Weights { path: path.clone(), message: format!("invalid safetensors: {e}") })
        })
        .collect::<Result<Vec<_>>>()?;
    let store = Store::new(dir, &files, &parsed);
    build(config, &store, device)
}

/// Environment variable that overrides the checkpoint's `linear_class` reading of `weight_scale`:
/// `divide` (weight_scale = 1/g, "bitlinear") or `multiply` (weight_scale = g, "autobitlinear").
pub const WEIGHT_SCALE_ENV: &str = "BITNET_WEIGHT_SCALE";

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

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|cause| ModelError::Io { path: index.clone(), cause })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config { path: index.clone(), message: format!("invalid JSON: {e}") })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config { path: index.clone(), message: "missing 'weight_map' object".into() })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for value in map.values() {
        let name = value
            .as_str()
            .filter(|n| !n.contains('/') && !n.contains('\\') && !n.starts_with('.'))
            .ok_or_else(|| ModelError::Config { path: index.clone(), message: format!("bad shard name {value}") })?;
        let path = dir.join(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|cause| ModelError::Io { path: path.into(), cause })?;
    // SAFETY: the map is read-only; like every memory-mapped loader we rely on the file not being truncated
    // while the model loads (the data is copied into tensors before this function's caller returns).
    unsafe { Mmap::map(&file) }.map_err(|cause| ModelError::Io { path: path.into(), cause })
}

/// Tensor lookup across the shards.
struct Store<'a> {
    dir: PathBuf,
    index: HashMap<String, (usize, &'a PathBuf)>,
    parsed: &'a [SafeTensors<'a>],
}

impl<'a> Store<'a> {
    fn new(dir: &Path, files: &'a [PathBuf], parsed: &'a [SafeTensors<'a>]) -> Self {
        let mut index = HashMap::new();
        for (i, (st, path)) in parsed.iter().zip(files).enumerate() {
            for name in st.names() {
                index.insert(name.to_string(), (i, path));
            }
        }
        Self { dir: dir.into(), index, parsed }
    }

    fn get(&self, name: &str) -> Result<Option<(safetensors::tensor::TensorView<'a>, &'a PathBuf)>> {
        let Some(&(i, path)) = self.index.get(name) else { return Ok(None) };
        let view = self.parsed[i].tensor(name).map_err(|e| ModelError::Tensor {
            path: path.clone(),
            name: name.into(),
            message: e.to_string(),
        })?;
        Ok(Some((view, path)))
    }

    fn require(&self, name: &str) -> Result<(safetensors::tensor::TensorView<'a>, &'a PathBuf)> {
        self.get(name)?.ok_or_else(|| ModelError::MissingTensor { path: self.dir.clone(), name: name.into() })
    }

    /// A dense matrix on the device: bf16 and f16 data keep their type where the backend stores it (half the
    /// bytes for the output head's GEMV, and no rounding: the values are the checkpoint's), anything else
    /// becomes f32.
    fn dense<B: TernaryBackend>(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let (view, path) = self.require(name)?;
        check_shape(path, name, view.shape(), &[rows, cols])?;
        let half = match view.dtype() {
            Dtype::BF16 => Some(DType::BF16),
            Dtype::F16 => Some(DType::F16),
            _ => None,
        };
        if let Some(dtype) = half.filter(|&d| B::supports_dtype(device, d)) {
            let data = TensorData::from_bytes_vec(view.data().to_vec(), [rows, cols], dtype);
            return Ok(Tensor::from_data(data, (device, dtype)));
        }
        let values = to_f32(path, name, view.dtype(), view.data())?;
        Ok(Tensor::from_data(TensorData::new(values, [rows, cols]), device))
    }

    /// A float tensor (f32, f16 or bf16) of exactly `shape`, as f32.
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (view, path) = self.require(name)?;
        check_shape(path, name, view.shape(), shape)?;
        to_f32(path, name, view.dtype(), view.data())
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

fn to_f32(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    let pairs = data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => pairs.map(|b| half::bf16::from_bits(b).to_f32()).collect(),
        Dtype::F16 => pairs.map(|b| half::f16::from_bits(b).to_f32()).collect(),
        other => return Err(tensor_error(path, name, format!("dtype {other:?}, expected F32, F16 or BF16"))),
    })
}

fn ternary<B: TernaryBackend>(
    store: &Store<'_>,
    prefix: &str,
    rows: usize,
    cols: usize,
    convention: ScaleConvention,
    device: &B::Device,
) -> Result<TernaryWeight<B>> {
    let name = format!("{prefix}.weight");
    let (view, path) = store.require(&name)?;
    let scale_name = format!("{prefix}.weight_scale");
    let scale = match store.get(&scale_name)? {
        Some((s, spath)) => {
            let values = to_f32(spath, &scale_name, s.dtype(), s.data())?;
            let &[ws] = values.as_slice() else {
                return Err(tensor_error(spath, &scale_name, format!("{} values, expected 1", values.len())));
            };
            let g = match convention {
                ScaleConvention::Divide => 1.0 / ws,
                ScaleConvention::Multiply => ws,
            };
            if !g.is_finite() || g <= 0.0 {
                return Err(tensor_error(
                    spath,
                    &scale_name,
                    format!("weight_scale {ws} gives the invalid weight scale {g}"),
                ));
            }
            Some(g)
        }
        None => None,
    };
    let matrix = match (view.dtype(), scale) {
        (Dtype::U8, Some(g)) => {
            check_shape(path, &name, view.shape(), &[rows.div_ceil(4), cols])?;
            TernaryMatrix::from_hf_packed(view.data(), rows, cols, g)
                .map_err(|e| tensor_error(path, &name, e.to_string()))?
        }
        (Dtype::U8, None) => return Err(ModelError::MissingTensor { path: path.clone(), name: scale_name }),
        (dtype, Some(g)) => {
            check_shape(path, &name, view.shape(), &[rows, cols])?;
            let values = to_f32(path, &name, dtype, view.data())?;
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
            TernaryMatrix::from_codes_with_scale(&TernaryCodes::new(rows, cols, codes)?, g)?
        }
        (dtype, None) => {
            check_shape(path, &name, view.shape(), &[rows, cols])?;
            TernaryMatrix::quantize_absmean(&to_f32(path, &name, dtype, view.data())?, rows, cols)?
        }
    };
    Ok(TernaryWeight::from_matrix(&matrix, device))
}

fn build<B: TernaryBackend>(config: BitNetConfig, store: &Store<'_>, device: &B::Device) -> Result<BitNetModel<B>> {
    let c = &config;
    let (h, v) = (c.hidden_size, c.vocab_size);
    let norm = |name: String, width: usize, eps: f64| -> Result<RmsNorm<B>> {
        let w = store.floats(&name, &[width])?;
        Ok(RmsNorm { weight: Tensor::from_data(TensorData::new(w, [width]), device), eps })
    };
    let embed_tokens = store.dense::<B>("model.embed_tokens.weight", v, h, device)?;
    let lm_head = if c.tie_word_embeddings { None } else { Some(store.dense::<B>("lm_head.weight", v, h, device)?) };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        let mut linear_norm = |role: BlockTensor, width| {
            norm(format!("{}.rms_norm.weight", role.hf_name(l)), width, c.linear_rms_norm_eps.unwrap_or(1e-6))
        };
        layers.push(Block::load(
            c,
            &mut |role: BlockTensor, width| norm(format!("{}.weight", role.hf_name_in(c, l)), width, c.rms_norm_eps),
            &mut |role: BlockTensor, rows, cols| {
                ternary::<B>(store, &role.hf_name(l), rows, cols, c.scale_convention, device)
            },
            c.linear_rms_norm_eps
                .is_some()
                .then_some(&mut linear_norm as &mut dyn FnMut(BlockTensor, usize) -> Result<RmsNorm<B>>),
        )?);
    }
    let final_norm = norm("model.norm.weight".into(), h, c.rms_norm_eps)?;
    Ok(BitNetModel::new(config, embed_tokens, lm_head, layers, final_norm, device))
}
