//! `bitnet inspect --model PATH`: what a model file or directory holds, without loading the weights.

use super::ModelArgs;
use anyhow::{Context, Result};
use bitnet_train::models::load::gguf::{GgufFile, GgufValue};
use bitnet_train::models::BitNetConfig;
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

/// The JSON header of a safetensors file, read without reading the tensors (at most 100 MB, as the format allows).
fn read_safetensors_header(file: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).with_context(|| format!("{}: truncated safetensors header", file.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        anyhow::bail!("{}: safetensors header length {len} is beyond the format's 100 MB limit", file.display());
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).with_context(|| format!("{}: truncated safetensors header", file.display()))?;
    Ok(header)
}

/// Runs the command.
pub fn run(args: InspectArgs) -> Result<()> {
    let path = args.model.path()?.clone();
    let (format, config, tensors, metadata) = if path.is_dir() {
        let config = BitNetConfig::from_file(&path.join("config.json"))?;
        let file = path.join("model.safetensors");
        let header = read_safetensors_header(&file)?;
        let json: serde_json::Value = serde_json::from_slice(&header)
            .with_context(|| format!("{}: invalid safetensors header", file.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, info) in json.as_object().into_iter().flatten().filter(|(n, _)| *n != "__metadata__") {
            let dtype = info["dtype"].as_str().unwrap_or("?").to_string();
            let shape: Vec<u64> = info["shape"].as_array().into_iter().flatten().filter_map(|d| d.as_u64()).collect();
            tensors.insert(name.clone(), (dtype, shape));
        }
        ("huggingface-safetensors".to_string(), config, tensors, BTreeMap::new())
    } else {
        let file = GgufFile::open(&path)?;
        let config = file.config()?;
        let type_name = |t: u32| match t {
            0 => "F32".to_string(),
            1 => "F16".into(),
            8 => "Q8_0".into(),
            30 => "BF16".into(),
            34 => "TQ1_0".into(),
            35 => "TQ2_0".into(),
            36 => "I2_S".into(),
            other => format!("type{other}"),
        };
        let tensors = file.tensors.values().map(|t| (t.name.clone(), (type_name(t.ggml_type), t.ne.clone()))).collect();
        let metadata: BTreeMap<String, String> = file
            .metadata
            .iter()
            .filter(|(_, v)| !matches!(v, GgufValue::Array(a) if a.len() > 8))
            .map(|(k, v)| {
                let text = format!("{v:?}");
                let shown = match text.char_indices().nth(100) {
                    Some((cut, _)) => format!("{}... ({} characters)", &text[..cut], text.chars().count()),
                    None => text,
                };
                (k.clone(), shown)
            })
            .collect();
        (format!("gguf-v{} ({})", file.version, file.architecture()), config, tensors, metadata)
    };
    let params: u64 = tensors.values().map(|(_, s)| s.iter().product::<u64>()).sum();
    let mut by_dtype: BTreeMap<&str, usize> = BTreeMap::new();
    for (dtype, _) in tensors.values() {
        *by_dtype.entry(dtype.as_str()).or_default() += 1;
    }
    let c = &config;
    if args.json {
        let object = serde_json::json!({
            "format": format,
            "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim,
            "vocab_size": c.vocab_size, "max_positions": c.max_position_embeddings, "rope_theta": c.rope_theta,
            "activation": format!("{:?}", c.activation), "tied_embeddings": c.tie_word_embeddings,
            "scale_convention": format!("{:?}", c.scale_convention),
            "tensors": tensors.len(), "stored_elements": params, "tensors_by_dtype": by_dtype,
        });
        println!("{object}");
        return Ok(());
    }
    println!("model: {}", path.display());
    println!("format: {format}");
    println!(
        "architecture: {} layers, hidden {}, ffn {}, heads {} (kv {}, head_dim {}), vocab {}, context {}, rope theta {}",
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
    println!(
        "activation: {:?}; embeddings {}; weight_scale convention: {:?}",
        c.activation,
        if c.tie_word_embeddings { "tied" } else { "untied" },
        c.scale_convention
    );
    println!("tensors: {} ({} stored elements)", tensors.len(), params);
    for (dtype, n) in &by_dtype {
        println!("  {dtype}: {n}");
    }
    for (k, v) in &metadata {
        println!("  {k} = {v}");
    }
    Ok(())
}
