//! Model loaders.

pub mod safetensors;

pub use self::safetensors::load_hf_dir;
