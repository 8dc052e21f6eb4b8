//! `bitnet perplexity --file TEXT`: the model's perplexity on a text file (windowed, see
//! `bitnet_models::perplexity`).

use super::device::{on_device, OnDevice};
use super::{ModelArgs, UsageError};
use crate::output;
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::perplexity::perplexity;
use bitnet_models::Checkpoint;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `bitnet perplexity`.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score (UTF-8; `.gz` files are decompressed), tokenized with the model's tokenizer.
    #[arg(long, value_name = "TEXT_FILE")]
    file: PathBuf,
    /// Window length in tokens: consecutive windows of this many tokens, each scored from an empty cache (at
    /// most the model's context).
    #[arg(long, default_value_t = 512, value_name = "N")]
    context: usize,
    /// Print `{"tokens": n, "nll": mean nats/token, "ppl": exp(nll)}` on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: PerplexityArgs) -> Result<()> {
    if args.context < 2 {
        return Err(UsageError(format!("--context must be at least 2 tokens, got {}", args.context)).into());
    }
    let text = bitnet_models::io::read_text(&args.file)?;
    let checkpoint = args.model.open()?;
    let device = args.model.device.device;
    on_device(device, Perplexity { args, checkpoint, text })
}

struct Perplexity {
    args: PerplexityArgs,
    checkpoint: Checkpoint,
    text: String,
}

impl OnDevice for Perplexity {
    type Output = ();

    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<()> {
        let bundle = self.args.model.load::<B>(&self.checkpoint, device)?;
        let tokenizer = bundle.tokenizer().map_err(|e| UsageError(format!("perplexity needs a tokenizer: {e}")))?;
        let tokens = tokenizer.encode(&self.text)?;
        let max = bundle.model().config().max_position_embeddings;
        if self.args.context > max {
            return Err(
                UsageError(format!("--context {} exceeds the model's context of {max}", self.args.context)).into()
            );
        }
        let score = perplexity(bundle.model(), &tokens, self.args.context, |done, total| {
            output::note_inline(&format!("\rscoring window {done}/{total}"));
        })?;
        output::note("");
        if self.args.json {
            output::println(
                &serde_json::json!({"tokens": score.tokens, "nll": score.nll, "ppl": score.ppl()}).to_string(),
            )?;
        } else {
            output::println(&format!(
                "tokens: {}  nll: {:.6} nats/token  ppl: {:.4}",
                score.tokens,
                score.nll,
                score.ppl()
            ))?;
        }
        Ok(())
    }
}
