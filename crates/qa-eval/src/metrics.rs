//! The metrics of one evaluation, assembled in one place for `qa eval` and the trainer, under
//! the official scripts' key names.

use std::collections::BTreeMap;

use qa_data::Example;
use serde::Serialize;

use crate::decode::Decoded;
use crate::squad::{evaluate_v1, evaluate_v2, Gold, SquadVersion};

/// One number an evaluation reports, named as `evaluate-v1.1.py` / `evaluate-v2.0.py` name it.
/// The declaration order is the scripts' output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Metric {
    /// v1.1 `exact_match`.
    ExactMatch,
    /// v2.0 `exact`.
    Exact,
    F1,
    Total,
    HasAnsExact,
    HasAnsF1,
    HasAnsTotal,
    NoAnsExact,
    NoAnsF1,
    NoAnsTotal,
    /// v2.0 with null odds: the best score over no-answer thresholds, and that threshold.
    BestExact,
    BestExactThresh,
    BestF1,
    BestF1Thresh,
}

impl Metric {
    /// Every metric, in output order.
    pub const ALL: [Metric; 14] = [
        Metric::ExactMatch,
        Metric::Exact,
        Metric::F1,
        Metric::Total,
        Metric::HasAnsExact,
        Metric::HasAnsF1,
        Metric::HasAnsTotal,
        Metric::NoAnsExact,
        Metric::NoAnsF1,
        Metric::NoAnsTotal,
        Metric::BestExact,
        Metric::BestExactThresh,
        Metric::BestF1,
        Metric::BestF1Thresh,
    ];

    /// The official key (`eval_` is prefixed in result files).
    pub const fn key(self) -> &'static str {
        match self {
            Metric::ExactMatch => "exact_match",
            Metric::Exact => "exact",
            Metric::F1 => "f1",
            Metric::Total => "total",
            Metric::HasAnsExact => "HasAns_exact",
            Metric::HasAnsF1 => "HasAns_f1",
            Metric::HasAnsTotal => "HasAns_total",
            Metric::NoAnsExact => "NoAns_exact",
            Metric::NoAnsF1 => "NoAns_f1",
            Metric::NoAnsTotal => "NoAns_total",
            Metric::BestExact => "best_exact",
            Metric::BestExactThresh => "best_exact_thresh",
            Metric::BestF1 => "best_f1",
            Metric::BestF1Thresh => "best_f1_thresh",
        }
    }

    /// Whether the metric counts questions (written as an integer, as the scripts do).
    pub const fn is_count(self) -> bool {
        matches!(
            self,
            Metric::Total | Metric::HasAnsTotal | Metric::NoAnsTotal
        )
    }

    /// Whether the metric scores answers (a model with more of it is better); counts and
    /// thresholds do not, so they cannot pick a best model.
    pub const fn is_score(self) -> bool {
        !matches!(
            self,
            Metric::Total
                | Metric::HasAnsTotal
                | Metric::NoAnsTotal
                | Metric::BestExactThresh
                | Metric::BestF1Thresh
        )
    }

    /// Whether an evaluation of `version` data reports this metric at all (the `HasAns_*` and
    /// `NoAns_*` groups also need questions of that kind in the data).
    pub const fn reported_for(self, version: SquadVersion) -> bool {
        match version {
            SquadVersion::V1 => matches!(self, Metric::ExactMatch | Metric::F1),
            SquadVersion::V2 => !matches!(self, Metric::ExactMatch),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// A metric name that is not one of [`Metric::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {name:?} (one of: {})", Metric::ALL.map(Metric::key).join(", "))]
pub struct UnknownMetric {
    pub name: String,
}

impl std::str::FromStr for Metric {
    type Err = UnknownMetric;
    /// The official key, with or without HF's `eval_` prefix (`f1`, `eval_f1`).
    fn from_str(name: &str) -> Result<Self, UnknownMetric> {
        let key = name.strip_prefix("eval_").unwrap_or(name);
        Metric::ALL
            .into_iter()
            .find(|m| m.key() == key)
            .ok_or_else(|| UnknownMetric {
                name: name.to_string(),
            })
    }
}

/// The metrics of one evaluation, in output order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(BTreeMap<Metric, f64>);

impl Metrics {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.0.get(&metric).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Metric, f64)> + '_ {
        self.0.iter().map(|(m, v)| (*m, *v))
    }

    /// `{prefix}{key}: value` in output order, as HF writes `eval_results.json`.
    pub fn to_json(&self, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
        self.iter()
            .map(|(m, v)| {
                let value = if m.is_count() {
                    (v as u64).into()
                } else {
                    v.into()
                };
                (format!("{prefix}{}", m.key()), value)
            })
            .collect()
    }

    fn insert(&mut self, metric: Metric, value: Option<f64>) {
        if let Some(value) = value {
            self.0.insert(metric, value);
        }
    }
}

