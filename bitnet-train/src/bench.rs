//! Training-step timing (`bitnet train --bench N`): the same configuration trained as ternary (QAT) and as the
//! full-precision baseline, N timed optimizer steps each (forward, backward, clipping, AdamW) after one
//! untimed warm-up step, on the same batches. In a data-parallel run every rank times its share of each step and
//! the exchange of gradients.

use crate::data::{batch_of, TokenWindows, TrainLoader};
use crate::ddp::{DataParallel, Shard};
use crate::error::{Result, TrainError};
use crate::model::LanguageModel;
use crate::optim::StagedAdamW;
use crate::train::TrainConfig;
use bitnet_models::backend::BitNetBackend;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn::train::TrainStep;
use std::sync::Arc;
use std::time::Instant;

/// Seconds per optimizer step of `config`'s model, quantized or not.
pub fn seconds_per_step<B>(
    config: &TrainConfig,
    data: &Arc<TokenWindows>,
    quantized: bool,
    steps: usize,
    device: &B::Device,
) -> Result<f64>
where
    B: AutodiffBackend + BitNetBackend,
    B::InnerBackend: BitNetBackend,
{
    if steps == 0 {
        return Err(TrainError::Config("--bench needs at least 1 step".into()));
    }
    if data.full_windows() == 0 {
        return Err(TrainError::Data("the training text is shorter than one window".into()));
    }
    B::seed(device, config.seed);
    let mut model = LanguageModel::<B>::new(&config.model, quantized, config.lambda_warmup_steps, device)?;
    let mut optim = StagedAdamW::new(config.weight_decay, usize::MAX).init::<B, LanguageModel<B>>(config.grad_clip);
    let shard = config.data_parallel.as_ref().map_or(Shard::WHOLE, DataParallel::shard);
    let loader =
        TrainLoader::<B>::new(data.clone(), config.batch_size, 1, config.seed, 0, device.clone()).with_shard(shard);
    // A data-parallel bench times the run's steps, gradient exchange included (the ranks join once).
    if let Some(run) = config.data_parallel.as_ref().filter(|_| !crate::ddp::joined()) {
        // No burn-train loop here to interrupt: the steps below check for a failed exchange themselves.
        let fingerprint = crate::train::run_fingerprint(config, data.digest(), None, &model);
        crate::ddp::join(run, fingerprint, burn::train::Interrupter::new())?;
    }
    let mut started = Instant::now();
    for step in 0..=steps {
        if step == 1 {
            started = Instant::now();
        }
        let windows: Vec<&[u32]> = loader.step_windows(step).iter().map(|&i| data.window(i)).collect();
        let output = TrainStep::step(&model, batch_of::<B>(&windows, device));
        model = optim.step(config.lr, model, output.grads);
        if let Some(cause) = crate::ddp::failure() {
            return Err(TrainError::Io(format!("data-parallel bench stopped: {cause}")));
        }
    }
    // Reading one value back waits for any asynchronous backend to finish the steps.
    let _ = model.decoder().final_norm().gamma.val().narrow(0, 0, 1).into_data();
    Ok(started.elapsed().as_secs_f64() / steps as f64)
}
