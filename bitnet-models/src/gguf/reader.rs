//! The GGUF reader (format versions 2 and 3), over a memory map or any byte buffer.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count, the metadata entries (string key,
//! u32 value type, value), the tensor headers (string name, u32 dimension count, u64 dimensions innermost first,
//! u32 ggml type, u64 offset), padding to `general.alignment` (default 32), then the tensor data at those
//! offsets. Strings are a u64 length and UTF-8 bytes.
//!
//! Every count, length and offset read from the file is checked against the bytes that remain before anything
//! is allocated, metadata arrays stay in the mapping ([`super::GgufArray`]), and a file with two entries of one
//! name (metadata key or tensor) is refused rather than resolved silently.

use super::types::GgmlType;
use super::value::{GgufArray, GgufValue, SharedBytes, ValueType};
use crate::error::{ModelError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// Name.
    pub name: String,
    /// Dimensions in ggml order (`ne[0]` is the fastest-varying: input features of a weight).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data, from the start of the file.
    pub start: usize,
    /// Byte length of the data.
    pub len: usize,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file.
pub struct GgufFile {
    path: PathBuf,
    bytes: SharedBytes,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

/// A bounds-checked reader over the file bytes.
struct Cursor<'a> {
    bytes: &'a SharedBytes,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let all = self.bytes.as_slice();
        let end = self.pos.checked_add(n).filter(|&e| e <= all.len()).ok_or_else(|| {
            format!("truncated: {what} needs {n} bytes at offset {}, the file has {}", self.pos, all.len())
        })?;
        let out = &all[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
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
    fn value(&mut self, ty: ValueType) -> std::result::Result<GgufValue, String> {
        Ok(match ty {
            ValueType::U8 => GgufValue::U8(self.array::<1>("value")?[0]),
            ValueType::I8 => GgufValue::I8(self.array::<1>("value")?[0] as i8),
            ValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array("value")?)),
            ValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array("value")?)),
            ValueType::U32 => GgufValue::U32(self.u32("value")?),
            ValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array("value")?)),
            ValueType::U64 => GgufValue::U64(self.u64("value")?),
            ValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array("value")?)),
            ValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array("value")?)),
            ValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array("value")?)),
            ValueType::Bool => match self.array::<1>("value")?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                other => return Err(format!("bool value {other} is neither 0 nor 1")),
            },
            ValueType::String => GgufValue::String(self.string("string")?),
            ValueType::Array => {
                let elem = self.u32("array type")?;
                let elem = ValueType::from_id(elem).ok_or_else(|| format!("unknown array element type {elem}"))?;
                let len = self.count("array length", elem.fixed_size().unwrap_or(8))?;
                let rest = self.bytes.slice(self.pos..self.bytes.len()).ok_or("array out of range")?;
                let (array, size) = GgufArray::parse(elem, len, &rest)?;
                self.pos += size;
                GgufValue::Array(array)
            }
        })
    }
}

