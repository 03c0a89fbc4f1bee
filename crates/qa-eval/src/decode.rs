//! From per-window start/end logits to one answer per example: HF `utils_qa`'s
//! `postprocess_qa_predictions`, rule for rule, in parallel over examples.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use qa_data::atomic::{write_atomically, WriteError};
use qa_data::{Example, Feature};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{EvalError, Result};

#[derive(Debug, Clone, Serialize)]
pub struct DecodeConfig {
    pub n_best_size: usize,
    pub max_answer_length: usize,
    /// SQuAD v2.0: allow "no answer" (the [CLS] span).
    pub version_2_with_negative: bool,
    /// Answer "" when `null score − best span score` exceeds this.
    pub null_score_diff_threshold: f32,
    /// Only accept spans that start in their token's max-context window.
    pub use_max_context: bool,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            n_best_size: 20,
            max_answer_length: 30,
            version_2_with_negative: false,
            null_score_diff_threshold: 0.0,
            use_max_context: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NBestEntry {
    pub text: String,
    pub probability: f32,
    pub start_logit: f32,
    pub end_logit: f32,
    /// Char span in the context (`[0, 0]` for the null answer).
    pub offsets: [usize; 2],
}

/// One example's decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleDecoding {
    pub id: String,
    /// The final answer ("" = no answer, v2 only).
    pub text: String,
    pub nbest: Vec<NBestEntry>,
    /// v2: `null score − (start + end logit of the best non-null span)`.
    pub score_diff: Option<f32>,
    /// v2: the best non-null answer whatever the threshold (for threshold search).
    pub best_non_null: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub examples: Vec<ExampleDecoding>,
}

pub use qa_model::infer::WindowLogits;

#[derive(Clone, Copy)]
struct Candidate {
    start_char: usize,
    end_char: usize,
    score: f32,
    start_logit: f32,
    end_logit: f32,
}

/// Decodes every example. `logits[i]` are the start and end logits of `features[i]` (at least
/// as long as the feature; extra padding positions are ignored).
pub fn decode(
    examples: &[Example],
    features: &[Feature],
    logits: &[WindowLogits],
    config: &DecodeConfig,
) -> Result<Decoded> {
    let by_example = windows_by_example(examples.len(), features, logits)?;
    let decoded = examples
        .par_iter()
        .zip(by_example.par_iter())
        .map(|(ex, windows)| decode_example(ex, windows, features, logits, config))
        .collect();
    Ok(Decoded { examples: decoded })
}

/// The windows of each example, after checking that windows and logits fit together.
pub(crate) fn windows_by_example(
    examples: usize,
    features: &[Feature],
    logits: &[WindowLogits],
) -> Result<Vec<Vec<usize>>> {
    if features.len() != logits.len() {
        return Err(EvalError::Decode(format!(
            "{} windows but {} logit rows",
            features.len(),
            logits.len()
        )));
    }
    let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); examples];
    for (i, f) in features.iter().enumerate() {
        let slot = by_example.get_mut(f.example_index).ok_or_else(|| {
            EvalError::Decode(format!("window {i} points at example {}", f.example_index))
        })?;
        if logits[i].0.len() < f.len() || logits[i].1.len() < f.len() {
            return Err(EvalError::Decode(format!(
                "window {i}: {} tokens but {} start / {} end logits",
                f.len(),
                logits[i].0.len(),
                logits[i].1.len()
            )));
        }
        slot.push(i);
    }
    Ok(by_example)
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub(crate) fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let by_value_desc = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, by_value_desc);
        idx.truncate(k);
    }
    idx.sort_by(by_value_desc);
    idx
}

