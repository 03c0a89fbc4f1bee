//! The official SQuAD evaluation scripts (`evaluate-v1.1.py`, `evaluate-v2.0.py`) in Rust.
//!
//! Ids are compared by their text form, so the integer ids of COVID-QA match the string keys of a
//! predictions file (the Python scripts would silently score such files 0).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{read_json, EvalError, Result};
use crate::normalize::{exact_match, f1_score, normalize_answer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SquadVersion {
    V1,
    V2,
}

/// One gold question: its id (as text) and its gold answer texts, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldQuestion {
    pub id: String,
    pub answers: Vec<String>,
}

/// The gold side of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Gold {
    pub questions: Vec<GoldQuestion>,
    /// The data file's `version` field, when it has one.
    pub version: Option<String>,
}

impl Gold {
    /// Reads a SQuAD-layout file (`data[].paragraphs[].qas[]`) the way the official scripts do:
    /// every question counts, whatever its content.
    pub fn from_squad_file(path: &Path) -> Result<Self> {
        let root = read_json(path)?;
        let version = root.get("version").map(|v| match v.as_str() {
            Some(s) => s.to_string(),
            None => v.to_string(),
        });
        let bad = |what: &str| EvalError::format(path, what.to_string());
        let mut questions = Vec::new();
        for article in root
            .get("data")
            .and_then(|d| d.as_array())
            .ok_or_else(|| bad("expected a SQuAD file with a \"data\" list"))?
        {
            for paragraph in article
                .get("paragraphs")
                .and_then(|p| p.as_array())
                .ok_or_else(|| bad("an article has no \"paragraphs\" list"))?
            {
                for qa in paragraph
                    .get("qas")
                    .and_then(|q| q.as_array())
                    .ok_or_else(|| bad("a paragraph has no \"qas\" list"))?
                {
                    let id = match qa.get("id") {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(serde_json::Value::Number(n)) => n.to_string(),
                        _ => return Err(bad("a question has no string or integer \"id\"")),
                    };
                    let answers = match qa.get("answers") {
                        Some(serde_json::Value::Array(a)) => a
                            .iter()
                            .map(|ans| {
                                ans.get("text")
                                    .and_then(|t| t.as_str())
                                    .map(str::to_string)
                                    .ok_or_else(|| {
                                        EvalError::format(
                                            path,
                                            format!("question {id}: an answer has no \"text\""),
                                        )
                                    })
                            })
                            .collect::<Result<Vec<_>>>()?,
                        None | Some(serde_json::Value::Null) => Vec::new(),
                        Some(_) => {
                            return Err(EvalError::format(
                                path,
                                format!("question {id}: \"answers\" must be a list"),
                            ))
                        }
                    };
                    questions.push(GoldQuestion { id, answers });
                }
            }
        }
        Ok(Self { questions, version })
    }

    /// Gold answers of already-loaded examples (the in-pipeline evaluation).
    pub fn from_examples(examples: &[qa_data::Example]) -> Self {
        Self {
            questions: examples
                .iter()
                .map(|e| GoldQuestion {
                    id: e.id.to_string(),
                    answers: e.answers.iter().map(|a| a.text.clone()).collect(),
                })
                .collect(),
            version: None,
        }
    }

    /// v2.0 when the file says so or any question has no answer.
    pub fn guess_version(&self) -> SquadVersion {
        match self.version.as_deref() {
            Some(v) if v.trim_start_matches('v').starts_with('2') => SquadVersion::V2,
            Some(v) if v.trim_start_matches('v').starts_with('1') => SquadVersion::V1,
            _ if self.questions.iter().any(|q| q.answers.is_empty()) => SquadVersion::V2,
            _ => SquadVersion::V1,
        }
    }
}

/// Reads an `id → string` (predictions) or `id → number` (null odds) JSON object.
pub fn read_id_map<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<(String, T)>> {
    match read_json(path)? {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| {
                let parsed = serde_json::from_value(v).map_err(|e| {
                    EvalError::format(path, format!("value for id {k} has the wrong type: {e}"))
                })?;
                Ok((k, parsed))
            })
            .collect(),
        _ => Err(EvalError::format(
            path,
            "expected a JSON object {id: value}",
        )),
    }
}

