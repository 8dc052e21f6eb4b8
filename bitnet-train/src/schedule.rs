//! The two-stage learning-rate schedule of the BitNet b1.58 2B-4T recipe, as a burn [`LrScheduler`].
//!
//! With `W` warm-up steps, `S1` the last step of stage one and `N` the total number of steps (step `n` counts
//! from 1):
//!
//! ```text
//! n <= W:        lr(n) = peak · n / W
//! W < n <= S1:   lr(n) = end1 + (peak - end1) · (1 + cos(π (n - W) / (S1 - W))) / 2       # cosine, peak -> end1
//! S1 < n <= N:   lr(n) = stage2 · (1 + cos(π (n - S1) / (N - S1))) / 2                    # cooldown, stage2 -> 0
//! ```
//!
//! with `end1 = peak / 10` and `stage2 < end1` chosen by the user (the 2B-4T recipe drops the rate when the
//! second stage starts, and turns weight decay off: see [`crate::optim::StagedAdamW`]).

use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;

/// The schedule's settings and position.
#[derive(Debug, Clone)]
pub struct TwoStageSchedule {
    /// Peak rate of stage one.
    pub peak: f64,
    /// Starting rate of stage two.
    pub stage_two: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Last step of stage one.
    pub stage_one_steps: usize,
    /// Total steps.
    pub total_steps: usize,
    /// Steps taken.
    pub step: usize,
}

impl TwoStageSchedule {
    /// The rate at step `n` (1-based).
    pub fn rate_at(&self, n: usize) -> f64 {
        let half_cosine = |done: usize, len: usize| {
            let x = done as f64 / len.max(1) as f64;
            (1.0 + (std::f64::consts::PI * x.min(1.0)).cos()) / 2.0
        };
        let end1 = self.peak / 10.0;
        if n <= self.warmup_steps {
            self.peak * n as f64 / self.warmup_steps as f64
        } else if n <= self.stage_one_steps {
            end1 + (self.peak - end1) * half_cosine(n - self.warmup_steps, self.stage_one_steps - self.warmup_steps)
        } else {
            self.stage_two * half_cosine(n - self.stage_one_steps, self.total_steps - self.stage_one_steps)
        }
    }
}

impl LrScheduler for TwoStageSchedule {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        self.step += 1;
        self.rate_at(self.step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_decays_and_drops_at_stage_two() {
        let s = TwoStageSchedule {
            peak: 1e-3,
            stage_two: 5e-5,
            warmup_steps: 10,
            stage_one_steps: 60,
            total_steps: 100,
            step: 0,
        };
        assert!((s.rate_at(5) - 5e-4).abs() < 1e-12);
        assert!((s.rate_at(10) - 1e-3).abs() < 1e-12);
        assert!((s.rate_at(60) - 1e-4).abs() < 1e-12, "stage one ends at peak / 10");
        assert!(s.rate_at(61) < 5e-5 + 1e-12 && s.rate_at(61) > 4.9e-5, "stage two restarts lower");
        assert!(s.rate_at(100).abs() < 1e-12);
        for n in 11..60 {
            assert!(s.rate_at(n + 1) <= s.rate_at(n));
        }
    }
}
