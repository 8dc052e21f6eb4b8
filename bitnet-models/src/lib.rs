//! # bitnet-models
//!
//! The BitNet b1.58 model family (microsoft/bitnet-b1.58-2B-4T and relatives) on top of
//! [`bitnet_backend`]: configs, HF safetensors and GGUF loaders, tokenizer and chat template, KV-cache
//! generation and sampling, and the model zoo.
//!
//! Status: this crate is filled by the model/CLI issue; it holds no code yet.

pub use bitnet_backend as backend;
