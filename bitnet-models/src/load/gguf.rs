//! A GGUF reader (format versions 2 and 3), memory-mapped, and the BitNet loader on top of it.
//!
//! Every count, length and offset read from the file is checked against the bytes that remain before anything
//! is allocated, so truncated or hostile files fail with an error naming the file and the problem.
//!
//! Ternary tensors: TQ1_0 (type 34) and TQ2_0 (type 35) as llama.cpp writes them, and I2_S as bitnet.cpp's fork
//! writes it (type 36, x86 layout, one f32 scale in a 32-byte tail). Type ids 36-39 mean other things in upstream
//! ggml, so 36 is read as I2_S only for the fork's architectures (`bitnet-25`, `bitnet-b1.58`).
//! The architecture string decides the block semantics: `bitnet-25` / `bitnet-b1.58` = the 2B-4T block (relu²),
//! upstream `bitnet` = the 1bitLLM block (SiLU-gated FFN), both with sub-norms; q/k are stored unpermuted
//! (rotate-half RoPE), as the converters write them.

use crate::config::{Activation, BitNetConfig, Family, ScaleConvention};
use crate::error::{ModelError, Result};
use crate::model::{BitNetModel, Block, BlockTensor, RmsNorm};
use bitnet_backend::{TernaryBackend, TernaryWeight};
use bitnet_kernels::{TernaryCodes, TernaryMatrix};
use burn::tensor::{DType, Tensor, TensorData};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned or signed integer type.
    Int(i128),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array.
    Array(Vec<GgufValue>),
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// Name.
    pub name: String,
    /// Dimensions in ggml order (`ne[0]` is the fastest-varying: input features of a weight).
    pub ne: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Byte offset of the data, from the start of the file.
    pub start: usize,
    /// Byte length of the data.
    pub len: usize,
}

/// A parsed GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// Format version.
    pub version: u32,
    /// Metadata key/values.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor headers, by name.
    pub tensors: BTreeMap<String, GgufTensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

/// Architectures of bitnet.cpp's fork, where type 36 is I2_S and the block is 2B-4T's.
const FORK_ARCHS: [&str; 2] = ["bitnet-25", "bitnet-b1.58"];

