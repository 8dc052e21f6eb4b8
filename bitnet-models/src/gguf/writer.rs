//! The GGUF writer (version 3): metadata and tensor headers first, then each tensor's bytes produced when its
//! turn comes (so a 2B model is written without a second copy in memory), every tensor aligned to 32 bytes,
//! the whole file written atomically ([`crate::io::AtomicFile`]).

use super::types::GgmlType;
use super::value::GgufValue;
use crate::error::{ModelError, Result};
use crate::io::AtomicFile;
use std::path::Path;

/// Data alignment of the files written (GGUF's default).
pub const ALIGNMENT: u64 = 32;

/// One tensor to write.
pub struct GgufTensorSpec<'a> {
    /// Tensor name.
    pub name: String,
    /// ggml dimensions, innermost first (`[cols, rows]` for a matrix).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Producer of exactly the tensor's bytes, called once when the tensor is written.
    pub data: Box<dyn FnOnce() -> Result<Vec<u8>> + 'a>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Writes a GGUF v3 file with `metadata` and `tensors` (a `general.alignment` entry in `metadata` is replaced by
/// the writer's own, [`ALIGNMENT`]).
pub fn write_gguf(path: &Path, metadata: &[(String, GgufValue)], tensors: Vec<GgufTensorSpec<'_>>) -> Result<()> {
    let tensor_error =
        |name: &str, message: String| ModelError::Tensor { path: path.into(), name: name.into(), message };
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    let alignment = ("general.alignment".to_string(), GgufValue::U32(ALIGNMENT as u32));
    let entries: Vec<&(String, GgufValue)> =
        metadata.iter().filter(|(k, _)| k != "general.alignment").chain(std::iter::once(&alignment)).collect();
    head.extend((entries.len() as u64).to_le_bytes());
    for (key, value) in entries {
        put_str(&mut head, key);
        head.extend(value.value_type().id().to_le_bytes());
        value.encode(&mut head);
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let n = t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let size = n.and_then(|n| t.ggml_type.tensor_bytes(n)).ok_or_else(|| {
            tensor_error(&t.name, format!("{:?} elements cannot be stored as {}", t.dims, t.ggml_type))
        })?;
        put_str(&mut head, &t.name);
        head.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend(d.to_le_bytes());
        }
        head.extend(t.ggml_type.id().to_le_bytes());
        head.extend(offset.to_le_bytes());
        sizes.push(size);
        offset = (offset + size).next_multiple_of(ALIGNMENT);
    }
    head.resize((head.len() as u64).next_multiple_of(ALIGNMENT) as usize, 0);
    let mut out = AtomicFile::create(path)?;
    out.write_all(&head)?;
    for (t, size) in tensors.into_iter().zip(sizes) {
        let name = t.name.clone();
        let bytes = (t.data)()?;
        if bytes.len() as u64 != size {
            return Err(tensor_error(&name, format!("{} bytes, expected {size}", bytes.len())));
        }
        out.write_all(&bytes)?;
        let pad = size.next_multiple_of(ALIGNMENT) - size;
        out.write_all(&vec![0u8; pad as usize])?;
    }
    out.commit()
}

/// An F32 tensor spec.
pub fn f32_spec<'a>(name: String, dims: Vec<u64>, values: Vec<f32>) -> GgufTensorSpec<'a> {
    GgufTensorSpec {
        name,
        dims,
        ggml_type: GgmlType::F32,
        data: Box::new(move || Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())),
    }
}
