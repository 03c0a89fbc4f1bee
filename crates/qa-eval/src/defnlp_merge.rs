//! DEFNLP phase III: merge the names string matching found with a QA model's answers.
//!
//! The rule ([`merge`]): every matched name is kept (it is a known name, found verbatim). A QA
//! answer is kept when its probability is at least [`MergeRule::min_probability`] and it has at
//! most [`MergeRule::max_words`] words (cleaned), and it is no duplicate of a name already kept:
//! equal, word-set Jaccard ≥ 0.5 (the scorer's own threshold, [`jaccard`]), or one holding the
//! other as whole words ("the adni data" and "adni"). Answers are taken from the most probable
//! down, after all matched names, so a duplicate always yields to the matched (known) name, and
//! among answers to the more probable one.
//!
//! The defaults ([`MergeRule::TUNED`]) were tuned with [`tune`] on a held-out tenth of the
//! training publications of the generated fixture (`xtask/src/defnlp_fixture.rs`, its seeded
//! by-publication split; names known from the other nine tenths), never on its test
//! publications; `crates/qa-eval/tests/defnlp.rs` re-runs the tuning and checks it lands on
//! these numbers. The fixture's answers come from a simulated reader, not a model: tune again
//! on held-out publications of your own with your model (`qa predict --merge-min-score
//! --merge-max-words`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::coleridge::{clean_label, jaccard, score, ColeridgeScore};

/// A QA model's answer for a publication: the cleaned label and its best window probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaCandidate {
    pub label: String,
    pub probability: f32,
}

impl QaCandidate {
    /// A candidate with its label cleaned as the competition cleans labels.
    pub fn new(text: &str, probability: f32) -> Self {
        Self {
            label: clean_label(text),
            probability,
        }
    }
}

/// Which QA answers the merge keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MergeRule {
    /// Keep an answer only if its probability is at least this.
    pub min_probability: f32,
    /// Keep an answer only if it has at most this many words (dataset names are short; long
    /// spans are sentences the reader ran on into).
    pub max_words: usize,
}

impl MergeRule {
    /// Tuned on the fixture's held-out training publications (module docs).
    pub const TUNED: MergeRule = MergeRule {
        min_probability: 0.7,
        max_words: 8,
    };

    /// Whether the rule lets `candidate` through (before duplicates are removed).
    pub fn keeps(&self, candidate: &QaCandidate) -> bool {
        let words = candidate.label.split_whitespace().count();
        words > 0 && words <= self.max_words && candidate.probability >= self.min_probability
    }
}

impl Default for MergeRule {
    fn default() -> Self {
        Self::TUNED
    }
}

/// Whether two cleaned labels name the same dataset for the merge: equal, Jaccard ≥ 0.5, or
/// one holding the other as whole words.
pub fn near_duplicate(a: &str, b: &str) -> bool {
    let holds = |long: &str, short: &str| format!(" {long} ").contains(&format!(" {short} "));
    a == b || jaccard(a, b) >= 0.5 || holds(a, b) || holds(b, a)
}

/// Matched names ∪ the QA answers `rule` keeps, without duplicates (module docs).
pub fn merge(
    matched: &BTreeSet<String>,
    answers: &[QaCandidate],
    rule: &MergeRule,
) -> BTreeSet<String> {
    let mut kept: Vec<String> = matched.iter().cloned().collect();
    let mut ordered: Vec<&QaCandidate> = answers.iter().filter(|c| rule.keeps(c)).collect();
    ordered.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then_with(|| a.label.cmp(&b.label))
    });
    for candidate in ordered {
        if !kept.iter().any(|k| near_duplicate(k, &candidate.label)) {
            kept.push(candidate.label.clone());
        }
    }
    kept.into_iter().collect()
}

/// One publication to tune on: what matching found, what the model answered, the gold labels.
#[derive(Debug, Clone)]
pub struct TuningCase {
    pub id: String,
    pub matched: BTreeSet<String>,
    pub answers: Vec<QaCandidate>,
    pub gold: Vec<String>,
}

/// The probabilities [`tune`] tries: 0.00, 0.05, …, 0.95.
pub fn probability_grid() -> impl DoubleEndedIterator<Item = f32> {
    (0..20).map(|i| i as f32 / 20.0)
}

/// The word limits [`tune`] tries: 1 to 20.
pub const MAX_WORDS_GRID: std::ops::RangeInclusive<usize> = 1..=20;

/// The Coleridge score of merging with `rule` over `cases`.
pub fn score_rule(cases: &[TuningCase], rule: &MergeRule) -> ColeridgeScore {
    let gold: BTreeMap<String, Vec<String>> = cases
        .iter()
        .filter(|c| !c.gold.is_empty())
        .map(|c| (c.id.clone(), c.gold.clone()))
        .collect();
    let predicted: BTreeMap<String, Vec<String>> = cases
        .iter()
        .map(|c| {
            let labels = merge(&c.matched, &c.answers, rule);
            (c.id.clone(), labels.into_iter().collect())
        })
        .collect();
    score(&gold, &predicted, 0.5)
}

/// The rule with the best F0.5 over the grid ([`probability_grid`] × [`MAX_WORDS_GRID`]);
/// ties go to the strictest rule, highest probability first, then fewest words: when the
/// tuning publications show no gain from more answers, none are added on faith (a real model's
/// held-out answers often tie many rules).
pub fn tune(cases: &[TuningCase]) -> (MergeRule, ColeridgeScore) {
    let mut best: Option<(MergeRule, ColeridgeScore)> = None;
    for min_probability in probability_grid().rev() {
        for max_words in MAX_WORDS_GRID {
            let rule = MergeRule {
                min_probability,
                max_words,
            };
            let s = score_rule(cases, &rule);
            if best.as_ref().is_none_or(|(_, b)| s.fbeta > b.fbeta) {
                best = Some((rule, s));
            }
        }
    }
    best.expect("the grid is not empty")
}
