//! DEFNLP training data as the seed notebook prepared it, for comparison with our sliding
//! windows (`--defnlp-windows seed|sliding`).
//!
//! The seed made one SQuAD example per `train.csv` row and question: the publication's whole
//! text as context, the row's `dataset_title` as the answer at its first occurrence
//! (`text.find(dataset_title)`: exact, case-sensitive, anywhere), then tokenized it once with
//! `max_length` (256) and `truncation="only_second"` without overflow windows — one feature per
//! example, holding the start of the text — labelled with the answer's tokens when the answer
//! lies inside, else [CLS] (also when the title does not occur in the text at all).
//!
//! The sliding alternative ([`crate::defnlp`] + [`crate::features`]) makes one example per
//! publication and question, answers at every whole-word, case-insensitive occurrence of every
//! label, and cuts the whole text into overlapping windows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::defnlp::{read_publication, DefnlpOptions};
use crate::error::{DataError, Result};
use crate::example::{Answer, Example, ExampleId};
use crate::features::{build_features, Feature, FeatureConfig, FeatureReport, FeatureSet};
use crate::load::{DataFormat, LoadOptions, LoadReport, LoadedDataset};
use crate::prepare::{sample_and_cut, Cut, PreparedData, Sample, Windowing};
use crate::record::read_text;

/// How DEFNLP training data becomes windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefnlpWindows {
    /// The seed's: one truncated window per CSV row × question (this module).
    Seed,
    /// Ours: every window of every publication × question, every mention labelled.
    #[default]
    Sliding,
}

impl std::str::FromStr for DefnlpWindows {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "seed" => Ok(Self::Seed),
            "sliding" => Ok(Self::Sliding),
            other => Err(format!(
                "unknown DEFNLP windowing {other:?} (expected seed or sliding)"
            )),
        }
    }
}

impl std::fmt::Display for DefnlpWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Seed => "seed",
            Self::Sliding => "sliding",
        })
    }
}

/// The labels CSV (`path` itself, or `train.csv` in the folder `path`) and the publications
/// folder (given, or named like the CSV: `train.csv` → `train/`).
fn locate(path: &Path, options: &DefnlpOptions) -> Result<(PathBuf, PathBuf)> {
    let csv = if path.is_dir() {
        path.join("train.csv")
    } else {
        path.to_path_buf()
    };
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

/// The seed's examples: one per CSV row × question, ids `{Id}_r{row}_q{question}` (row: the
/// 0-based data row), the answer the row's `dataset_title` at its first exact occurrence, or
/// none (unanswerable) when it does not occur; those rows' publication ids are listed in the
/// report's `labels_not_found`. A CSV without rows is [`DataError::NoExamples`].
pub fn seed_examples(path: &Path, options: &DefnlpOptions) -> Result<LoadedDataset> {
    if options.questions.is_empty() {
        return Err(DataError::Config(
            "DEFNLP needs at least one question".into(),
        ));
    }
    let (csv_path, pubs_dir) = locate(path, options)?;
    let text = read_text(&csv_path)?;
    let csv_err = |source| DataError::Csv {
        path: csv_path.clone(),
        source,
    };
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(csv_err)?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            DataError::format(
                &csv_path,
                format!("no {name:?} column (DEFNLP needs Id and dataset_title)"),
            )
        })
    };
    let (id_col, title_col) = (column("Id")?, column("dataset_title")?);
    let mut report = LoadReport {
        path: path.to_path_buf(),
        format: Some(DataFormat::Defnlp),
        ..Default::default()
    };
    let mut texts: HashMap<String, std::sync::Arc<str>> = HashMap::new();
    let mut examples = Vec::new();
    for (row_index, row) in reader.records().enumerate() {
        let row = row.map_err(csv_err)?;
        let pub_id = row.get(id_col).unwrap_or_default().to_string();
        let title = row.get(title_col).unwrap_or_default().to_string();
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
        if !texts.contains_key(&pub_id) {
            let file = pubs_dir.join(format!("{pub_id}.json"));
            if !file.is_file() {
                return Err(DataError::example(
                    &csv_path,
                    pub_id.clone(),
                    format!("publication file {} does not exist", file.display()),
                ));
            }
            texts.insert(pub_id.clone(), read_publication(&file)?.text.into());
        }
        let context = &texts[&pub_id];
        // Python's str.find: the first exact occurrence (an empty title finds nothing useful).
        let start = (!title.trim().is_empty())
            .then(|| context.find(&title))
            .flatten()
            .map(|byte| context[..byte].chars().count());
        if start.is_none() {
            report.labels_not_found.push(pub_id.clone());
        }
        for (q, question) in options.questions.iter().enumerate() {
            let answers: Vec<Answer> = start
                .map(|s| Answer {
                    text: title.clone(),
                    char_start: Some(s),
                })
                .into_iter()
                .collect();
            report.answers += answers.len();
            report.impossible += usize::from(answers.is_empty());
            examples.push(Example {
                id: ExampleId::Text(format!("{pub_id}_r{row_index}_q{q}")),
                title: pub_id.clone(),
                question: question.trim_start().to_string(),
                context: context.clone(),
                is_impossible: answers.is_empty(),
                answers,
            });
        }
    }
    if examples.is_empty() {
        return Err(DataError::NoExamples { path: csv_path });
    }
    report.labels_not_found.dedup();
    report.examples = examples.len();
    if !report.labels_not_found.is_empty() {
        tracing::warn!(
            "{}: {} rows' dataset_title does not occur in their publication: those examples \
             are labelled [CLS], as the seed labelled them",
            csv_path.display(),
            report.impossible / options.questions.len()
        );
    }
    Ok(LoadedDataset { examples, report })
}

