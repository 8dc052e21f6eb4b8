//! `bitnet convert --model SRC --out DST --format hf|i2s|tq2_0|tq1_0|q2_0|pq2_0 [--head FORMAT]`: any supported
//! checkpoint (HF packed or bf16 master, GGUF of any ternary type, a hub id, the default model) to any supported
//! format, with the tokenizer and chat template carried along (see `bitnet_models::export::convert`).

use super::UsageError;
use crate::output;
use anyhow::{Context, Result};
use bitnet_models::export::{convert, ConvertFormat};
use bitnet_models::{Checkpoint, HeadFormat, ModelSpec};
use burn::backend::Flex;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `bitnet convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model to convert: a Hugging Face directory, a .gguf file, or a hub id (omitted: the embedded
    /// default model).
    #[arg(long, value_name = "DIR|FILE.gguf|OWNER/NAME")]
    model: Option<PathBuf>,
    /// Output: a directory (created) for --format hf, a file otherwise. Refused if it exists, unless --force.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    out: PathBuf,
    /// Target format: hf (Hugging Face directory: packed uint8 for BitNet members, dense ternary values for Qwen3
    /// members), i2s (bitnet.cpp, one scale per tensor), tq2_0 / tq1_0 (llama.cpp, a scale per 256 weights;
    /// widths a multiple of 256), q2_0 (ggml, a scale per 64 weights), pq2_0 (PrismML, a scale per 128). A
    /// target that cannot hold the model's scales is refused with the reason.
    #[arg(long, value_name = "FORMAT")]
    format: ConvertFormat,
    /// The token matrices' format: stored (as the source holds them), f32, f16, bf16, q6k or q4 (GGUF only,
    /// written as ggml's Q6_K and Q4_0).
    #[arg(long, default_value = "stored", value_name = "FORMAT")]
    head: HeadFormat,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
}

/// Runs the command.
pub fn run(args: ConvertArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(UsageError(format!("{} exists: pass --force to replace it", args.out.display())).into());
    }
    if args.head == HeadFormat::Int8 {
        return Err(UsageError("--head int8: no checkpoint format stores int8 matrices".into()).into());
    }
    let checkpoint = Checkpoint::open(&ModelSpec::parse(args.model.as_deref())?)?;
    let started = Instant::now();
    output::note(&format!(
        "converting {} to {} at {} ...",
        checkpoint.path().display(),
        args.format.name(),
        args.out.display()
    ));
    let report = convert::<Flex>(&checkpoint, &args.out, args.format, args.head, &Default::default())
        .with_context(|| format!("converting to {}", args.format.name()))?;
    output::note(&format!("tokenizer: {}", report.tokenizer));
    output::note(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}
