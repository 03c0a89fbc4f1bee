//! DEFNLP / Coleridge "Show US the Data": `train.csv` (Id, pub_title, dataset_title, dataset_label,
//! cleaned_label) beside a folder of `{Id}.json` publications (a list of `{section_title, text}`).
//!
//! Each publication becomes one example per configured question; the answers are every
//! case-insensitive occurrence of its labelled datasets in the text. Question ids follow one
//! scheme, [`question_id`], for training data and predictions alike.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::align::{find_all, Case, CharIndex};
use crate::error::{DataError, Result};
use crate::example::{Example, ExampleId};
use crate::record::{parse_json, read_text, shown_id, AnswerOffsets, RawExample};

/// The competition's `clean_text`: lowercase, every run of non-alphanumerics becomes one space.
pub fn clean_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// The questions DEFNLP asks of every publication.
pub const DEFAULT_QUESTIONS: &[&str] = &[
    "Which datasets are used?",
    "What dataset is mentioned in this publication?",
];

#[derive(Debug, Clone)]
pub struct DefnlpOptions {
    pub questions: Vec<String>,
    /// Folder of `{Id}.json`; default: the folder named like the CSV (`train.csv` → `train/`).
    pub publications_dir: Option<PathBuf>,
}

impl Default for DefnlpOptions {
    fn default() -> Self {
        Self {
            questions: DEFAULT_QUESTIONS.iter().map(|q| q.to_string()).collect(),
            publications_dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct LabelRow {
    #[serde(rename = "Id")]
    id: String,
    #[serde(default)]
    #[allow(dead_code)] // part of the format, not needed to build examples
    pub_title: String,
    dataset_title: String,
    dataset_label: String,
    #[serde(default)]
    #[allow(dead_code)] // the scorer reads it (qa-eval); examples use the raw label
    cleaned_label: String,
}

#[derive(Debug, Deserialize)]
struct Section {
    #[serde(default)]
    #[allow(dead_code)] // part of the format; the text alone is the context
    section_title: String,
    text: String,
}

/// A publication's full text.
#[derive(Debug, Clone)]
pub struct Publication {
    pub id: String,
    pub text: String,
}

/// The id of question number `question_index` (0-based) asked of a publication:
/// `{publication_id}_q{question_index}`.
pub fn question_id(publication_id: &str, question_index: usize) -> ExampleId {
    ExampleId::Text(format!("{publication_id}_q{question_index}"))
}

/// The examples to predict on for one publication: one per question, over its whole text,
/// without answers. Ids come from [`question_id`]; questions are left-stripped as the loader does.
pub fn publication_examples<Q: AsRef<str>>(
    publication: &Publication,
    questions: &[Q],
) -> Vec<Example> {
    let text: std::sync::Arc<str> = publication.text.as_str().into();
    questions
        .iter()
        .enumerate()
        .map(|(index, question)| Example {
            id: question_id(&publication.id, index),
            title: publication.id.clone(),
            question: question.as_ref().trim_start().to_string(),
            context: text.clone(),
            answers: Vec::new(),
            is_impossible: false,
        })
        .collect()
}

/// Reads one `{Id}.json`: its sections' texts joined by newlines.
pub fn read_publication(path: &Path) -> Result<Publication> {
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let value = parse_json(path, &read_text(path)?)?;
    let sections: Vec<Section> = serde_json::from_value(value).map_err(|e| {
        DataError::format(
            path,
            format!("a publication must be a list of {{section_title, text}}: {e}"),
        )
    })?;
    let text = sections
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Publication { id, text })
}

/// Every `*.json` publication of a folder, sorted by id.
pub fn read_publications(dir: &Path) -> Result<Vec<Publication>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    if paths.is_empty() {
        return Err(DataError::format(
            dir,
            "no {Id}.json publications in this folder",
        ));
    }
    paths.sort();
    paths.iter().map(|p| read_publication(p)).collect()
}

/// Resolves `path` (the CSV, or a folder holding `train.csv`) to the CSV and the publications.
fn locate(path: &Path, options: &DefnlpOptions) -> Result<(PathBuf, PathBuf)> {
    let csv = if path.is_dir() {
        path.join("train.csv")
    } else {
        // Already read by `load` (it may be a pipe, which is no regular file).
        path.to_path_buf()
    };
    if path.is_dir() && !csv.is_file() {
        return Err(DataError::format(
            &csv,
            "DEFNLP labels file not found (expected train.csv with Id, dataset_title, dataset_label)",
        ));
    }
    let pubs = match &options.publications_dir {
        Some(dir) => dir.clone(),
        None => {
            let stem = csv.file_stem().and_then(|s| s.to_str()).unwrap_or("train");
            csv.with_file_name(stem)
        }
    };
    if !pubs.is_dir() {
        return Err(DataError::format(
            &csv,
            format!(
                "DEFNLP publications folder {} not found (one {{Id}}.json per publication)",
                pubs.display()
            ),
        ));
    }
    Ok((csv, pubs))
}

/// What a DEFNLP dataset holds: one record per (publication, question), and the publications
/// left out because none of their labelled datasets occurs in their text.
pub(crate) struct DefnlpRecords {
    pub records: Vec<RawExample>,
    pub labels_not_found: Vec<String>,
}

/// Reads the labels CSV and every publication it names, in CSV order; a CSV without rows is
/// [`DataError::NoExamples`]. `csv_text` is the CSV when `load` has read it already (`path` is
/// then the CSV itself, perhaps a pipe); for a folder it is `None` and `train.csv` inside is
/// read here.
pub(crate) fn read(
    path: &Path,
    csv_text: Option<&str>,
    options: &DefnlpOptions,
) -> Result<DefnlpRecords> {
    if options.questions.is_empty() {
        return Err(DataError::Config(
            "DEFNLP needs at least one question".into(),
        ));
    }
    let (csv_path, pubs_dir) = locate(path, options)?;
    let owned;
    let csv_text = match csv_text {
        Some(text) => text,
        None => {
            owned = read_text(&csv_path)?;
            owned.as_str()
        }
    };
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    // Labels grouped by publication, in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut labels: std::collections::HashMap<String, BTreeSet<String>> = Default::default();
    for row in reader.deserialize::<LabelRow>() {
        let row = row.map_err(|source| DataError::Csv {
            path: csv_path.clone(),
            source,
        })?;
        let entry = labels.entry(row.id.clone()).or_insert_with(|| {
            order.push(row.id.clone());
            BTreeSet::new()
        });
        for label in [row.dataset_label, row.dataset_title] {
            let label = label.trim().to_string();
            if !label.is_empty() {
                entry.insert(label);
            }
        }
    }

    if order.is_empty() {
        return Err(DataError::NoExamples { path: csv_path });
    }
    let mut out = Vec::new();
    let mut labels_not_found = Vec::new();
    for pub_id in order {
        // An id is a file name in the publications folder, never a path out of it.
        if pub_id.trim().is_empty()
            || pub_id.contains(['/', '\\'])
            || pub_id.chars().any(char::is_control)
        {
            return Err(DataError::example(
                &csv_path,
                format!("{pub_id:?}"),
                "publication Id must be a file name (not blank, no '/', '\\' or control characters)",
            ));
        }
        let file = pubs_dir.join(format!("{pub_id}.json"));
        if !file.is_file() {
            return Err(DataError::example(
                &csv_path,
                shown_id(&ExampleId::Text(pub_id.clone())),
                format!("publication file {} does not exist", file.display()),
            ));
        }
        let publication = read_publication(&file)?;
        let index = CharIndex::new(&publication.text);
        let chars: Vec<char> = publication.text.chars().collect();
        let mut spans: BTreeSet<(usize, usize)> = BTreeSet::new();
        for label in &labels[&pub_id] {
            let len = label.chars().count();
            for start in find_all(&publication.text, &index, label, Case::Ignore) {
                // Whole words only: "ARMS" must not match inside "farms".
                if is_word_boundary(&chars, start) && is_word_boundary(&chars, start + len) {
                    spans.insert((start, start + len));
                }
            }
        }
        if spans.is_empty() {
            tracing::warn!(
                "{}: publication {pub_id}: none of its labels {:?} occurs in the text; skipped",
                csv_path.display(),
                labels[&pub_id]
            );
            labels_not_found.push(pub_id.clone());
            continue;
        }
        let text: std::sync::Arc<str> = publication.text.as_str().into();
        // Answer text as written in the publication (case may differ from the label).
        let answers: Vec<(String, usize)> = spans
            .iter()
            .map(|&(s, e)| {
                let text = index.slice(&publication.text, s, e).unwrap_or_default();
                (text.to_string(), s)
            })
            .collect();
        for (q, question) in options.questions.iter().enumerate() {
            out.push(RawExample {
                id: question_id(&pub_id, q),
                position: out.len(),
                title: pub_id.clone(),
                question: question.clone(),
                context: text.clone(),
                answers: answers.clone(),
                is_impossible: false,
                offsets: AnswerOffsets::Located,
            });
        }
    }
    Ok(DefnlpRecords {
        records: out,
        labels_not_found,
    })
}

/// True when chars `at - 1` and `at` are not both alphanumeric (text edges count as boundaries).
fn is_word_boundary(chars: &[char], at: usize) -> bool {
    let before = at.checked_sub(1).and_then(|i| chars.get(i));
    let after = chars.get(at);
    !matches!((before, after), (Some(b), Some(a)) if b.is_alphanumeric() && a.is_alphanumeric())
}
