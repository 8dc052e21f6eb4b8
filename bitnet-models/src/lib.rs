//! # bitnet-models
//!
//! The BitNet b1.58 model family (microsoft/bitnet-b1.58-2B-4T and relatives) and the Qwen3-based ternary models
//! (Ternary-Bonsai, BitNet embeddings) on any [`bitnet_backend::BitNetBackend`]:
//!
//! * [`config`]: the model configuration, read from a Hugging Face `config.json` (both `rope_theta` styles, the
//!   `linear_class` scale conventions, the family members);
//! * [`model`]: ONE decoder, [`BitNetModel`], a burn module tree of `BitLinear` projections: latent for training
//!   ([`BitNetConfig::init`]), packed for inference, with a preallocated [`model::KvCache`] and a batch dimension;
//! * [`source`]: one weight-source abstraction over Hugging Face directories ([`source::hf`]: packed uint8 +
//!   `weight_scale`, dense ternary, bf16/fp16 masters) and GGUF files ([`source::gguf`]: I2_S, TQ1_0, TQ2_0,
//!   Q2_0, PQ2_0), filling the module packed or latent;
//! * [`gguf`]: the GGUF container (reader, writer, ggml types, metadata values, BitNet metadata, vocabularies);
//! * [`export`]: writing packed models as HF checkpoints or GGUF files, converting between formats, and
//!   random-weight models;
//! * [`embed`]: pooled, L2-normalized text embeddings (`bitnet embed`, `/v1/embeddings`);
//! * [`bundle`]: a model as a user names it (directory, `.gguf`, hub id, the embedded default model) resolved and
//!   opened once into model + tokenizer + chat template + BOS and stop ids; [`hub`]: hub ids through a hardened hub client and the standard hub cache;
//! * [`tokenizer`] and [`chat`]: `tokenizer.json` via the `tokenizers` crate (the LLaMA-3 tokenizer ships with the
//!   crate) and Jinja chat templates via minijinja, with the 2B-4T template as fallback;
//! * [`sampling`] and [`generate`](mod@generate): greedy / temperature / top-k / top-p / min-p /
//!   repetition-penalty sampling and streaming generation with a documented context limit;
//! * [`batch`]: continuous batching, many generations decoded together through one forward pass per step
//!   (what `bitnet serve` runs);
//! * [`perplexity`]: windowed perplexity (the definition `bitnet perplexity` and training validation share);
//! * [`bench`](mod@bench): the decode benchmark of `bitnet bench`; [`npy`]: the `.npy` writer of `bitnet logits`;
//!   [`io`]: regular-file inputs and atomic outputs; [`zoo`]: the known architectures.

#![warn(missing_docs)]

pub mod batch;
pub mod bench;
pub mod bundle;
pub mod chat;
pub mod config;
#[cfg(feature = "default-model")]
pub mod default_model;
pub mod embed;
pub mod error;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod io;
pub mod model;
pub mod npy;
pub mod perplexity;
pub mod sampling;
pub mod source;
pub mod tokenizer;
pub mod zoo;

pub use bitnet_backend as backend;
pub use bundle::{Checkpoint, CheckpointFiles, ModelBundle, ModelSpec};
pub use config::BitNetConfig;
pub use error::{ModelError, Result};
pub use generate::{generate, FinishReason, Generation};
pub use model::{BitNetModel, HeadFormat, KvCache, SequenceStep};
pub use sampling::{Sampler, SamplingConfig};
pub use source::{build_model, load_gguf, load_hf_dir, load_model, LoadAs, LoadOptions};
