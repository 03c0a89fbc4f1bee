//! One question over many documents (a retriever's passages), as Haystack's and FARM's readers
//! answer it.
//!
//! Each document becomes an example (the question with the document as context) and its windows
//! are decoded as `utils_qa` decodes the windows of one example: the [`N_BEST`] best starts and
//! ends of each window, spans inside the context of at most `max_answer_len` tokens, scored by
//! start + end logit. The candidates of all documents are then pooled and ranked by that score,
//! so a span ranks across documents exactly as it would across the windows of one long context.
//!
//! * `score` is the candidate's softmax probability over the whole pool (the no-answer
//!   candidate included when it competes): scores compare across documents and across
//!   requests' answers, and order exactly as the logits do.
//! * Near-duplicates — a span overlapping a better one in the same document, or with the same
//!   normalized text (SQuAD normalisation) as a better one — are merged into the better one,
//!   which keeps its own rank and score. (The pipeline adds merged scores; here that would let
//!   two mediocre spans outrank the best one, and ranking would no longer be the logit rule.)
//! * With `handle_impossible_answer`, the no-answer candidate (the smallest [CLS] start + end
//!   logit of any window of any document, as `utils_qa` takes it over windows) competes in the
//!   pool; with a `null_threshold`, run_qa's rule decides instead: "" first when it beats the
//!   best span by more than the threshold, left out otherwise.
//! * With `align_to_words`, spans are widened to whole words (as the pipeline widens them)
//!   before duplicates are found.

use serde::Serialize;

use qa_data::align::CharIndex;
use qa_data::requests::request_example;
pub use qa_data::requests::Document;
use qa_data::{Example, ExampleId, Feature};

use crate::decode::{softmax_in_place, top_k, windows_by_example, WindowLogits};
use crate::error::{EvalError, Result};
use crate::normalize::normalize_answer;
use crate::pipeline::{word_span, PipelineConfig};

/// Starts and ends kept per window (`utils_qa`'s `n_best_size` default).
pub const N_BEST: usize = 20;

/// The document an answer was found in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentRef {
    /// Position in the request's list.
    pub index: usize,
    pub id: Option<String>,
}

/// One answer over many documents: `start`/`end` are char offsets into its document;
/// `document` is `None` for the no-answer ("").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentAnswer {
    pub score: f64,
    pub start: usize,
    pub end: usize,
    pub answer: String,
    pub document: Option<DocumentRef>,
}

/// The examples to cut into windows: `question` about each document, in order (ids 0, 1, ...).
pub fn document_examples(question: &str, documents: &[Document]) -> Vec<Example> {
    documents
        .iter()
        .enumerate()
        .map(|(i, d)| request_example(ExampleId::Number(i as i64), question, &d.text))
        .collect()
}

/// A scored span of one window.
struct Candidate {
    window: usize,
    start_token: usize,
    end_token: usize,
    logit: f32,
}

