//! `bitnet generate`: KV-cache generation after a prompt, streamed to stdout, with prefill and decode speed on
//! stderr. With `--json`, one JSON object on stdout instead (DESIGN.md section 4).

use super::{parse_ids, ModelArgs, SamplingArgs, UsageError};
use anyhow::Result;
use bitnet_train::models::tokenizer::TextStream;
use bitnet_train::models::{generate, Sampler};
use clap::Args;
use std::io::Write;

/// Arguments of `bitnet generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated prompt token ids, e.g. `128000,9906,1917`.
    #[arg(long, value_name = "IDS")]
    prompt_ids: Option<String>,
    /// Prompt text, tokenized with the model directory's tokenizer.json (special tokens such as
    /// `<|begin_of_text|>` are recognized; a BOS token is prepended when the text has none).
    #[arg(long, value_name = "TEXT", conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Extra stop token ids (comma-separated), besides the model's end-of-sequence tokens.
    #[arg(long, value_name = "IDS")]
    stop_ids: Option<String>,
    /// Print one JSON object instead of streaming tokens.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: GenerateArgs) -> Result<()> {
    let tokenizer = args.model.tokenizer()?;
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => {
            let tokenizer = tokenizer.as_ref().ok_or_else(|| {
                UsageError("--prompt needs a tokenizer.json in the model directory: pass --prompt-ids instead".into())
            })?;
            let mut ids = tokenizer.encode(text)?;
            if let Some(bos) = args.model.bos_token()? {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
            ids
        }
        (None, Some(ids)) => parse_ids(ids)?,
        (None, None) => return Err(UsageError("pass --prompt TEXT or --prompt-ids IDS".into()).into()),
    };
    let sampling = args.sampling.config()?;
    let mut stops = match &args.stop_ids {
        Some(s) => parse_ids(s)?,
        None => vec![],
    };
    let model = args.model.load()?;
    stops.extend(&model.config.eos_token_ids);
    if let Some(eot) = tokenizer.as_ref().and_then(|t| t.token_id("<|eot_id|>")) {
        stops.push(eot);
    }
    let mut cache = model.new_cache(prompt.len() + args.max_new_tokens);
    let mut sampler = Sampler::new(sampling);
    let stdout = std::io::stdout();
    let json = args.json;
    let mut stream = TextStream::default();
    let out = generate(&model, &mut cache, &prompt, args.max_new_tokens, &mut sampler, &stops, |token| {
        if !json {
            let piece = match &tokenizer {
                Some(t) => stream.push(t, token).unwrap_or_default(),
                None => format!("{token} "),
            };
            let mut lock = stdout.lock();
            let _ = write!(lock, "{piece}");
            let _ = lock.flush();
        }
        true
    })?;
    if json {
        let text = match &tokenizer {
            Some(t) => serde_json::Value::String(t.decode(&out.tokens, true)?),
            None => serde_json::Value::Null,
        };
        let object = serde_json::json!({
            "prompt_tokens": prompt,
            "tokens": out.tokens,
            "text": text,
            "finish_reason": format!("{:?}", out.finish),
            "prefill_tokens_per_s": out.prefill_tokens_per_s(),
            "decode_tokens_per_s": out.decode_tokens_per_s(),
        });
        println!("{object}");
    } else {
        println!();
    }
    // Keep the statistics after the text when stdout and stderr share a terminal or a file.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    eprintln!(
        "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({:?})",
        out.prefill_tokens,
        out.prefill_tokens_per_s(),
        out.tokens.len(),
        out.decode_tokens_per_s(),
        out.finish
    );
    Ok(())
}
