//! The training run: data, model, AdamW + two-stage schedule, burn-train's `Learner`, crash-safe checkpoints
//! every N steps, resume, and the final validation.

use crate::checkpoint::{latest_complete_checkpoint, prune_checkpoints, AtomicFileRecorder};
use crate::data::{TokenWindows, TrainLoader, ValidLoader};
use crate::ddp::{DataParallel, Shard};
use crate::error::{Result, TrainError};
use crate::metric::TokensPerSecond;
use crate::model::LanguageModel;
use crate::optim::StagedAdamW;
use crate::schedule::TwoStageSchedule;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::BitNetConfig;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{LearningRateMetric, LossMetric, PerplexityMetric};
use burn::train::{Learner, SupervisedTraining};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Most windows per optimizer step.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
/// Most tokens per optimizer step (`batch_size x context`).
pub const MAX_BATCH_TOKENS: usize = 1 << 22;
/// Most parameters of a model `bitnet train` builds (16 bytes each with AdamW: 256 GB).
pub const MAX_TRAIN_PARAMETERS: u64 = 16_000_000_000;
/// Most optimizer steps (and steps between checkpoints) a run may ask for.
pub const MAX_STEPS: usize = 1 << 40;

/// Settings of a training run (the `bitnet train` flags).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The architecture (any member of the family).
    pub model: BitNetConfig,
    /// Train the full-precision baseline (plain `Linear`) instead of the ternary model.
    pub full_precision: bool,
    /// Window length in tokens (`T + 1`: `T` inputs and `T` targets).
    pub context: usize,
    /// Windows per optimizer step.
    pub batch_size: usize,
    /// Total optimizer steps (rounded up to a whole number of checkpoint intervals).
    pub steps: usize,
    /// Steps between checkpoints (and validations): one burn-train epoch.
    pub checkpoint_every: usize,
    /// Peak learning rate of stage one.
    pub lr: f64,
    /// Learning rate at the start of stage two.
    pub stage_two_lr: f64,
    /// Fraction of the steps in stage one.
    pub stage_one_fraction: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay of stage one (stage two uses 0).
    pub weight_decay: f32,
    /// Per-parameter gradient norm clip.
    pub grad_clip: Option<f32>,
    /// Steps over which the fake-quantization factor λ ramps from 0 to 1 (0: quantized from the start).
    pub lambda_warmup_steps: usize,
    /// Seed of the initialization and of the data order.
    pub seed: u64,
    /// A pretrained checkpoint the run starts from instead of random weights (a directory, `.gguf` file or hub
    /// id, as `bitnet_models::ModelSpec` reads it; "default" is the embedded default model): full-precision or
    /// bf16 weights as they are, packed ternary weights as latent weights that quantize back to them. Its
    /// architecture must be `model`'s. A resumed run continues from its checkpoints instead.
    pub init_from: Option<std::path::PathBuf>,
    /// This process's place in a data-parallel run ([`crate::ddp`]); `batch_size` is then per process.
    pub data_parallel: Option<DataParallel>,
    /// Show burn-train's terminal dashboard instead of the one-line progress (when stdout is a terminal).
    pub dashboard: bool,
}

