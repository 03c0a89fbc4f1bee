//! run_qa's `--do_eval` (or `--do_predict` for a file without gold labels) on a prepared data
//! file: predict every window, decode as `utils_qa` does, write the prediction files, and score
//! with the official rules. What `qa eval` runs.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use qa_data::progress::Progress;
use qa_data::PreparedData;

use crate::decode::{decode, write_json, DecodeConfig};
use crate::error::Result;
use crate::metrics::squad_metrics;
use crate::predictor::Predictor;
use crate::squad::SquadVersion;

/// What run_qa calls the run: `eval` with gold labels, `predict` without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    Eval,
    Predict,
}

impl EvalKind {
    pub fn prefix(self) -> &'static str {
        match self {
            EvalKind::Eval => "eval",
            EvalKind::Predict => "predict",
        }
    }
}

/// Warns when labelled SQuAD v2 data is decoded as v1: every unanswerable question would then
/// get a span and score 0, silently.
pub fn warn_if_v2_decoded_as_v1(path: &Path, data: &PreparedData, decode_config: &DecodeConfig) {
    if data.labelled && data.report.looks_like_v2() && !decode_config.version_2_with_negative {
        tracing::warn!(
            "{} looks like SQuAD v2.0 ({} unanswerable questions) but --version-2-with-negative \
             is off: unanswerable questions will be answered and score 0",
            path.display(),
            data.report.impossible
        );
    }
}

/// Predicts and scores `data`, writing `{kind}_predictions.json`, `{kind}_nbest_predictions.json`,
/// (v2) `{kind}_null_odds.json` and `{kind}_results.json` under `output_dir`. Returns the
/// results object: the official metrics (when labelled), sizes, timings and the backend.
pub fn evaluate_prepared<B: Backend>(
    predictor: &Predictor<B>,
    data: &PreparedData,
    decode_config: &DecodeConfig,
    output_dir: &Path,
) -> Result<(EvalKind, serde_json::Map<String, serde_json::Value>)> {
    warn_if_v2_decoded_as_v1(&data.report.path, data, decode_config);
    let features = &data.windows.features;
    let started = Instant::now();
    let logits = predictor.window_logits(features, Progress::Show);
    let infer_secs = started.elapsed().as_secs_f64();
    let decode_started = Instant::now();
    let decoded = decode(&data.examples, features, &logits, decode_config)?;
    let decode_secs = decode_started.elapsed().as_secs_f64();
    // A file without any gold label is a test set: predictions only, named as run_qa's
    // --do_predict names them, and no (meaningless) scores.
    let kind = if data.labelled {
        EvalKind::Eval
    } else {
        EvalKind::Predict
    };
    let prefix = kind.prefix();
    decoded.write(output_dir, &format!("{prefix}_"))?;
    let mut results = serde_json::Map::new();
    if kind == EvalKind::Eval {
        let version = if decode_config.version_2_with_negative {
            SquadVersion::V2
        } else {
            SquadVersion::V1
        };
        results = squad_metrics(&data.examples, &decoded, version).to_json("eval_");
    }
    let key = |k: &str| format!("{prefix}_{k}");
    results.insert(key("samples"), features.len().into());
    results.insert(key("examples"), data.examples.len().into());
    results.insert(key("runtime"), (infer_secs + decode_secs).into());
    results.insert(
        key("windows_per_second"),
        (features.len() as f64 / infer_secs.max(1e-9)).into(),
    );
    results.insert(key("decode_seconds"), decode_secs.into());
    results.insert("backend".into(), qa_model::backend::BACKEND_NAME.into());
    write_json(&output_dir.join(format!("{prefix}_results.json")), &results)?;
    Ok((kind, results))
}