/// `evaluate-v1.1.py`'s result, plus what it only printed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct V1Result {
    pub exact_match: f64,
    pub f1: f64,
    /// Gold questions with no prediction (scored 0, as the official script does).
    #[serde(skip)]
    pub missing: Vec<String>,
}

pub fn evaluate_v1(gold: &Gold, predictions: &HashMap<String, String>) -> V1Result {
    let (mut em, mut f1) = (0.0, 0.0);
    let mut missing = Vec::new();
    for q in &gold.questions {
        let Some(pred) = predictions.get(&q.id) else {
            missing.push(q.id.clone());
            continue;
        };
        em += max_over(&q.answers, |g| exact_match(pred, g));
        f1 += max_over(&q.answers, |g| f1_score(pred, g, SquadVersion::V1));
    }
    let total = gold.questions.len().max(1) as f64;
    V1Result {
        exact_match: 100.0 * em / total,
        f1: 100.0 * f1 / total,
        missing,
    }
}

fn max_over(golds: &[String], score: impl Fn(&str) -> f64) -> f64 {
    golds.iter().map(|g| score(g)).fold(0.0, f64::max)
}

/// `evaluate-v2.0.py`'s output, keys in its order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct V2Result {
    #[serde(rename = "exact")]
    pub exact: f64,
    #[serde(rename = "f1")]
    pub f1: f64,
    #[serde(rename = "total")]
    pub total: usize,
    #[serde(rename = "HasAns_exact", skip_serializing_if = "Option::is_none")]
    pub has_ans_exact: Option<f64>,
    #[serde(rename = "HasAns_f1", skip_serializing_if = "Option::is_none")]
    pub has_ans_f1: Option<f64>,
    #[serde(rename = "HasAns_total", skip_serializing_if = "Option::is_none")]
    pub has_ans_total: Option<usize>,
    #[serde(rename = "NoAns_exact", skip_serializing_if = "Option::is_none")]
    pub no_ans_exact: Option<f64>,
    #[serde(rename = "NoAns_f1", skip_serializing_if = "Option::is_none")]
    pub no_ans_f1: Option<f64>,
    #[serde(rename = "NoAns_total", skip_serializing_if = "Option::is_none")]
    pub no_ans_total: Option<usize>,
    #[serde(rename = "best_exact", skip_serializing_if = "Option::is_none")]
    pub best_exact: Option<f64>,
    #[serde(rename = "best_exact_thresh", skip_serializing_if = "Option::is_none")]
    pub best_exact_thresh: Option<f64>,
    #[serde(rename = "best_f1", skip_serializing_if = "Option::is_none")]
    pub best_f1: Option<f64>,
    #[serde(rename = "best_f1_thresh", skip_serializing_if = "Option::is_none")]
    pub best_f1_thresh: Option<f64>,
    #[serde(skip)]
    pub missing: Vec<String>,
}

