//! Writing models in the Hugging Face packed layout (`config.json` + `model.safetensors`), the format
//! microsoft/bitnet-b1.58-2B-4T ships: BitLinear weights as uint8 `[out/4, in]` (codes packed along the output
//! dimension) with a bf16 `weight_scale`, everything else bf16.
//!
//! The safetensors file is streamed tensor by tensor, so a 2B model is written without holding it in memory.

use crate::config::{BitNetConfig, ScaleConvention};
use crate::error::{ModelError, Result};
use crate::model::BlockTensor;
use bitnet_kernels::formats::hf_packed::pack_hf_packed;
use bitnet_kernels::TernaryCodes;
use std::io::{BufWriter, Write};
use std::path::Path;

/// One tensor to write: its name, safetensors dtype string, shape, and a producer of its bytes.
pub struct TensorSpec<'a> {
    /// Tensor name.
    pub name: String,
    /// `"U8"`, `"BF16"`, `"F32"`.
    pub dtype: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Called once, when the tensor's turn comes, to produce exactly `bytes()` bytes.
    pub data: Box<dyn FnOnce() -> Result<Vec<u8>> + 'a>,
}

impl TensorSpec<'_> {
    fn bytes(&self) -> usize {
        let width = match self.dtype {
            "U8" => 1,
            "BF16" | "F16" => 2,
            _ => 4,
        };
        self.shape.iter().product::<usize>() * width
    }
}

/// Streams `tensors` into a safetensors file.
pub fn write_safetensors(path: &Path, tensors: Vec<TensorSpec<'_>>) -> Result<()> {
    let io = |cause| ModelError::Io { path: path.into(), cause };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in &tensors {
        let end = offset + t.bytes();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::Value::Object(header).to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(header.as_bytes()).map_err(io)?;
    for t in tensors {
        let expected = t.bytes();
        let name = t.name.clone();
        let data = (t.data)()?;
        if data.len() != expected {
            return Err(ModelError::Tensor {
                path: path.into(),
                name,
                message: format!("{} bytes, expected {expected}", data.len()),
            });
        }
        out.write_all(&data).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// bf16 bytes of `values`.
pub fn bf16_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect()
}

/// A deterministic generator (splitmix64) for random weights.
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

/// Writes a random-weight model of `config`'s shapes (HF packed layout, "bitlinear" scale convention) with
/// the given config text into `dir`, deterministically from `seed`.
pub fn write_random_hf_packed(dir: &Path, config_text: &str, config: &BitNetConfig, seed: u64) -> Result<()> {
    if config.scale_convention != ScaleConvention::Divide {
        return Err(ModelError::Request("random models are written with linear_class 'bitlinear'".into()));
    }
    std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io { path: dir.into(), cause })?;
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config_text).map_err(|cause| ModelError::Io { path: config_path, cause })?;
    let c = config;
    let (h, v) = (c.hidden_size, c.vocab_size);
    let rng = std::cell::RefCell::new(Rng(seed));
    let mut tensors: Vec<TensorSpec<'_>> = Vec::new();
    let rng_ref = &rng;
    let dense = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product::<usize>();
        TensorSpec {
            name,
            dtype: "BF16",
            shape,
            data: Box::new(move || {
                let mut r = rng_ref.borrow_mut();
                Ok(bf16_bytes((0..n).map(|_| r.uniform() * scale)))
            }),
        }
    };
    let norm = |name: String, width: usize| TensorSpec {
        name,
        dtype: "BF16",
        shape: vec![width],
        data: Box::new(move || Ok(bf16_bytes(std::iter::repeat_n(1.0, width)))),
    };
    let mut ternary = |prefix: String, rows: usize, cols: usize| {
        tensors.push(TensorSpec {
            name: format!("{prefix}.weight"),
            dtype: "U8",
            shape: vec![rows / 4, cols],
            data: Box::new(move || {
                let mut r = rng_ref.borrow_mut();
                let codes: Vec<u8> = (0..rows * cols).map(|_| (r.next() % 3) as u8).collect();
                Ok(pack_hf_packed(&TernaryCodes::new(rows, cols, codes)?)?)
            }),
        });
        // weight_scale = 1 / g with g the absmean scale of a latent weight of std ~ 1/sqrt(cols).
        let g = 1.0 / (cols as f32).sqrt();
        tensors.push(TensorSpec {
            name: format!("{prefix}.weight_scale"),
            dtype: "BF16",
            shape: vec![1],
            data: Box::new(move || Ok(bf16_bytes([1.0 / g]))),
        });
    };
    for l in 0..c.num_hidden_layers {
        for role in BlockTensor::ALL {
            if let Some([rows, cols]) = role.ternary_shape(c) {
                ternary(role.hf_name(l), rows, cols);
            }
        }
    }
    for l in 0..c.num_hidden_layers {
        for role in BlockTensor::ALL {
            if let Some(width) = role.norm_width(c) {
                tensors.push(norm(format!("{}.weight", role.hf_name(l)), width));
            }
        }
    }
    tensors.push(norm("model.norm.weight".into(), h));
    tensors.push(dense("model.embed_tokens.weight".into(), vec![v, h], 0.05));
    if !c.tie_word_embeddings {
        tensors.push(dense("lm_head.weight".into(), vec![v, h], 0.05));
    }
    write_safetensors(&dir.join("model.safetensors"), tensors)
}

