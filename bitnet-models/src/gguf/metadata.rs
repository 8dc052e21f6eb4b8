//! BitNet model configuration <-> GGUF metadata, in one place.
//!
//! Keys (llama.cpp's convention, `{arch}` = `general.architecture`): `{arch}.embedding_length` (hidden size),
//! `{arch}.feed_forward_length`, `{arch}.block_count`, `{arch}.attention.head_count`,
//! `{arch}.attention.head_count_kv`, `{arch}.context_length`, `{arch}.attention.layer_norm_rms_epsilon`,
//! `{arch}.rope.freq_base`, and `tokenizer.ggml.bos_token_id` / `eos_token_id`. The vocabulary size is the
//! embedding's row count.
//!
//! The architecture string carries the block's semantics, whatever the tensor types: `bitnet-25` and
//! `bitnet-b1.58` (bitnet.cpp's fork) are the 2B-4T block (relu², sub-norms); upstream llama.cpp's `bitnet` is
//! the 1bitLLM block (SiLU-gated FFN, with sub-norms); `qwen3` is the Qwen3 block (per-head q/k norms
//! `attn_q_norm` / `attn_k_norm`, SiLU, `{arch}.attention.key_length` = head_dim, RoPE base 1e6 by default).
//! All of them store q/k unpermuted (rotate-half RoPE), as their converters write them. Files written here use
//! `bitnet-b1.58` for the 2B-4T block, `bitnet` for the 1bitLLM block and `qwen3` for the Qwen3 block.

use super::reader::GgufFile;
use super::types::FORK_ARCHITECTURES;
use super::value::GgufValue;
use crate::config::{Activation, BitNetConfig, Family, ScaleConvention};
use crate::error::{ModelError, Result};

/// The architecture string written for the 2B-4T block (relu², sub-norms).
pub const WRITTEN_ARCHITECTURE: &str = "bitnet-b1.58";

/// The architecture string a model of `config` is written under, or why it has none (GGUF names only the
/// 2B-4T block, bitnet.cpp's `bitnet-b1.58`, and the 1bitLLM block, llama.cpp's `bitnet`).
pub fn written_architecture(config: &BitNetConfig) -> std::result::Result<&'static str, String> {
    match (config.family, config.activation, config.linear_rms_norm_eps) {
        (Family::BitNet, Activation::Relu2, None) => Ok(WRITTEN_ARCHITECTURE),
        (Family::OneBitLlm, Activation::Silu, None) => Ok("bitnet"),
        (Family::Qwen3, Activation::Silu, _) => Ok("qwen3"),
        _ => Err("GGUF files hold the 2B-4T block (bitnet-b1.58), the 1bitLLM block (bitnet) or the Qwen3 block \
                  (qwen3); this model's block is none of them"
            .into()),
    }
}

/// The name of the embedding tensor (its row count is the vocabulary size).
pub const EMBEDDING_TENSOR: &str = "token_embd.weight";

fn positive_int(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => match v.as_i128() {
            Some(n) if n > 0 && n < 1 << 32 => Ok(Some(n as usize)),
            _ => Err(file.error(format!("metadata '{key}' must be a positive integer, got {}", v.describe(40)))),
        },
    }
}

fn positive_float(file: &GgufFile, key: &str) -> Result<Option<f64>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            _ => Err(file.error(format!("metadata '{key}' must be a positive number, got {}", v.describe(40)))),
        },
    }
}

/// A token id stored under `key`, if present and in range.
pub(crate) fn token_id(file: &GgufFile, key: &str) -> Option<u32> {
    file.get(key).and_then(GgufValue::as_i128).filter(|&v| (0..1 << 32).contains(&v)).map(|v| v as u32)
}

