//! `bitnet init --random --arch NAME --out PATH [--format hf|tq2_0|i2s]`: writes a random-weight model of a
//! family member's shapes, in the Hugging Face packed layout (a directory) or as a GGUF file with TQ2_0
//! (llama.cpp) or I2_S (bitnet.cpp) ternary tensors, for benchmarks and tests.

use super::UsageError;
use anyhow::Result;
use bitnet_train::models::load::gguf_vocab::GgufVocab;
use bitnet_train::models::load::gguf_write::TernaryGgufType;
use bitnet_train::models::load::write::{write_random_gguf, write_random_hf_packed};
use bitnet_train::models::tokenizer::{llama3_tokenizer_json, LLAMA3_TOKENIZER_CONFIG};
use bitnet_train::models::zoo::{arch_config_json, ARCHS};
use bitnet_train::models::BitNetConfig;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `bitnet init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Fill the weights with random values (the only mode today).
    #[arg(long)]
    random: bool,
    /// Architecture: 2b-4t (microsoft/bitnet-b1.58-2B-4T shapes), tiny, small.
    #[arg(long, value_name = "NAME")]
    arch: String,
    /// Output: a directory (created) for --format hf, a .gguf file otherwise.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    out: PathBuf,
    /// On-disk format.
    #[arg(long, value_enum, default_value_t = InitFormat::Hf)]
    format: InitFormat,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The formats `init` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitFormat {
    /// Hugging Face directory: config.json + packed uint8 model.safetensors (+ tokenizer for 2b-4t).
    Hf,
    /// GGUF with llama.cpp TQ2_0 ternary tensors (every projection's input width a multiple of 256).
    #[value(name = "tq2_0")]
    Tq2_0,
    /// GGUF with bitnet.cpp I2_S ternary tensors.
    #[value(name = "i2s")]
    I2s,
}

/// Runs the command.
pub fn run(args: InitArgs) -> Result<()> {
    if !args.random {
        return Err(UsageError("only --random models can be initialized: pass --random".into()).into());
    }
    let text = arch_config_json(&args.arch)
        .ok_or_else(|| UsageError(format!("unknown --arch '{}': expected one of {}", args.arch, ARCHS.join(", "))))?;
    let config = BitNetConfig::from_json(&text).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let gguf = match args.format {
        InitFormat::Hf => None,
        InitFormat::Tq2_0 => Some(TernaryGgufType::Tq2_0),
        InitFormat::I2s => Some(TernaryGgufType::I2s),
    };
    if let Some(ty) = gguf {
        ty.check_shapes(&config).map_err(|why| UsageError(format!("--arch {}: {why}: use --format i2s", args.arch)))?;
    }
    eprintln!("writing a random {} model to {} ...", args.arch, args.out.display());
    if let Some(ty) = gguf {
        // The LLaMA-3 vocabulary of the 2B-4T family and its chat template travel inside the file, so --prompt
        // and chat work on it alone.
        let vocab = (config.vocab_size == 128_256)
            .then(|| {
                GgufVocab::from_tokenizer_json(&llama3_tokenizer_json())?.with_chat_template_of(LLAMA3_TOKENIZER_CONFIG)
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("the shipped LLaMA-3 tokenizer: {e}"))?;
        write_random_gguf(&args.out, &config, ty, &format!("random {}", args.arch), args.seed, vocab.as_ref())?;
        eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    write_random_hf_packed(&args.out, &text, &config, args.seed)?;
    if config.vocab_size == 128_256 {
        // The LLaMA-3 vocabulary of the 2B-4T family: ship its tokenizer so --prompt works.
        let write = |name: &str, bytes: &[u8]| {
            let path = args.out.join(name);
            std::fs::write(&path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        };
        write("tokenizer.json", &llama3_tokenizer_json())?;
        write("tokenizer_config.json", LLAMA3_TOKENIZER_CONFIG.as_bytes())?;
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
