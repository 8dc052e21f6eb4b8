//! # bitnet-models
//!
//! The BitNet b1.58 model family (microsoft/bitnet-b1.58-2B-4T and relatives) on any
//! [`bitnet_backend::TernaryBackend`]:
//!
//! * [`config`]: the HF `config.json` (both `rope_theta` styles, `linear_class` scale conventions);
//! * [`model`]: the decoder (GQA, rotate-half RoPE, relu² or SiLU FFN, sub-norms, tied or untied embeddings)
//!   with a preallocated [`cache::KvCache`];
//! * [`load`]: the Hugging Face directory loader (packed uint8 + `weight_scale`, dense ternary, bf16 masters),
//!   memory-mapped.
//!
//! Status: GGUF loading, the hub, the tokenizer, sampling and the rest of the CLI come with the rest of the
//! model issue.

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod error;
pub mod load;
pub mod model;
pub mod rope;

pub use cache::KvCache;
pub use config::BitNetConfig;
pub use error::{ModelError, Result};
pub use load::load_hf_dir;
pub use model::BitNetModel;
