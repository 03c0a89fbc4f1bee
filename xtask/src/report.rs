//! The reproduce report's picture: a run's `train_log.jsonl` read back, and its training curve
//! (loss, learning rate and eval F1 against steps, next to the HF reference when there is one)
//! drawn with `plotters`. The report's markdown and JSON are written by `reproduce.rs`.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One logging line of a `train_log.jsonl`: (step, loss, learning rate).
pub type LogPoint = (f64, f64, f64);

/// What a `train_log.jsonl` holds: the logged steps and the evaluations (step, F1).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TrainLog {
    pub steps: Vec<LogPoint>,
    pub evals: Vec<(f64, f64)>,
}

/// Reads a `train_log.jsonl` (missing or unreadable lines are skipped: a report still shows
/// what there is).
pub fn read_train_log(path: &Path) -> TrainLog {
    let Ok(text) = std::fs::read_to_string(path) else {
        return TrainLog::default();
    };
    let mut log = TrainLog::default();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let number = |key: &str| v.get(key).and_then(|x| x.as_f64());
        if let (Some(step), Some(loss), Some(lr)) =
            (number("step"), number("loss"), number("learning_rate"))
        {
            log.steps.push((step, loss, lr));
        }
        if let (Some(step), Some(f1)) = (number("step"), number("eval_f1")) {
            log.evals.push((step, f1));
        }
    }
    log
}

/// The HF reference of a preset, as the picture shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceCurve {
    pub label: String,
    /// Mean training loss over the seeds, at steps 1, 2, ….
    pub mean_loss: Vec<f64>,
    /// Eval F1 of each seed, at the last step.
    pub f1: Vec<f64>,
}

const OURS: RGBColor = RGBColor(192, 57, 43);
const PEER: RGBColor = RGBColor(36, 113, 163);

/// Three panels over training steps: loss (ours, and the reference's mean), learning rate, and
/// eval F1 (ours; the reference seeds' spread as a band at the last step).
pub fn training_svg(
    log: &TrainLog,
    reference: Option<&ReferenceCurve>,
    title: &str,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let panels = root.split_evenly((3, 1));
        let last_step = log
            .steps
            .iter()
            .map(|p| p.0)
            .chain(log.evals.iter().map(|e| e.0))
            .chain(reference.map(|r| r.mean_loss.len() as f64))
            .fold(1.0, f64::max);
        let x_range = 0.0..last_step * 1.02;

        let ref_losses: Vec<(f64, f64)> = reference
            .map(|r| {
                r.mean_loss
                    .iter()
                    .enumerate()
                    .map(|(i, l)| ((i + 1) as f64, *l))
                    .collect()
            })
            .unwrap_or_default();
        let max_loss = log
            .steps
            .iter()
            .map(|p| p.1)
            .chain(ref_losses.iter().map(|p| p.1))
            .fold(1e-6, f64::max);
        let mut loss = panel(
            &panels[0],
            "training loss",
            x_range.clone(),
            max_loss * 1.05,
        )?;
        loss.configure_mesh().x_desc("step").y_desc("loss").draw()?;
        loss.draw_series(LineSeries::new(
            log.steps.iter().map(|p| (p.0, p.1)),
            OURS.stroke_width(2),
        ))?
        .label("qa")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], OURS.stroke_width(2)));
        if let Some(r) = reference {
            loss.draw_series(LineSeries::new(ref_losses.iter().copied(), &PEER))?
                .label(format!("{} (mean of {} seeds)", r.label, r.f1.len()))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PEER));
        }
        loss.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;

        let max_lr = log.steps.iter().map(|p| p.2).fold(1e-12, f64::max);
        let mut lr = panel(&panels[1], "learning rate", x_range.clone(), max_lr * 1.05)?;
        lr.configure_mesh()
            .x_desc("step")
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()?;
        lr.draw_series(LineSeries::new(
            log.steps.iter().map(|p| (p.0, p.2)),
            OURS.stroke_width(2),
        ))?;

        let max_f1 = log
            .evals
            .iter()
            .map(|e| e.1)
            .chain(reference.into_iter().flat_map(|r| r.f1.iter().copied()))
            .fold(1.0, f64::max);
        let mut f1 = panel(&panels[2], "eval F1", x_range, max_f1 * 1.15)?;
        f1.configure_mesh().x_desc("step").y_desc("F1").draw()?;
        if let Some(r) = reference.filter(|r| !r.f1.is_empty()) {
            let (lo, hi) = min_max(&r.f1);
            let at = r.mean_loss.len().max(1) as f64;
            let half = last_step * 0.02;
            f1.draw_series(std::iter::once(Rectangle::new(
                [(at - half, lo), (at + half, hi)],
                PEER.mix(0.3).filled(),
            )))?
            .label(format!("{}: seeds' range", r.label))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], PEER.mix(0.3).filled()));
        }
        f1.draw_series(
            log.evals
                .iter()
                .map(|&(s, v)| Circle::new((s, v), 5, OURS.filled())),
        )?
        .label("qa")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, OURS.filled()));
        f1.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// One panel's axes: `caption` above, steps along x, `0..y_max` up.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    y_max: f64,
) -> anyhow::Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    Ok(ChartBuilder::on(area)
        .margin(8)
        .caption(caption, ("sans-serif", 14))
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(x, 0.0..y_max)?)
}

/// (min, max) of a non-empty list.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_read_into_steps_and_evaluations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_log.jsonl");
        std::fs::write(
            &path,
            "{\"step\":1,\"loss\":4.0,\"learning_rate\":1e-5}\nnot json\n\
             {\"step\":2,\"loss\":2.0,\"learning_rate\":2e-5}\n{\"step\":2,\"eval_f1\":12.5}\n",
        )
        .unwrap();
        let log = read_train_log(&path);
        assert_eq!(log.steps, [(1.0, 4.0, 1e-5), (2.0, 2.0, 2e-5)]);
        assert_eq!(log.evals, [(2.0, 12.5)]);
    }

    #[test]
    fn the_picture_draws_every_series() {
        let log = TrainLog {
            steps: vec![(1.0, 4.0, 1e-5), (2.0, 2.0, 2e-5)],
            evals: vec![(2.0, 12.5)],
        };
        let reference = ReferenceCurve {
            label: "HF Trainer".into(),
            mean_loss: vec![4.5, 2.5],
            f1: vec![10.0, 14.0, 12.0],
        };
        let svg = training_svg(&log, Some(&reference), "t").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // Ours (loss, lr, and a legend key) in red; the reference's loss (and key) in blue.
        let lines = |color: &str| {
            svg.lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(color))
                .count()
        };
        assert_eq!(lines("#C0392B"), 3, "{svg}");
        assert_eq!(lines("#2471A3"), 2, "{svg}");
        assert!(svg.contains("<circle"), "{svg}");
        assert!(svg.contains("HF Trainer (mean of 3 seeds)"), "{svg}");
        assert_eq!(min_max(&reference.f1), (10.0, 14.0));
    }
}