fn decode_example(
    example: &Example,
    windows: &[usize],
    features: &[Feature],
    logits: &[WindowLogits],
    config: &DecodeConfig,
) -> ExampleDecoding {
    let mut null: Option<Candidate> = None;
    let mut prelim: Vec<Candidate> = Vec::new();
    for &w in windows {
        let feature = &features[w];
        let n = feature.len();
        let (start_logits, end_logits) = (&logits[w].0[..n], &logits[w].1[..n]);
        let null_score = start_logits[0] + end_logits[0];
        if null.is_none_or(|c| c.score > null_score) {
            null = Some(Candidate {
                start_char: 0,
                end_char: 0,
                score: null_score,
                start_logit: start_logits[0],
                end_logit: end_logits[0],
            });
        }
        let starts = top_k(start_logits, config.n_best_size);
        let ends = top_k(end_logits, config.n_best_size);
        for &s in &starts {
            let Some((start_char, _)) = feature.offsets[s] else {
                continue;
            };
            if config.use_max_context && !feature.max_context[s] {
                continue;
            }
            for &e in &ends {
                let Some((_, end_char)) = feature.offsets[e] else {
                    continue;
                };
                if e < s || e - s + 1 > config.max_answer_length {
                    continue;
                }
                prelim.push(Candidate {
                    start_char,
                    end_char,
                    score: start_logits[s] + end_logits[e],
                    start_logit: start_logits[s],
                    end_logit: end_logits[e],
                });
            }
        }
    }
    let v2 = config.version_2_with_negative;
    if v2 {
        prelim.extend(null);
    }
    // Stable sort, as Python's `sorted`.
    prelim.sort_by(|a, b| b.score.total_cmp(&a.score));
    prelim.truncate(config.n_best_size);
    let is_null = |c: &Candidate| c.start_char == 0 && c.end_char == 0;
    if v2 && !prelim.iter().any(is_null) {
        prelim.extend(null);
    }

    let chars = qa_data::align::CharIndex::new(&example.context);
    let mut nbest: Vec<(NBestEntry, f32)> = prelim
        .iter()
        .map(|c| {
            let text = chars
                .slice(&example.context, c.start_char, c.end_char)
                .unwrap_or_default()
                .to_string();
            (
                NBestEntry {
                    text,
                    probability: 0.0,
                    start_logit: c.start_logit,
                    end_logit: c.end_logit,
                    offsets: [c.start_char, c.end_char],
                },
                c.score,
            )
        })
        .collect();
    // utils_qa's guard against having nothing to offer.
    if nbest.is_empty() || (nbest.len() == 1 && nbest[0].0.text.is_empty()) {
        nbest.insert(
            0,
            (
                NBestEntry {
                    text: "empty".into(),
                    probability: 0.0,
                    start_logit: 0.0,
                    end_logit: 0.0,
                    offsets: [0, 0],
                },
                0.0,
            ),
        );
    }
    // Softmax over the kept candidates' scores.
    let mut probs: Vec<f32> = nbest.iter().map(|(_, s)| *s).collect();
    softmax_in_place(&mut probs);
    for ((entry, _), p) in nbest.iter_mut().zip(probs) {
        entry.probability = p;
    }
    let nbest: Vec<NBestEntry> = nbest.into_iter().map(|(e, _)| e).collect();

    let id = example.id.to_string();
    if !v2 {
        return ExampleDecoding {
            id,
            text: nbest[0].text.clone(),
            nbest,
            score_diff: None,
            best_non_null: None,
        };
    }
    let null_score = null.map_or(0.0, |c| c.score);
    let best = nbest.iter().find(|e| !e.text.is_empty());
    let (score_diff, best_text) = match best {
        Some(b) => (null_score - b.start_logit - b.end_logit, b.text.clone()),
        // Only the null answer is possible.
        None => (f32::INFINITY, String::new()),
    };
    let text = if score_diff > config.null_score_diff_threshold {
        String::new()
    } else {
        best_text.clone()
    };
    ExampleDecoding {
        id,
        text,
        nbest,
        score_diff: Some(score_diff),
        best_non_null: Some(best_text),
    }
}

impl Decoded {
    /// id → final answer text.
    pub fn predictions(&self) -> HashMap<String, String> {
        self.examples
            .iter()
            .map(|e| (e.id.clone(), e.text.clone()))
            .collect()
    }