/// The best `top_k` answers to one question over `documents`, best first. `examples` are
/// [`document_examples`]; `features` their windows, `logits` the windows' logits.
pub fn document_answers(
    documents: &[Document],
    examples: &[Example],
    features: &[Feature],
    logits: &[WindowLogits],
    config: &PipelineConfig,
) -> Result<Vec<DocumentAnswer>> {
    if config.top_k == 0 || config.max_answer_len == 0 {
        return Err(EvalError::Decode(
            "top_k and max_answer_len must be at least 1".into(),
        ));
    }
    if examples.len() != documents.len() {
        return Err(EvalError::Decode(format!(
            "{} documents but {} examples",
            documents.len(),
            examples.len()
        )));
    }
    // Checks that windows, logits and examples fit together.
    windows_by_example(examples.len(), features, logits)?;
    let mut pool: Vec<Candidate> = Vec::new();
    let mut null_logit: Option<f32> = None;
    for (window, (feature, (start_logits, end_logits))) in features.iter().zip(logits).enumerate() {
        if config.align_to_words && feature.word_ids.is_empty() {
            return Err(EvalError::Decode(format!(
                "document {}: aligning answers to words needs features built with word_ids",
                feature.example_index
            )));
        }
        let n = feature.len();
        let (start_logits, end_logits) = (&start_logits[..n], &end_logits[..n]);
        let cls = start_logits[0] + end_logits[0];
        null_logit = Some(null_logit.map_or(cls, |best: f32| best.min(cls)));
        let context = |t: &usize| feature.offsets[*t].is_some();
        let starts: Vec<usize> = top_k(start_logits, N_BEST)
            .into_iter()
            .filter(context)
            .collect();
        let ends: Vec<usize> = top_k(end_logits, N_BEST)
            .into_iter()
            .filter(context)
            .collect();
        for &s in &starts {
            for &e in ends
                .iter()
                .filter(|&&e| e >= s && e - s < config.max_answer_len)
            {
                pool.push(Candidate {
                    window,
                    start_token: s,
                    end_token: e,
                    logit: start_logits[s] + end_logits[e],
                });
            }
        }
    }
    // Stable: ties keep document and window order.
    pool.sort_by(|a, b| b.logit.total_cmp(&a.logit));

    let null_competes = config.handle_impossible_answer && null_logit.is_some();
    let mut probabilities: Vec<f32> = pool.iter().map(|c| c.logit).collect();
    if null_competes {
        probabilities.extend(null_logit);
    }
    softmax_in_place(&mut probabilities);
    let null_answer = || DocumentAnswer {
        score: probabilities.last().copied().unwrap_or(0.0) as f64,
        start: 0,
        end: 0,
        answer: String::new(),
        document: None,
    };

    let mut char_indices: Vec<Option<CharIndex>> = vec![None; examples.len()];
    let mut answers: Vec<DocumentAnswer> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut null_placed = !null_competes;
    if let (true, Some(threshold), Some(null)) = (null_competes, config.null_threshold, null_logit)
    {
        let best_span = pool.first().map_or(f32::NEG_INFINITY, |c| c.logit);
        if null - best_span > threshold {
            answers.push(null_answer());
        }
        null_placed = true;
    }
    for (rank, candidate) in pool.iter().enumerate() {
        if answers.len() == config.top_k {
            break;
        }
        if !null_placed && null_logit.is_some_and(|null| null > candidate.logit) {
            answers.push(null_answer());
            keys.push(String::new());
            null_placed = true;
            if answers.len() == config.top_k {
                break;
            }
        }
        let feature = &features[candidate.window];
        let index = feature.example_index;
        let (s, e) = (candidate.start_token, candidate.end_token);
        let offsets = |t: usize| feature.offsets[t].expect("candidates are context tokens");
        let (start, end) = if config.align_to_words {
            word_span(feature, s, e).unwrap_or((offsets(s).0, offsets(e).1))
        } else {
            (offsets(s).0, offsets(e).1)
        };
        let context = &examples[index].context;
        // Built once per document that has a candidate looked at, not once per candidate.
        let chars = char_indices[index].get_or_insert_with(|| CharIndex::new(context));
        let text = chars
            .slice(context, start, end)
            .unwrap_or_default()
            .to_string();
        let key = normalize_answer(&text);
        let duplicate = answers.iter().zip(&keys).any(|(kept, kept_key)| {
            let overlaps = kept.document.as_ref().is_some_and(|d| d.index == index)
                && start < kept.end
                && kept.start < end;
            overlaps || (kept.document.is_some() && *kept_key == key)
        });
        if duplicate {
            continue;
        }
        answers.push(DocumentAnswer {
            score: probabilities[rank] as f64,
            start,
            end,
            answer: text,
            document: Some(DocumentRef {
                index,
                id: documents[index].id.clone(),
            }),
        });
        keys.push(key);
    }
    if !null_placed && answers.len() < config.top_k {
        answers.push(null_answer());
    }
    Ok(answers)
}
