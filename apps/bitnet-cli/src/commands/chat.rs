//! `bitnet chat`: an interactive, multi-turn conversation that reuses the KV cache across turns.
//!
//! Reads one user message per line from stdin (a `> ` prompt is shown on a terminal); `/reset` starts over,
//! `/exit` or end of input quits. Replies stream to stdout; speeds and cache reuse go to stderr.

use super::{parse_ids, ModelArgs, SamplingArgs, UsageError};
use anyhow::Result;
use bitnet_train::models::chat::{ChatSession, ChatTemplate};
use bitnet_train::models::load::gguf::GgufFile;
use bitnet_train::models::Sampler;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};

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
    /// Extra stop token ids (comma-separated), besides the model's end-of-sequence tokens and <|eot_id|>.
    #[arg(long, value_name = "IDS")]
    stop_ids: Option<String>,
}

/// Runs the command.
pub fn run(args: ChatArgs) -> Result<()> {
    let sampling = args.sampling.config()?;
    let tokenizer = args.model.tokenizer()?.ok_or_else(|| {
        UsageError("chat needs a tokenizer: a tokenizer.json beside the model, or one in its .gguf".into())
    })?;
    let model_path = args.model.path()?.clone();
    let template_dir =
        if model_path.is_dir() { model_path.clone() } else { model_path.parent().unwrap_or(&model_path).to_path_buf() };
    // tokenizer_config.json beside the model, else the template a .gguf file carries, else 2B-4T's.
    let template = match ChatTemplate::from_model_dir(&template_dir)? {
        ChatTemplate::BitNet2B4T if model_path.is_file() && !template_dir.join("tokenizer_config.json").exists() => {
            ChatTemplate::from_gguf(&GgufFile::open(&model_path)?).unwrap_or(ChatTemplate::BitNet2B4T)
        }
        found => found,
    };
    let model = args.model.load()?;
    let mut stops = match &args.stop_ids {
        Some(s) => parse_ids(s)?,
        None => vec![],
    };
    stops.extend(&model.config.eos_token_ids);
    stops.extend(tokenizer.token_id("<|eot_id|>"));
    let mut session = ChatSession::new(&model, &tokenizer, template, args.system.clone(), args.context);
    let mut sampler = Sampler::new(sampling);
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        if interactive {
            print!("> ");
            stdout.flush()?;
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
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        let info = session.turn(line, args.max_new_tokens, &mut sampler, &stops, |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        })?;
        println!();
        let g = &info.generation;
        eprintln!(
            "[{} cached prompt tokens reused{}; prefill {} tokens at {:.1} tokens/s; decode {} tokens at {:.1} tokens/s]",
            info.reused_tokens,
            if info.restarted { ", context full: conversation restarted" } else { "" },
            g.prefill_tokens,
            g.prefill_tokens_per_s(),
            g.tokens.len(),
            g.decode_tokens_per_s()
        );
    }
    Ok(())
}
