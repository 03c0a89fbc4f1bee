//! Scoring files against files, as the official scripts are run: a SQuAD data file and a
//! predictions file (plus, for v2.0, no-answer probabilities), or Coleridge CSVs. What `qa
//! score` prints; problems the scripts pass over silently are warned about here.

use std::collections::HashMap;
use std::path::Path;

use crate::coleridge;
use crate::error::Result;
use crate::squad::{evaluate_v1, evaluate_v2, read_id_map, Gold, SquadVersion};

/// The official result object of SQuAD scoring.
pub fn score_squad_files(
    data: &Path,
    predictions: &Path,
    na_prob_file: Option<&Path>,
    na_prob_thresh: f64,
    version: Option<SquadVersion>,
) -> Result<serde_json::Value> {
    let gold = Gold::from_squad_file(data)?;
    let predictions: HashMap<String, String> = read_id_map(predictions)?.into_iter().collect();
    let known: std::collections::HashSet<&str> =
        gold.questions.iter().map(|q| q.id.as_str()).collect();
    let unknown = predictions
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .count();
    if unknown > 0 {
        tracing::warn!("{unknown} predictions have ids that are not in the data (ignored)");
    }
    let version = version.unwrap_or_else(|| gold.guess_version());
    let value = match version {
        SquadVersion::V1 => {
            if let Some(path) = na_prob_file {
                tracing::warn!(
                    "{}: no-answer probabilities are ignored when scoring SQuAD v1.1 data",
                    path.display()
                );
            }
            let r = evaluate_v1(&gold, &predictions);
            warn_missing(&r.missing);
            serde_json::to_value(r).expect("results serialize")
        }
        SquadVersion::V2 => {
            let na = match na_prob_file {
                Some(path) => Some(read_id_map::<f64>(path)?),
                None => None,
            };
            if let (Some(path), Some(na)) = (na_prob_file, &na) {
                let has: std::collections::HashSet<&str> =
                    na.iter().map(|(id, _)| id.as_str()).collect();
                let lacking = known.iter().filter(|id| !has.contains(*id)).count();
                if lacking > 0 {
                    tracing::warn!(
                        "{}: {lacking} questions have no no-answer probability (taken as 0)",
                        path.display()
                    );
                }
            }
            let r = evaluate_v2(&gold, &predictions, na.as_deref(), na_prob_thresh);
            warn_missing(&r.missing);
            serde_json::to_value(r).expect("results serialize")
        }
    };
    Ok(value)
}

/// The Coleridge (DEFNLP) score of a submission CSV against the gold `train.csv`.
pub fn score_defnlp_files(gold: &Path, submission: &Path) -> Result<serde_json::Value> {
    let gold = coleridge::read_labels(gold)?;
    let predicted = coleridge::read_labels(submission)?;
    let score = coleridge::score(&gold, &predicted, 0.5);
    if !score.missing_publications.is_empty() {
        tracing::warn!(
            "{} publications have no submission row (their labels count as misses)",
            score.missing_publications.len()
        );
    }
    Ok(serde_json::to_value(score).expect("results serialize"))
}

/// Tunes the DEFNLP merge rule ([`crate::defnlp_merge::tune`]) on the publications of a
/// findings file (`qa predict --defnlp-findings`) against their gold labels (a Coleridge CSV):
/// the rule and its score, as JSON. Publications without gold labels are left out.
pub fn tune_merge_files(gold: &Path, findings: &Path) -> Result<serde_json::Value> {
    let gold = coleridge::read_labels(gold)?;
    let cases: Vec<crate::defnlp_merge::TuningCase> = crate::defnlp::read_findings(findings)?
        .into_iter()
        .filter_map(|(id, found)| {
            Some(crate::defnlp_merge::TuningCase {
                gold: gold.get(&id)?.clone(),
                id,
                matched: found.matched,
                answers: found.answers,
            })
        })
        .collect();
    if cases.is_empty() {
        return Err(crate::error::EvalError::format(
            findings,
            "no publication here has gold labels in the gold file: nothing to tune on",
        ));
    }
    let (rule, score) = crate::defnlp_merge::tune(&cases);
    Ok(serde_json::json!({
        "publications": cases.len(),
        // Two decimals: the grid's steps, without f32's tail (0.6000000238).
        "rule": {
            "min_probability": (f64::from(rule.min_probability) * 100.0).round() / 100.0,
            "max_words": rule.max_words,
        },
        "score": score,
    }))
}

fn warn_missing(missing: &[String]) {
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        tracing::warn!(
            "{} questions have no prediction and score 0 (first: {})",
            missing.len(),
            shown.join(", ")
        );
    }
}