    /// id → best non-null answer (v2), for the best-threshold search.
    pub fn best_non_null(&self) -> HashMap<String, String> {
        self.examples
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    e.best_non_null.clone().unwrap_or_else(|| e.text.clone()),
                )
            })
            .collect()
    }

    /// (id, score_diff) in example order (v2; empty otherwise).
    pub fn null_odds(&self) -> Vec<(String, f64)> {
        self.examples
            .iter()
            .filter_map(|e| e.score_diff.map(|d| (e.id.clone(), f64::from(d))))
            .collect()
    }

    /// Writes `predictions.json`, `nbest_predictions.json` and (v2) `null_odds.json` under
    /// `dir`, each name prefixed with `prefix` (run_qa uses "eval_"). Each object is written
    /// entry by entry, in the order `serde_json`'s map would hold them, so that a large
    /// evaluation never holds a second, JSON-value copy of its n-best lists.
    pub fn write(&self, dir: &Path, prefix: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| WriteError {
            path: dir.to_path_buf(),
            source,
        })?;
        // As `serde_json`'s map (insertion-ordered in this build) keeps them: each id where it
        // first came, with its last decoding.
        let last: HashMap<&str, &ExampleDecoding> =
            self.examples.iter().map(|e| (e.id.as_str(), e)).collect();
        let mut seen = std::collections::HashSet::new();
        let by_id: Vec<&ExampleDecoding> = self
            .examples
            .iter()
            .filter(|e| seen.insert(e.id.as_str()))
            .map(|e| last[e.id.as_str()])
            .collect();
        let entries = |value: fn(&ExampleDecoding) -> Option<serde_json::Value>| {
            Entries::new(
                by_id
                    .iter()
                    .filter_map(move |e| value(e).map(|v| (e.id.as_str(), v))),
            )
        };
        write_json(
            &dir.join(format!("{prefix}predictions.json")),
            &entries(|e| Some(e.text.clone().into())),
        )?;
        write_json(
            &dir.join(format!("{prefix}nbest_predictions.json")),
            &entries(|e| Some(serde_json::to_value(&e.nbest).expect("n-best entries serialize"))),
        )?;
        // JSON has no infinity: a span-less example gets a large finite value.
        let odds = |e: &ExampleDecoding| {
            e.score_diff
                .map(|d| if d.is_finite() { f64::from(d) } else { 1e9 }.into())
        };
        if by_id.iter().any(|e| e.score_diff.is_some()) {
            write_json(&dir.join(format!("{prefix}null_odds.json")), &entries(odds))?;
        }
        Ok(())
    }
}

/// A JSON object serialized from an iterator of entries, one at a time (serialized once).
struct Entries<I>(std::cell::RefCell<Option<I>>);

impl<I> Entries<I> {
    fn new(entries: I) -> Self {
        Self(std::cell::RefCell::new(Some(entries)))
    }
}

impl<'a, I: Iterator<Item = (&'a str, serde_json::Value)>> Serialize for Entries<I> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let entries = self.0.borrow_mut().take();
        serializer.collect_map(entries.into_iter().flatten())
    }
}

/// Pretty JSON with a final newline, written whole or not at all.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    Ok(write_atomically(path, |out| {
        serde_json::to_writer_pretty(&mut *out, value)?;
        out.write_all(b"\n")
    })?)
}

/// Numerically stable softmax, overwriting `x`.
pub(crate) fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files are what `serde_json` maps of the same entries give, byte for byte: ids where
    /// they first came, of a repeated id the last decoding, infinite null odds as 1e9.
    #[test]
    fn prediction_files_equal_json_maps_of_the_same_entries() {
        let example = |id: &str, text: &str, score_diff: Option<f32>| ExampleDecoding {
            id: id.into(),
            text: text.into(),
            nbest: vec![NBestEntry {
                text: text.into(),
                probability: 0.3,
                start_logit: 1.25,
                end_logit: -0.1,
                offsets: [3, 7],
            }],
            score_diff,
            best_non_null: None,
        };
        let decoded = Decoded {
            examples: vec![
                example("q10", "ten", Some(0.5)),
                example("q2", "two", Some(f32::INFINITY)),
                example("q10", "ten again", Some(-1.5)),
                example("a", "", None),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        decoded.write(dir.path(), "eval_").unwrap();
        let mut predictions = serde_json::Map::new();
        let mut nbest = serde_json::Map::new();
        let mut odds = serde_json::Map::new();
        for e in &decoded.examples {
            predictions.insert(e.id.clone(), e.text.clone().into());
            nbest.insert(e.id.clone(), serde_json::to_value(&e.nbest).unwrap());
            if let Some(d) = e.score_diff {
                let d = if d.is_finite() { f64::from(d) } else { 1e9 };
                odds.insert(e.id.clone(), d.into());
            }
        }
        for (file, map) in [
            ("eval_predictions.json", predictions),
            ("eval_nbest_predictions.json", nbest),
            ("eval_null_odds.json", odds),
        ] {
            let want = serde_json::to_string_pretty(&map).unwrap() + "\n";
            let got = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert_eq!(got, want, "{file}");
        }
    }

    #[test]
    fn top_k_is_ordered_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 3.0, 2.0, 3.0, -1.0], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }
}
