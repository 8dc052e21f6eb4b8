//! `bitnet chat`: an interactive, multi-turn conversation that reuses the KV cache across turns.
//!
//! Reads one user message per line from stdin (a `> ` prompt is shown on a terminal); `/reset` starts over,
//! `/exit` or end of input quits. Replies stream to stdout; speeds and cache reuse go to stderr. The chat
//! template is the model's (`tokenizer_config.json` beside it, or the one a GGUF file carries), else the 2B-4T
//! format.

use super::device::{on_device, OnDevice};
use super::{parse_ids, ModelArgs, SamplingArgs, UsageError};
use crate::output;
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::chat::ChatSession;
use bitnet_models::{Checkpoint, Sampler, SamplingConfig};
use clap::Args;
use std::io::{BufRead, IsTerminal};

/// Arguments of `bitnet chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// System message of the conversation.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_new_tokens: usize,
    /// Context length in tokens (at most the model's); when a turn does not fit, the conversation restarts
    /// from the system message.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    context: usize,
    /// Extra stop token ids (comma-separated), besides the model's end-of-sequence and end-of-turn tokens.
    #[arg(long, value_name = "IDS")]
    stop_ids: Option<String>,
}

/// Runs the command.
pub fn run(args: ChatArgs) -> Result<()> {
    let sampling = args.sampling.config()?;
    if args.context < 2 {
        return Err(UsageError(format!("--context must be at least 2 tokens, got {}", args.context)).into());
    }
    let extra_stops = args.stop_ids.as_deref().map(|ids| parse_ids(ids, "--stop-ids")).transpose()?;
    let checkpoint = args.model.open()?;
    let device = args.model.device.device;
    on_device(device, Chat { args, checkpoint, sampling, extra_stops: extra_stops.unwrap_or_default() })
}

struct Chat {
    args: ChatArgs,
    checkpoint: Checkpoint,
    sampling: SamplingConfig,
    extra_stops: Vec<u32>,
}

impl OnDevice for Chat {
    type Output = ();

    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<()> {
        let Self { args, checkpoint, sampling, extra_stops } = self;
        let bundle = args.model.load::<B>(&checkpoint, device)?;
        let tokenizer = bundle.tokenizer().map_err(|e| UsageError(format!("chat needs a tokenizer: {e}")))?;
        let mut stops = bundle.stop_ids().to_vec();
        stops.extend(extra_stops);
        let template = bundle.chat_template().clone();
        let mut session = ChatSession::new(bundle.model(), tokenizer, template, args.system.clone(), args.context)?;
        let mut sampler = Sampler::new(sampling);
        let interactive = std::io::stdin().is_terminal();
        let stdin = std::io::stdin();
        loop {
            if interactive {
                output::print("> ")?;
            }
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim();
            match line {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    session.reset();
                    output::note("(conversation reset)");
                    continue;
                }
                _ => {}
            }
            let mut write_error = None;
            let info = session.turn(line, args.max_new_tokens, &mut sampler, &stops, |piece| {
                if write_error.is_none() {
                    write_error = output::print(piece).err();
                }
            })?;
            if let Some(e) = write_error {
                return Err(e);
            }
            output::println("")?;
            let g = &info.generation;
            output::note(&format!(
                "[{} cached prompt tokens reused{}; prefill {} tokens at {:.1} tokens/s; decode {} tokens at {:.1} tokens/s]",
                info.reused_tokens,
                if info.restarted { ", context full: conversation restarted" } else { "" },
                g.prefill_tokens,
                g.prefill_tokens_per_s(),
                g.tokens.len(),
                g.decode_tokens_per_s()
            ));
        }
        Ok(())
    }
}
