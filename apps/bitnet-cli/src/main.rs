//! The `bitnet` command-line tool.
//!
//! Model commands (`generate`, `chat`, `logits`, `perplexity`, ...) arrive with the model issue; today the
//! CLI reports what the compute core detected on this machine.

use anyhow::Result;
use bitnet_train::models::backend::kernels::{dispatch::KERNEL_ENV, pool::THREADS_ENV, Kernel};
use clap::{Parser, Subcommand};

/// BitNet b1.58 (ternary weights, 8-bit activations) inference and training.
#[derive(Parser)]
#[command(name = "bitnet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the CPU kernels this machine can run and the one that would be used.
    Kernels,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Kernels => {
            let forced = Kernel::from_env()?;
            println!("available kernels (fastest first): {}", names(&Kernel::available()));
            println!("selected kernel: {}", forced.unwrap_or_else(Kernel::best));
            if forced.is_some() {
                println!("  (forced by {KERNEL_ENV})");
            }
            let threads = std::env::var(THREADS_ENV).ok();
            println!(
                "threads: {}",
                threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).to_string())
            );
            Ok(())
        }
    }
}

fn names(kernels: &[Kernel]) -> String {
    kernels.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}
