//! # bitnet-train
//!
//! Quantization-aware training (QAT) of BitNet b1.58 models with burn autodiff and burn-train's `Learner`:
//!
//! * [`model::LanguageModel`]: the one decoder of `bitnet_models` (latent `BitLinear` projections: straight-
//!   through fake quantization of weights and activations) with its λ warm-up schedule; the full-precision
//!   baseline is the same model at λ = 0;
//! * [`data`]: token windows, deterministic shuffling by seed and step, a validation split scored like
//!   `bitnet perplexity`;
//! * [`schedule::TwoStageSchedule`] + [`optim::StagedAdamW`]: the 2B-4T recipe's two stages (cosine LR, then a
//!   lower cooldown without weight decay), gradient clipping;
//! * [`checkpoint`]: checkpoints every N steps, written atomically, and resume;
//! * [`export`]: `pack()` plus the HF or GGUF writer of the model crate;
//! * [`ddp`]: data-parallel training across processes and machines (gradients averaged over a TCP star);
//! * [`tokenizer::train_bpe`]: a byte-level BPE for users without a tokenizer.

#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod ddp;
pub mod error;
pub mod export;
mod metric;
pub mod model;
pub mod optim;
pub mod plot;
mod progress;
pub mod schedule;
mod step;
pub mod tokenizer;
pub mod train;

pub use bitnet_models as models;
pub use error::{Result, TrainError};
pub use model::LanguageModel;
pub use train::{evaluate, starting_model, train, TrainConfig, TrainReport};
