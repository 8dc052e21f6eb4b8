//! The model trained: [`LanguageModel`] wraps the one decoder of `bitnet_models` ([`BitNetModel`], latent
//! `BitLinear` projections) with the warm-up schedule of its fake quantization, so burn-train's step traits can
//! be implemented for it (they live in the `step` module).
//!
//! ```text
//! logits = BitNetModel(tokens)                                   # every projection computes
//!          (x + λ·sg(Q8(x) - x)) (W + λ·sg(Q3(W) - W))           # Q8: per-token absmax int8, Q3: absmean ternary
//! loss   = mean over tokens of -log softmax(logits)[next token]
//! ```
//! `λ = min(1, step / warmup)` for the ternary model (1 from the start without a warm-up): at `λ = 1` the
//! forward pass computes exactly the function of the packed model `pack()` exports, with the identity as the
//! quantizers' gradient. The full-precision baseline is the same model at `λ = 0` for the whole run.

use crate::error::Result;
use bitnet_models::backend::{cross_entropy, BitNetBackend};
use bitnet_models::{BitNetConfig, BitNetModel};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The fake-quantization schedule of a run.
#[derive(Debug, Clone)]
pub struct LambdaSchedule {
    /// Ternary (QAT) or the full-precision baseline (`λ = 0` throughout).
    pub quantized: bool,
    /// Steps over which `λ` ramps linearly from 0 to 1 (0 = fully quantized from the start).
    pub warmup_steps: usize,
    /// Optimizer steps taken so far, shared by clones of the model (burn-train clones it).
    steps: Arc<AtomicUsize>,
}

impl LambdaSchedule {
    /// `λ` of the current step.
    pub fn lambda(&self) -> f32 {
        if !self.quantized {
            0.0
        } else if self.warmup_steps == 0 {
            1.0
        } else {
            (self.steps.load(Ordering::Relaxed) as f32 / self.warmup_steps as f32).min(1.0)
        }
    }
}

/// The decoder and its quantization schedule.
#[derive(Module, Debug)]
pub struct LanguageModel<B: Backend> {
    decoder: BitNetModel<B>,
    #[module(skip)]
    schedule: LambdaSchedule,
}

impl<B: BitNetBackend> LanguageModel<B> {
    /// A freshly initialized model of `config` ([`BitNetConfig::init`]): ternary (`quantized`) or the
    /// full-precision baseline.
    pub fn new(config: &BitNetConfig, quantized: bool, lambda_warmup_steps: usize, device: &B::Device) -> Result<Self> {
        let schedule = LambdaSchedule { quantized, warmup_steps: lambda_warmup_steps, steps: Arc::default() };
        let decoder = config.init::<B>(device)?.with_lambda(schedule.lambda());
        Ok(Self { decoder, schedule })
    }
}

impl<B: Backend> LanguageModel<B> {
    /// A model starting from `decoder` (e.g. a pretrained checkpoint loaded latent with
    /// `bitnet_models::LoadOptions::latent()`): ternary (`quantized`, with the λ warm-up) or full precision.
    pub fn from_decoder(decoder: BitNetModel<B>, quantized: bool, lambda_warmup_steps: usize) -> Self {
        let schedule = LambdaSchedule { quantized, warmup_steps: lambda_warmup_steps, steps: Arc::default() };
        let decoder = decoder.with_lambda(schedule.lambda());
        Self { decoder, schedule }
    }

    /// The decoder.
    pub fn decoder(&self) -> &BitNetModel<B> {
        &self.decoder
    }

    /// The configuration.
    pub fn config(&self) -> &BitNetConfig {
        self.decoder.config()
    }

    /// Whether the projections are ternary (QAT).
    pub fn is_quantized(&self) -> bool {
        self.schedule.quantized
    }

    /// Sets the optimizer step count (when resuming).
    pub fn set_steps(&self, steps: usize) {
        self.schedule.steps.store(steps, Ordering::Relaxed);
    }

    /// Counts one optimizer step.
    pub fn count_step(&self) {
        self.schedule.steps.fetch_add(1, Ordering::Relaxed);
    }

    /// The warm-up factor `λ` of the current step.
    pub fn lambda(&self) -> f32 {
        self.schedule.lambda()
    }

    /// The packed inference model (the export): every projection quantized with absmean, per tensor.
    pub fn pack(&self) -> Result<BitNetModel<B>> {
        Ok(self.decoder.clone().pack()?)
    }
}

impl<B: BitNetBackend> LanguageModel<B> {
    /// Per-token losses `-log softmax(logits)[target]` (`[batch * T]`) and the flattened logits
    /// (`[batch * T, vocab]`) of `inputs` and `targets` (`[batch, T]`), at the current `λ`.
    pub fn token_losses(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let [batch, t] = inputs.dims();
        let v = self.config().vocab_size;
        let lambda = self.lambda();
        // λ is a field of every BitLinear: a step whose λ differs (the warm-up) runs a copy with it set.
        let logits = match self.decoder.layers().first().and_then(|b| b.projections().first().map(|(_, p)| p.lambda()))
        {
            Some(current) if current != lambda => self.decoder.clone().with_lambda(lambda).forward(inputs),
            _ => self.decoder.forward(inputs),
        };
        let logits = logits.reshape([batch * t, v]);
        let losses = cross_entropy(logits.clone(), targets.reshape([batch * t]));
        (losses, logits)
    }
}
