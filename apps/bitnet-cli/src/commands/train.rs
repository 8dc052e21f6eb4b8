//! `bitnet train`: quantization-aware training of a BitNet b1.58 model on text files (burn-train's Learner),
//! then export to the packed HF layout that every other command loads.

use super::device::Device;
use super::UsageError;
use crate::output;
use anyhow::Result;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use bitnet_models::backend::cube::CubeBackend;
#[cfg(feature = "cuda")]
use bitnet_models::backend::cube::CudaRuntime;
#[cfg(feature = "wgpu")]
use bitnet_models::backend::cube::WgpuRuntime;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::export::TernaryGgufType;
use bitnet_models::gguf::GgufVocab;
use bitnet_models::tokenizer::Tokenizer;
use bitnet_models::zoo::{arch_config_json, ARCHS};
use bitnet_models::{BitNetConfig, Checkpoint, ModelSpec};
use bitnet_train::data::TokenWindows;
use bitnet_train::ddp::DataParallel;
use bitnet_train::export::export_hf_packed;
use bitnet_train::{train, TrainConfig};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `bitnet train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training text (UTF-8; `.gz` files are decompressed).
    #[arg(long, value_name = "TEXT_FILE")]
    pub train: PathBuf,
    /// Held-out validation text (UTF-8; `.gz` files are decompressed). Without it, the last
    /// --valid-fraction of the training text's tokens is held out (and not trained on).
    #[arg(long, value_name = "TEXT_FILE")]
    pub valid: Option<PathBuf>,
    /// Fraction of the training tokens held out for validation when --valid is not given.
    #[arg(long, default_value_t = 0.05, value_name = "F")]
    pub valid_fraction: f64,
    /// The tokenizer.json to use (make one with `bitnet train-tokenizer`); its vocabulary size sets the model's.
    /// With --init-from it defaults to the checkpoint's tokenizer.
    #[arg(long, value_name = "TOKENIZER_JSON", required_unless_present = "init_from")]
    pub tokenizer: Option<PathBuf>,
    /// Fine-tune a pretrained checkpoint instead of training from random weights: a Hugging Face directory, a
    /// .gguf file, a hub id, or `default` (the embedded default model). Full-precision and bf16 weights start
    /// as they are; packed ternary weights start as latent weights that quantize back to them, so the first step
    /// starts from the checkpoint's function. The architecture is the checkpoint's (--arch and --config do not
    /// apply); combine with --lambda-warmup-steps for the 1.58-bit fine-tuning recipe (full precision to ternary).
    #[arg(long, value_name = "DIR|FILE.gguf|OWNER/NAME|default", conflicts_with_all = ["arch", "config"])]
    pub init_from: Option<PathBuf>,
    /// Output directory: checkpoints, logs, train-summary.json, and the exported model in `model/`.
    #[arg(long, value_name = "DIR", required_unless_present = "bench", overrides_with = "out")]
    pub out: Option<PathBuf>,
    /// Architecture from the zoo (tiny, small, ...); its vocab_size is replaced by the tokenizer's.
    #[arg(long, default_value = "small", value_name = "NAME", conflicts_with = "config")]
    pub arch: String,
    /// A config.json (model_type "bitnet", tied embeddings) instead of --arch.
    #[arg(long, value_name = "CONFIG_JSON")]
    pub config: Option<PathBuf>,
    /// Train the full-precision baseline (plain Linear layers) instead of the ternary model (not exported).
    #[arg(long)]
    pub full_precision: bool,
    /// Window length in tokens: each example predicts tokens 2..N of a window from their prefix.
    #[arg(long, default_value_t = 129, value_name = "N")]
    pub context: usize,
    /// Windows per optimizer step (per rank with --nodes).
    #[arg(long, default_value_t = 16, value_name = "N", overrides_with = "batch_size")]
    pub batch_size: usize,
    /// Optimizer steps (rounded up to a whole number of checkpoint intervals).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub steps: usize,
    /// Steps between checkpoints; each checkpoint also runs the validation.
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub checkpoint_every: usize,
    /// Peak learning rate (stage one).
    #[arg(long, default_value_t = 2e-3, value_name = "LR")]
    pub lr: f64,
    /// Learning rate at the start of stage two (the cooldown; decays to 0).
    #[arg(long, default_value_t = 1e-4, value_name = "LR")]
    pub stage_two_lr: f64,
    /// Fraction of the steps in stage one.
    #[arg(long, default_value_t = 0.5, value_name = "F")]
    pub stage_one_fraction: f64,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub warmup_steps: usize,
    /// AdamW weight decay in stage one (stage two uses none).
    #[arg(long, default_value_t = 0.1, value_name = "WD")]
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm (0 disables).
    #[arg(long, default_value_t = 1.0, value_name = "NORM")]
    pub grad_clip: f32,
    /// Steps over which the quantization strength λ ramps from 0 to 1 (0: fully ternary from the start).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub lambda_warmup_steps: usize,
    /// Seed of the initialization and of the data order.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Continue the run in --out from its last complete checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Also export the trained model as `<out>/model/model.gguf` with this ternary encoding (i2s: bitnet.cpp, any
    /// shape; tq2_0: llama.cpp, input widths a multiple of 256).
    #[arg(long, value_name = "TYPE", value_parser = ["i2s", "tq2_0"])]
    pub gguf: Option<String>,
    /// Also export the latent master weights as `<out>/master/`: a bf16 Hugging Face checkpoint that
    /// transformers' BitNetForCausalLM loads with online quantization, to continue the run in PyTorch tools.
    #[arg(long)]
    pub export_master: bool,
    /// Instead of training: time N optimizer steps of the ternary model and of the full-precision baseline
    /// (same configuration and batches) and print {"qat_ms_per_step", "fp_ms_per_step", "ratio", ...}.
    #[arg(long, value_name = "N")]
    pub bench: Option<usize>,
    /// The device to train on: cpu, wgpu or cuda (the GPU backends need a binary built with `--features wgpu`
    /// or `--features cuda`).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Show burn-train's terminal dashboard (metric charts and progress; `q` stops the run) instead of the
    /// one-line progress, when stdout is a terminal.
    #[arg(long)]
    pub dashboard: bool,
    /// Local data-parallel training: run N processes on this machine, each on its share of the CPU threads and
    /// of every batch (--batch-size must be a multiple of N), averaging their gradients each step; the run
    /// equals one process with the same --batch-size. burn's CPU backend runs most non-matmul work on one
    /// thread, so on a multi-core CPU N processes keep the cores busy where one process cannot. Rank 0 writes
    /// --out; ranks 1.. write their checkpoints into `<out>/ranks/<r>`. Also with --bench.
    #[arg(long, default_value_t = 1, value_name = "N", overrides_with = "processes")]
    pub processes: u32,
    /// Data-parallel training: the number of processes (machines or devices) in the run. Start one `bitnet
    /// train` per rank with the same options and text but --rank (and --out on a shared disk); each trains on its
    /// --batch-size windows of every combined batch of N x --batch-size windows, and the ranks average their
    /// gradients each step, so the run equals a single-process run with the combined batch. Rank 0 exports.
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Data-parallel training")]
    pub nodes: u32,
    /// This process's rank, 0 to N-1; rank 0 coordinates.
    #[arg(long, default_value_t = 0, value_name = "R", help_heading = "Data-parallel training")]
    pub rank: u32,
    /// HOST:PORT of rank 0, the same for every rank (rank 0 listens on PORT on every interface; the others
    /// connect to it, retrying for up to 10 minutes while it starts).
    #[arg(long, value_name = "HOST:PORT", help_heading = "Data-parallel training")]
    pub coordinator: Option<String>,
}

