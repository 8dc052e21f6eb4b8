//! Training metrics burn-train lacks: tokens per second.

use burn::tensor::backend::Backend;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::ClassificationOutput;
use std::sync::Arc;
use std::time::Instant;

/// The number of target tokens of a batch.
#[derive(Debug, Clone, Copy)]
pub struct TokenCount(pub usize);

impl<B: Backend> burn::train::metric::Adaptor<TokenCount> for ClassificationOutput<B> {
    fn adapt(&self) -> TokenCount {
        TokenCount(self.targets.dims()[0])
    }
}

/// Tokens processed per second since the epoch's first batch.
#[derive(Clone)]
pub struct TokensPerSecond {
    name: MetricName,
    state: NumericMetricState,
    start: Option<Instant>,
    tokens: usize,
}

impl Default for TokensPerSecond {
    fn default() -> Self {
        Self::new()
    }
}

impl TokensPerSecond {
    /// A new metric.
    pub fn new() -> Self {
        Self { name: Arc::new("Tokens per second".to_string()), state: Default::default(), start: None, tokens: 0 }
    }
}

impl Metric for TokensPerSecond {
    type Input = TokenCount;

    fn update(&mut self, input: &TokenCount, _metadata: &MetricMetadata) -> SerializedEntry {
        // The first batch starts the clock (its own time is unknown); later ones count.
        let rate = match self.start {
            None => {
                self.start = Some(Instant::now());
                0.0
            }
            Some(start) => {
                self.tokens += input.0;
                self.tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)
            }
        };
        self.state.update(rate, 1, FormatOptions::new(self.name()).unit("tok/s").precision(0))
    }

    fn clear(&mut self) {
        self.start = None;
        self.tokens = 0;
        self.state.reset();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: Some("tok/s".to_string()), higher_is_better: true }.into()
    }
}

impl Numeric for TokensPerSecond {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
