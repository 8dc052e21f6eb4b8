//! `bitnet perplexity --file TEXT`: the model's perplexity on a text file (windowed, see
//! `bitnet_models::perplexity`).

use super::{ModelArgs, UsageError};
use anyhow::Result;
use bitnet_train::models::perplexity::perplexity;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `bitnet perplexity`.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score (UTF-8; `.gz` files are decompressed), tokenized with the model directory's tokenizer.json.
    #[arg(long, value_name = "TEXT_FILE")]
    file: PathBuf,
    /// Window length in tokens: consecutive windows of this many tokens, each scored from an empty cache.
    #[arg(long, default_value_t = 512, value_name = "N")]
    context: usize,
    /// Print `{"tokens": n, "nll": mean nats/token, "ppl": exp(nll)}` on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = bitnet_train::data::read_text(&args.file)?;
    let tokenizer = args
        .model
        .tokenizer()?
        .ok_or_else(|| UsageError("perplexity needs a tokenizer.json in the model directory".into()))?;
    let tokens = tokenizer.encode(&text)?;
    let model = args.model.load()?;
    let score = perplexity(&model, &tokens, args.context, |done, total| {
        eprint!("\rscoring window {done}/{total}");
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    if args.json {
        println!("{}", serde_json::json!({"tokens": score.tokens, "nll": score.nll, "ppl": score.ppl()}));
    } else {
        println!("tokens: {}  nll: {:.6} nats/token  ppl: {:.4}", score.tokens, score.nll, score.ppl());
    }
    Ok(())
}
