//! Autoregressive generation with the KV cache: one prefill pass over the prompt, then one decode step per
//! token, streaming each token to a callback.
//!
//! Stops at `max_new_tokens`, at a stop token, when the callback returns `false` (e.g. a stop string was
//! seen), or at the context limit: when the cache is full, generation ends with [`FinishReason::ContextFull`]
//! (no sliding window: the model was trained on at most `max_position_embeddings` positions).

use crate::error::{ModelError, Result};
use crate::model::{BitNetModel, KvCache};
use crate::sampling::Sampler;
use bitnet_backend::BitNetBackend;
use burn::tensor::Tensor;
use std::time::{Duration, Instant};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were produced.
    Length,
    /// A stop token was produced (it is included in the output).
    StopToken,
    /// The token callback asked to stop.
    Callback,
    /// The KV cache (context) is full.
    ContextFull,
}

/// What a generation produced, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// New tokens.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Prompt tokens processed by the prefill pass.
    pub prefill_tokens: usize,
    /// Wall time of the prefill pass (prompt -> first token's logits).
    pub prefill_time: Duration,
    /// Wall time of the decode steps.
    pub decode_time: Duration,
}

impl Generation {
    /// Prompt tokens per second of the prefill pass.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Generated tokens per second of the decode steps (the first token comes from the prefill).
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Generates up to `max_new_tokens` after `prompt`, continuing from whatever `cache` (of one sequence) already
/// holds, so a chat can reuse it across turns. `on_token` sees each token as it is chosen and returns `false` to
/// stop. Per decoded token only the chosen id crosses from the device (greedy: an on-device argmax), or the one
/// logits row the sampler needs.
pub fn generate<B: BitNetBackend>(
    model: &BitNetModel<B>,
    cache: &mut KvCache<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    stop_tokens: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::Request("the prompt is empty".into()));
    }
    let mut context: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let started = Instant::now();
    let mut logits = model.forward_cached_last(&[prompt], cache)?;
    let prefill_time = started.elapsed();
    let decode_start = Instant::now();
    let mut finish = FinishReason::Length;
    while tokens.len() < max_new_tokens {
        let next = next_token(logits, sampler, &context)?;
        tokens.push(next);
        context.push(next);
        if !on_token(next) {
            finish = FinishReason::Callback;
            break;
        }
        if stop_tokens.contains(&next) {
            finish = FinishReason::StopToken;
            break;
        }
        if tokens.len() == max_new_tokens {
            break;
        }
        if cache.len() >= cache.capacity() {
            finish = FinishReason::ContextFull;
            break;
        }
        logits = model.forward_cached_last(&[&[next]], cache)?;
    }
    Ok(Generation { tokens, finish, prefill_tokens: prompt.len(), prefill_time, decode_time: decode_start.elapsed() })
}

/// The token `sampler` picks from `logits` (`[1, vocab]`): an on-device argmax when greedy, else a draw from the
/// row read back to the host.
pub fn next_token<B: BitNetBackend>(logits: Tensor<B, 2>, sampler: &mut Sampler, context: &[u32]) -> Result<u32> {
    if sampler.is_greedy() {
        let ids = greedy_tokens(logits)?;
        return ids.first().copied().ok_or_else(|| ModelError::Request("no logits".into()));
    }
    let row = logits.into_data().convert::<f32>().into_vec::<f32>().map_err(read_error)?;
    if row.iter().any(|v| v.is_nan()) || !row.iter().any(|v| v.is_finite()) {
        return Err(non_finite_logits());
    }
    Ok(sampler.sample(&row, context))
}

/// The on-device argmax of each row of `logits` (`[rows, vocab]`), the lowest id on ties; fails when a row's
/// largest logit is not finite (NaN or infinite activations: the output would be meaningless).
pub fn greedy_tokens<B: BitNetBackend>(logits: Tensor<B, 2>) -> Result<Vec<u32>> {
    let (best, ids) = logits.max_dim_with_indices(1);
    let best = best.into_data().convert::<f32>().into_vec::<f32>().map_err(read_error)?;
    if best.iter().any(|v| !v.is_finite()) {
        return Err(non_finite_logits());
    }
    let ids = ids.into_data().convert::<i64>().into_vec::<i64>().map_err(read_error)?;
    Ok(ids.into_iter().map(|id| id as u32).collect())
}

/// The error of a forward pass whose logits are not finite.
pub(crate) fn non_finite_logits() -> ModelError {
    ModelError::Request(
        "the model produced non-finite logits (NaN or infinity): its activations overflowed, or its weights are \
         not a trained model's"
            .into(),
    )
}

fn read_error(e: burn::tensor::DataError) -> ModelError {
    ModelError::Request(format!("reading logits: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn greedy_takes_the_lowest_id_on_ties_and_refuses_non_finite_rows() {
        let device = Default::default();
        let logits = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![1.0f32, 3.0, 3.0, 0.0, 5.0, 5.0, 5.0, 5.0], [2, 4]),
            &device,
        );
        assert_eq!(greedy_tokens(logits).unwrap(), [1, 0]);
        let nan = Tensor::<Flex, 2>::from_data(TensorData::new(vec![f32::NAN; 4], [1, 4]), &device);
        assert!(greedy_tokens(nan).unwrap_err().to_string().contains("non-finite"));
    }
}
