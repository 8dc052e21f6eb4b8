//! `bitnet init --random --arch NAME --out DIR`: writes a random-weight model of a family member's shapes in
//! the Hugging Face packed layout, for benchmarks and tests.

use super::UsageError;
use anyhow::Result;
use bitnet_train::models::load::write::write_random_hf_packed;
use bitnet_train::models::tokenizer::{llama3_tokenizer_json, LLAMA3_TOKENIZER_CONFIG};
use bitnet_train::models::zoo::{arch_config_json, ARCHS};
use bitnet_train::models::BitNetConfig;
use clap::Args;
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
    /// Output directory (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    eprintln!("writing a random {} model to {} ...", args.arch, args.out.display());
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
