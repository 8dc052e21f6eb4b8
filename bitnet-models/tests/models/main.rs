//! The integration tests of bitnet-models, one test binary (each binary links burn and its backends again, which
//! costs CI disk and link time). Tests that set process-wide environment variables keep binaries of their own:
//! `hub.rs` and `scale_override.rs`.

mod bench;
mod chat;
mod common;
mod convert;
mod gguf_hostile;
mod gguf_reference;
mod gguf_tokenizer;
mod hf_reference;
mod memory;
mod wgpu;
