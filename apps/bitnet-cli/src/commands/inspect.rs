//! `bitnet inspect --model PATH`: what a model file or directory holds, without loading the weights.

use super::ModelArgs;
use crate::output;
use anyhow::Result;
use bitnet_models::CheckpointFiles;
use clap::Args;
use std::collections::BTreeMap;

/// Arguments of `bitnet inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One tensor: stored type and shape.
struct TensorLine {
    dtype: String,
    shape: Vec<u64>,
}

/// Runs the command.
pub fn run(args: InspectArgs) -> Result<()> {
    let checkpoint = args.model.open()?;
    let config = checkpoint.config()?;
    let mut tensors: BTreeMap<String, TensorLine> = BTreeMap::new();
    let mut metadata: BTreeMap<String, String> = BTreeMap::new();
    let format = match checkpoint.files() {
        CheckpointFiles::Hf(c) => {
            for (name, info) in c.tensor_infos() {
                let shape = info.shape.iter().map(|&d| d as u64).collect();
                tensors.insert(name.to_string(), TensorLine { dtype: format!("{:?}", info.dtype), shape });
            }
            "huggingface-safetensors".to_string()
        }
        CheckpointFiles::Gguf(f) => {
            for t in f.tensors() {
                tensors.insert(
                    t.name.clone(),
                    TensorLine { dtype: t.ggml_type.name().to_string(), shape: t.dims.clone() },
                );
            }
            for (key, value) in f.metadata() {
                metadata.insert(key.clone(), value.describe(100));
            }
            format!("gguf-v{} ({})", f.version(), f.architecture())
        }
    };
    // Checked: a hostile header may claim shapes whose product overflows (no file can hold such a tensor).
    let elements = |shape: &[u64]| shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let mut stored = 0u64;
    for (name, t) in &tensors {
        stored = elements(&t.shape).and_then(|n| stored.checked_add(n)).ok_or_else(|| {
            anyhow::anyhow!("{}: tensor '{name}': its shape {:?} overflows", checkpoint.path().display(), t.shape)
        })?;
    }
    let mut by_dtype: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tensors.values() {
        *by_dtype.entry(t.dtype.as_str()).or_default() += 1;
    }
    let c = &config;
    if args.json {
        let object = serde_json::json!({
            "model": checkpoint.path().display().to_string(),
            "format": format,
            "family": format!("{:?}", c.family),
            "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim,
            "vocab_size": c.vocab_size, "max_positions": c.max_position_embeddings, "rope_theta": c.rope_theta,
            "activation": format!("{:?}", c.activation), "tied_embeddings": c.tie_word_embeddings,
            "scale_convention": format!("{:?}", c.scale_convention),
            "tensors": tensors.len(), "stored_elements": stored, "tensors_by_dtype": by_dtype,
        });
        return output::println(&object.to_string());
    }
    let mut text = format!("model: {}\nformat: {format}\n", checkpoint.path().display());
    text += &format!(
        "architecture: {:?}, {} layers, hidden {}, ffn {}, heads {} (kv {}, head_dim {}), vocab {}, context {}, rope theta {}\n",
        c.family,
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size,
        c.max_position_embeddings,
        c.rope_theta
    );
    // Only HF packed BitNet checkpoints carry a `weight_scale` whose convention matters.
    let convention = match (&checkpoint.files(), c.family) {
        (CheckpointFiles::Hf(_), f) if f != bitnet_models::config::Family::Qwen3 => {
            format!("; weight_scale convention: {:?}", c.scale_convention)
        }
        _ => String::new(),
    };
    let norms = if c.linear_rms_norm_eps.is_some() { "; an RMSNorm before every projection" } else { "" };
    text += &format!(
        "activation: {:?}; embeddings {}{convention}{norms}\n",
        c.activation,
        if c.tie_word_embeddings { "tied" } else { "untied" },
    );
    text += &format!("tensors: {} ({stored} stored elements)\n", tensors.len());
    for (dtype, n) in &by_dtype {
        text += &format!("  {dtype}: {n}\n");
    }
    for (k, v) in &metadata {
        text += &format!("  {k} = {v}\n");
    }
    output::print(&text)
}
