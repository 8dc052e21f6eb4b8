//! A streaming safetensors writer: the JSON header (names, dtypes, shapes, byte offsets) first, then each
//! tensor's bytes produced when its turn comes, written atomically ([`crate::io::AtomicFile`]).

use crate::error::{ModelError, Result};
use crate::io::AtomicFile;
use std::path::Path;

/// One tensor to write: its name, safetensors dtype, shape, and a producer of its bytes.
pub struct TensorSpec<'a> {
    /// Tensor name.
    pub name: String,
    /// `"U8"`, `"BF16"`, `"F16"` or `"F32"`.
    pub dtype: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Called once, when the tensor's turn comes, to produce exactly its bytes.
    pub data: Box<dyn FnOnce() -> Result<Vec<u8>> + 'a>,
}

impl TensorSpec<'_> {
    fn bytes(&self) -> Option<usize> {
        let width = match self.dtype {
            "U8" => 1,
            "BF16" | "F16" => 2,
            _ => 4,
        };
        self.shape.iter().try_fold(width, |acc: usize, &d| acc.checked_mul(d))
    }
}

/// Streams `tensors` into a safetensors file at `path`.
pub fn write_safetensors(path: &Path, tensors: Vec<TensorSpec<'_>>) -> Result<()> {
    let tensor_error =
        |name: &str, message: String| ModelError::Tensor { path: path.into(), name: name.into(), message };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let size = t.bytes().ok_or_else(|| tensor_error(&t.name, format!("shape {:?} overflows", t.shape)))?;
        let end = offset.checked_add(size).ok_or_else(|| tensor_error(&t.name, "the file would overflow".into()))?;
        if header
            .insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
            )
            .is_some()
        {
            return Err(tensor_error(&t.name, "written twice".into()));
        }
        sizes.push(size);
        offset = end;
    }
    let mut header = serde_json::Value::Object(header).to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = AtomicFile::create(path)?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for (t, expected) in tensors.into_iter().zip(sizes) {
        let name = t.name.clone();
        let data = (t.data)()?;
        if data.len() != expected {
            return Err(tensor_error(&name, format!("{} bytes, expected {expected}", data.len())));
        }
        out.write_all(&data)?;
    }
    out.commit()
}
