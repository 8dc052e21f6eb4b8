//! The decode benchmark of `bitnet bench`: prefill and greedy decode of a fixed synthetic prompt, repeated,
//! through the same [`generate`] loop as `bitnet generate` (KV cache, logits read back, sampling), with no stop
//! token so every run decodes the same number of tokens.
//!
//! Decode reads every weight once per token, so its speed is bounded by `memory read rate /
//! decode_weight_bytes` (the roofline); [`DecodeBench`] reports the weight bytes streamed per second so the
//! caller can set them against a read probe measured on the same machine at the same time.

use crate::error::{ModelError, Result};
use crate::generate::{generate, Generation};
use crate::model::BitNetModel;
use crate::sampling::{Sampler, SamplingConfig};
use bitnet_backend::BitNetBackend;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct DecodeBenchConfig {
    /// Prompt length (prefill tokens).
    pub prompt_tokens: usize,
    /// Tokens generated per run (the first comes from the prefill pass; the other `decode_tokens - 1` are
    /// decode steps).
    pub decode_tokens: usize,
    /// Timed runs (each with a fresh cache).
    pub runs: usize,
    /// Untimed runs before them (page in the weights, warm the caches and the thread pool).
    pub warmup_runs: usize,
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRun {
    /// Prompt tokens per second of the prefill pass.
    pub prefill_tokens_per_s: f64,
    /// Decode steps per second.
    pub decode_tokens_per_s: f64,
}

impl From<&Generation> for DecodeRun {
    fn from(g: &Generation) -> Self {
        Self { prefill_tokens_per_s: g.prefill_tokens_per_s(), decode_tokens_per_s: g.decode_tokens_per_s() }
    }
}

/// The runs of a benchmark and the bytes each decode step streams.
#[derive(Debug, Clone)]
pub struct DecodeBench {
    /// Timed runs, in order.
    pub runs: Vec<DecodeRun>,
    /// [`BitNetModel::decode_weight_bytes`].
    pub weight_bytes_per_token: u64,
    /// Key/value cache bytes a decode step's attention reads, averaged over the timed steps: step `k` of
    /// `decode_tokens - 1` attends over `prompt_tokens + k` positions, so the mean is `prompt_tokens +
    /// decode_tokens / 2` positions of [`crate::KvCache::bytes_per_position`].
    pub cache_bytes_per_token: u64,
}

impl DecodeBench {
    /// Median decode tokens/s over the runs.
    pub fn decode_tokens_per_s(&self) -> f64 {
        median(self.runs.iter().map(|r| r.decode_tokens_per_s).collect())
    }
    /// Median prefill tokens/s over the runs.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        median(self.runs.iter().map(|r| r.prefill_tokens_per_s).collect())
    }
    /// Weight bytes streamed per second at the median decode speed.
    pub fn decode_bytes_per_s(&self) -> f64 {
        self.decode_tokens_per_s() * self.weight_bytes_per_token as f64
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A prompt of `len` token ids spread over the vocabulary (a fixed sequence: runs are comparable).
pub fn synthetic_prompt(len: usize, vocab_size: usize) -> Vec<u32> {
    let vocab = vocab_size.max(1) as u64;
    (0..len as u64).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) % vocab).map(|t| t as u32).collect()
}

/// Runs the benchmark; `on_run(index, run)` sees each timed run as it ends (for progress output).
pub fn bench_decode<B: BitNetBackend>(
    model: &BitNetModel<B>,
    config: DecodeBenchConfig,
    mut on_run: impl FnMut(usize, &DecodeRun),
) -> Result<DecodeBench> {
    let c = model.config();
    if config.prompt_tokens == 0 || config.decode_tokens < 2 || config.runs == 0 {
        return Err(ModelError::Request(
            "a decode benchmark needs at least 1 prompt token, 2 generated tokens and 1 run".into(),
        ));
    }
    let needed = config.prompt_tokens + config.decode_tokens;
    if needed > c.max_position_embeddings {
        return Err(ModelError::Request(format!(
            "{} prompt + {} generated tokens exceed the model's context of {} positions",
            config.prompt_tokens, config.decode_tokens, c.max_position_embeddings
        )));
    }
    let prompt = synthetic_prompt(config.prompt_tokens, c.vocab_size);
    let mut runs = Vec::with_capacity(config.runs);
    let mut cache_bytes_per_token = 0;
    for i in 0..config.warmup_runs + config.runs {
        let mut cache = model.new_cache(1, needed)?;
        let twice_positions = (2 * config.prompt_tokens + config.decode_tokens) as u64;
        cache_bytes_per_token = cache.bytes_per_position().saturating_mul(twice_positions) / 2;
        let mut sampler = Sampler::new(SamplingConfig::default());
        let generation = generate(model, &mut cache, &prompt, config.decode_tokens, &mut sampler, &[], |_| true)?;
        if i >= config.warmup_runs {
            let run = DecodeRun::from(&generation);
            on_run(runs.len(), &run);
            runs.push(run);
        }
    }
    Ok(DecodeBench { runs, weight_bytes_per_token: model.decode_weight_bytes(), cache_bytes_per_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn synthetic_prompt_stays_in_the_vocabulary() {
        let prompt = synthetic_prompt(500, 37);
        assert!(prompt.iter().all(|&t| t < 37));
        assert!(prompt.iter().collect::<std::collections::HashSet<_>>().len() > 20, "spread over the vocabulary");
        assert_eq!(prompt, synthetic_prompt(500, 37));
    }
}
