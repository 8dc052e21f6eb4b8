//! `bitnet generate`: KV-cache generation after a prompt, streamed to stdout, with prefill and decode speed on
//! stderr. With `--json`, one JSON object on stdout instead:
//! `{"prompt_tokens", "tokens", "text", "finish_reason", "prefill_tokens_per_s", "decode_tokens_per_s"}`.

use super::device::{on_device, OnDevice};
use super::{parse_ids, ModelArgs, SamplingArgs, UsageError};
use crate::output;
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::tokenizer::TextStream;
use bitnet_models::{generate, Checkpoint, Sampler, SamplingConfig};
use clap::Args;

/// Arguments of `bitnet generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated prompt token ids, e.g. `128000,9906,1917`.
    #[arg(long, value_name = "IDS")]
    prompt_ids: Option<String>,
    /// Prompt text, tokenized with the model's tokenizer (special tokens such as `<|begin_of_text|>` are
    /// recognized; the BOS token is prepended when the model has one and the text does not start with it).
    #[arg(long, value_name = "TEXT", conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Most tokens to generate (generation also ends at a stop token or when the model's context is full).
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Extra stop token ids (comma-separated), besides the model's end-of-sequence and end-of-turn tokens.
    #[arg(long, value_name = "IDS")]
    stop_ids: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: GenerateArgs) -> Result<()> {
    if args.prompt.is_none() && args.prompt_ids.is_none() {
        return Err(UsageError("pass --prompt TEXT or --prompt-ids IDS".into()).into());
    }
    let prompt_ids = args.prompt_ids.as_deref().map(|ids| parse_ids(ids, "--prompt-ids")).transpose()?;
    let extra_stops = args.stop_ids.as_deref().map(|ids| parse_ids(ids, "--stop-ids")).transpose()?;
    let sampling = args.sampling.config()?;
    let checkpoint = args.model.open()?;
    let device = args.model.device.device;
    on_device(device, Generate { args, checkpoint, prompt_ids, extra_stops: extra_stops.unwrap_or_default(), sampling })
}

struct Generate {
    args: GenerateArgs,
    checkpoint: Checkpoint,
    prompt_ids: Option<Vec<u32>>,
    extra_stops: Vec<u32>,
    sampling: SamplingConfig,
}

impl OnDevice for Generate {
    type Output = ();

    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<()> {
        let Self { args, checkpoint, prompt_ids, extra_stops, sampling } = self;
        let bundle = args.model.load::<B>(&checkpoint, device)?;
        let prompt = match (&args.prompt, prompt_ids) {
            (Some(text), _) => bundle.encode_prompt(text).map_err(|e| UsageError(format!("--prompt: {e}")))?,
            (None, Some(ids)) => ids,
            (None, None) => unreachable!("checked by run"),
        };
        let model = bundle.model();
        let max_positions = model.config().max_position_embeddings;
        if prompt.len() >= max_positions {
            return Err(UsageError(format!(
                "the prompt has {} tokens; the model's context is {max_positions} positions",
                prompt.len()
            ))
            .into());
        }
        let mut stops = bundle.stop_ids().to_vec();
        stops.extend(extra_stops);
        // The cache holds the prompt and the new tokens, up to the model's context.
        let capacity = prompt.len().saturating_add(args.max_new_tokens).min(max_positions);
        let mut cache = model.new_cache(1, capacity)?;
        let mut sampler = Sampler::new(sampling);
        // Text streams only when a tokenizer exists; --prompt-ids on a model without one prints ids.
        let tokenizer = if args.json { None } else { bundle.tokenizer().ok() };
        let mut stream = TextStream::default();
        let mut write_error = None;
        let out = generate(model, &mut cache, &prompt, args.max_new_tokens, &mut sampler, &stops, |token| {
            if args.json {
                return true;
            }
            let piece = match tokenizer {
                Some(t) => stream.push(t, token).unwrap_or_default(),
                None => format!("{token} "),
            };
            match output::print(&piece) {
                Ok(()) => true,
                Err(e) => {
                    // The reader is gone (or the device full): stop decoding.
                    write_error = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = write_error {
            return Err(e);
        }
        if args.json {
            let text = match bundle.tokenizer() {
                Ok(t) => serde_json::Value::String(t.decode(&out.tokens, true)?),
                Err(_) => serde_json::Value::Null,
            };
            let object = serde_json::json!({
                "prompt_tokens": prompt,
                "tokens": out.tokens,
                "text": text,
                "finish_reason": format!("{:?}", out.finish),
                "prefill_tokens_per_s": out.prefill_tokens_per_s(),
                "decode_tokens_per_s": out.decode_tokens_per_s(),
            });
            output::println(&object.to_string())?;
        } else {
            output::println("")?;
        }
        output::note(&format!(
            "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({:?})",
            out.prefill_tokens,
            out.prefill_tokens_per_s(),
            out.tokens.len(),
            out.decode_tokens_per_s(),
            out.finish
        ));
        Ok(())
    }
}
