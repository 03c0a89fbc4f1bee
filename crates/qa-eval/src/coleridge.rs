//! The Coleridge Initiative "Show US the Data" score used by DEFNLP: per publication, predicted
//! dataset labels are matched one-to-one to gold labels by word-set Jaccard ≥ 0.5, then a micro
//! F-beta (β = 0.5) over all publications.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{EvalError, Result};

/// The competition's `clean_text` (defined with the DEFNLP data, which the fixture generator
/// shares).
pub use qa_data::defnlp::clean_label;

/// Word-set Jaccard similarity (0 when both are empty).
pub fn jaccard(a: &str, b: &str) -> f64 {
    let a: HashSet<&str> = a.split_whitespace().collect();
    let b: HashSet<&str> = b.split_whitespace().collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ColeridgeScore {
    pub fbeta: f64,
    pub precision: f64,
    pub recall: f64,
    pub tp: usize,
    pub fp: usize,
    pub r#fn: usize,
    pub publications: usize,
    /// Gold publications the submission has no row for (their labels count as misses).
    pub missing_publications: Vec<String>,
    /// Submission rows for publications that are not in the gold file (ignored).
    pub unknown_publications: Vec<String>,
}

/// Counts (tp, fp, fn) for one publication. Predictions are cleaned, de-duplicated and taken in
/// alphabetical order; each takes the unmatched gold label it overlaps most (ties: first gold).
pub fn match_publication(predicted: &[String], gold: &[String]) -> (usize, usize, usize) {
    let preds: BTreeSet<String> = predicted
        .iter()
        .map(|p| clean_label(p))
        .filter(|p| !p.is_empty())
        .collect();
    let gold: Vec<String> = {
        let mut seen = BTreeSet::new();
        gold.iter()
            .map(|g| clean_label(g))
            .filter(|g| !g.is_empty() && seen.insert(g.clone()))
            .collect()
    };
    let mut matched = vec![false; gold.len()];
    let (mut tp, mut fp) = (0, 0);
    for p in &preds {
        let best = gold
            .iter()
            .enumerate()
            .filter(|(i, _)| !matched[*i])
            .map(|(i, g)| (i, jaccard(p, g)))
            .fold(None, |best: Option<(usize, f64)>, (i, s)| match best {
                Some((_, bs)) if bs >= s => best,
                _ => Some((i, s)),
            });
        match best {
            Some((i, s)) if s >= 0.5 => {
                matched[i] = true;
                tp += 1;
            }
            _ => fp += 1,
        }
    }
    let fn_ = matched.iter().filter(|m| !**m).count();
    (tp, fp, fn_)
}

/// Scores `id → predicted labels` against `id → gold labels`.
pub fn score(
    gold: &BTreeMap<String, Vec<String>>,
    predicted: &BTreeMap<String, Vec<String>>,
    beta: f64,
) -> ColeridgeScore {
    let mut s = ColeridgeScore {
        publications: gold.len(),
        ..Default::default()
    };
    for (id, labels) in gold {
        let preds = match predicted.get(id) {
            Some(p) => p.as_slice(),
            None => {
                s.missing_publications.push(id.clone());
                &[]
            }
        };
        let (tp, fp, fn_) = match_publication(preds, labels);
        s.tp += tp;
        s.fp += fp;
        s.r#fn += fn_;
    }
    s.unknown_publications = predicted
        .keys()
        .filter(|id| !gold.contains_key(*id))
        .cloned()
        .collect();
    let b2 = beta * beta;
    let tp = s.tp as f64;
    let denom = (1.0 + b2) * tp + b2 * s.r#fn as f64 + s.fp as f64;
    s.fbeta = if denom > 0.0 {
        (1.0 + b2) * tp / denom
    } else {
        0.0
    };
    s.precision = if s.tp + s.fp > 0 {
        tp / (s.tp + s.fp) as f64
    } else {
        0.0
    };
    s.recall = if s.tp + s.r#fn > 0 {
        tp / (s.tp + s.r#fn) as f64
    } else {
        0.0
    };
    s
}

/// Reads labels per publication from a CSV: either the training layout (`Id` + `cleaned_label`
/// or `dataset_label`, one row per label) or a submission (`Id,PredictionString`, labels `|`-joined).
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let csv_err = |source| EvalError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let headers = reader.headers().map_err(csv_err)?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let id_col = col("Id").ok_or_else(|| EvalError::format(path, "no \"Id\" column"))?;
    let (label_col, joined) = match (
        col("PredictionString"),
        col("cleaned_label"),
        col("dataset_label"),
    ) {
        (Some(c), _, _) => (c, true),
        (None, Some(c), _) | (None, None, Some(c)) => (c, false),
        _ => {
            return Err(EvalError::format(
                path,
                "no label column (PredictionString, cleaned_label or dataset_label)",
            ))
        }
    };
    let mut labels: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in reader.records() {
        let row = row.map_err(csv_err)?;
        let id = row.get(id_col).unwrap_or_default().to_string();
        let cell = row.get(label_col).unwrap_or_default();
        let entry = labels.entry(id).or_default();
        if joined {
            entry.extend(
                cell.split('|')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        } else if !cell.trim().is_empty() {
            entry.push(cell.to_string());
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cleaning_and_jaccard() {
        assert_eq!(clean_label("  ECLS-K (2011)!"), "ecls k 2011");
        assert_eq!(
            jaccard("national education study", "national study"),
            2.0 / 3.0
        );
        assert_eq!(jaccard("", ""), 0.0);
    }

    #[test]
    fn one_to_one_matching() {
        // "adni" matches; the duplicate prediction cannot match the same gold again.
        assert_eq!(
            match_publication(&v(&["ADNI", "adni"]), &v(&["adni"])),
            (1, 0, 0)
        );
        // Two predictions for one gold label: the second is a false positive.
        assert_eq!(
            match_publication(&v(&["adni study", "adni"]), &v(&["adni"])),
            (1, 1, 0)
        );
        // Below threshold: 1/3 overlap → miss and false positive.
        assert_eq!(
            match_publication(&v(&["census data set"]), &v(&["census"])),
            (0, 1, 1)
        );
        assert_eq!(match_publication(&[], &v(&["a b", "c"])), (0, 0, 2));
    }

    #[test]
    fn micro_f_half() {
        let gold: BTreeMap<_, _> = [
            ("p1".to_string(), v(&["adni"])),
            ("p2".to_string(), v(&["nhanes", "arms"])),
        ]
        .into_iter()
        .collect();
        let pred: BTreeMap<_, _> = [
            ("p1".to_string(), v(&["adni", "wrong"])),
            ("p3".to_string(), v(&["x"])),
        ]
        .into_iter()
        .collect();
        let s = score(&gold, &pred, 0.5);
        // tp 1, fp 1, fn 2 → F0.5 = 1.25 / (1.25 + 0.25·2 + 1) = 0.4545…
        assert_eq!((s.tp, s.fp, s.r#fn), (1, 1, 2));
        assert!((s.fbeta - 1.25 / 2.75).abs() < 1e-12);
        assert_eq!(s.missing_publications, v(&["p2"]));
        assert_eq!(s.unknown_publications, v(&["p3"]));
    }
}
