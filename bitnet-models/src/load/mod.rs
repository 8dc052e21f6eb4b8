//! Model loaders.

pub mod gguf;
pub mod gguf_vocab;
pub mod gguf_write;
pub mod safetensors;
pub mod write;

pub use self::gguf::load_gguf;
pub use self::safetensors::load_hf_dir;

use crate::error::Result;
use crate::model::BitNetModel;
use bitnet_backend::TernaryBackend;
use std::path::Path;

/// Loads a model from a Hugging Face directory or a `.gguf` file.
pub fn load_model<B: TernaryBackend>(path: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    if path.is_dir() {
        load_hf_dir(path, device)
    } else {
        load_gguf(path, device)
    }
}