/// Reads and tokenizes a text file.
pub fn tokenize_file(tokenizer: &Tokenizer, path: &Path) -> Result<Vec<u32>> {
    let text = bitnet_models::io::read_text(path)?;
    Ok(tokenizer.encode(&text)?)
}

impl TrainArgs {
    /// The architecture: the --init-from checkpoint's (`init`, opened once by `run`), or --arch / --config with
    /// the tokenizer's vocabulary.
    fn model_config(&self, vocab_size: usize, init: Option<&Checkpoint>) -> Result<BitNetConfig> {
        if let Some(checkpoint) = init {
            let config = checkpoint.config()?;
            if vocab_size > config.vocab_size {
                return Err(UsageError(format!(
                    "the tokenizer has {vocab_size} tokens, more than the --init-from model's {}",
                    config.vocab_size
                ))
                .into());
            }
            return Ok(config);
        }
        let mut config = match &self.config {
            Some(path) => BitNetConfig::from_file(path)?,
            None => {
                let text = arch_config_json(&self.arch).ok_or_else(|| {
                    UsageError(format!("unknown --arch '{}': expected one of {}", self.arch, ARCHS.join(", ")))
                })?;
                BitNetConfig::from_json(&text).map_err(anyhow::Error::msg)?
            }
        };
        config.vocab_size = vocab_size;
        config.bos_token_id = None;
        config.eos_token_ids = vec![];
        Ok(config)
    }

    /// The `--gguf` encoding.
    fn gguf_type(&self) -> Option<TernaryGgufType> {
        self.gguf.as_deref().map(|kind| if kind == "tq2_0" { TernaryGgufType::Tq2_0 } else { TernaryGgufType::I2s })
    }