/// What [`GgufFile::parse`] returns.
struct Parsed {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// Checks that no tensor's data runs into the next one's (llama.cpp lays tensors out back to back, so an
/// overlap is a corrupt or hostile header). One known exception is repaired: early PrismML files wrote
/// group-128 blocks (34 bytes per 128 weights) under upstream's Q2_0 id (18 bytes per 64); a Q2_0 tensor that
/// only fits its slot at the group-128 size is read as PQ2_0.
fn resolve_overlaps(tensors: &mut [GgufTensorInfo], file_len: usize) -> std::result::Result<(), String> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].start);
    for (position, &i) in order.iter().enumerate() {
        let limit = order.get(position + 1).map_or(file_len, |&next| tensors[next].start);
        let t = &mut tensors[i];
        if t.start + t.len <= limit {
            continue;
        }
        let n = t.dims.iter().product::<u64>();
        let as_g128 = GgmlType::PQ2_0.tensor_bytes(n).map(|len| len as usize);
        match as_g128 {
            Some(len) if t.ggml_type == GgmlType::Q2_0 && t.start + len <= limit => {
                t.ggml_type = GgmlType::PQ2_0;
                t.len = len;
            }
            _ => {
                return Err(format!(
                    "tensor '{}': its {} bytes of {} data run past the next tensor or the end of the file",
                    t.name, t.len, t.ggml_type
                ))
            }
        }
    }
    Ok(())
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_bytes(path, SharedBytes::map_file(path)?)
    }

    /// Parses a GGUF image held in memory; `path` names it in messages.
    pub fn from_bytes(path: &Path, bytes: SharedBytes) -> Result<Self> {
        let parsed = Self::parse(&bytes).map_err(|message| ModelError::Weights { path: path.into(), message })?;
        Ok(Self {
            path: path.into(),
            bytes,
            version: parsed.version,
            metadata: parsed.metadata,
            metadata_index: parsed.metadata_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
        })
    }

    fn parse(bytes: &SharedBytes) -> std::result::Result<Parsed, String> {
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
        let mut metadata = Vec::with_capacity(n_kv);
        let mut metadata_index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let ty = ValueType::from_id(ty).ok_or_else(|| format!("metadata '{key}': unknown value type {ty}"))?;
            let value = c.value(ty).map_err(|e| format!("metadata '{key}': {e}"))?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(format!("metadata key '{key}' appears twice"));
            }
            metadata.push((key, value));
        }
        let arch = match metadata_index.get("general.architecture").map(|&i| &metadata[i].1) {
            Some(GgufValue::String(s)) => s.clone(),
            _ => return Err("missing 'general.architecture'".into()),
        };
        let mut headers = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor dimension count")?;
            if !(1..=4).contains(&n_dims) {
                return Err(format!("tensor '{name}': {n_dims} dimensions"));
            }
            let dims = (0..n_dims).map(|_| c.u64("tensor dimension")).collect::<std::result::Result<Vec<_>, _>>()?;
            let type_id = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            headers.push((name, dims, type_id, offset));
        }
        let alignment = match metadata_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => 32,
            Some(v) => match v.as_i128() {
                Some(a) if a > 0 && a <= 1 << 16 && (a as u64).is_power_of_two() => a as usize,
                _ => return Err(format!("invalid general.alignment {}", v.describe(20))),
            },
        };
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(headers.len());
        let mut tensor_index = HashMap::with_capacity(headers.len());
        for (name, dims, type_id, offset) in headers {
            let ggml_type = GgmlType::from_id(type_id, &arch)
                .ok_or_else(|| format!("tensor '{name}': unknown ggml type {type_id} for architecture '{arch}'"))?;
            let n = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| format!("tensor '{name}': element count overflows"))?;
            let len = ggml_type
                .tensor_bytes(n)
                .ok_or_else(|| format!("tensor '{name}': {n} elements are not a whole number of {ggml_type} blocks"))?;
            let start = (data_start as u64).checked_add(offset).filter(|s| s % alignment as u64 == 0);
            // A Q2_0 tensor may be group-128 data under the upstream id (see `resolve_overlaps`).
            let least = match ggml_type {
                GgmlType::Q2_0 => GgmlType::PQ2_0.tensor_bytes(n).map_or(len, |l| l.min(len)),
                _ => len,
            };
            let end = start.and_then(|s| s.checked_add(least)).filter(|&e| e <= bytes.len() as u64);
            let (Some(start), Some(_)) = (start, end) else {
                return Err(format!(
                    "tensor '{name}': data at offset {offset} (+{len} bytes) lies past the end of the file or is misaligned"
                ));
            };
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(format!("tensor '{name}' appears twice"));
            }
            tensors.push(GgufTensorInfo { name, dims, ggml_type, start: start as usize, len: len as usize });
        }
        resolve_overlaps(&mut tensors, bytes.len())?;
        Ok(Parsed { version, metadata, metadata_index, tensors, tensor_index })
    }

    /// The file's path (or the name it was given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The string value of `key`; `Ok(None)` when absent, an error when it holds another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(format!("metadata '{key}' must be a string, got {}", other.describe(40)))),
        }
    }

    /// The architecture string (`general.architecture`, present in every parsed file).
    pub fn architecture(&self) -> &str {
        self.get("general.architecture").and_then(GgufValue::as_str).unwrap_or_default()
    }

    /// Tensor headers in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The header of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor.
    pub fn data(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.bytes.as_slice()[info.start..info.start + info.len]
    }

    /// A tensor's bytes, sharing the file mapping (no copy).
    pub fn shared_data(&self, info: &GgufTensorInfo) -> SharedBytes {
        self.bytes.slice(info.start..info.start + info.len).expect("tensor ranges are checked when the file is parsed")
    }

    /// Hands the resident pages of the whole file mapping back to the OS (see [`SharedBytes::release_pages`]).
    pub(crate) fn release_pages(&self) {
        self.bytes.release_pages();
    }

    /// An error about this file.
    pub(crate) fn error(&self, message: String) -> ModelError {
        ModelError::Weights { path: self.path.clone(), message }
    }
}
