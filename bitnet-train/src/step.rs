//! burn-train steps: the training step (loss, backward) and the validation step of [`LanguageModel`].
//!
//! The output's `loss` holds one loss per target token, so burn-train's loss metric (a mean weighted by the
//! number of entries) averages over tokens across batches of different sizes: the validation loss is the mean
//! next-token negative log-likelihood over every scored token, the number `bitnet perplexity` reports as `nll`.

use crate::data::LmBatch;
use crate::model::LanguageModel;
use bitnet_models::backend::BitNetBackend;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

impl<B: BitNetBackend> LanguageModel<B> {
    /// Per-token losses, flattened logits and targets of a batch.
    pub fn forward_batch(&self, batch: LmBatch<B>) -> ClassificationOutput<B> {
        let [b, t] = batch.targets.dims();
        let (loss, output) = self.token_losses(batch.inputs, batch.targets.clone());
        ClassificationOutput { loss, output, targets: batch.targets.reshape([b * t]) }
    }
}

impl<B: AutodiffBackend + BitNetBackend> TrainStep for LanguageModel<B>
where
    B::InnerBackend: BitNetBackend,
{
    type Input = LmBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let item = self.forward_batch(batch);
        let grads = item.loss.clone().mean().backward();
        self.count_step();
        let mut output = TrainOutput::new(self, grads, item);
        crate::ddp::all_reduce_gradients::<B, _>(self, &mut output.grads);
        output
    }
}

impl<B: BitNetBackend> InferenceStep for LanguageModel<B> {
    type Input = LmBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> ClassificationOutput<B> {
        self.forward_batch(batch)
    }
}