    /// The data-parallel settings (None for a single-process run).
    fn data_parallel(&self) -> Result<Option<DataParallel>> {
        if self.nodes <= 1 {
            if self.rank != 0 || self.coordinator.is_some() {
                return Err(UsageError("--rank and --coordinator need --nodes 2 or more".into()).into());
            }
            return Ok(None);
        }
        let coordinator = self
            .coordinator
            .clone()
            .ok_or_else(|| UsageError("--nodes needs --coordinator HOST:PORT (rank 0's address)".into()))?;
        let run = DataParallel { nodes: self.nodes, rank: self.rank, coordinator };
        run.check().map_err(|e| UsageError(e.to_string()))?;
        Ok(Some(run))
    }

    fn train_config(&self, model: BitNetConfig) -> Result<TrainConfig> {
        let config = TrainConfig {
            model,
            full_precision: self.full_precision,
            context: self.context,
            batch_size: self.batch_size,
            steps: self.steps,
            checkpoint_every: self.checkpoint_every,
            lr: self.lr,
            stage_two_lr: self.stage_two_lr,
            stage_one_fraction: self.stage_one_fraction,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            grad_clip: (self.grad_clip != 0.0).then_some(self.grad_clip),
            lambda_warmup_steps: self.lambda_warmup_steps,
            seed: self.seed,
            init_from: self.init_from.clone(),
            data_parallel: self.data_parallel()?,
            dashboard: self.dashboard,
        };
        config.check().map_err(|e| UsageError(e.to_string()))?;
        if let Some(ty) = self.gguf_type() {
            ty.check_shapes(&config.model).map_err(|why| UsageError(format!("--gguf: {why}: use --gguf i2s")))?;
        }
        Ok(config)
    }
}

/// The checkpoint `--init-from` names (`default`: the embedded default model).
fn init_checkpoint(source: &Path) -> Result<Checkpoint> {
    let spec = if source.as_os_str() == "default" { ModelSpec::Default } else { ModelSpec::parse(Some(source))? };
    Ok(Checkpoint::open(&spec)?)
}

/// Runs the command.
pub fn run(args: TrainArgs) -> Result<()> {
    args.device.check_built()?;
    if args.processes > 1 {
        return super::train_ranks::run_local_ranks(&args);
    }
    let init = args.init_from.as_deref().map(init_checkpoint).transpose()?;
    let (tokenizer_bytes, tokenizer_name) = match (&args.tokenizer, &init) {
        (Some(path), _) => (bitnet_models::io::read_regular_file(path)?, path.display().to_string()),
        (None, Some(checkpoint)) => {
            let files = checkpoint.tokenizer_files()?.ok_or_else(|| {
                UsageError(format!("--init-from {} has no tokenizer: pass --tokenizer", checkpoint.path().display()))
            })?;
            (files.tokenizer_json, format!("the tokenizer of {}", checkpoint.path().display()))
        }
        (None, None) => return Err(UsageError("--tokenizer is required".into()).into()),
    };
    let tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
        .map_err(|e| anyhow::anyhow!("{tokenizer_name}: invalid tokenizer: {e}"))?;
    let model = args.model_config(tokenizer.vocab_size(), init.as_ref())?;
    let config = args.train_config(model)?;
    output::note(&format!("tokenizing {} ...", args.train.display()));
    let mut train_tokens = tokenize_file(&tokenizer, &args.train)?;
    let valid_tokens = match &args.valid {
        Some(path) => tokenize_file(&tokenizer, path)?,
        None => {
            if !(args.valid_fraction > 0.0 && args.valid_fraction < 1.0) {
                return Err(
                    UsageError(format!("--valid-fraction must be in (0, 1), got {}", args.valid_fraction)).into()
                );
            }
            let held = (train_tokens.len() as f64 * args.valid_fraction).round() as usize;
            train_tokens.split_off(train_tokens.len() - held)
        }
    };
    let train_data = Arc::new(TokenWindows::new(train_tokens, config.context));
    let valid_data = Arc::new(TokenWindows::new(valid_tokens, config.context));
    output::note(&format!(
        "{} model, {} train tokens, {} validation tokens, {} steps of {} x {} tokens",
        if config.full_precision { "full-precision" } else { "ternary" },
        train_data.len_tokens(),
        valid_data.scored_tokens(),
        config.total_steps(),
        config.batch_size,
        config.context - 1
    ));
    let prepared = Prepared { args: &args, config: &config, tokenizer_json: &tokenizer_bytes, train_data, valid_data };
    match args.device {
        Device::Cpu => run_on::<burn::backend::Autodiff<burn::backend::Flex>>(&prepared, &Default::default()),
        #[cfg(feature = "wgpu")]
        // The raw CubeCL backends: burn 0.21's Fusion wrapper loses tensor handles when burn-train's asynchronous
        // checkpointer reads the records during the next step.
        Device::Wgpu => {
            run_on::<burn::backend::Autodiff<CubeBackend<WgpuRuntime, f32, i32, u32>>>(&prepared, &Default::default())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            run_on::<burn::backend::Autodiff<CubeBackend<CudaRuntime, f32, i32, u8>>>(&prepared, &Default::default())
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked above"),
    }
}

/// Everything a run needs, prepared before the backend is chosen.
struct Prepared<'a> {
    args: &'a TrainArgs,
    config: &'a TrainConfig,
    tokenizer_json: &'a [u8],
    train_data: Arc<TokenWindows>,
    valid_data: Arc<TokenWindows>,
}