impl TrainConfig {
    /// Checks the settings; the error names the flag.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.context < 2 {
            return bad(format!("--context must be at least 2 tokens, got {}", self.context));
        }
        if self.context > self.model.max_position_embeddings {
            return bad(format!(
                "--context {} exceeds the model's max_position_embeddings {}",
                self.context, self.model.max_position_embeddings
            ));
        }
        // Training holds every parameter in f32 with AdamW's two moments: refuse models no machine trains here.
        match self.model.parameter_count() {
            Some(p) if p <= MAX_TRAIN_PARAMETERS => {}
            count => {
                let count = count.map_or("more than 2^64".to_string(), |p| p.to_string());
                return bad(format!(
                    "the architecture has {count} parameters; training takes at most {MAX_TRAIN_PARAMETERS}"
                ));
            }
        }
        if self.batch_size == 0 || self.steps == 0 || self.checkpoint_every == 0 {
            return bad("--batch-size, --steps and --checkpoint-every must be at least 1".into());
        }
        // Sizes beyond these are typing errors, not runs: refuse them before anything is allocated.
        if self.batch_size > MAX_BATCH_SIZE || self.batch_size.saturating_mul(self.context) > MAX_BATCH_TOKENS {
            return bad(format!(
                "--batch-size {} x --context {} exceeds {MAX_BATCH_TOKENS} tokens per step (at most {MAX_BATCH_SIZE} \
                 windows)",
                self.batch_size, self.context
            ));
        }
        if self.steps > MAX_STEPS || self.checkpoint_every > MAX_STEPS || self.warmup_steps > MAX_STEPS {
            return bad(format!("--steps, --checkpoint-every and --warmup-steps must be at most {MAX_STEPS}"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("--weight-decay must be a finite number >= 0, got {}", self.weight_decay));
        }
        if let Some(clip) = self.grad_clip {
            if !(clip.is_finite() && clip > 0.0) {
                return bad(format!("--grad-clip must be a finite number > 0, got {clip}"));
            }
        }
        let rates_ok =
            self.lr > 0.0 && self.lr.is_finite() && self.stage_two_lr >= 0.0 && self.stage_two_lr.is_finite();
        if !rates_ok {
            return bad("--lr must be positive and --stage-two-lr non-negative".into());
        }
        if !(0.0..=1.0).contains(&self.stage_one_fraction) {
            return bad(format!("--stage-one-fraction must be in [0, 1], got {}", self.stage_one_fraction));
        }
        if let Some(run) = &self.data_parallel {
            run.check()?;
        }
        Ok(())
    }

    /// Steps actually run: `steps` rounded up to whole checkpoint intervals.
    pub fn total_steps(&self) -> usize {
        self.steps.div_ceil(self.checkpoint_every) * self.checkpoint_every
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> TwoStageSchedule {
        let total = self.total_steps();
        let stage_one =
            ((total as f64 * self.stage_one_fraction).round() as usize).clamp(self.warmup_steps.min(total), total);
        TwoStageSchedule {
            peak: self.lr,
            stage_two: self.stage_two_lr,
            warmup_steps: self.warmup_steps.min(stage_one),
            stage_one_steps: stage_one,
            total_steps: total,
            step: 0,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Mean validation loss (nats/token) of the final model, over every scored validation token.
    pub valid_loss: f64,
    /// Validation tokens scored.
    pub valid_tokens: usize,
    /// Optimizer steps of the whole run.
    pub steps: usize,
    /// Wall time of this process's training, seconds.
    pub seconds: f64,
    /// Training tokens per second of the run (all ranks of a data-parallel run together).
    pub tokens_per_second: f64,
    /// Mean validation loss of the starting model, when the run starts from a pretrained checkpoint.
    pub initial_valid_loss: Option<f64>,
}

/// Mean next-token loss of `model` over all validation windows (the definition of `bitnet_models::perplexity`).
pub fn evaluate<B: BitNetBackend>(
    model: &LanguageModel<B>,
    valid: &Arc<TokenWindows>,
    batch_size: usize,
    device: &B::Device,
) -> Result<(f64, usize)> {
    let loader = ValidLoader::<B>::new(valid.clone(), batch_size, device.clone());
    let (mut total, mut count) = (0f64, 0usize);
    for windows in loader.batches() {
        let batch = crate::data::batch_of::<B>(&windows, device);
        let (losses, _) = model.token_losses(batch.inputs, batch.targets);
        let values = losses
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TrainError::Data(format!("reading losses: {e:?}")))?;
        total += values.iter().map(|&v| v as f64).sum::<f64>();
        count += values.len();
    }
    Ok((total / count.max(1) as f64, count))
}

/// Runs (or, with `resume`, continues) training into `artifact_dir` and returns the trained model and its report.
pub fn train<B>(
    config: &TrainConfig,
    train_data: Arc<TokenWindows>,
    valid_data: Arc<TokenWindows>,
    artifact_dir: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<(LanguageModel<B::InnerBackend>, TrainReport)>
where
    B: AutodiffBackend + BitNetBackend,
    B::InnerBackend: BitNetBackend,
{
    config.check()?;
    // Before burn-train touches it (its log setup panics on a directory it cannot create).
    std::fs::create_dir_all(artifact_dir)
        .map_err(|e| TrainError::Io(format!("--out {}: {e}", artifact_dir.display())))?;
    if train_data.full_windows() < 1 {
        return Err(TrainError::Data(format!(
            "the training text has {} tokens: fewer than one window of --context {}",
            train_data.len_tokens(),
            config.context
        )));
    }
    if valid_data.scored_tokens() == 0 {
        return Err(TrainError::Data("the validation text has fewer than 2 tokens".into()));
    }
    let existing = latest_complete_checkpoint(artifact_dir);
    let start_epoch = match (resume, existing) {
        (true, e) => e,
        (false, Some(e)) => {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoint {e}: pass --resume to continue it, or choose another --out",
                artifact_dir.display()
            )))
        }
        (false, None) => None,
    };
    // The architecture the checkpoints belong to: a resume with another one would fail inside burn-train.
    let architecture = artifact_dir.join("checkpoint-config.json");
    let wanted = config.model.to_json();
    match (start_epoch, std::fs::read_to_string(&architecture)) {
        (Some(_), Ok(saved)) if saved != wanted => {
            return Err(TrainError::Config(format!(
                "--resume: the checkpoints in {} belong to another architecture ({}); use the run's --arch/--config \
                 or another --out",
                artifact_dir.display(),
                architecture.display()
            )))
        }
        (None, _) => bitnet_models::io::write_atomically(&architecture, wanted.as_bytes())
            .map_err(|e| TrainError::Io(format!("{}: {e}", architecture.display())))?,
        _ => {}
    }
    let every = config.checkpoint_every;
    let epochs = config.total_steps() / every;
    let done_steps = start_epoch.unwrap_or(0) * every;
    if done_steps >= config.total_steps() {
        // Training is done (a run interrupted during validation or export): redo those from the final checkpoint.
        let epoch = start_epoch.unwrap_or(0);
        eprintln!("checkpoint {epoch} is the final one (step {done_steps}): validating and exporting it again");
        let record = artifact_dir.join("checkpoint").join(format!("model-{epoch}"));
        let model = LanguageModel::<B::InnerBackend>::new(
            &config.model,
            !config.full_precision,
            config.lambda_warmup_steps,
            device,
        )?
        .load_file(&record, &AtomicFileRecorder::default(), device)
        .map_err(|e| TrainError::Io(format!("{}: {e}", record.display())))?;
        model.set_steps(done_steps);
        let (valid_loss, valid_tokens) = evaluate(&model, &valid_data, config.batch_size, device)?;
        let report = TrainReport {
            valid_loss,
            valid_tokens,
            steps: config.total_steps(),
            seconds: 0.0,
            tokens_per_second: 0.0,
            initial_valid_loss: None,
        };
        return Ok((model, report));
    }
    B::seed(device, config.seed);
    let (model, initial_valid_loss) = match (&config.init_from, start_epoch) {
        (Some(source), None) => {
            let model = starting_model::<B>(config, device)?;
            let (loss, _) = evaluate(&model.clone().valid(), &valid_data, config.batch_size, device)?;
            eprintln!("starting from {}: validation loss {loss:.4}", source.display());
            (model, Some(loss))
        }
        _ => {
            (LanguageModel::<B>::new(&config.model, !config.full_precision, config.lambda_warmup_steps, device)?, None)
        }
    };
    model.set_steps(done_steps);
    let train_data_digest = if config.data_parallel.is_some() { train_data.digest() } else { 0 };
    let train_loader = TrainLoader::<B>::new(
        train_data,
        config.batch_size,
        every,
        config.seed,
        start_epoch.unwrap_or(0),
        device.clone(),
    )
    .with_shard(config.data_parallel.as_ref().map_or(Shard::WHOLE, DataParallel::shard));
    let valid_loader = ValidLoader::<B::InnerBackend>::new(valid_data.clone(), config.batch_size, device.clone());
    let stage_one_steps = config.schedule().stage_one_steps;
    let optimizer =
        StagedAdamW::new(config.weight_decay, stage_one_steps).init::<B, LanguageModel<B>>(config.grad_clip);
    let mut training = SupervisedTraining::new(artifact_dir, Arc::new(train_loader), Arc::new(valid_loader))
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(PerplexityMetric::new())
        .metric_valid_numeric(PerplexityMetric::new())
        .metric_train_numeric(TokensPerSecond::new())
        .metric_train_numeric(LearningRateMetric::new())
        .with_file_checkpointer(AtomicFileRecorder::default())
        .num_epochs(epochs)
        .summary();
    let mut progress =
        crate::progress::StepProgress::new(every, config.total_steps()).with_plot(artifact_dir.join("training.svg"));
    if config.dashboard && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        let dashboard = burn::train::renderer::tui::TuiMetricsRendererWrapper::new(training.interrupter(), start_epoch);
        progress = progress.with_dashboard(Box::new(dashboard));
    }
    training = training.renderer(progress);
    if let Some(epoch) = start_epoch {
        eprintln!("resuming from checkpoint {epoch} (step {done_steps} of {})", config.total_steps());
        training = training.checkpoint(epoch);
    }
    if let Some(run) = &config.data_parallel {
        eprintln!("data-parallel rank {} of {}: waiting for every rank at {}", run.rank, run.nodes, run.coordinator);
        crate::ddp::join(run, run_fingerprint(config, train_data_digest, start_epoch, &model), training.interrupter())?;
        eprintln!("data-parallel run: all {} ranks joined", run.nodes);
    }
    let started = Instant::now();
    let result = training.launch(Learner::new(model, optimizer, config.schedule()));
    let seconds = started.elapsed().as_secs_f64();
    if let Some(cause) = crate::ddp::failure() {
        return Err(TrainError::Io(format!("data-parallel training stopped: {cause}; nothing was exported")));
    }
    // burn-train ends the run early, without an error, when a checkpoint cannot be written: a run is only done
    // when its final checkpoint is on disk.
    let reached = latest_complete_checkpoint(artifact_dir);
    if reached != Some(epochs) {
        let steps = reached.unwrap_or(0) * every;
        return Err(TrainError::Io(format!(
            "training stopped at step {steps} of {}: the checkpoint after it could not be written into {} \
             (read-only or full file system?); nothing was exported",
            config.total_steps(),
            artifact_dir.join("checkpoint").display()
        )));
    }
    // Keep the two newest checkpoints, as an uninterrupted run does.
    prune_checkpoints(artifact_dir, 2).map_err(|e| TrainError::Io(format!("pruning old checkpoints: {e}")))?;
    let trained = result.model;
    let run_steps = config.total_steps() - done_steps;
    let ranks = config.data_parallel.as_ref().map_or(1, |run| run.nodes as usize);
    let tokens = (run_steps * config.batch_size * ranks * (config.context - 1)) as f64;
    let (valid_loss, valid_tokens) = evaluate(&trained, &valid_data, config.batch_size, device)?;
    if !valid_loss.is_finite() {
        return Err(TrainError::Data(format!(
            "the validation loss is {valid_loss}: training diverged (try a lower --lr or --grad-clip); nothing was \
             exported"
        )));
    }
    let report = TrainReport {
        valid_loss,
        valid_tokens,
        steps: config.total_steps(),
        seconds,
        tokens_per_second: tokens / seconds.max(1e-9),
        initial_valid_loss,
    };
    Ok((trained, report))
}

