//! DEFNLP phase I: find known dataset names in publications by string matching.
//!
//! Names (the training labels' `dataset_title`, `dataset_label` and `cleaned_label`, plus an
//! external list such as `big_gov_datasets.txt`) and texts are both cleaned with the
//! competition's `clean_text` rule ([`clean_label`]: lowercase ASCII letters and digits, every
//! other run of characters one space). One Aho-Corasick automaton holds every cleaned name,
//! each followed by a space; it is run anchored at each word start of the cleaned text (plus a
//! trailing space), leftmost-longest. So a match starts and ends on word boundaries by
//! construction ("arms" never matches inside "farms" or "firearms"), and where two names start
//! at the same word the longer wins ("baccalaureate and beyond longitudinal study" over
//! "baccalaureate and beyond"); matches do not overlap. The cost per publication is one walk
//! of the automaton per word, whatever the number of names, and publications run in parallel.

use std::collections::BTreeSet;
use std::path::Path;

use aho_corasick::{AhoCorasick, Anchored, Input, MatchKind, StartKind};
use qa_data::defnlp::Publication;
use qa_data::progress::{self, Progress};
use rayon::prelude::*;

use crate::coleridge::clean_label;
use crate::error::{EvalError, Result};

/// The automaton could not be built (only possible for an enormous name list).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the dataset-name automaton over {names} names: {source}")]
pub struct MatcherBuildError {
    pub names: usize,
    #[source]
    pub source: aho_corasick::BuildError,
}

/// Known dataset names, ready to be found in publications.
#[derive(Debug, Clone)]
pub struct DatasetMatcher {
    automaton: AhoCorasick,
    /// Cleaned names; pattern `i` of the automaton is `names[i]` + one space.
    names: Vec<String>,
}

impl DatasetMatcher {
    /// A matcher over `names`, each cleaned first; names that clean to nothing are dropped and
    /// duplicates kept once.
    pub fn new<S: AsRef<str>>(
        names: impl IntoIterator<Item = S>,
    ) -> std::result::Result<Self, MatcherBuildError> {
        let names: Vec<String> = names
            .into_iter()
            .map(|n| clean_label(n.as_ref()))
            .filter(|n| !n.is_empty())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Anchored)
            .build(names.iter().map(|n| format!("{n} ")))
            .map_err(|source| MatcherBuildError {
                names: names.len(),
                source,
            })?;
        Ok(Self { automaton, names })
    }

    /// How many distinct cleaned names it knows.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The cleaned names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The cleaned names found in `text`, whole words, case-insensitively.
    pub fn find(&self, text: &str) -> BTreeSet<String> {
        let mut hay = clean_label(text);
        hay.push(' ');
        let bytes = hay.as_bytes();
        let mut found = BTreeSet::new();
        let mut at = 0;
        while at < bytes.len() {
            let input = Input::new(&hay)
                .span(at..bytes.len())
                .anchored(Anchored::Yes);
            // Anchored searches are what the automaton was built for: this cannot fail.
            if let Some(m) = self.automaton.find(input) {
                found.insert(self.names[m.pattern().as_usize()].clone());
                // The match ends with the space after its last word: the next word starts here.
                at = m.end();
            } else {
                // Next word start: after the next space.
                at = match bytes[at..].iter().position(|&b| b == b' ') {
                    Some(space) => at + space + 1,
                    None => bytes.len(),
                };
            }
        }
        found
    }

    /// [`DatasetMatcher::find`] on every publication, in parallel, in order.
    pub fn find_all(
        &self,
        publications: &[Publication],
        progress: Progress,
    ) -> Vec<BTreeSet<String>> {
        let bar = progress::bar(publications.len() as u64, "match", "publications", progress);
        let found = publications
            .par_iter()
            .map(|p| {
                let labels = self.find(&p.text);
                bar.inc(1);
                labels
            })
            .collect();
        bar.finish_and_clear();
        found
    }
}

/// Every name a Coleridge labels CSV gives: its `dataset_title`, `dataset_label` and
/// `cleaned_label` columns (those present; at least one must be), raw (the matcher cleans).
pub fn read_label_names(path: &Path) -> Result<Vec<String>> {
    let csv_err = |source| EvalError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let headers = reader.headers().map_err(csv_err)?.clone();
    let columns: Vec<usize> = ["dataset_title", "dataset_label", "cleaned_label"]
        .iter()
        .filter_map(|name| headers.iter().position(|h| h == *name))
        .collect();
    if columns.is_empty() {
        return Err(EvalError::format(
            path,
            "no dataset_title, dataset_label or cleaned_label column: not a Coleridge labels CSV",
        ));
    }
    let mut names = Vec::new();
    for row in reader.records() {
        let row = row.map_err(csv_err)?;
        names.extend(
            columns
                .iter()
                .filter_map(|&c| row.get(c))
                .filter(|cell| !cell.trim().is_empty())
                .map(str::to_string),
        );
    }
    Ok(names)
}

/// An external list of dataset names (`big_gov_datasets.txt`): one per line; blank lines and
/// lines starting with `#` are skipped. Invalid UTF-8 is an error naming the file and line.
pub fn read_name_list(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        EvalError::format(path, format!("line {line} is not UTF-8"))
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
