//! Answers as the Hugging Face `question-answering` pipeline gives them.
//!
//! This differs from run_qa's decoding ([`crate::decode`]) on purpose, because users compare
//! `qa predict` with the pipeline: each window's start and end logits are turned into
//! probabilities over that window's context tokens (and [CLS]); a span scores
//! `p(start) · p(end)`; the best `2k + 10` spans of every window are widened to whole words;
//! answers with the same text (ignoring case) are merged by adding their scores, across windows
//! too. With `handle_impossible_answer`, "" competes with the smallest [CLS]·[CLS] probability
//! of any window; with a `null_threshold` (run_qa's `null_score_diff_threshold`), the logit
//! rule decides instead: "" comes first when `null logit − best span logit` exceeds it, and is
//! left out otherwise.

use serde::Serialize;

use qa_data::{Example, Feature};

use crate::decode::{softmax_in_place, windows_by_example, WindowLogits};
use crate::error::{EvalError, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineConfig {
    pub top_k: usize,
    /// Longest answer in tokens (the pipeline's `max_answer_len`, default 15).
    pub max_answer_len: usize,
    pub handle_impossible_answer: bool,
    /// Widen spans to whole words (needs features built with `FeatureConfig::word_ids`).
    pub align_to_words: bool,
    /// With `handle_impossible_answer`: answer "" (first) when the smallest [CLS] start + end
    /// logit of any window exceeds the best span's start + end logit by more than this, and
    /// leave "" out otherwise (run_qa's `null_score_diff_threshold`, on the scale of `qa eval`'s
    /// `best_f1_thresh`). `None`: "" competes by its probability, as in the pipeline.
    pub null_threshold: Option<f32>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            top_k: 1,
            max_answer_len: 15,
            handle_impossible_answer: false,
            align_to_words: true,
            null_threshold: None,
        }
    }
}

/// The pipeline's answer keys: `start`/`end` are character offsets into the context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineAnswer {
    pub score: f64,
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

/// Logits the pipeline gives to positions that may not be part of an answer.
const MASKED: f32 = -10_000.0;

/// One question's answers as the HF pipeline returns them (and `qa predict --json` and
/// `qa serve` print them): with `top_k` 1 the answer itself, otherwise (or with no answer) a
/// list.
pub fn answer_json(
    answers: &[PipelineAnswer],
    top_k: usize,
) -> std::result::Result<serde_json::Value, serde_json::Error> {
    match answers {
        [one] if top_k == 1 => serde_json::to_value(one),
        _ => serde_json::to_value(answers),
    }
}

/// The best `top_k` answers of every example, best first. An example without windows (its
/// question left no room for context) gets no answers.
pub fn pipeline_answers(
    examples: &[Example],
    features: &[Feature],
    logits: &[WindowLogits],
    config: &PipelineConfig,
) -> Result<Vec<Vec<PipelineAnswer>>> {
    if config.top_k == 0 || config.max_answer_len == 0 {
        return Err(EvalError::Decode(
            "top_k and max_answer_len must be at least 1".into(),
        ));
    }
    let by_example = windows_by_example(examples.len(), features, logits)?;
    examples
        .iter()
        .zip(&by_example)
        .map(|(example, windows)| {
            let windows: Vec<(&Feature, &WindowLogits)> = windows
                .iter()
                .map(|&w| (&features[w], &logits[w]))
                .collect();
            example_answers(example, &windows, config)
        })
        .collect()
}

/// Char span of the context words holding tokens `s` and `e`, as `word_to_chars` gives it
/// (the words' tokens inside this window).
pub(crate) fn word_span(feature: &Feature, s: usize, e: usize) -> Option<(usize, usize)> {
    let words = &feature.word_ids;
    let (ws, we) = (words.get(s).copied()??, words.get(e).copied()??);
    let mut first = s;
    while first > 0 && words[first - 1] == Some(ws) {
        first -= 1;
    }
    let mut last = e;
    while last + 1 < words.len() && words[last + 1] == Some(we) {
        last += 1;
    }
    Some((feature.offsets[first]?.0, feature.offsets[last]?.1))
}

