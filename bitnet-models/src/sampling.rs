//! Next-token selection from logits: greedy, or sampling with temperature, top-k, top-p (nucleus), min-p and
//! a repetition penalty, driven by a seeded generator so a seed reproduces a run exactly.
//!
//! Order of operations (as transformers' logits processors): repetition penalty (divide positive logits of
//! already-seen tokens by `r`, multiply negative ones), temperature, then top-k, top-p and min-p filtering
//! of the softmax distribution, then a draw. `temperature == 0` is greedy (ties go to the lowest id).

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = off).
    pub min_p: f32,
    /// Penalty > 1 discourages tokens already in the context (1 = off).
    pub repetition_penalty: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingConfig {
    /// Checks that every setting is in range; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!("repetition penalty must be > 0, got {}", self.repetition_penalty));
        }
        Ok(())
    }
}

/// A token sampler (holds the random state).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    state: u64,
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    pub fn new(config: SamplingConfig) -> Self {
        let state = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        Self { config, state }
    }

    /// Whether the next token is the argmax of the logits alone (temperature 0, no repetition penalty), so a
    /// backend can pick it without reading the logits back.
    pub fn is_greedy(&self) -> bool {
        self.config.temperature == 0.0 && self.config.repetition_penalty == 1.0
    }

    /// A uniform draw in [0, 1) (splitmix64).
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from `logits` (one row, length V); `context` holds the tokens seen so far (for the
    /// repetition penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let c = self.config.clone();
        let mut logits = logits.to_vec();
        if c.repetition_penalty != 1.0 {
            for &t in context {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / c.repetition_penalty } else { *l * c.repetition_penalty };
                }
            }
        }
        if c.temperature == 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit, descending (ties by id).
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| logits[i].is_finite()).collect();
        if order.is_empty() {
            return argmax(&logits);
        }
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if c.top_k > 0 {
            order.truncate(c.top_k);
        }
        // `(l - max) / T` in f64: a tiny temperature sends every other token to probability 0 (greedy) instead of
        // overflowing `l / T` to infinity and the probabilities to NaN.
        let (max, t) = (logits[order[0]] as f64, c.temperature as f64);
        let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = probs[0] * c.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let kept: f64 = probs[..keep].iter().sum();
        let mut draw = self.next_f64() * kept;
        for (i, p) in probs[..keep].iter().enumerate() {
            draw -= p;
            if draw < 0.0 {
                return order[i] as u32;
            }
        }
        order[keep - 1] as u32
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    values.iter().enumerate().fold(0, |best, (i, &x)| if x > values[best] { i } else { best }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(config: SamplingConfig) -> Sampler {
        config.validate().unwrap();
        Sampler::new(config)
    }

    #[test]
    fn greedy_picks_the_first_maximum() {
        let mut s = sampler(SamplingConfig::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let mut s = sampler(SamplingConfig { temperature: 1.0, top_k: 1, ..Default::default() });
        assert_eq!(s.sample(&logits, &[]), argmax(&logits));
        let draws = |seed| {
            let mut s = sampler(SamplingConfig { temperature: 1.0, seed, ..Default::default() });
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Probabilities ~ [0.6, 0.3, 0.1 spread over many].
        let mut logits = vec![-10.0f32; 100];
        logits[5] = 4.0;
        logits[9] = 3.3;
        for seed in 0..50 {
            let mut s = sampler(SamplingConfig { temperature: 1.0, top_p: 0.5, seed, ..Default::default() });
            assert_eq!(s.sample(&logits, &[]), 5);
            let mut s = sampler(SamplingConfig { temperature: 1.0, min_p: 0.2, seed, ..Default::default() });
            assert!([5, 9].contains(&s.sample(&logits, &[])));
        }
    }

    #[test]
    fn repetition_penalty_discourages_seen_tokens() {
        let mut s = sampler(SamplingConfig { repetition_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&[1.0, 1.5, 0.2], &[1]), 0);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        for bad in [
            SamplingConfig { temperature: -1.0, ..Default::default() },
            SamplingConfig { top_p: 0.0, ..Default::default() },
            SamplingConfig { min_p: 2.0, ..Default::default() },
            SamplingConfig { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    #[test]
    fn a_vanishing_temperature_is_greedy() {
        let logits = [0.5f32, 3.0, -2.0, 2.9, 1.0];
        for t in [1e-40f32, f32::MIN_POSITIVE, 1e-30] {
            let config = SamplingConfig { temperature: t, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
            let mut sampler = Sampler::new(config);
            for _ in 0..20 {
                assert_eq!(sampler.sample(&logits, &[]), 1, "temperature {t}");
            }
        }
    }
}
