//! # bitnet-models
//!
//! The BitNet b1.58 model family (microsoft/bitnet-b1.58-2B-4T and relatives) on any
//! [`bitnet_backend::TernaryBackend`]:
//!
//! * [`config`]: the HF `config.json` (both `rope_theta` styles, `linear_class` scale conventions);
//! * [`model`]: the decoder (GQA, rotate-half RoPE, relu² or SiLU FFN, sub-norms, tied or untied embeddings)
//!   with a preallocated [`cache::KvCache`];
//! * [`load`]: memory-mapped loaders of Hugging Face directories (packed uint8 + `weight_scale`, dense ternary,
//!   bf16/fp16 masters) and GGUF files (I2_S, TQ1_0, TQ2_0), and a GGUF writer;
//! * [`hub`]: hub ids through `hf-hub` (cache, token, offline mode, endpoint); [`zoo`]: the known models;
//! * [`sampling`] and [`generate`]: greedy / temperature / top-k / top-p / min-p / repetition-penalty sampling
//!   and streaming generation with a documented context limit;
//! * [`perplexity`]: windowed perplexity (the definition `bitnet perplexity` and training validation share);
//! * [`npy`]: the `.npy` writer of `bitnet logits`;
//! * [`bench`]: the decode benchmark of `bitnet bench` (tokens/s against the memory roofline).
//!
//! * [`tokenizer`] and [`chat`]: `tokenizer.json` via the `tokenizers` crate (the LLaMA-3 tokenizer ships with
//!   the crate) and Jinja chat templates via minijinja, with the 2B-4T template as fallback.

#![warn(missing_docs)]

pub mod bench;
pub mod cache;
pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod hub;
pub mod load;
pub mod model;
pub mod npy;
pub mod perplexity;
pub mod rope;
pub mod sampling;
pub mod tokenizer;
pub mod zoo;

pub use bitnet_backend as backend;
pub use cache::KvCache;
pub use config::BitNetConfig;
pub use error::{ModelError, Result};
pub use generate::{generate, FinishReason, Generation};
pub use load::{load_gguf, load_hf_dir, load_model};
pub use model::BitNetModel;
pub use sampling::{Sampler, SamplingConfig};