/// What the ranks of a data-parallel run must share, as one number: the options (but the rank, and the path of
/// `--init-from`, which may differ between machines), the training text, the checkpoint resumed from, and the
/// starting weights.
pub(crate) fn run_fingerprint<B: BitNetBackend>(
    config: &TrainConfig,
    train_data_digest: u64,
    start_epoch: Option<usize>,
    model: &LanguageModel<B>,
) -> u64 {
    let shared = TrainConfig { data_parallel: None, init_from: None, dashboard: false, ..config.clone() };
    let nodes = config.data_parallel.as_ref().map_or(1, |run| run.nodes);
    let text = format!("{shared:?} nodes={nodes} data={train_data_digest} epoch={start_epoch:?}");
    crate::checkpoint::checksum(text.as_bytes()) ^ crate::ddp::weights_digest(model).rotate_left(1)
}

/// The model a fresh run of `config` starts from: the [`TrainConfig::init_from`] checkpoint loaded latent, or
/// random weights.
pub fn starting_model<B: BitNetBackend>(config: &TrainConfig, device: &B::Device) -> Result<LanguageModel<B>> {
    use bitnet_models::{build_model, Checkpoint, LoadOptions, ModelSpec};
    let Some(source) = &config.init_from else {
        return LanguageModel::new(&config.model, !config.full_precision, config.lambda_warmup_steps, device);
    };
    let spec = if source.as_os_str() == "default" { ModelSpec::Default } else { ModelSpec::parse(Some(source))? };
    let checkpoint = Checkpoint::open(&spec)?;
    let found = checkpoint.config()?;
    let normalized = |c: &BitNetConfig| BitNetConfig { bos_token_id: None, eos_token_ids: vec![], ..c.clone() };
    if normalized(&found) != normalized(&config.model) {
        return Err(TrainError::Config(format!(
            "--init-from {}: its architecture differs from the run's (take the checkpoint's: {})",
            source.display(),
            found.to_json().replace('\n', " ")
        )));
    }
    let decoder = build_model::<B>(&config.model, checkpoint.source(), LoadOptions::latent(), device)?;
    Ok(LanguageModel::from_decoder(decoder, !config.full_precision, config.lambda_warmup_steps))
}
