//! Writing BitNet GGUF files (v3) that bitnet.cpp-style readers and [`super::gguf`] load: architecture
//! `bitnet-b1.58` (the 2B-4T block), ternary projections as TQ2_0 (llama.cpp type 35; K a multiple of 256) or
//! I2_S (bitnet.cpp type 36), norms in F32 and the embedding in F32 or F16.
//!
//! The file is streamed: tensor sizes come from their types and shapes, and each tensor's bytes are produced
//! when its turn comes.

use super::gguf::tensor_bytes;
use crate::config::BitNetConfig;
use crate::error::{ModelError, Result};
use bitnet_kernels::formats::i2s::pack_i2s;
use bitnet_kernels::formats::tq2_0::pack_tq2_0;
use bitnet_kernels::TernaryCodes;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The architecture string written (2B-4T semantics: relu², sub-norms).
pub const GGUF_ARCH: &str = "bitnet-b1.58";
/// Data alignment.
const ALIGNMENT: u64 = 32;

/// ggml type ids.
pub mod ggml_type {
    /// f32.
    pub const F32: u32 = 0;
    /// f16.
    pub const F16: u32 = 1;
    /// TQ2_0 (llama.cpp).
    pub const TQ2_0: u32 = 35;
    /// I2_S (bitnet.cpp).
    pub const I2_S: u32 = 36;
}

/// The ternary encoding of a GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryGgufType {
    /// llama.cpp TQ2_0: 2.06 bits/weight, an f16 scale per 256-weight block; rows must be a multiple of 256 wide.
    Tq2_0,
    /// bitnet.cpp I2_S: 2 bits/weight, one f32 scale per tensor.
    I2s,
}

impl TernaryGgufType {
    /// The type id.
    pub fn id(self) -> u32 {
        match self {
            Self::Tq2_0 => ggml_type::TQ2_0,
            Self::I2s => ggml_type::I2_S,
        }
    }

    /// Whether every projection of `config` can be stored in this type; the error says why not.
    pub fn check_shapes(self, config: &BitNetConfig) -> std::result::Result<(), String> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        if self == Self::Tq2_0 && !(h.is_multiple_of(256) && i.is_multiple_of(256)) {
            return Err(format!(
                "TQ2_0 needs hidden_size and intermediate_size multiples of 256 (got {h} and {i}); I2_S has no such limit"
            ));
        }
        Ok(())
    }

    /// Encodes `codes` (`[rows, cols]`, values 0/1/2 for -1/0/+1) with scale `g`.
    pub fn encode(self, codes: &TernaryCodes, g: f32) -> Result<Vec<u8>> {
        let bytes = match self {
            Self::Tq2_0 => pack_tq2_0(codes, &vec![g; codes.codes().len() / 256]),
            Self::I2s => pack_i2s(codes, g),
        };
        bytes.map_err(|e| ModelError::Request(format!("encoding a ternary tensor: {e}")))
    }
}

/// A metadata value.
#[derive(Debug, Clone)]
pub enum MetaValue {
    /// u32 (type 4).
    U32(u32),
    /// f32 (type 6).
    F32(f32),
    /// string (type 8).
    Str(String),
    /// array of strings (type 9 of type 8).
    StrArray(Vec<String>),
    /// array of i32 (type 9 of type 5).
    I32Array(Vec<i32>),
}

/// One tensor to write.
pub struct GgufTensorSpec<'a> {
    /// Tensor name.
    pub name: String,
    /// ggml dims (innermost first: `[cols, rows]` for a matrix).
    pub ne: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Producer of exactly the tensor's bytes.
    pub data: Box<dyn FnOnce() -> Result<Vec<u8>> + 'a>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The standard metadata of a BitNet b1.58 model.
pub fn bitnet_metadata(config: &BitNetConfig, name: &str) -> Vec<(String, MetaValue)> {
    let a = GGUF_ARCH;
    let c = config;
    let mut meta = vec![
        ("general.architecture".to_string(), MetaValue::Str(a.into())),
        ("general.name".to_string(), MetaValue::Str(name.into())),
        ("general.alignment".to_string(), MetaValue::U32(ALIGNMENT as u32)),
        (format!("{a}.context_length"), MetaValue::U32(c.max_position_embeddings as u32)),
        (format!("{a}.embedding_length"), MetaValue::U32(c.hidden_size as u32)),
        (format!("{a}.feed_forward_length"), MetaValue::U32(c.intermediate_size as u32)),
        (format!("{a}.block_count"), MetaValue::U32(c.num_hidden_layers as u32)),
        (format!("{a}.attention.head_count"), MetaValue::U32(c.num_attention_heads as u32)),
        (format!("{a}.attention.head_count_kv"), MetaValue::U32(c.num_key_value_heads as u32)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), MetaValue::F32(c.rms_norm_eps as f32)),
        (format!("{a}.rope.freq_base"), MetaValue::F32(c.rope_theta as f32)),
    ];
    if let Some(bos) = c.bos_token_id {
        meta.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(bos)));
    }
    if let Some(&eos) = c.eos_token_ids.first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(eos)));
    }
    meta
}

/// Streams a GGUF v3 file.
pub fn write_gguf(path: &Path, metadata: &[(String, MetaValue)], tensors: Vec<GgufTensorSpec<'_>>) -> Result<()> {
    let io = |cause| ModelError::Io { path: path.into(), cause };
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut head, key);
        match value {
            MetaValue::U32(v) => {
                head.extend(4u32.to_le_bytes());
                head.extend(v.to_le_bytes());
            }
            MetaValue::F32(v) => {
                head.extend(6u32.to_le_bytes());
                head.extend(v.to_le_bytes());
            }
            MetaValue::Str(s) => {
                head.extend(8u32.to_le_bytes());
                put_str(&mut head, s);
            }
            MetaValue::StrArray(items) => {
                head.extend(9u32.to_le_bytes());
                head.extend(8u32.to_le_bytes());
                head.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut head, s);
                }
            }
            MetaValue::I32Array(items) => {
                head.extend(9u32.to_le_bytes());
                head.extend(5u32.to_le_bytes());
                head.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    head.extend(v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let n = t.ne.iter().product::<u64>();
        let size = tensor_bytes(t.ggml_type, n, true).ok_or_else(|| ModelError::Tensor {
            path: path.into(),
            name: t.name.clone(),
            message: format!("type {} cannot hold {n} elements", t.ggml_type),
        })?;
        put_str(&mut head, &t.name);
        head.extend((t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            head.extend(d.to_le_bytes());
        }
        head.extend(t.ggml_type.to_le_bytes());
        head.extend(offset.to_le_bytes());
        sizes.push(size);
        offset = (offset + size).next_multiple_of(ALIGNMENT);
    }
    head.resize((head.len() as u64).next_multiple_of(ALIGNMENT) as usize, 0);
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(&head).map_err(io)?;
    for (t, size) in tensors.into_iter().zip(sizes) {
        let name = t.name.clone();
        let bytes = (t.data)()?;
        if bytes.len() as u64 != size {
            return Err(ModelError::Tensor {
                path: path.into(),
                name,
                message: format!("{} bytes, expected {size}", bytes.len()),
            });
        }
        out.write_all(&bytes).map_err(io)?;
        let pad = size.next_multiple_of(ALIGNMENT) - size;
        out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// An F32 tensor spec.
pub fn f32_spec<'a>(name: String, ne: Vec<u64>, values: Vec<f32>) -> GgufTensorSpec<'a> {
    GgufTensorSpec {
        name,
        ne,
        ggml_type: ggml_type::F32,
        data: Box::new(move || Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())),
    }
}
