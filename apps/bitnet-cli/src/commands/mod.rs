//! One module per subcommand, plus the options they share.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod device;
pub mod download;
pub mod embed;
pub mod generate;
pub mod init;
pub mod inspect;
pub mod kernels;
pub mod logits;
pub mod perplexity;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
mod train_ranks;
#[cfg(feature = "train")]
pub mod train_tokenizer;

use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::{Checkpoint, HeadFormat, LoadOptions, ModelBundle, ModelSpec, SamplingConfig};
use clap::Args;
use device::DeviceArg;
use std::path::PathBuf;

/// An error in how the command was called (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Options every model command takes.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a Hugging Face directory (config.json + *.safetensors: packed, dense-ternary or bf16 BitNet
    /// weights, or a Qwen3-based ternary model), a .gguf file (TQ1_0, TQ2_0, I2_S, Q2_0, PQ2_0), or a hub id such as microsoft/bitnet-b1.58-2B-4T
    /// (downloaded once into the Hugging Face hub cache; HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=1, HF_HUB_DOWNLOAD_TIMEOUT apply).
    /// A tokenizer.json in the directory (or next to the .gguf file), or a byte-level BPE tokenizer embedded
    /// in the .gguf file (llama.cpp's tokenizer.ggml.* keys), enables --prompt. Omitted: the embedded
    /// default model (a 3.5M-parameter ternary model trained on Shakespeare, see the README).
    #[arg(long, value_name = "DIR|FILE.gguf|OWNER/NAME")]
    pub model: Option<PathBuf>,
    /// Threads of the CPU kernels (default: BITNET_THREADS, else the CPUs this process may use).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// The output head's format: stored (as the checkpoint holds it), f32, f16, bf16, int8 (per-row int8
    /// weights, half the bytes of bf16 per decode step), q6k (ggml's Q6_K blocks, 0.41 of bf16; CPU only) or q4
    /// (an f16 scale per 32 weights and 4-bit codes, 0.28 of bf16; CPU only). int8, q6k and q4 also quantize
    /// the activations to 8 bits per token; a tied model's embedding lookup reads the converted matrix too.
    /// docs/PERFORMANCE.md gives each format's speed and perplexity.
    #[arg(long, default_value = "stored", value_name = "FORMAT")]
    pub head: HeadFormat,
}

impl ModelArgs {
    /// Applies `--threads` and opens the model's files (a hub id is downloaded first if it is not cached).
    pub fn open(&self) -> Result<Checkpoint> {
        if let Some(n) = self.threads {
            bitnet_models::backend::set_cpu_threads(n).map_err(|e| UsageError(format!("--threads: {e}")))?;
        }
        let spec = ModelSpec::parse(self.model.as_deref())?;
        Ok(Checkpoint::open(&spec)?)
    }

    /// Loads an opened checkpoint onto `device` with the options given (`--head`).
    pub fn load<B: BitNetBackend>(&self, checkpoint: &Checkpoint, device: &B::Device) -> Result<ModelBundle<B>> {
        let options = LoadOptions::packed().with_head(self.head);
        Ok(ModelBundle::<B>::load_with(checkpoint, options, device)?)
    }
}

/// Sampling options of `generate` and `chat`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy and deterministic.
    #[arg(long, default_value_t = 0.8, value_name = "T")]
    temperature: f32,
    /// Sample among the K most likely tokens only (0 = all).
    #[arg(long, default_value_t = 40, value_name = "K")]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with total probability >= P.
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    min_p: f32,
    /// Penalty (> 1) for tokens already in the context.
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    repetition_penalty: f32,
    /// Random seed; the same seed and settings give the same tokens.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
}

impl SamplingArgs {
    /// The validated sampling settings.
    pub fn config(&self) -> Result<SamplingConfig> {
        let config = SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        };
        config.validate().map_err(UsageError)?;
        Ok(config)
    }
}

/// Parses `1,2,3` into token ids.
pub fn parse_ids(text: &str, flag: &str) -> Result<Vec<u32>> {
    let ids = text
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| UsageError(format!("'{t}' in {flag} is not a token id"))))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(UsageError(format!("{flag} is empty")).into());
    }
    Ok(ids)
}