/// The model configuration of a BitNet GGUF file.
pub fn config_from_metadata(file: &GgufFile) -> Result<BitNetConfig> {
    let arch = file.architecture().to_string();
    let (activation, family) = match arch.as_str() {
        a if FORK_ARCHITECTURES.contains(&a) => (Activation::Relu2, Family::BitNet),
        "bitnet" => (Activation::Silu, Family::OneBitLlm),
        "qwen3" => (Activation::Silu, Family::Qwen3),
        "gemma3" => {
            return Err(file.error(
                "architecture 'gemma3' (BitNet embeddings on Gemma3) is not supported: its blocks interleave \
                 sliding-window and global attention with two RoPE bases and add post-norms, which the shared \
                 decoder does not have"
                    .into(),
            ))
        }
        other => return Err(file.error(format!("architecture '{other}' is not a BitNet or Qwen3 ternary model"))),
    };
    let key_length = positive_int(file, &format!("{arch}.attention.key_length"))?;
    let value_length = positive_int(file, &format!("{arch}.attention.value_length"))?;
    if let (Some(k), Some(v)) = (key_length, value_length) {
        if k != v {
            return Err(file.error(format!("attention key_length {k} and value_length {v} differ (not supported)")));
        }
    }
    let need = |key: &str| -> Result<usize> {
        positive_int(file, &format!("{arch}.{key}"))?
            .ok_or_else(|| file.error(format!("missing metadata '{arch}.{key}'")))
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let embd = file
        .tensor(EMBEDDING_TENSOR)
        .ok_or_else(|| ModelError::MissingTensor { path: file.path().into(), name: EMBEDDING_TENSOR.into() })?;
    let vocab = match embd.dims.as_slice() {
        &[h, v] if h == hidden as u64 && v > 0 && v < 1 << 32 => v as usize,
        dims => {
            return Err(file.error(format!("{EMBEDDING_TENSOR} has dims {dims:?}, expected [{hidden}, vocab]")));
        }
    };
    let rms_norm_eps = positive_float(file, &format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
    let default_theta = if family == Family::Qwen3 { 1_000_000.0 } else { 500_000.0 };
    let config = BitNetConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: need("feed_forward_length")?,
        num_hidden_layers: need("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: positive_int(file, &format!("{arch}.attention.head_count_kv"))?.unwrap_or(heads),
        head_dim: key_length.or(value_length).unwrap_or(hidden / heads),
        max_position_embeddings: positive_int(file, &format!("{arch}.context_length"))?.unwrap_or(2048),
        rms_norm_eps,
        rope_theta: positive_float(file, &format!("{arch}.rope.freq_base"))?.unwrap_or(default_theta),
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        activation,
        scale_convention: ScaleConvention::Multiply,
        bos_token_id: token_id(file, "tokenizer.ggml.bos_token_id"),
        eos_token_ids: token_id(file, "tokenizer.ggml.eos_token_id").into_iter().collect(),
        family,
        // Microsoft's BitNet embedding models (architecture `qwen3`) normalize every projection's input with
        // its own gains (`blk.N.attn_q_norm_in`, ...), at the model's epsilon.
        linear_rms_norm_eps: file.tensor("blk.0.attn_q_norm_in.weight").map(|_| rms_norm_eps),
    };
    config.check().map_err(|m| file.error(m))?;
    Ok(config)
}

/// The metadata of a BitNet model of `config` (architecture [`written_architecture`]), named `name`.
pub fn metadata_from_config(
    config: &BitNetConfig,
    name: &str,
) -> std::result::Result<Vec<(String, GgufValue)>, String> {
    let a = written_architecture(config)?;
    let c = config;
    let int = |v: usize| GgufValue::U32(v as u32);
    let mut meta = vec![
        ("general.architecture".to_string(), GgufValue::String(a.into())),
        ("general.name".to_string(), GgufValue::String(name.into())),
        (format!("{a}.context_length"), int(c.max_position_embeddings)),
        (format!("{a}.embedding_length"), int(c.hidden_size)),
        (format!("{a}.feed_forward_length"), int(c.intermediate_size)),
        (format!("{a}.block_count"), int(c.num_hidden_layers)),
        (format!("{a}.attention.head_count"), int(c.num_attention_heads)),
        (format!("{a}.attention.head_count_kv"), int(c.num_key_value_heads)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), GgufValue::F32(c.rms_norm_eps as f32)),
        (format!("{a}.rope.freq_base"), GgufValue::F32(c.rope_theta as f32)),
        (format!("{a}.attention.key_length"), int(c.head_dim)),
        (format!("{a}.attention.value_length"), int(c.head_dim)),
    ];
    if let Some(bos) = c.bos_token_id {
        meta.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(bos)));
    }
    if let Some(&eos) = c.eos_token_ids.first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(eos)));
    }
    Ok(meta)
}
