//! `bitnet init --random --arch NAME --out PATH [--format hf|tq2_0|tq1_0|i2s|q2_0|pq2_0]`: writes a random-weight
//! model of a family member's shapes, in the Hugging Face layout (a directory) or as a GGUF file with TQ2_0 /
//! TQ1_0 (llama.cpp), I2_S (bitnet.cpp), Q2_0 (ggml) or PQ2_0 (PrismML) ternary tensors, for benchmarks and
//! tests. Qwen3-shaped architectures (bonsai-1.7b, bonsai-8b, tiny-qwen3) are ternary throughout, embedding and
//! head included, with a scale per 64 weights (write them as q2_0 or hf). Models with the LLaMA-3
//! vocabulary (2b-4t) get its tokenizer and chat template, beside the weights or inside the GGUF file.
//! `--embedding q6k` writes the Q6_K `token_embd` GGUF files often ship with (`q4`: a Q4_0 one).

use super::UsageError;
use crate::output;
use anyhow::Result;
use bitnet_models::export::{random_model, write_gguf_model, write_hf_checkpoint, TernaryGgufType, TokenizerFiles};
use bitnet_models::gguf::GgufVocab;
use bitnet_models::tokenizer::{llama3_tokenizer_json, LLAMA3_TOKENIZER_CONFIG};
use bitnet_models::zoo::{arch_config, ARCHS};
use bitnet_models::HeadFormat;
use burn::backend::Flex;
use burn::tensor::DType;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `bitnet init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Fill the weights with random values (the only mode today).
    #[arg(long)]
    random: bool,
    /// Architecture: 2b-4t (microsoft/bitnet-b1.58-2B-4T shapes), 2b-4t-silu, tiny, small, bonsai-1.7b and
    /// bonsai-8b (Ternary-Bonsai / Qwen3 shapes), tiny-qwen3.
    #[arg(long, value_name = "NAME")]
    arch: String,
    /// Output: a directory (created) for --format hf, a .gguf file otherwise.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    out: PathBuf,
    /// On-disk format.
    #[arg(long, value_enum, default_value_t = InitFormat::Hf)]
    format: InitFormat,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The token embedding's format (tied to the head): f32, f16, bf16, q6k or q4 (GGUF only: the Q6_K
    /// `token_embd` that bitnet.cpp's --quant-embd and llama.cpp's --token-embedding-type q6_k write, or a Q4_0
    /// one). Default: bf16 in a Hugging Face directory, f16 in a GGUF file.
    #[arg(long, value_name = "FORMAT")]
    embedding: Option<HeadFormat>,
}

/// The formats `init` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitFormat {
    /// Hugging Face directory: config.json + packed uint8 model.safetensors (bf16 embedding).
    Hf,
    /// GGUF with llama.cpp TQ2_0 ternary tensors (every projection's input width a multiple of 256; f16 embedding).
    #[value(name = "tq2_0")]
    Tq2_0,
    /// GGUF with llama.cpp TQ1_0 ternary tensors (widths a multiple of 256).
    #[value(name = "tq1_0")]
    Tq1_0,
    /// GGUF with bitnet.cpp I2_S ternary tensors (f16 embedding).
    #[value(name = "i2s")]
    I2s,
    /// GGUF with ggml Q2_0 ternary tensors (a scale per 64 weights).
    #[value(name = "q2_0")]
    Q2_0,
    /// GGUF with PrismML PQ2_0 ternary tensors (a scale per 128 weights).
    #[value(name = "pq2_0")]
    Pq2_0,
}

/// The LLaMA-3 vocabulary size: models with it get the LLaMA-3 tokenizer.
const LLAMA3_VOCAB: usize = 128_256;

/// Runs the command.
pub fn run(args: InitArgs) -> Result<()> {
    if !args.random {
        return Err(UsageError("only --random models can be initialized: pass --random".into()).into());
    }
    let config = arch_config(&args.arch)
        .ok_or_else(|| UsageError(format!("unknown --arch '{}': expected one of {}", args.arch, ARCHS.join(", "))))?;
    let gguf = match args.format {
        InitFormat::Hf => None,
        InitFormat::Tq2_0 => Some(TernaryGgufType::Tq2_0),
        InitFormat::Tq1_0 => Some(TernaryGgufType::Tq1_0),
        InitFormat::I2s => Some(TernaryGgufType::I2s),
        InitFormat::Q2_0 => Some(TernaryGgufType::Q2_0),
        InitFormat::Pq2_0 => Some(TernaryGgufType::Pq2_0),
    };
    let qwen3 = config.family == bitnet_models::config::Family::Qwen3;
    if qwen3 && !matches!(args.format, InitFormat::Hf | InitFormat::Q2_0) {
        return Err(UsageError(format!(
            "--arch {}: Qwen3-shaped models get a scale per 64 weights, which only --format q2_0 or hf stores",
            args.arch
        ))
        .into());
    }
    if let Some(ty) = gguf {
        ty.check_shapes(&config).map_err(|why| UsageError(format!("--arch {}: {why}: use --format i2s", args.arch)))?;
    }
    let dense = match (args.embedding, gguf) {
        (None, Some(_)) | (Some(HeadFormat::F16), _) => DType::F16,
        (None, None) | (Some(HeadFormat::Bf16), _) => DType::BF16,
        (Some(HeadFormat::F32 | HeadFormat::Q6K | HeadFormat::Q4), _) => DType::F32,
        (Some(other), _) => {
            return Err(UsageError(format!("--embedding {}: expected f32, f16, bf16, q6k or q4", other.name())).into())
        }
    };
    let blocks = args.embedding.filter(|f| f.block_format().is_some());
    if let (Some(format), None) = (blocks, gguf) {
        return Err(UsageError(format!(
            "--embedding {0}: Hugging Face checkpoints do not store {0} blocks; write a GGUF file",
            format.name()
        ))
        .into());
    }
    let started = Instant::now();
    output::note(&format!("writing a random {} model to {} ...", args.arch, args.out.display()));
    let mut model = random_model::<Flex>(&config, dense, args.seed, &Default::default())?;
    if let Some(format) = blocks {
        model = model.with_head(format)?;
    }
    let llama3 = config.vocab_size == LLAMA3_VOCAB;
    match gguf {
        Some(ty) => {
            // The LLaMA-3 vocabulary of the 2B-4T family and its chat template travel inside the file, so --prompt
            // and chat work on it alone.
            let vocab = llama3
                .then(|| {
                    GgufVocab::from_tokenizer_json(&llama3_tokenizer_json())?
                        .with_chat_template_of(LLAMA3_TOKENIZER_CONFIG)
                })
                .transpose()
                .map_err(|e| anyhow::anyhow!("the shipped LLaMA-3 tokenizer: {e}"))?;
            write_gguf_model(&model, &args.out, ty, &format!("random {}", args.arch), vocab.as_ref())?;
        }
        None => {
            let tokenizer = llama3.then(|| TokenizerFiles {
                tokenizer_json: llama3_tokenizer_json(),
                tokenizer_config: Some(LLAMA3_TOKENIZER_CONFIG.to_string()),
            });
            write_hf_checkpoint(&model, &args.out, tokenizer.as_ref())?;
        }
    }
    output::note(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}
