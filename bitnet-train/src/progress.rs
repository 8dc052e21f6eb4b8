//! A compact progress display for burn-train's Learner: one line on stderr, rewritten in place on a terminal
//! (a line per checkpoint interval otherwise), with the step, the latest metrics and the validation progress.

use burn::data::dataloader::Progress;
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The renderer (see the module docs).
pub struct StepProgress {
    names: Vec<(MetricId, String)>,
    train: Vec<(String, String)>,
    valid: Vec<(String, String)>,
    steps_per_epoch: usize,
    total_steps: usize,
    last_draw: Option<Instant>,
    terminal: bool,
    validating: bool,
}

impl StepProgress {
    /// A display for a run of `total_steps` steps in intervals of `steps_per_epoch`.
    pub fn new(steps_per_epoch: usize, total_steps: usize) -> Self {
        Self {
            names: Vec::new(),
            train: Vec::new(),
            valid: Vec::new(),
            steps_per_epoch,
            total_steps,
            last_draw: None,
            terminal: std::io::stderr().is_terminal(),
            validating: false,
        }
    }

    fn record(&mut self, valid: bool, state: MetricState) {
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        let name = self
            .names
            .iter()
            .find(|(id, _)| *id == entry.metric_id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| "metric".into());
        let list = if valid { &mut self.valid } else { &mut self.train };
        // burn formats numeric entries as "epoch <running> - batch <latest>": keep the running value.
        let formatted = &entry.serialized_entry.formatted;
        let running = formatted.strip_prefix("epoch ").and_then(|r| r.split(" - batch").next()).unwrap_or(formatted);
        // The learning rate is shown as of the latest step, not averaged.
        let latest = formatted.rsplit(" - batch ").next().unwrap_or(formatted);
        let running = if name.contains("Learning Rate") { latest } else { running };
        let value = format!("{name} {running}");
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => list.push((name, value)),
        }
    }

    fn draw(&mut self, line: String, force: bool) {
        let due = self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
        if !(force || (self.terminal && due)) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn step_of(&self, item: &TrainingProgress) -> usize {
        let epoch = item.global_progress.items_processed.saturating_sub(1);
        epoch * self.steps_per_epoch + item.iteration.unwrap_or(0)
    }
}

fn percent(p: &Option<Progress>) -> String {
    match p {
        Some(p) if p.items_total > 0 => format!("{:>3}%", p.items_processed * 100 / p.items_total),
        _ => String::new(),
    }
}

impl MetricsRendererTraining for StepProgress {
    fn update_train(&mut self, state: MetricState) {
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(true, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        if self.validating {
            self.validating = false;
            let metrics: Vec<String> = self.valid.iter().map(|(_, v)| v.clone()).collect();
            let line =
                format!("validation after step {}: {}", self.step_of(&item).saturating_sub(1), metrics.join(" | "));
            self.draw(line, true);
            if self.terminal {
                eprintln!();
            }
        }
        let step = self.step_of(&item);
        let metrics: Vec<String> = self.train.iter().map(|(_, v)| v.clone()).collect();
        let end_of_interval = item.iteration == Some(self.steps_per_epoch);
        let line = format!("step {step}/{} | {}", self.total_steps, metrics.join(" | "));
        self.draw(line, end_of_interval);
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.validating = true;
        let line = format!("validating {}", percent(&item.progress));
        self.draw(line, false);
    }

    fn on_train_end(&mut self, summary: Option<burn::train::LearnerSummary>) -> Result<(), Box<dyn std::error::Error>> {
        let metrics: Vec<String> = self.valid.iter().map(|(_, v)| v.clone()).collect();
        if !metrics.is_empty() {
            self.draw(format!("last validation: {}", metrics.join(" | ")), true);
        }
        if self.terminal {
            eprintln!();
        }
        if let Some(summary) = summary {
            eprintln!("{summary}");
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for StepProgress {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(true, state);
    }

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for StepProgress {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.push((definition.metric_id, definition.name));
    }
}
