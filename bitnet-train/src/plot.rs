//! The curves of a run as an SVG chart (`training.svg` beside the summary, rewritten after every validation):
//! training loss and learning rate per step, validation loss per checkpoint, in two stacked panels with their
//! own scales. Plain SVG 1.1, no dependencies; non-finite values are left out.

use std::fmt::Write;

/// The points of a run (step, value).
#[derive(Debug, Clone, Default)]
pub struct TrainingCurves {
    /// Training loss of each step.
    pub train_loss: Vec<(usize, f64)>,
    /// Validation loss at each checkpoint.
    pub valid_loss: Vec<(usize, f64)>,
    /// Learning rate of each step.
    pub learning_rate: Vec<(usize, f64)>,
}

const WIDTH: f64 = 720.0;
const PANEL: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const GAP: f64 = 50.0;

/// A series to draw: its points, its colour, its name.
type Series<'a> = (&'a [(usize, f64)], &'a str, &'a str);

/// `(min, max)` of the finite values, widened when they are equal.
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1e-12) * 0.05 };
    Some((lo - pad, hi + pad))
}

/// A number for an axis label: 4 significant digits, scientific when small or large.
fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

impl TrainingCurves {
    /// The chart, or `None` before the first step.
    pub fn to_svg(&self) -> Option<String> {
        let last_step = self.train_loss.iter().chain(&self.valid_loss).chain(&self.learning_rate).map(|p| p.0).max()?;
        let steps = (0.0, last_step.max(1) as f64);
        let height = TOP + 2.0 * PANEL + GAP + 40.0;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let losses = self.train_loss.iter().chain(&self.valid_loss).map(|p| p.1);
        if let Some(y) = range(losses) {
            self.panel(
                &mut svg,
                TOP,
                "loss (nats/token)",
                steps,
                y,
                &[(&self.train_loss, "#4878d0", "train"), (&self.valid_loss, "#d65f5f", "validation")],
            );
        }
        if let Some(y) = range(self.learning_rate.iter().map(|p| p.1)) {
            self.panel(
                &mut svg,
                TOP + PANEL + GAP,
                "learning rate",
                steps,
                y,
                &[(&self.learning_rate, "#6acc64", "lr")],
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">optimizer step</text></svg>"#,
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            height - 8.0
        );
        Some(svg)
    }

    /// One panel at `top`: frame, axis labels, and each series as a polyline (points for short series).
    fn panel(&self, svg: &mut String, top: f64, title: &str, x: (f64, f64), y: (f64, f64), series: &[Series<'_>]) {
        let plot_w = WIDTH - LEFT - RIGHT;
        let px = |s: f64| LEFT + (s - x.0) / (x.1 - x.0) * plot_w;
        let py = |v: f64| top + PANEL - (v - y.0) / (y.1 - y.0) * PANEL;
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#999"/>"##
        );
        let _ = write!(svg, r#"<text x="{LEFT}" y="{}">{title}</text>"#, top - 8.0);
        for i in 0..=4 {
            let v = y.0 + (y.1 - y.0) * i as f64 / 4.0;
            let _ =
                write!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 6.0, py(v) + 4.0, label(v));
            let s = x.0 + (x.1 - x.0) * i as f64 / 4.0;
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                px(s),
                top + PANEL + 14.0,
                s.round()
            );
        }
        for (k, (points, color, name)) in series.iter().enumerate() {
            let finite: Vec<String> = points
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|&(s, v)| format!("{:.1},{:.1}", px(s as f64), py(v)))
                .collect();
            if finite.len() > 1 {
                let _ = write!(
                    svg,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    finite.join(" ")
                );
            }
            for p in finite.iter().filter(|_| points.len() <= 64) {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(svg, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>"#);
            }
            let lx = LEFT + plot_w - 110.0;
            let ly = top + 14.0 + 14.0 * k as f64;
            let _ = write!(
                svg,
                r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"/>"#,
                ly - 4.0,
                lx + 16.0,
                ly - 4.0
            );
            let _ = write!(svg, r#"<text x="{}" y="{ly}">{name}</text>"#, lx + 20.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_the_finite_points() {
        assert!(TrainingCurves::default().to_svg().is_none());
        let curves = TrainingCurves {
            train_loss: vec![(1, 5.0), (2, 4.0), (3, f64::NAN), (4, 3.5)],
            valid_loss: vec![(2, 4.5), (4, 3.8)],
            learning_rate: vec![(1, 1e-3), (2, 2e-3), (3, 2e-3), (4, 1e-3)],
        };
        let svg = curves.to_svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        // Three finite training points, two validation points, four learning rates.
        assert_eq!(svg.matches("<circle").count(), 3 + 2 + 4);
        assert!(!svg.contains("NaN"));
    }
}
