//! A compact progress display for burn-train's Learner: one line on stderr, rewritten in place on a terminal
//! (a line per checkpoint interval otherwise), with the step, the latest metrics and the validation progress;
//! and the run's curves (see [`crate::plot`]), rewritten as an SVG file after every validation. With a
//! dashboard (burn-train's terminal UI) the line gives way to it: every event goes to the dashboard too.

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
    curves: crate::plot::TrainingCurves,
    /// Numeric values of the current step, by metric name, charted when the step is known.
    pending: Vec<(String, f64)>,
    /// The validation loss of the running validation.
    valid_loss: Option<f64>,
    plot: Option<std::path::PathBuf>,
    /// burn-train's terminal dashboard, shown instead of the line.
    dashboard: Option<Box<dyn MetricsRenderer>>,
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
            curves: Default::default(),
            pending: Vec::new(),
            valid_loss: None,
            plot: None,
            dashboard: None,
        }
    }

    /// The display, with burn-train's terminal dashboard in place of the line.
    pub fn with_dashboard(self, dashboard: Box<dyn MetricsRenderer>) -> Self {
        Self { dashboard: Some(dashboard), ..self }
    }

    /// The display, also writing the run's curves to `path` (an SVG file) after every validation.
    pub fn with_plot(self, path: std::path::PathBuf) -> Self {
        Self { plot: Some(path), ..self }
    }

    /// Writes the chart (atomically); a failure is reported, not fatal: the run matters more than its picture.
    fn write_plot(&self) {
        let (Some(path), Some(svg)) = (&self.plot, self.curves.to_svg()) else { return };
        if let Err(e) = bitnet_models::io::write_atomically(path, svg.as_bytes()) {
            eprintln!("note: could not write {}: {e}", path.display());
        }
    }

    fn record(&mut self, valid: bool, state: MetricState) {
        let (entry, number) = match state {
            MetricState::Generic(e) => (e, None),
            MetricState::Numeric(e, n) => (e, Some(n)),
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
        match (valid, name.as_str(), number) {
            (false, "Loss" | "Learning Rate", Some(n)) => {
                let v = match n {
                    burn::train::metric::NumericEntry::Value(v) => v,
                    burn::train::metric::NumericEntry::Aggregated { aggregated_value, .. } => aggregated_value,
                };
                self.pending.retain(|(k, _)| *k != name);
                self.pending.push((name.clone(), v));
            }
            (true, "Loss", _) => self.valid_loss = running.trim().parse().ok(),
            _ => {}
        }
        let value = format!("{name} {running}");
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => list.push((name, value)),
        }
    }

    fn draw(&mut self, line: String, force: bool) {
        if self.dashboard.is_some() {
            return;
        }
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
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.update_train(copy_state(&state));
        }
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.update_valid(copy_state(&state));
        }
        self.record(true, state);
    }

    fn render_train(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.render_train(copy_progress(&item), indicators);
        }
        let step = self.step_of(&item);
        for (name, v) in std::mem::take(&mut self.pending) {
            let series = if name == "Loss" { &mut self.curves.train_loss } else { &mut self.curves.learning_rate };
            series.push((step, v));
        }
        if self.validating {
            self.validating = false;
            if let Some(loss) = self.valid_loss.take() {
                self.curves.valid_loss.push((step.saturating_sub(1), loss));
            }
            self.write_plot();
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

    fn render_valid(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.render_valid(copy_progress(&item), indicators);
        }
        self.validating = true;
        let line = format!("validating {}", percent(&item.progress));
        self.draw(line, false);
    }

    fn on_train_end(&mut self, summary: Option<burn::train::LearnerSummary>) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(mut dashboard) = self.dashboard.take() {
            // Closes the dashboard and gives the terminal back; the line display takes over for the summary.
            dashboard.on_train_end(None)?;
        }
        if let Some(loss) = self.valid_loss.take() {
            let step = self.curves.train_loss.last().map_or(0, |p| p.0);
            self.curves.valid_loss.push((step, loss));
        }
        self.write_plot();
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
    fn manual_close(&mut self) {
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.manual_close();
        }
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.register_metric(definition.clone());
        }
        self.names.push((definition.metric_id, definition.name));
    }
}

/// A copy of a metric state (burn-train's type is not `Clone`; its parts are).
fn copy_state(state: &MetricState) -> MetricState {
    match state {
        MetricState::Generic(entry) => MetricState::Generic(entry.clone()),
        MetricState::Numeric(entry, number) => MetricState::Numeric(entry.clone(), number.clone()),
    }
}

fn copy_progress(item: &TrainingProgress) -> TrainingProgress {
    TrainingProgress {
        progress: item.progress.clone(),
        global_progress: item.global_progress.clone(),
        iteration: item.iteration,
    }
}
