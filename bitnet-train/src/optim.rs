//! AdamW with the 2B-4T recipe's two weight-decay stages: decoupled decay `wd` during stage one, none in
//! stage two. Each parameter's own Adam step count `t` (kept in its optimizer state, so it survives a resume)
//! decides the stage: `t <= stage_one_steps` decays.
//!
//! Update (burn's AdamW): `m = β1 m + (1-β1) g`, `v = β2 v + (1-β2) g²`,
//! `W = W (1 - lr·wd) - lr · m̂ / (sqrt(v̂) + ε)` with bias-corrected `m̂, v̂`.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamW, AdamWConfig, AdamWState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

/// AdamW whose weight decay switches off after `stage_one_steps`.
#[derive(Clone)]
pub struct StagedAdamW {
    stage_one: AdamW,
    stage_two: AdamW,
    stage_one_steps: usize,
}

impl StagedAdamW {
    /// `betas = (0.9, 0.95)`, `ε = 1e-8`, decay `weight_decay` up to `stage_one_steps`, then 0.
    pub fn new(weight_decay: f32, stage_one_steps: usize) -> Self {
        let base = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.95).with_epsilon(1e-8);
        Self {
            stage_one: base.clone().with_weight_decay(weight_decay).build(),
            stage_two: base.with_weight_decay(0.0).build(),
            stage_one_steps,
        }
    }

    /// The optimizer for a module, with per-parameter gradient-norm clipping at `clip` (if given).
    pub fn init<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        self,
        clip: Option<f32>,
    ) -> OptimizerAdaptor<Self, M, B> {
        let optim = OptimizerAdaptor::from(self);
        match clip {
            Some(c) => optim.with_grad_clipping(GradientClippingConfig::Norm(c).init()),
            None => optim,
        }
    }
}

impl<B: Backend> SimpleOptimizer<B> for StagedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        // The step about to be taken is t + 1.
        let taken = state.as_ref().map_or(0, |s| s.momentum.time);
        if taken < self.stage_one_steps {
            self.stage_one.step(lr, tensor, grad, state)
        } else {
            self.stage_two.step(lr, tensor, grad, state)
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}
