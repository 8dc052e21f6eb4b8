//! Server counters, exposed at `GET /metrics` in the Prometheus text format.

use bitnet_models::batch::StepReport;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters shared by the HTTP handlers and the engine thread.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    queued: AtomicU64,
    active: AtomicU64,
    slots: AtomicU64,
    /// Nanoseconds of steps that processed prompt tokens / that only decoded.
    prefill_ns: AtomicU64,
    decode_ns: AtomicU64,
    decode_step_tokens: AtomicU64,
    steps: AtomicU64,
}

impl Metrics {
    /// A request was received (any endpoint that runs the model).
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }
    /// A request was answered with an error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    /// A job entered the queue.
    pub fn enqueued(&self) {
        self.queued.fetch_add(1, Relaxed);
    }
    /// A job left the queue.
    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Relaxed);
    }
    /// The number of slots.
    pub fn set_slots(&self, slots: usize) {
        self.slots.store(slots as u64, Relaxed);
    }
    /// Sequences in slots now.
    pub fn set_active(&self, active: usize) {
        self.active.store(active as u64, Relaxed);
    }
    /// A step of the engine ran for `time`.
    pub fn step(&self, report: &StepReport, time: Duration) {
        let ns = time.as_nanos().min(u64::MAX as u128) as u64;
        self.steps.fetch_add(1, Relaxed);
        self.prompt_tokens.fetch_add(report.prompt_tokens as u64, Relaxed);
        self.generated_tokens.fetch_add(report.generated_tokens as u64, Relaxed);
        if report.prompt_tokens > 0 {
            self.prefill_ns.fetch_add(ns, Relaxed);
        } else {
            self.decode_ns.fetch_add(ns, Relaxed);
            self.decode_step_tokens.fetch_add(report.generated_tokens as u64, Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let rate = |tokens: u64, ns: u64| if ns == 0 { 0.0 } else { tokens as f64 / (ns as f64 * 1e-9) };
        let prefill_rate = rate(load(&self.prompt_tokens), load(&self.prefill_ns));
        let decode_rate = rate(load(&self.decode_step_tokens), load(&self.decode_ns));
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        };
        metric(
            "bitnet_requests_total",
            "counter",
            "Generation and tokenizer requests received.",
            load(&self.requests).to_string(),
        );
        metric(
            "bitnet_request_errors_total",
            "counter",
            "Requests answered with an error.",
            load(&self.errors).to_string(),
        );
        metric(
            "bitnet_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            load(&self.prompt_tokens).to_string(),
        );
        metric(
            "bitnet_generated_tokens_total",
            "counter",
            "Tokens generated.",
            load(&self.generated_tokens).to_string(),
        );
        metric("bitnet_queue_length", "gauge", "Requests waiting for a slot.", load(&self.queued).to_string());
        metric("bitnet_active_slots", "gauge", "Sequences being decoded.", load(&self.active).to_string());
        metric("bitnet_slots", "gauge", "KV slots (--parallel).", load(&self.slots).to_string());
        metric("bitnet_steps_total", "counter", "Batched forward passes.", load(&self.steps).to_string());
        metric(
            "bitnet_prefill_tokens_per_second",
            "gauge",
            "Prompt tokens per second of the steps that processed prompts (since start).",
            format!("{prefill_rate:.3}"),
        );
        metric(
            "bitnet_decode_tokens_per_second",
            "gauge",
            "Tokens per second, all sequences together, of the decode-only steps (since start).",
            format!("{decode_rate:.3}"),
        );
        out
    }
}
