//! # bitnet-train
//!
//! Quantization-aware training (QAT) of BitNet b1.58 models with burn autodiff and burn-train:
//! datasets, schedules, checkpoints and export to the packed HF and GGUF formats.
//!
//! Status: this crate is filled by the training issue; it holds no code yet.

pub use bitnet_models as models;
