//! The `bitnet` command-line tool.
//!
//! Exit codes: 0 success, 2 usage error, 1 any other error, with a one-line cause on stderr. A closed stdout
//! (the reader of a pipe went away, as in `bitnet generate ... | head -c 1`) ends the command quietly.

mod commands;
mod output;

use clap::{Parser, Subcommand};

/// BitNet b1.58 (ternary weights, 8-bit activations): run, inspect, benchmark and train models on the CPU or a GPU.
#[derive(Parser)]
#[command(name = "bitnet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate tokens after a prompt (KV-cache decoding, streaming).
    Generate(commands::generate::GenerateArgs),
    /// Chat interactively (multi-turn, one message per stdin line; the KV cache is reused across turns).
    Chat(commands::chat::ChatArgs),
    /// Embed texts: the pooled, L2-normalized final hidden state (BitNet embedding models), as JSON.
    Embed(commands::embed::EmbedArgs),
    /// Write the float32 [tokens, vocab] logits of one full forward pass to a .npy file.
    Logits(commands::logits::LogitsArgs),
    /// Download a model from the Hugging Face hub into the local cache and print its path.
    Download(commands::download::DownloadArgs),
    /// Describe a model (format, architecture, tensors) without loading its weights.
    Inspect(commands::inspect::InspectArgs),
    /// Perplexity of the model on a text file.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Write a random-weight model of a known architecture (HF packed directory or GGUF), for benchmarks.
    Init(commands::init::InitArgs),
    /// Convert a model to another format (HF, I2_S, TQ2_0, TQ1_0, Q2_0, PQ2_0), tokenizer included.
    Convert(commands::convert::ConvertArgs),
    /// Train a BitNet b1.58 model (quantization-aware, burn-train) on text files and export it.
    #[cfg(feature = "train")]
    Train(commands::train::TrainArgs),
    /// Train a byte-level BPE tokenizer on text files.
    #[cfg(feature = "train")]
    TrainTokenizer(commands::train_tokenizer::TrainTokenizerArgs),
    /// Serve the model over HTTP with an OpenAI-compatible API (chat and text completions, streaming),
    /// decoding concurrent requests together (continuous batching).
    #[cfg(feature = "serve")]
    Serve(commands::serve::ServeArgs),
    /// Measure prefill and decode speed, and decode against the memory-bandwidth roofline.
    Bench(commands::bench::BenchArgs),
    /// Show the CPU kernels this machine can run and the one that would be used.
    Kernels,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => commands::generate::run(args),
        Command::Logits(args) => commands::logits::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Init(args) => commands::init::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Perplexity(args) => commands::perplexity::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Download(args) => commands::download::run(args),
        #[cfg(feature = "train")]
        Command::Train(args) => commands::train::run(args),
        #[cfg(feature = "train")]
        Command::TrainTokenizer(args) => commands::train_tokenizer::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => commands::serve::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Kernels => commands::kernels::run(),
    };
    if let Err(e) = result {
        if output::is_closed_stdout(&e) {
            std::process::exit(0);
        }
        let usage = e.downcast_ref::<commands::UsageError>().is_some();
        output::note(&format!("error: {}", format!("{e:#}").replace('\n', " ")));
        std::process::exit(if usage { 2 } else { 1 });
    }
}