/// The start of `text`: its first `chars` characters, extended to the end of the word there.
fn prefix(text: &str, chars: usize) -> &str {
    let Some((cut, _)) = text.char_indices().nth(chars) else {
        return text;
    };
    let end = text[cut..]
        .find(char::is_whitespace)
        .map_or(text.len(), |i| cut + i);
    &text[..end]
}

/// The seed's features: for each example, the first of its windows only (no overflow), with
/// `config.max_length` tokens at most, labelled with the example's (first) answer when it lies
/// inside the window, else [CLS]. `config.stride` is not used.
///
/// Only the start of each context is tokenized: a prefix of about ten characters per token,
/// lengthened until it yields more than one window (or is the whole text), so its first window
/// equals the full text's first window (prefixes end between words).
pub fn seed_features(
    tokenizer: &Tokenizer,
    examples: &[Example],
    config: &FeatureConfig,
) -> Result<FeatureSet> {
    let config = FeatureConfig {
        stride: 0,
        label_any_answer: false,
        ..config.clone()
    };
    let mut first: Vec<Option<Feature>> = vec![None; examples.len()];
    let mut report = FeatureReport {
        examples: examples.len(),
        ..Default::default()
    };
    let mut pending: Vec<usize> = (0..examples.len()).collect();
    let mut chars = config.max_length.saturating_mul(10);
    while !pending.is_empty() {
        let cut: Vec<Example> = pending
            .iter()
            .map(|&i| Example {
                context: prefix(&examples[i].context, chars).into(),
                ..examples[i].clone()
            })
            .collect();
        let set = build_features(tokenizer, &cut, &config)?;
        report.skipped.extend(set.report.skipped);
        let mut windows = vec![0usize; cut.len()];
        for f in &set.features {
            windows[f.example_index] += 1;
        }
        let mut retry = Vec::new();
        for f in set.features.into_iter().filter(|f| f.window == 0) {
            let whole = cut[f.example_index].context.len()
                == examples[pending[f.example_index]].context.len();
            if windows[f.example_index] > 1 || whole {
                let original = pending[f.example_index];
                first[original] = Some(Feature {
                    example_index: original,
                    // The only window: every context token has its most context here.
                    max_context: f.offsets.iter().map(Option::is_some).collect(),
                    ..f
                });
            } else {
                retry.push(pending[f.example_index]);
            }
        }
        pending = retry;
        chars = chars.saturating_mul(4);
    }
    let features: Vec<Feature> = first.into_iter().flatten().collect();
    report.windows = features.len();
    report.windows_with_answer = features.iter().filter(|f| f.start_position > 0).count();
    Ok(FeatureSet { features, report })
}

/// [`crate::prepare::prepare`] with the seed's examples and windows: what `qa train
/// --defnlp-windows seed` trains on. The data must be DEFNLP (`options.format`, or detected).
pub fn prepare_seed(
    path: &Path,
    options: &LoadOptions,
    windows: &FeatureConfig,
    sample: Sample,
    tokenizer: &Tokenizer,
) -> Result<PreparedData> {
    let started = std::time::Instant::now();
    let format = match options.format {
        Some(format) => format,
        None => crate::load::detect_format(path)?,
    };
    if format != DataFormat::Defnlp {
        return Err(DataError::Config(
            "the seed's windows (--defnlp-windows seed) are for DEFNLP data only".into(),
        ));
    }
    let loaded = seed_examples(path, &options.defnlp)?;
    // The seed's windows are a comparison mode: never cached.
    let windowing = Windowing {
        tokenizer,
        cut: Cut::Seed,
        cached: None,
    };
    sample_and_cut(path, loaded, sample, windows.clone(), windowing, started)
}
