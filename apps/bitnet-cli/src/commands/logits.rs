//! `bitnet logits`: the float32 `[tokens, vocab]` logits of one full forward pass, as `.npy` (written
//! atomically: a failed write is an error and leaves no partial file).

use super::device::{on_device, OnDevice};
use super::{parse_ids, ModelArgs};
use crate::output;
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::npy::save_f32_npy;
use bitnet_models::Checkpoint;
use clap::Args;
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
    let ids = parse_ids(&args.prompt_ids, "--prompt-ids")?;
    let checkpoint = args.model.open()?;
    let device = args.model.device.device;
    on_device(device, Logits { args, checkpoint, ids })
}

struct Logits {
    args: LogitsArgs,
    checkpoint: Checkpoint,
    ids: Vec<u32>,
}

impl OnDevice for Logits {
    type Output = ();

    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<()> {
        let bundle = self.args.model.load::<B>(&self.checkpoint, device)?;
        let model = bundle.model();
        let mut cache = model.new_cache(1, self.ids.len())?;
        let logits = model.forward_ids(&self.ids, &mut cache)?;
        let [t, v] = logits.dims();
        let values = logits.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        save_f32_npy(&self.args.out, &[t, v], &values)?;
        output::note(&format!("wrote logits [{t}, {v}] to {}", self.args.out.display()));
        Ok(())
    }
}
