//! Model loaders.

pub mod safetensors;
pub mod write;

pub use self::safetensors::load_hf_dir;
