//! `bitnet embed --model M --text T [--text T2 ...] [--ids 1,2,3 ...] [--pooling last|mean|first]`: pooled,
//! L2-normalized embeddings (see `bitnet_models::embed`) as one JSON object on stdout.

use super::device::{on_device, OnDevice};
use super::{parse_ids, ModelArgs, UsageError};
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::embed::{embed, Pooling};
use bitnet_models::Checkpoint;
use clap::Args;

/// Arguments of `bitnet embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A text to embed (repeat for several); tokenized with the model's tokenizer, BOS prepended when the model
    /// has one.
    #[arg(long, value_name = "TEXT")]
    text: Vec<String>,
    /// Comma-separated token ids to embed as they are (repeat for several).
    #[arg(long, value_name = "IDS")]
    ids: Vec<String>,
    /// Pooling: last (the last token's state), mean, or first. Default: what the model declares (GGUF
    /// `{arch}.pooling_type`), else last.
    #[arg(long, value_name = "POOLING")]
    pooling: Option<Pooling>,
}

/// Runs the command.
pub fn run(args: EmbedArgs) -> Result<()> {
    if args.text.is_empty() && args.ids.is_empty() {
        return Err(UsageError("nothing to embed: pass --text or --ids".into()).into());
    }
    let ids = args.ids.iter().map(|s| parse_ids(s, "--ids")).collect::<Result<Vec<_>>>()?;
    let checkpoint = args.model.open()?;
    let pooling = match args.pooling {
        Some(p) => p,
        None => Pooling::declared(&checkpoint)?.unwrap_or_default(),
    };
    let device = args.model.device.device;
    on_device(device, Embed { args, checkpoint, ids, pooling })
}

/// What was embedded.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Input {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(serde::Serialize)]
struct Item {
    #[serde(flatten)]
    input: Input,
    tokens: usize,
    embedding: Vec<f32>,
}

#[derive(serde::Serialize)]
struct Output {
    model: String,
    pooling: &'static str,
    normalized: &'static str,
    dimensions: usize,
    data: Vec<Item>,
}

struct Embed {
    args: EmbedArgs,
    checkpoint: Checkpoint,
    ids: Vec<Vec<u32>>,
    pooling: Pooling,
}

impl OnDevice for Embed {
    type Output = ();

    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<()> {
        let bundle = self.args.model.load::<B>(&self.checkpoint, device)?;
        let mut inputs: Vec<(Input, Vec<u32>)> = Vec::new();
        for text in &self.args.text {
            inputs.push((Input::Text(text.clone()), bundle.encode_prompt(text)?));
        }
        inputs.extend(self.ids.into_iter().map(|ids| (Input::Ids(ids.clone()), ids)));
        let mut data = Vec::with_capacity(inputs.len());
        for (input, ids) in inputs {
            let embedding = embed(bundle.model(), &ids, self.pooling)?;
            data.push(Item { input, tokens: ids.len(), embedding });
        }
        let out = Output {
            model: bundle.path().display().to_string(),
            pooling: Pooling::ALL.iter().find(|(p, _)| *p == self.pooling).map_or("last", |(_, n)| n),
            normalized: "l2",
            dimensions: data.first().map_or(0, |d| d.embedding.len()),
            data,
        };
        let out = serde_json::to_string(&out)?;
        crate::output::println(&out)?;
        Ok(())
    }
}