impl std::ops::Index<Metric> for Metrics {
    type Output = f64;
    /// The metric's value; panics if this evaluation does not report it (see [`Metrics::get`]).
    fn index(&self, metric: Metric) -> &f64 {
        self.0
            .get(&metric)
            .unwrap_or_else(|| panic!("this evaluation does not report {metric}"))
    }
}

/// Scores decoded answers against the examples' gold answers with the official rules of
/// `version`. SQuAD v2 also gets the best no-answer thresholds, searched on the best non-null
/// answers with the decoder's null odds (run_qa passes zeros there, which makes its `best_*`
/// numbers meaningless).
pub fn squad_metrics(examples: &[Example], decoded: &Decoded, version: SquadVersion) -> Metrics {
    let gold = Gold::from_examples(examples);
    let mut metrics = Metrics::default();
    match version {
        SquadVersion::V1 => {
            let r = evaluate_v1(&gold, &decoded.predictions());
            metrics.insert(Metric::ExactMatch, Some(r.exact_match));
            metrics.insert(Metric::F1, Some(r.f1));
        }
        SquadVersion::V2 => {
            let r = evaluate_v2(&gold, &decoded.predictions(), None, 1.0);
            let count = |n: Option<usize>| n.map(|n| n as f64);
            metrics.insert(Metric::Exact, Some(r.exact));
            metrics.insert(Metric::F1, Some(r.f1));
            metrics.insert(Metric::Total, Some(r.total as f64));
            metrics.insert(Metric::HasAnsExact, r.has_ans_exact);
            metrics.insert(Metric::HasAnsF1, r.has_ans_f1);
            metrics.insert(Metric::HasAnsTotal, count(r.has_ans_total));
            metrics.insert(Metric::NoAnsExact, r.no_ans_exact);
            metrics.insert(Metric::NoAnsF1, r.no_ans_f1);
            metrics.insert(Metric::NoAnsTotal, count(r.no_ans_total));
            let best = evaluate_v2(
                &gold,
                &decoded.best_non_null(),
                Some(&decoded.null_odds()),
                1.0,
            );
            metrics.insert(Metric::BestExact, best.best_exact);
            metrics.insert(Metric::BestExactThresh, best.best_exact_thresh);
            metrics.insert(Metric::BestF1, best.best_f1);
            metrics.insert(Metric::BestF1Thresh, best.best_f1_thresh);
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_the_eval_prefix_and_typos_are_refused() {
        assert_eq!("f1".parse::<Metric>(), Ok(Metric::F1));
        assert_eq!("eval_HasAns_f1".parse::<Metric>(), Ok(Metric::HasAnsF1));
        for m in Metric::ALL {
            assert_eq!(m.key().parse::<Metric>(), Ok(m));
        }
        let err = "F1 ".parse::<Metric>().unwrap_err();
        assert!(err.to_string().contains("unknown metric \"F1 \""), "{err}");
        assert!(err.to_string().contains("exact_match"), "{err}");
    }

    #[test]
    fn versions_report_their_own_keys() {
        assert!(Metric::ExactMatch.reported_for(SquadVersion::V1));
        assert!(!Metric::Exact.reported_for(SquadVersion::V1));
        assert!(Metric::Exact.reported_for(SquadVersion::V2));
        assert!(!Metric::ExactMatch.reported_for(SquadVersion::V2));
        assert!(
            Metric::F1.reported_for(SquadVersion::V1) && Metric::F1.reported_for(SquadVersion::V2)
        );
        assert!(!Metric::BestF1Thresh.is_score() && Metric::BestF1.is_score());
    }
}
