//! `bitnet train-tokenizer`: a byte-level BPE tokenizer trained on text files (the `tokenizers` crate).

use anyhow::{Context, Result};
use bitnet_train::tokenizer::train_bpe;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `bitnet train-tokenizer`.
#[derive(Args, Debug)]
pub struct TrainTokenizerArgs {
    /// Text files to learn the merges from.
    #[arg(long = "file", value_name = "TEXT_FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Vocabulary size, including the 256 byte tokens and <|endoftext|>.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub vocab_size: usize,
    /// Where to write tokenizer.json.
    #[arg(long, value_name = "TOKENIZER_JSON")]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(args: TrainTokenizerArgs) -> Result<()> {
    let files: Vec<&std::path::Path> = args.files.iter().map(|p| p.as_path()).collect();
    let json = train_bpe(&files, args.vocab_size)?;
    std::fs::write(&args.out, json).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote a {}-token byte-level BPE to {}", args.vocab_size, args.out.display());
    Ok(())
}
