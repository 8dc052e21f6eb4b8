//! Perplexity of a model on a token sequence.
//!
//! The tokens are cut into consecutive, non-overlapping windows of `context` tokens (the last one may be
//! shorter); each window starts with an empty KV cache and its tokens `1..` are scored given their prefix in
//! the window: `nll = mean over scored tokens of -log softmax(logits)[next token]` (natural log, accumulated
//! in f64), `ppl = exp(nll)`. The first token of each window is context only.

use crate::error::{ModelError, Result};
use crate::model::BitNetModel;
use bitnet_backend::TernaryBackend;

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

/// Scores `tokens` in windows of `context`; `on_window(done, total)` reports progress.
pub fn perplexity<B: TernaryBackend>(
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
    let windows: Vec<&[u32]> = tokens.chunks(context).filter(|w| w.len() >= 2).collect();
    let mut cache = model.new_cache(context);
    if cache.capacity() < context {
        return Err(ModelError::Request(format!(
            "context {context} exceeds the model's max_position_embeddings {}",
            model.config.max_position_embeddings
        )));
    }
    let (mut total, mut count) = (0f64, 0usize);
    for (i, window) in windows.iter().enumerate() {
        cache.clear();
        let logits = model.forward(window, &mut cache)?;
        let [t, v] = logits.dims();
        let values = logits
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| ModelError::Request(format!("reading logits: {e:?}")))?;
        for p in 0..t - 1 {
            total += token_nll(&values[p * v..(p + 1) * v], window[p + 1] as usize);
            count += 1;
        }
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
