//! Where a model's weights come from: one [`TensorSource`] abstraction over the checkpoint formats (Hugging Face
//! safetensors directories in [`hf`], GGUF files in [`gguf`]), and the factory that fills the module tree of
//! [`crate::model`] from any of them, packed for inference or latent for training.
//!
//! A source answers three questions by [`TensorId`]: a norm's gains (f32), a token matrix in its stored format
//! (embedding, head: f32, 16-bit or Q6_K, see [`MatrixData`]), and a projection, either already ternary ([`ProjectionData::Ternary`], any
//! packed format repacked to the kernels' layout) or as float weights ([`ProjectionData::Float`]: latent master
//! weights, quantized with absmean when a packed model is wanted).

mod factory;
pub mod gguf;
pub mod hf;

pub use factory::{build_model, load_gguf, load_hf_dir, load_model};

use crate::error::Result;
use crate::model::{HeadFormat, MatrixData, TensorId};
use bitnet_kernels::TernaryMatrix;
use burn::tensor::DType;
use std::path::Path;

/// A projection's weights as a checkpoint stores them.
#[derive(Debug, Clone)]
pub enum ProjectionData {
    /// Ternary codes with per-row scales.
    Ternary(TernaryMatrix),
    /// Float weights `[rows, cols]` (row = output feature), row-major.
    Float(Vec<f32>),
}

/// A checkpoint's tensors, by role.
pub trait TensorSource {
    /// The file or directory, for messages.
    fn path(&self) -> &Path;
    /// The gains of norm `id` (`width` values).
    fn norm(&self, id: TensorId, width: usize) -> Result<Vec<f32>>;
    /// The token matrix `id` (embedding, head), `[rows, cols]`, in its stored format (in place in the file
    /// where it can be).
    fn matrix(&self, id: TensorId, rows: usize, cols: usize) -> Result<MatrixData>;
    /// The projection `id`, `[rows, cols]` (rows = output features).
    fn projection(&self, id: TensorId, rows: usize, cols: usize) -> Result<ProjectionData>;
    /// The largest block index among the source's tensor names (`model.layers.N.` or `blk.N.`), if any: a file
    /// with tensors of more layers than its configuration declares is ambiguous and refused.
    fn last_layer(&self) -> Option<usize>;
    /// Tells the source that tensor `id` has been copied and its bytes will not be read again (a mapped file
    /// hands its pages back to the OS). The default does nothing.
    fn release(&self, _id: TensorId) {}
    /// Tells the source that loading is over: a mapped file hands back every page still resident (the edges of
    /// released tensors that fault-around and readahead mapped, the norms, the metadata), so none of it counts
    /// towards the running model's memory; anything read later is read from the file again. The default does
    /// nothing.
    fn release_all(&self) {}
}

/// The block index in a tensor name (`model.layers.N.…` in Hugging Face checkpoints, `blk.N.…` in GGUF).
pub(crate) fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.").or_else(|| name.strip_prefix("blk."))?;
    rest.split('.').next()?.parse().ok()
}

/// The state the loaded projections are put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadAs {
    /// Packed ternary weights (inference); float checkpoints are quantized with absmean per tensor.
    #[default]
    Packed,
    /// Latent f32 weights (training, fine-tuning); ternary checkpoints become latent weights whose absmean
    /// quantization gives back their codes and scale (`(c - 1) · g / p`, `p` the fraction of nonzero codes).
    Latent,
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Packed (inference) or latent (training) projections.
    pub state: LoadAs,
    /// The output head's format (inference only: a latent model's matrices are f32 parameters). A tied model's
    /// one matrix takes it.
    pub head: HeadFormat,
}

impl LoadOptions {
    /// Packed projections, the head as stored.
    pub fn packed() -> Self {
        Self::default()
    }

    /// Latent projections and f32 matrices (for training).
    pub fn latent() -> Self {
        Self { state: LoadAs::Latent, head: HeadFormat::F32 }
    }

    /// These options with the head in `format`.
    pub fn with_head(self, format: HeadFormat) -> Self {
        Self { head: format, ..self }
    }
}

/// f32 values of 16-bit little-endian data.
pub(crate) fn widen(bytes: &[u8], dtype: DType) -> Vec<f32> {
    let halves = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match dtype {
        DType::BF16 => halves.map(|h| half::bf16::from_bits(h).to_f32()).collect(),
        _ => halves.map(|h| half::f16::from_bits(h).to_f32()).collect(),
    }
}
