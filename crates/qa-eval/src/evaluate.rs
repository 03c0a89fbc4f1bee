//! run_qa's `--do_eval` (or `--do_predict` for a file without gold labels) on a prepared data
//! file: predict every window, decode as `utils_qa` does, write the prediction files, and score
//! with the official rules. What `qa eval` runs.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use qa_data::progress::{self, Progress};
use qa_data::{Example, Feature, PreparedData, WindowSource};

use crate::decode::{decode, write_json, DecodeConfig, Decoded, WindowLogits};
use crate::error::{EvalError, Result};
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
    let streamed = decode_in_chunks(
        predictor,
        &data.examples,
        &data.windows,
        decode_config,
        WINDOWS_PER_CHUNK,
    )?;
    let (decoded, infer_secs, decode_secs) =
        (streamed.decoded, streamed.infer_secs, streamed.decode_secs);
    let windows = data.windows.len();
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
    results.insert(key("samples"), windows.into());
    results.insert(key("examples"), data.examples.len().into());
    results.insert(key("runtime"), (infer_secs + decode_secs).into());
    results.insert(
        key("windows_per_second"),
        (windows as f64 / infer_secs.max(1e-9)).into(),
    );
    results.insert(key("decode_seconds"), decode_secs.into());
    results.insert("backend".into(), qa_model::backend::BACKEND_NAME.into());
    write_json(&output_dir.join(format!("{prefix}_results.json")), &results)?;
    Ok((kind, results))
}

/// Windows predicted and decoded at a time: an evaluation holds one chunk's windows and logits,
/// never all of them (transformers#17089), whether its windows are in memory or on disk.
pub const WINDOWS_PER_CHUNK: usize = 1024;

/// What [`decode_in_chunks`] gives: every example's decoding and the time spent in each half.
pub struct Streamed {
    pub decoded: Decoded,
    pub infer_secs: f64,
    pub decode_secs: f64,
}

/// Predicts and decodes `windows` a chunk of whole examples at a time with `predictor`
/// ([`decode_streamed`]).
pub fn decode_in_chunks<B: Backend>(
    predictor: &Predictor<B>,
    examples: &[Example],
    windows: &dyn WindowSource,
    decode_config: &DecodeConfig,
    windows_per_chunk: usize,
) -> Result<Streamed> {
    decode_streamed(
        examples,
        windows,
        decode_config,
        windows_per_chunk,
        Progress::Show,
        |chunk| Ok(predictor.window_logits(chunk, Progress::Hidden)),
    )
}

/// Decodes `windows` a chunk of whole examples at a time (at least `windows_per_chunk` windows,
/// unless the last; the windows come in example order, as prepared data holds them), appending each example's decoding as
/// its windows' logits arrive from `logits_of` (one pair per window of the chunk, in order).
/// Only one chunk's windows and logits are ever held. The caller's error type carries
/// `logits_of`'s failures (a data-parallel gather, say).
pub fn decode_streamed<E: From<EvalError>>(
    examples: &[Example],
    windows: &dyn WindowSource,
    decode_config: &DecodeConfig,
    windows_per_chunk: usize,
    progress: Progress,
    mut logits_of: impl FnMut(&[Feature]) -> std::result::Result<Vec<WindowLogits>, E>,
) -> std::result::Result<Streamed, E> {
    let bar = progress::bar(windows.len() as u64, "evaluate", "windows", progress);
    let mut streamed = Streamed {
        decoded: Decoded::default(),
        infer_secs: 0.0,
        decode_secs: 0.0,
    };
    let mut next = 0;
    let mut first_example = 0;
    let mut pending: Option<Feature> = None;
    while first_example < examples.len() {
        // Whole examples, until the chunk holds enough windows. Inside a chunk the windows may
        // come in any order; a window of an example already decoded is refused, never dropped.
        let mut chunk: Vec<Feature> = Vec::new();
        let mut last_example = first_example;
        loop {
            let window = match pending.take() {
                Some(window) => window,
                None if next < windows.len() => {
                    next += 1;
                    windows
                        .window(next - 1)
                        .map_err(EvalError::from)?
                        .into_owned()
                }
                None => break,
            };
            if window.example_index < first_example {
                return Err(EvalError::Decode(format!(
                    "window {} of example {} comes after that example was decoded: windows \
                     must come in example order",
                    window.window, window.example_index
                ))
                .into());
            }
            if chunk.len() >= windows_per_chunk && window.example_index > last_example {
                pending = Some(window);
                break;
            }
            last_example = last_example.max(window.example_index);
            chunk.push(window);
        }
        let end_example = match &pending {
            Some(window) => window.example_index,
            None => examples.len(),
        };
        for window in &mut chunk {
            window.example_index -= first_example;
        }
        let started = Instant::now();
        let logits = logits_of(&chunk)?;
        streamed.infer_secs += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let decoded = decode(
            &examples[first_example..end_example],
            &chunk,
            &logits,
            decode_config,
        )?;
        streamed.decode_secs += started.elapsed().as_secs_f64();
        streamed.decoded.examples.extend(decoded.examples);
        bar.inc(chunk.len() as u64);
        first_example = end_example;
    }
    bar.finish_and_clear();
    Ok(streamed)
}
