//! Perplexity of a model on a token sequence.
//!
//! The tokens are cut into consecutive, non-overlapping windows of `context` tokens (the last one may be
//! shorter); each window starts with an empty KV cache and its tokens `1..` are scored given their prefix in
//! the window: `nll = mean over scored tokens of -log softmax(logits)[next token]` (natural log, accumulated
//! in f64), `ppl = exp(nll)`. The first token of each window is context only.

use crate::error::{ModelError, Result};
use crate::model::BitNetModel;
use bitnet_backend::BitNetBackend;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

/// The score of a sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// Tokens scored.
    pub tokens: usize,
    /// Mean negative log-likelihood in nats per token.
    pub nll: f64,
}

impl Perplexity {
    /// `exp(nll)`.
    pub fn ppl(&self) -> f64 {
        self.nll.exp()
    }
}

/// `-log softmax(row)[target]`, in f64.
pub fn token_nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}

/// Scores `tokens` in windows of `context`; `on_window(done, total)` reports progress. The log-softmax runs on
/// the model's device (in f32); only one value per scored token crosses to the host, where the sum is f64.
pub fn perplexity<B: BitNetBackend>(
    model: &BitNetModel<B>,
    tokens: &[u32],
    context: usize,
    mut on_window: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    if context < 2 {
        return Err(ModelError::Request(format!("the context must be at least 2 tokens, got {context}")));
    }
    if tokens.len() < 2 {
        return Err(ModelError::Request(format!("need at least 2 tokens to score, got {}", tokens.len())));
    }
    if context > model.config().max_position_embeddings {
        return Err(ModelError::Request(format!(
            "context {context} exceeds the model's max_position_embeddings {}",
            model.config().max_position_embeddings
        )));
    }
    let windows: Vec<&[u32]> = tokens.chunks(context).filter(|w| w.len() >= 2).collect();
    let mut cache = model.new_cache(1, context)?;
    let device = model.device();
    let (mut total, mut count) = (0f64, 0usize);
    for (i, window) in windows.iter().enumerate() {
        cache.clear();
        let t = window.len() - 1;
        let logits = model.forward_ids(&window[..t], &mut cache)?;
        let targets: Vec<i32> = window[1..].iter().map(|&id| id as i32).collect();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [t, 1]), &device);
        let nll = log_softmax(logits, 1).gather(1, targets).neg();
        let values = nll
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| ModelError::Request(format!("reading losses: {e:?}")))?;
        if values.iter().any(|v| v.is_nan()) {
            return Err(crate::generate::non_finite_logits());
        }
        total += values.iter().map(|&v| v as f64).sum::<f64>();
        count += values.len();
        on_window(i + 1, windows.len());
    }
    Ok(Perplexity { tokens: count, nll: total / count as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_a_uniform_row_is_log_v() {
        let row = [0.5f32; 8];
        assert!((token_nll(&row, 3) - (8f64).ln()).abs() < 1e-12);
        let peaked = [0.0f32, 100.0, 0.0];
        assert!(token_nll(&peaked, 1) < 1e-12);
    }
}