/// A bounds-checked reader over the file bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("truncated: {what} needs {n} bytes at offset {}, the file has {}", self.pos, self.bytes.len())
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    /// A count of items of at least `min_size` bytes each, checked against the remaining bytes.
    fn count(&mut self, what: &str, min_size: usize) -> std::result::Result<usize, String> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_size.max(1)) as u64 {
            return Err(format!("{what} {n} is impossible: only {} bytes remain", self.remaining()));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.count(&format!("{what} length"), 1)?;
        String::from_utf8(self.take(len, what)?.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<GgufValue, String> {
        let int = |b: &[u8], signed: bool| -> i128 {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(b);
            if signed && b[b.len() - 1] & 0x80 != 0 {
                buf[b.len()..].fill(0xff);
            }
            i128::from_le_bytes(buf)
        };
        Ok(match ty {
            0 | 1 => GgufValue::Int(int(self.take(1, "value")?, ty == 1)),
            2 | 3 => GgufValue::Int(int(self.take(2, "value")?, ty == 3)),
            4 | 5 => GgufValue::Int(int(self.take(4, "value")?, ty == 5)),
            10 | 11 => GgufValue::Int(int(self.take(8, "value")?, ty == 11)),
            6 => GgufValue::Float(f32::from_le_bytes(self.take(4, "value")?.try_into().unwrap_or_default()) as f64),
            12 => GgufValue::Float(f64::from_le_bytes(self.take(8, "value")?.try_into().unwrap_or_default())),
            7 => GgufValue::Bool(self.take(1, "value")?[0] != 0),
            8 => GgufValue::Str(self.string("string")?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".into());
                }
                let inner = self.u32("array type")?;
                let n = self.count("array length", 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

/// Bytes of a tensor of `n` elements of ggml type `ty`, or `None` for a type this reader does not know.
pub(crate) fn tensor_bytes(ty: u32, n: u64, fork: bool) -> Option<u64> {
    let blocks = |block: u64, bytes: u64| n.is_multiple_of(block).then(|| n / block * bytes);
    match ty {
        0 => n.checked_mul(4),
        1 | 30 => n.checked_mul(2),
        8 => blocks(32, 34),
        34 => blocks(256, 54),
        35 => blocks(256, 66),
        36 if fork => n.is_multiple_of(128).then(|| n / 4 + 32),
        _ => None,
    }
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|cause| ModelError::Io { path: path.into(), cause })?;
        // SAFETY: read-only map; the file must not be truncated while the loader copies tensors out of it.
        let map = unsafe { Mmap::map(&file) }.map_err(|cause| ModelError::Io { path: path.into(), cause })?;
        let parsed = Self::parse(&map);
        let (version, metadata, tensors) =
            parsed.map_err(|message| ModelError::Weights { path: path.into(), message })?;
        Ok(Self { path: path.into(), map, version, metadata, tensors })
    }

    #[allow(clippy::type_complexity)]
    fn parse(
        bytes: &[u8],
    ) -> std::result::Result<(u32, BTreeMap<String, GgufValue>, BTreeMap<String, GgufTensorInfo>), String> {
        let mut c = Cursor { bytes, pos: 0 };
        if c.take(4, "magic")? != b"GGUF" {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(format!("unsupported GGUF version {version} (2 and 3 are supported)"));
        }
        // A tensor header takes at least 8 (name) + 4 + 8 + 4 + 8 bytes, a metadata entry at least 8 + 4 + 1.
        let n_tensors = c.count("tensor count", 32)?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let value = c.value(ty, 0).map_err(|e| format!("metadata '{key}': {e}"))?;
            metadata.insert(key, value);
        }
        let arch = match metadata.get("general.architecture") {
            Some(GgufValue::Str(s)) => s.clone(),
            _ => return Err("missing 'general.architecture'".into()),
        };
        let fork = FORK_ARCHS.contains(&arch.as_str());
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor dimension count")?;
            if !(1..=4).contains(&n_dims) {
                return Err(format!("tensor '{name}': {n_dims} dimensions"));
            }
            let ne = (0..n_dims).map(|_| c.u64("tensor dimension")).collect::<std::result::Result<Vec<_>, _>>()?;
            let ggml_type = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            infos.push((name, ne, ggml_type, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            Some(GgufValue::Int(a)) if *a > 0 && *a <= 1 << 16 && (*a as u64).is_power_of_two() => *a as usize,
            None => 32,
            Some(other) => return Err(format!("invalid general.alignment {other:?}")),
        };
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, ne, ggml_type, offset) in infos {
            let n = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| format!("tensor '{name}': element count overflows"))?;
            let len = tensor_bytes(ggml_type, n, fork).ok_or_else(|| {
                format!("tensor '{name}': unsupported tensor type {ggml_type} for architecture '{arch}' (or a size not a multiple of its block)")
            })?;
            let start = (data_start as u64).checked_add(offset).filter(|s| s % alignment as u64 == 0);
            let end = start.and_then(|s| s.checked_add(len)).filter(|&e| e <= bytes.len() as u64);
            let (Some(start), Some(_)) = (start, end) else {
                return Err(format!("tensor '{name}': data at offset {offset} (+{len} bytes) lies past the end of the file or is misaligned"));
            };
            tensors
                .insert(name.clone(), GgufTensorInfo { name, ne, ggml_type, start: start as usize, len: len as usize });
        }
        Ok((version, metadata, tensors))
    }

    /// The tokenizer embedded in the file's `tokenizer.ggml.*` metadata, if any (byte-level BPE vocabularies;
    /// see [`super::gguf_vocab`]); an error names the file and why an embedded tokenizer cannot be used.
    pub fn tokenizer(&self) -> Result<Option<crate::tokenizer::Tokenizer>> {
        let err = |message: String| ModelError::Config { path: self.path.clone(), message };
        let Some(vocab) = super::gguf_vocab::GgufVocab::from_metadata(&self.metadata).map_err(err)? else {
            return Ok(None);
        };
        crate::tokenizer::Tokenizer::from_bytes(&vocab.to_tokenizer_json())
            .map(Some)
            .map_err(|e| err(format!("the embedded tokenizer: {e}")))
    }

    /// The architecture string.
    pub fn architecture(&self) -> &str {
        match self.metadata.get("general.architecture") {
            Some(GgufValue::Str(s)) => s,
            _ => "",
        }
    }

    /// The bytes of a tensor.
    pub fn data(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.map[info.start..info.start + info.len]
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::Weights { path: self.path.clone(), message }
    }

    fn meta_int(&self, key: &str) -> Result<Option<usize>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(GgufValue::Int(v)) if *v > 0 && *v < 1 << 32 => Ok(Some(*v as usize)),
            Some(other) => Err(self.error(format!("metadata '{key}' must be a positive integer, got {other:?}"))),
        }
    }

    fn meta_float(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(GgufValue::Float(v)) if v.is_finite() && *v > 0.0 => Ok(Some(*v)),
            Some(other) => Err(self.error(format!("metadata '{key}' must be a positive number, got {other:?}"))),
        }
    }

    /// The model configuration from metadata (and the embedding's shape for the vocabulary).
    pub fn config(&self) -> Result<BitNetConfig> {
        let arch = self.architecture().to_string();
        let activation = match arch.as_str() {
            a if FORK_ARCHS.contains(&a) => Activation::Relu2,
            "bitnet" => Activation::Silu,
            other => return Err(self.error(format!("architecture '{other}' is not a BitNet model"))),
        };
        let need = |key: &str| -> Result<usize> {
            self.meta_int(&format!("{arch}.{key}"))?
                .ok_or_else(|| self.error(format!("missing metadata '{arch}.{key}'")))
        };
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let embd = self
            .tensors
            .get("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), name: "token_embd.weight".into() })?;
        let vocab = *embd.ne.get(1).ok_or_else(|| self.error("token_embd.weight must be 2-D".into()))? as usize;
        let head_dim = hidden / heads;
        let token = |key: &str| match self.metadata.get(key) {
            Some(GgufValue::Int(v)) if *v >= 0 && *v < 1 << 32 => Some(*v as u32),
            _ => None,
        };
        let config = BitNetConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: self.meta_int(&format!("{arch}.attention.head_count_kv"))?.unwrap_or(heads),
            head_dim,
            max_position_embeddings: self.meta_int(&format!("{arch}.context_length"))?.unwrap_or(2048),
            rms_norm_eps: self.meta_float(&format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            rope_theta: self.meta_float(&format!("{arch}.rope.freq_base"))?.unwrap_or(500_000.0),
            tie_word_embeddings: !self.tensors.contains_key("output.weight"),
            activation,
            scale_convention: ScaleConvention::Multiply,
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
            // llama.cpp's "bitnet" (1bitLLM) and the fork's 2B-4T architectures both carry the two sub-norms.
            family: if arch == "bitnet" { Family::OneBitLlm } else { Family::BitNet },
            linear_rms_norm_eps: None,
        };
        config.check().map_err(|m| self.error(m))?;
        Ok(config)
    }

    fn info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensors.get(name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), name: name.into() })
    }

    fn tensor_error(&self, name: &str, message: String) -> ModelError {
        ModelError::Tensor { path: self.path.clone(), name: name.into(), message }
    }

    /// The raw little-endian bytes and dtype of an F16 or BF16 tensor with ggml dims `ne`; `None` for other
    /// types.
    fn half_precision(&self, name: &str, ne: &[usize]) -> Result<Option<(&[u8], DType)>> {
        let info = self.info(name)?;
        let got: Vec<usize> = info.ne.iter().map(|&d| d as usize).collect();
        if got != ne {
            return Err(self.tensor_error(name, format!("dims {got:?}, expected {ne:?}")));
        }
        Ok(match info.ggml_type {
            1 => Some((self.data(info), DType::F16)),
            30 => Some((self.data(info), DType::BF16)),
            _ => None,
        })
    }

    /// A float tensor (F32, F16, BF16 or Q8_0) with ggml dims `ne`, as f32.
    fn floats(&self, name: &str, ne: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        let got: Vec<usize> = info.ne.iter().map(|&d| d as usize).collect();
        if got != ne {
            return Err(self.tensor_error(name, format!("dims {got:?}, expected {ne:?}")));
        }
        let data = self.data(info);
        let halves = || data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        Ok(match info.ggml_type {
            0 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            1 => halves().map(|h| half::f16::from_bits(h).to_f32()).collect(),
            30 => halves().map(|h| half::bf16::from_bits(h).to_f32()).collect(),
            8 => data
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

    /// A ternary weight `[rows, cols]` (ggml dims `[cols, rows]`).
    fn ternary(&self, name: &str, rows: usize, cols: usize) -> Result<TernaryMatrix> {
        let info = self.info(name)?;
        if info.ne != [cols as u64, rows as u64] {
            return Err(self.tensor_error(name, format!("dims {:?}, expected [{cols}, {rows}]", info.ne)));
        }
        let data = self.data(info);
        let wrap = |e: bitnet_kernels::KernelError| self.tensor_error(name, e.to_string());
        match info.ggml_type {
            34 => TernaryMatrix::from_tq1_0(data, rows, cols).map_err(wrap),
            35 => TernaryMatrix::from_tq2_0(data, rows, cols).map_err(wrap),
            36 => TernaryMatrix::from_i2s(data, rows, cols).map_err(wrap),
            _ => {
                // Float weights: either ternary values times one scale (converted checkpoints) or latent weights.
                let values = self.floats(name, &[cols, rows])?;
                let scale = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                let ternary = scale > 0.0 && values.iter().all(|&v| v == 0.0 || v.abs() == scale);
                if ternary {
                    let codes: Vec<u8> = values
                        .iter()
                        .map(|&v| {
                            if v > 0.0 {
                                2
                            } else if v < 0.0 {
                                0
                            } else {
                                1
                            }
                        })
                        .collect();
                    TernaryMatrix::from_codes_with_scale(&TernaryCodes::new(rows, cols, codes)?, scale).map_err(wrap)
                } else {
                    TernaryMatrix::quantize_absmean(&values, rows, cols).map_err(wrap)
                }
            }
        }
    }
}

/// Loads a BitNet GGUF file onto `device`.
pub fn load_gguf<B: TernaryBackend>(path: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    let file = GgufFile::open(path)?;
    let config = file.config()?;
    let c = &config;
    let (h, v) = (c.hidden_size, c.vocab_size);
    // The embedding and head stay in their stored 16-bit type where the backend has it (exact, and decode
    // streams half the bytes); other types are widened to f32.
    let dense = |name: &str, rows: usize, cols: usize| -> Result<Tensor<B, 2>> {
        if let Some((bytes, dtype)) = file.half_precision(name, &[cols, rows])? {
            if B::supports_dtype(device, dtype) {
                return Ok(Tensor::from_data(
                    TensorData::from_bytes_vec(bytes.to_vec(), [rows, cols], dtype),
                    (device, dtype),
                ));
            }
        }
        Ok(Tensor::from_data(TensorData::new(file.floats(name, &[cols, rows])?, [rows, cols]), device))
    };
    let norm = |name: String, width: usize| -> Result<RmsNorm<B>> {
        let w = file.floats(&name, &[width])?;
        Ok(RmsNorm { weight: Tensor::from_data(TensorData::new(w, [width]), device), eps: c.rms_norm_eps })
    };
    let t = |name: String, rows: usize, cols: usize| -> Result<TernaryWeight<B>> {
        Ok(TernaryWeight::from_matrix(&file.ternary(&name, rows, cols)?, device))
    };
    let embed = dense("token_embd.weight", v, h)?;
    let lm_head = if c.tie_word_embeddings { None } else { Some(dense("output.weight", v, h)?) };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        layers.push(Block::load(
            c,
            &mut |role: BlockTensor, width| norm(format!("{}.weight", role.gguf_name(l)), width),
            &mut |role: BlockTensor, rows, cols| t(format!("{}.weight", role.gguf_name(l)), rows, cols),
            None,
        )?);
    }
    let final_norm = norm("output_norm.weight".into(), h)?;
    Ok(BitNetModel::new(config, embed, lm_head, layers, final_norm, device))
}
