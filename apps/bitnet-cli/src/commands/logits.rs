//! `bitnet logits`: the float32 `[tokens, vocab]` logits of one full forward pass, as `.npy`.

use super::{parse_ids, ModelArgs};
use anyhow::{Context, Result};
use bitnet_train::models::npy::write_f32_npy;
use clap::Args;
use std::io::BufWriter;
use std::path::PathBuf;

/// Arguments of `bitnet logits`.
#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated prompt token ids, e.g. `128000,9906,1917`.
    #[arg(long, value_name = "IDS")]
    prompt_ids: String,
    /// Output file (.npy, float32, shape [tokens, vocab]).
    #[arg(long, value_name = "FILE.npy")]
    out: PathBuf,
}

/// Runs the command.
pub fn run(args: LogitsArgs) -> Result<()> {
    let ids = parse_ids(&args.prompt_ids)?;
    let model = args.model.load()?;
    let mut cache = model.new_cache(ids.len());
    let logits = model.forward(&ids, &mut cache)?;
    let [t, v] = logits.dims();
    let values = logits.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    write_f32_npy(BufWriter::new(file), &[t, v], &values).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits [{t}, {v}] to {}", args.out.display());
    Ok(())
}
