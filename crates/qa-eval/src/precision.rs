//! What a lower inference precision costs (`qa eval --compare-precision bf16|int8`): the same
//! windows answered in f32 and in each other precision, with the official metrics of each, the
//! share of questions whose answer text is identical to f32's, and how far the logits moved
//! (the largest and the mean error, and the share of windows whose best start and end stay).
//!
//! The answer share counts near-ties: on a weak model many questions have a runner-up within
//! a few hundredths of a logit, so a change of one or two answers in a few hundred questions
//! says little; the window-level figures count thousands of decisions and rank variants more
//! steadily.

use std::time::Instant;

use burn::tensor::backend::Backend;
use qa_data::progress::Progress;
use qa_data::PreparedData;
use qa_model::InferencePrecision;
use serde::Serialize;

use crate::decode::{decode, top_k, DecodeConfig, Decoded, WindowLogits};
use crate::error::Result;
use crate::metrics::{squad_metrics, Metric};
use crate::predictor::Predictor;
use crate::squad::SquadVersion;

/// One precision's answers on a labelled file, against f32's.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionRow {
    pub precision: InferencePrecision,
    /// Official exact match and F1 (v1.1 rules, or v2.0's `exact`/`f1`).
    pub exact_match: f64,
    pub f1: f64,
    /// F1 minus f32's, in points.
    pub f1_change: f64,
    /// Share of questions whose final answer text equals f32's (1 for f32 itself).
    pub top1_identical: f64,
    /// Largest |logit − f32 logit| over every position of every window.
    pub max_logit_error: f32,
    /// Mean |logit − f32 logit| over every position of every window.
    pub mean_logit_error: f64,
    /// Share of windows whose best start position and best end position (each the largest
    /// logit, alone) are f32's.
    pub window_best_identical: f64,
    pub windows_per_second: f64,
}

/// The windows' logits and their decoding in one precision.
struct Answered {
    logits: Vec<WindowLogits>,
    decoded: Decoded,
    windows_per_second: f64,
}

fn answer<B: Backend>(
    predictor: &Predictor<B>,
    data: &PreparedData,
    decode_config: &DecodeConfig,
) -> Result<Answered> {
    let features = &*data.windows.features()?;
    let started = Instant::now();
    let logits = predictor.window_logits(features, Progress::Show);
    let windows_per_second = features.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let decoded = decode(&data.examples, features, &logits, decode_config)?;
    Ok(Answered {
        logits,
        decoded,
        windows_per_second,
    })
}

/// How far `run`'s logits are from `reference`'s, window by window.
struct LogitDifference {
    max: f32,
    mean: f64,
    /// Share of windows whose start and end argmax are the reference's.
    best_identical: f64,
}

fn logit_difference(run: &[WindowLogits], reference: &[WindowLogits]) -> LogitDifference {
    let (count, total, max) = run
        .iter()
        .zip(reference)
        .flat_map(|((a_start, a_end), (b_start, b_end))| {
            a_start.iter().zip(b_start).chain(a_end.iter().zip(b_end))
        })
        .map(|(x, y)| (x - y).abs())
        .fold((0usize, 0f64, 0f32), |(n, sum, max), d| {
            (n + 1, sum + f64::from(d), max.max(d))
        });
    let same_best = run
        .iter()
        .zip(reference)
        .filter(|((a_start, a_end), (b_start, b_end))| {
            best(a_start) == best(b_start) && best(a_end) == best(b_end)
        })
        .count();
    LogitDifference {
        max,
        mean: total / count.max(1) as f64,
        best_identical: same_best as f64 / run.len().max(1) as f64,
    }
}

/// The position of the largest logit (the first of equals), as decoding ranks them.
fn best(logits: &[f32]) -> Option<usize> {
    top_k(logits, 1).first().copied()
}

/// Answers `data` (labelled) with the f32 `predictor` and with a copy of it in each of
/// `precisions`: one row each, f32 first.
pub fn compare_precisions<B: Backend>(
    predictor: &Predictor<B>,
    data: &PreparedData,
    decode_config: &DecodeConfig,
    precisions: &[InferencePrecision],
) -> Result<Vec<PrecisionRow>> {
    let version = if decode_config.version_2_with_negative {
        SquadVersion::V2
    } else {
        SquadVersion::V1
    };
    let em_metric = match version {
        SquadVersion::V1 => Metric::ExactMatch,
        SquadVersion::V2 => Metric::Exact,
    };
    let reference = answer(predictor, data, decode_config)?;
    let reference_texts = reference.decoded.predictions();
    let reference_f1 = squad_metrics(&data.examples, &reference.decoded, version)
        .get(Metric::F1)
        .unwrap_or(0.0);
    let row = |precision, run: &Answered| {
        let metrics = squad_metrics(&data.examples, &run.decoded, version);
        let f1 = metrics.get(Metric::F1).unwrap_or(0.0);
        let texts = run.decoded.predictions();
        let identical = texts
            .iter()
            .filter(|(id, text)| reference_texts.get(*id) == Some(text))
            .count();
        let difference = logit_difference(&run.logits, &reference.logits);
        PrecisionRow {
            precision,
            exact_match: metrics.get(em_metric).unwrap_or(0.0),
            f1,
            f1_change: f1 - reference_f1,
            top1_identical: identical as f64 / texts.len().max(1) as f64,
            max_logit_error: difference.max,
            mean_logit_error: difference.mean,
            window_best_identical: difference.best_identical,
            windows_per_second: run.windows_per_second,
        }
    };
    let mut rows = vec![row(predictor.model.precision(), &reference)];
    for &precision in precisions {
        let low = predictor.clone().with_precision(precision)?;
        rows.push(row(precision, &answer(&low, data, decode_config)?));
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[PrecisionRow]) -> String {
    let mut table = String::from(
        "| precision | EM | F1 | F1 change (points) | top-1 answer identical to f32 | max logit error | mean logit error | windows with f32's best start and end | windows/s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        table.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:+.2} | {:.1}% | {:.4} | {:.4} | {:.1}% | {:.2} |\n",
            row.precision,
            row.exact_match,
            row.f1,
            row.f1_change,
            100.0 * row.top1_identical,
            row.max_logit_error,
            row.mean_logit_error,
            100.0 * row.window_best_identical,
            row.windows_per_second
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_differences_count_every_position_and_each_windows_best_pair() {
        let reference: Vec<WindowLogits> = vec![
            (vec![0.0, 2.0, 1.0], vec![1.0, 0.0, 3.0]),
            (vec![5.0, 4.0], vec![0.0, 1.0]),
        ];
        // The first window keeps its best start and end (errors 0.5 and 0.25); the second's
        // best start moves from position 0 to 1 (errors 1.5 and 0.5).
        let run: Vec<WindowLogits> = vec![
            (vec![0.0, 2.5, 1.0], vec![1.0, 0.0, 2.75]),
            (vec![4.0, 5.5], vec![0.0, 1.0]),
        ];
        let d = logit_difference(&run, &reference);
        assert_eq!(d.max, 1.5);
        assert!(
            (d.mean - (0.5 + 0.25 + 1.0 + 1.5) / 10.0).abs() < 1e-12,
            "{}",
            d.mean
        );
        assert_eq!(d.best_identical, 0.5);
        let same = logit_difference(&reference, &reference);
        assert_eq!((same.max, same.mean, same.best_identical), (0.0, 0.0, 1.0));
        assert_eq!(best(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(best(&[]), None);
    }
}
