//! One module per subcommand, plus the options they share.

pub mod bench;
pub mod chat;
pub mod download;
pub mod generate;
pub mod init;
pub mod inspect;
pub mod kernels;
pub mod logits;
pub mod perplexity;
pub mod train;
pub mod train_tokenizer;

use anyhow::Result;
use bitnet_train::models::backend::kernels::pool::THREADS_ENV;
use bitnet_train::models::hub::{fetch, is_hub_id};
use bitnet_train::models::load::gguf::GgufFile;
use bitnet_train::models::tokenizer::Tokenizer;
use bitnet_train::models::{load_model, BitNetConfig, BitNetModel, SamplingConfig};
use burn::backend::Flex;
use clap::Args;
use std::path::{Path, PathBuf};

/// The backend the CLI runs on.
pub type Backend = Flex;

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
    /// weights), a .gguf file (TQ1_0, TQ2_0, I2_S), or a hub id such as microsoft/bitnet-b1.58-2B-4T
    /// (downloaded once into the hf-hub cache; HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=1 apply).
    /// A tokenizer.json in the directory (or next to the .gguf file), or a byte-level BPE tokenizer embedded
    /// in the .gguf file (llama.cpp's tokenizer.ggml.* keys), enables --prompt. Omitted: the embedded
    /// default model (a 3.5M-parameter ternary model trained on Shakespeare, see the README).
    #[arg(long, value_name = "DIR|FILE.gguf|OWNER/NAME")]
    pub model: Option<PathBuf>,
    /// Threads of the CPU kernels (default: all cores; also BITNET_THREADS).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The resolved local path of a hub id.
    #[arg(skip)]
    resolved: std::sync::OnceLock<PathBuf>,
}

impl ModelArgs {
    /// Applies `--threads` and loads the model.
    pub fn load(&self) -> Result<BitNetModel<Backend>> {
        if let Some(n) = self.threads {
            if n == 0 {
                return Err(UsageError("--threads must be at least 1".into()).into());
            }
            // Read once, when the kernels' pool is first used (below, during loading and inference).
            std::env::set_var(THREADS_ENV, n.to_string());
        }
        load_model::<Backend>(self.path()?, &Default::default()).map_err(anyhow::Error::from)
    }
}

impl ModelArgs {
    /// The local path of the model: `--model` itself, or the hub snapshot of a hub id (fetched once).
    pub fn path(&self) -> Result<&PathBuf> {
        let Some(spec) = self.model.as_ref() else {
            if let Some(path) = self.resolved.get() {
                return Ok(path);
            }
            let path = crate::default_model::path()?;
            return Ok(self.resolved.get_or_init(|| path));
        };
        if spec.exists() {
            return Ok(spec);
        }
        let text = spec.to_string_lossy();
        if !is_hub_id(&text) {
            return Ok(spec);
        }
        if let Some(path) = self.resolved.get() {
            return Ok(path);
        }
        let path = fetch(&text, "main")?;
        Ok(self.resolved.get_or_init(|| path))
    }

    /// The model's tokenizer: a `tokenizer.json` in its directory (or beside its .gguf file), else the one a
    /// .gguf file carries in its metadata; `None` if neither exists.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        let model = self.path()?;
        let dir = if model.is_dir() { model.as_path() } else { model.parent().unwrap_or(Path::new(".")) };
        let path = dir.join("tokenizer.json");
        if path.exists() {
            return Ok(Some(Tokenizer::from_file(&path)?));
        }
        if model.is_file() {
            return Ok(GgufFile::open(model)?.tokenizer()?);
        }
        Ok(None)
    }

    /// The configured BOS token of the model.
    pub fn bos_token(&self) -> Result<Option<u32>> {
        let model = self.path()?;
        let config = if model.is_dir() {
            BitNetConfig::from_file(&model.join("config.json"))?
        } else {
            GgufFile::open(model)?.config()?
        };
        Ok(config.bos_token_id)
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
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let ids = text
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| UsageError(format!("'{t}' in --prompt-ids is not a token id"))))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(UsageError("--prompt-ids is empty".into()).into());
    }
    Ok(ids)
}