/// Writes a random-weight model of `config`'s shapes as a GGUF file with ternary tensors of type `ty` (F16
/// embedding, F32 norms), deterministically from `seed`, with `vocab` embedded as its tokenizer if given.
pub fn write_random_gguf(
    path: &Path,
    config: &BitNetConfig,
    ty: super::gguf_write::TernaryGgufType,
    name: &str,
    seed: u64,
    vocab: Option<&super::gguf_vocab::GgufVocab>,
) -> Result<()> {
    use super::gguf_write::{bitnet_metadata, f32_spec, ggml_type, write_gguf, GgufTensorSpec};
    let c = config;
    ty.check_shapes(c).map_err(ModelError::Request)?;
    let (h, v) = (c.hidden_size, c.vocab_size);
    let rng = std::cell::RefCell::new(Rng(seed));
    let rng_ref = &rng;
    let mut tensors: Vec<GgufTensorSpec<'_>> = Vec::new();
    let random_f16 = |name: &str| GgufTensorSpec {
        name: name.into(),
        ne: vec![h as u64, v as u64],
        ggml_type: ggml_type::F16,
        data: Box::new(move || {
            let mut r = rng_ref.borrow_mut();
            Ok((0..h * v).flat_map(|_| half::f16::from_f32(r.uniform() * 0.05).to_le_bytes()).collect())
        }),
    };
    tensors.push(random_f16("token_embd.weight"));
    tensors.push(f32_spec("output_norm.weight".into(), vec![h as u64], vec![1.0; h]));
    if !c.tie_word_embeddings {
        tensors.push(random_f16("output.weight"));
    }
    for l in 0..c.num_hidden_layers {
        for role in BlockTensor::ALL {
            let name = format!("{}.weight", role.gguf_name(l));
            if let Some([rows, cols]) = role.ternary_shape(c) {
                tensors.push(GgufTensorSpec {
                    name,
                    ne: vec![cols as u64, rows as u64],
                    ggml_type: ty.id(),
                    data: Box::new(move || {
                        let mut r = rng_ref.borrow_mut();
                        let codes: Vec<u8> = (0..rows * cols).map(|_| (r.next() % 3) as u8).collect();
                        ty.encode(&TernaryCodes::new(rows, cols, codes)?, 1.0 / (cols as f32).sqrt())
                    }),
                });
            } else if let Some(width) = role.norm_width(c) {
                tensors.push(f32_spec(name, vec![width as u64], vec![1.0; width]));
            }
        }
    }
    let mut metadata = bitnet_metadata(c, name);
    metadata.extend(vocab.map(|v| v.metadata()).unwrap_or_default());
    write_gguf(path, &metadata, tensors)
}
