//! `bitnet train-tokenizer`: a byte-level BPE tokenizer trained on text files (the `tokenizers` crate).

use super::UsageError;
use crate::output;
use anyhow::Result;
use bitnet_train::tokenizer::train_bpe;
use clap::Args;
use std::path::PathBuf;

/// The largest vocabulary `train-tokenizer` builds (ids must fit the model's embedding and u32 token ids).
const MAX_VOCAB: usize = 1 << 20;

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
    if !(258..=MAX_VOCAB).contains(&args.vocab_size) {
        return Err(UsageError(format!("--vocab-size must be 258 to {MAX_VOCAB}, got {}", args.vocab_size)).into());
    }
    let files: Vec<&std::path::Path> = args.files.iter().map(|p| p.as_path()).collect();
    let json = train_bpe(&files, args.vocab_size)?;
    bitnet_models::io::write_atomically(&args.out, json.as_bytes())?;
    output::note(&format!("wrote a {}-token byte-level BPE to {}", args.vocab_size, args.out.display()));
    Ok(())
}