/// The official v2.0 evaluation. `na_probs` (id → probability of "no answer", in file order)
/// enables the threshold and the best-threshold search; `na_prob_thresh` defaults to 1.0.
///
/// The official script crashes on missing predictions; here they score 0 and are listed.
pub fn evaluate_v2(
    gold: &Gold,
    predictions: &HashMap<String, String>,
    na_probs: Option<&[(String, f64)]>,
    na_prob_thresh: f64,
) -> V2Result {
    let n = gold.questions.len();
    let mut missing = Vec::new();
    let mut has_ans = Vec::with_capacity(n);
    let mut exact_raw = Vec::with_capacity(n);
    let mut f1_raw = Vec::with_capacity(n);
    for q in &gold.questions {
        has_ans.push(!q.answers.is_empty());
        let mut golds: Vec<&str> = q
            .answers
            .iter()
            .map(String::as_str)
            .filter(|a| !normalize_answer(a).is_empty())
            .collect();
        if golds.is_empty() {
            golds.push("");
        }
        match predictions.get(&q.id) {
            Some(pred) => {
                exact_raw.push(
                    golds
                        .iter()
                        .map(|g| exact_match(pred, g))
                        .fold(0.0, f64::max),
                );
                f1_raw.push(
                    golds
                        .iter()
                        .map(|g| f1_score(pred, g, SquadVersion::V2))
                        .fold(0.0, f64::max),
                );
            }
            None => {
                missing.push(q.id.clone());
                exact_raw.push(0.0);
                f1_raw.push(0.0);
            }
        }
    }
    let na_lookup: HashMap<&str, f64> = na_probs
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let thresholded = |raw: &[f64]| -> Vec<f64> {
        gold.questions
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let na = na_lookup.get(q.id.as_str()).copied().unwrap_or(0.0);
                if na > na_prob_thresh {
                    f64::from(!has_ans[i])
                } else {
                    raw[i]
                }
            })
            .collect()
    };
    let exact = thresholded(&exact_raw);
    let f1 = thresholded(&f1_raw);
    let mean = |v: &[f64], pick: &dyn Fn(usize) -> bool| -> (f64, usize) {
        let idx: Vec<usize> = (0..n).filter(|&i| pick(i)).collect();
        let s: f64 = idx.iter().map(|&i| v[i]).sum();
        (100.0 * s / idx.len().max(1) as f64, idx.len())
    };
    let (exact_all, total) = mean(&exact, &|_| true);
    let (f1_all, _) = mean(&f1, &|_| true);
    let mut result = V2Result {
        exact: exact_all,
        f1: f1_all,
        total,
        has_ans_exact: None,
        has_ans_f1: None,
        has_ans_total: None,
        no_ans_exact: None,
        no_ans_f1: None,
        no_ans_total: None,
        best_exact: None,
        best_exact_thresh: None,
        best_f1: None,
        best_f1_thresh: None,
        missing,
    };
    if has_ans.iter().any(|&h| h) {
        let (e, t) = mean(&exact, &|i| has_ans[i]);
        result.has_ans_exact = Some(e);
        result.has_ans_f1 = Some(mean(&f1, &|i| has_ans[i]).0);
        result.has_ans_total = Some(t);
    }
    if has_ans.iter().any(|&h| !h) {
        let (e, t) = mean(&exact, &|i| !has_ans[i]);
        result.no_ans_exact = Some(e);
        result.no_ans_f1 = Some(mean(&f1, &|i| !has_ans[i]).0);
        result.no_ans_total = Some(t);
    }
    if let Some(na_probs) = na_probs {
        let index: HashMap<&str, usize> = gold
            .questions
            .iter()
            .enumerate()
            .map(|(i, q)| (q.id.as_str(), i))
            .collect();
        let walk = |raw: &[f64]| find_best_thresh(na_probs, &index, raw, &has_ans, predictions);
        let (be, bet) = walk(&exact_raw);
        let (bf, bft) = walk(&f1_raw);
        result.best_exact = Some(be);
        result.best_exact_thresh = Some(bet);
        result.best_f1 = Some(bf);
        result.best_f1_thresh = Some(bft);
    }
    result
}

/// The official `find_best_thresh`: walk questions by increasing no-answer probability, moving
/// each from "no answer" to "answered", and keep the best running score.
fn find_best_thresh(
    na_probs: &[(String, f64)],
    index: &HashMap<&str, usize>,
    raw: &[f64],
    has_ans: &[bool],
    predictions: &HashMap<String, String>,
) -> (f64, f64) {
    let num_no_ans = has_ans.iter().filter(|&&h| !h).count() as f64;
    let mut current = num_no_ans;
    let mut best = current;
    let mut best_thresh = 0.0;
    let mut order: Vec<&(String, f64)> = na_probs.iter().collect();
    // Python's sort is stable: ties keep the file's order.
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (qid, prob) in order {
        let Some(&i) = index.get(qid.as_str()) else {
            continue;
        };
        let diff = if has_ans[i] {
            raw[i]
        } else if predictions.get(qid).is_some_and(|p| !p.is_empty()) {
            -1.0
        } else {
            0.0
        };
        current += diff;
        if current > best {
            best = current;
            best_thresh = *prob;
        }
    }
    (100.0 * best / raw.len().max(1) as f64, best_thresh)
}