fn example_answers(
    example: &Example,
    windows: &[(&Feature, &WindowLogits)],
    config: &PipelineConfig,
) -> Result<Vec<PipelineAnswer>> {
    let chars = qa_data::align::CharIndex::new(&example.context);
    let per_window = if config.align_to_words {
        // Some spans merge once widened to words.
        2 * config.top_k + 10
    } else {
        config.top_k
    };
    let mut answers: Vec<PipelineAnswer> = Vec::new();
    // `answers[i].answer` lowercased: duplicates are found by this key.
    let mut keys: Vec<String> = Vec::new();
    let mut min_null = f32::INFINITY;
    // The logit rule's two sides, for `null_threshold`.
    let mut min_null_logit = f32::INFINITY;
    let mut best_span_logit = f32::NEG_INFINITY;
    for &(feature, (start_logits, end_logits)) in windows {
        if config.align_to_words && feature.word_ids.is_empty() {
            return Err(EvalError::Decode(format!(
                "example {}: aligning answers to words needs features built with word_ids",
                example.id
            )));
        }
        let n = feature.len();
        // Context tokens and [CLS] (index 0; BERT-family models put it first).
        let allowed: Vec<bool> = (0..n)
            .map(|t| (t == 0 || feature.offsets[t].is_some()) && feature.attention_mask[t] == 1)
            .collect();
        let masked = |logits: &[f32]| -> Vec<f32> {
            let mut p: Vec<f32> = logits[..n]
                .iter()
                .zip(&allowed)
                .map(|(&l, &ok)| if ok { l } else { MASKED })
                .collect();
            softmax_in_place(&mut p);
            p
        };
        let (mut p_start, mut p_end) = (masked(start_logits), masked(end_logits));
        min_null = min_null.min(p_start[0] * p_end[0]);
        min_null_logit = min_null_logit.min(start_logits[0] + end_logits[0]);
        p_start[0] = 0.0;
        p_end[0] = 0.0;

        let mut spans: Vec<(usize, usize, f32)> = Vec::new();
        for s in (1..n).filter(|&s| allowed[s]) {
            // Saturating: a huge max_answer_len means "any length", never a wrap to nothing.
            for e in (s..n.min(s.saturating_add(config.max_answer_len))).filter(|&e| allowed[e]) {
                best_span_logit = best_span_logit.max(start_logits[s] + end_logits[e]);
                let score = p_start[s] * p_end[e];
                if score > 0.0 {
                    spans.push((s, e, score));
                }
            }
        }
        let by_score_desc = |a: &(usize, usize, f32), b: &(usize, usize, f32)| {
            b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1)))
        };
        if spans.len() > per_window {
            spans.select_nth_unstable_by(per_window, by_score_desc);
            spans.truncate(per_window);
        }
        spans.sort_by(by_score_desc);

        for (s, e, score) in spans {
            let offsets = |t: usize| feature.offsets[t].expect("allowed tokens are context tokens");
            let (start, end) = if config.align_to_words {
                word_span(feature, s, e).unwrap_or((offsets(s).0, offsets(e).1))
            } else {
                (offsets(s).0, offsets(e).1)
            };
            let text = chars
                .slice(&example.context, start, end)
                .unwrap_or_default()
                .to_string();
            let key = text.to_lowercase();
            match keys.iter().position(|k| *k == key) {
                Some(same) => answers[same].score += score as f64,
                None => {
                    keys.push(key);
                    answers.push(PipelineAnswer {
                        score: score as f64,
                        start,
                        end,
                        answer: text,
                    });
                }
            }
        }
    }
    let null = PipelineAnswer {
        score: min_null as f64,
        start: 0,
        end: 0,
        answer: String::new(),
    };
    let with_null = config.handle_impossible_answer && !windows.is_empty();
    match config.null_threshold {
        Some(threshold) if with_null => {
            answers.sort_by(|a, b| b.score.total_cmp(&a.score));
            if min_null_logit - best_span_logit > threshold {
                answers.insert(0, null);
            }
        }
        _ => {
            if with_null {
                answers.push(null);
            }
            // Stable, as Python's `sorted`.
            answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
    }
    answers.truncate(config.top_k);
    Ok(answers)
}