fn run_on<B>(prepared: &Prepared<'_>, device: &B::Device) -> Result<()>
where
    B: AutodiffBackend + BitNetBackend,
    B::InnerBackend: BitNetBackend,
{
    let Prepared { args, config, tokenizer_json, train_data, valid_data } = prepared;
    let (args, config, tokenizer_json) = (*args, *config, *tokenizer_json);
    if let Some(steps) = args.bench {
        let qat = bitnet_train::bench::seconds_per_step::<B>(config, train_data, true, steps, device)?;
        let fp = bitnet_train::bench::seconds_per_step::<B>(config, train_data, false, steps, device)?;
        let ranks = config.data_parallel.as_ref().map_or(1, |run| run.nodes as usize);
        let tokens = (config.batch_size * ranks * (config.context - 1)) as f64;
        if config.data_parallel.as_ref().is_some_and(|run| run.rank != 0) {
            return Ok(()); // rank 0 reports the run
        }
        return output::println(
            &serde_json::json!({
                "processes": ranks,
                "steps": steps,
                "tokens_per_step": tokens,
                "qat_ms_per_step": qat * 1e3,
                "fp_ms_per_step": fp * 1e3,
                "ratio": qat / fp,
                "qat_tokens_per_s": tokens / qat,
                "fp_tokens_per_s": tokens / fp,
            })
            .to_string(),
        );
    }
    let out_dir = args.out.as_ref().ok_or_else(|| UsageError("--out is required".into()))?;
    let (model, report) = train::<B>(config, train_data.clone(), valid_data.clone(), out_dir, args.resume, device)?;
    output::note(&format!(
        "validation loss {:.4} nats/token (ppl {:.2}) over {} tokens; {:.0} training tokens/s",
        report.valid_loss,
        report.valid_loss.exp(),
        report.valid_tokens,
        report.tokens_per_second
    ));
    if let Some(initial) = report.initial_valid_loss {
        output::note(&format!("validation loss of the starting checkpoint: {initial:.4} nats/token"));
    }
    let summary = serde_json::json!({
        "quantized": !config.full_precision,
        "initial_valid_loss": report.initial_valid_loss,
        "valid_loss": report.valid_loss,
        "valid_tokens": report.valid_tokens,
        "context": config.context,
        "steps": report.steps,
        "seconds": report.seconds,
        "train_tokens_per_s": report.tokens_per_second,
    });
    let summary_path = out_dir.join("train-summary.json");
    bitnet_models::io::write_atomically(&summary_path, format!("{summary:#}\n").as_bytes())?;
    let exports = config.data_parallel.as_ref().is_none_or(|run| run.rank == 0);
    if !exports {
        output::note("data-parallel rank > 0: rank 0 exports the model (this rank's copy is the same)");
    }
    if !config.full_precision && exports {
        let dir = out_dir.join("model");
        export_hf_packed(&model, Some(tokenizer_json), &dir)?;
        if let Some(ty) = args.gguf_type() {
            let path = out_dir.join("model").join("model.gguf");
            // The tokenizer travels inside the GGUF file when it is byte-level BPE; tokenizer.json sits beside it.
            let vocab = GgufVocab::from_tokenizer_json(tokenizer_json)
                .map_err(|e| output::note(&format!("note: the tokenizer is not embedded in {}: {e}", path.display())))
                .ok();
            bitnet_train::export::export_gguf(&model, ty, vocab.as_ref(), &path)?;
            output::note(&format!("exported {}", path.display()));
        }
        if args.export_master {
            let master = out_dir.join("master");
            bitnet_train::export::export_hf_master(&model, Some(tokenizer_json), &master)?;
            output::note(&format!("exported the bf16 master weights to {}", master.display()));
        }
        output::note(&format!(
            "exported the packed model to {} (score it: bitnet perplexity --model {} --file VALID_TEXT --context {})",
            dir.display(),
            dir.display(),
            config.context
        ));
    }
    output::println(&summary.to_string())
}
