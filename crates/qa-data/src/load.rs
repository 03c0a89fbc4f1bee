//! Format detection, the shared validation pass every reader's records go through, and the
//! report of what was repaired or skipped. The readers (`squad`, `hf_json`, `tabular`, `defnlp`)
//! only read their layout; everything they share lives in `record`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::align::{align_answer, AlignOutcome, AnswerAlignment, CharIndex};
use crate::defnlp::{self, DefnlpOptions};
use crate::error::{DataError, Result};
use crate::example::{Answer, Example, ExampleId};
use crate::record::{shown_id, text_of, AnswerOffsets, Columns, RawExample};
use crate::tabular::{self, PARQUET_MAGIC};
use crate::{hf_json, squad};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// SQuAD v1.1 / v2.0: `data[].paragraphs[].qas[]`.
    Squad,
    /// Hugging Face `datasets` export: list, `{"data": [...]}` or JSON Lines of
    /// `{"id","question","context","answers":{"text":[],"answer_start":[]}}`.
    HfJson,
    /// The same rows in a Parquet file (the Hub's dataset format, `Dataset.to_parquet`).
    Parquet,
    /// The same rows in a CSV file, answers as JSON or as `Dataset.to_csv` writes them.
    Csv,
    /// DEFNLP / Coleridge: `train.csv` + a folder of `{Id}.json` publications.
    Defnlp,
}

impl std::str::FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "squad" => Ok(Self::Squad),
            "hf-json" | "json" | "jsonl" => Ok(Self::HfJson),
            "parquet" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "defnlp" | "coleridge" => Ok(Self::Defnlp),
            other => Err(format!(
                "unknown data format {other:?} (expected squad, hf-json, parquet, csv or defnlp)"
            )),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `None` detects the format from the path and content.
    pub format: Option<DataFormat>,
    pub alignment: AnswerAlignment,
    pub defnlp: DefnlpOptions,
    /// Column names of `datasets` rows (HF JSON, Parquet, CSV).
    pub columns: Columns,
}

/// What a load found: counts of everything repaired or skipped, with the ids involved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub path: PathBuf,
    pub format: Option<DataFormat>,
    /// SQuAD `version` field, when present.
    pub version: Option<String>,
    pub examples: usize,
    pub answers: usize,
    pub impossible: usize,
    /// Answers whose `answer_start` was moved to the nearest occurrence of their text.
    pub repaired: Vec<String>,
    /// Answers whose text is not in the context, or is blank (kept for scoring, unusable as
    /// training labels).
    pub unrepairable: Vec<String>,
    /// Answers whose offsets did not match, kept as given (`AnswerAlignment::AsGiven`).
    pub misaligned_kept: Vec<String>,
    /// Examples not loaded, with the reason (empty question or context).
    pub skipped: Vec<(String, String)>,
    /// Answerable-looking examples with no answers, loaded as unanswerable.
    pub without_answers: Vec<String>,
    /// DEFNLP publications whose labelled dataset was not found in the text.
    pub labels_not_found: Vec<String>,
    /// Questions flagged `is_impossible: true` that have gold answers, loaded as answerable:
    /// the official v2.0 script (and `qa score`) call a question with answers answerable and
    /// read the flag only when there are none, so features and training do too.
    pub impossible_with_answers: Vec<String>,
}

impl LoadReport {
    /// One human line per non-empty category, for logs and the CLI.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} examples, {} answers, {} unanswerable",
            self.path.display(),
            self.examples,
            self.answers,
            self.impossible
        );
        let mut part = |name: &str, n: usize| {
            if n > 0 {
                s.push_str(&format!(", {n} {name}"));
            }
        };
        part(
            "answers repaired (answer_start moved to the text)",
            self.repaired.len(),
        );
        part(
            "answers unrepairable (text not in context)",
            self.unrepairable.len(),
        );
        part(
            "misaligned answers kept as given",
            self.misaligned_kept.len(),
        );
        part("examples skipped", self.skipped.len());
        part(
            "examples without answers loaded as unanswerable",
            self.without_answers.len(),
        );
        part(
            "publications whose label was not found",
            self.labels_not_found.len(),
        );
        part(
            "questions flagged is_impossible but with answers, loaded as answerable",
            self.impossible_with_answers.len(),
        );
        s
    }

    /// Whether the data looks like SQuAD v2.0: its `version` field says 2 (`"v2.0"`, `"2.0"`),
    /// or some question is unanswerable (flagged `is_impossible`, or without answers). Such data
    /// trained or evaluated without `--version_2_with_negative` gets its unanswerable questions
    /// wrong silently, so callers warn.
    pub fn looks_like_v2(&self) -> bool {
        let v2_version = self
            .version
            .as_deref()
            .is_some_and(|v| v.trim().trim_start_matches(['v', 'V']).starts_with('2'));
        v2_version || self.impossible > 0 || !self.impossible_with_answers.is_empty()
    }

    /// Whether any of `examples` (this load's, or a subset of them) carries a gold label: an
    /// answer, or an unanswerable flag the file set itself. Examples loaded as unanswerable only
    /// because they had no answers ([`LoadReport::without_answers`]) are unlabelled.
    pub fn has_gold_labels(&self, examples: &[Example]) -> bool {
        let unlabelled: std::collections::HashSet<&str> =
            self.without_answers.iter().map(String::as_str).collect();
        examples
            .iter()
            .any(|e| !e.answers.is_empty() || !unlabelled.contains(e.id.to_string().as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct LoadedDataset {
    pub examples: Vec<Example>,
    pub report: LoadReport,
}

/// Loads any supported dataset file (or DEFNLP folder), validating and repairing as configured.
///
/// A file is read exactly once, into memory, and its format told from those bytes (and its
/// extension when it has one), so a pipe (`/dev/stdin`, `<(…)` as `/dev/fd/63`, a FIFO) loads
/// like a file. A UTF-8 byte-order mark is skipped; an empty file is [`DataError::EmptyFile`],
/// and one that reads fine but holds no examples (`"data": []`, a CSV header alone, a Parquet
/// file of 0 rows) is [`DataError::NoExamples`].
///
/// A folder holding `*.parquet` (or `*.csv`, or `*.jsonl`) files and no `train.csv` is one
/// dataset of those shards, read in file-name order (as [`load_files`] reads a Hub split's);
/// any other folder is DEFNLP (`train.csv` beside a `train/` folder of publications).
pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<LoadedDataset> {
    let path = path.as_ref();
    let mut report = LoadReport {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let raws = read_records(path, options, &mut report)?;
    let examples = validate(path, raws, options.alignment, &mut report)?;
    tracing::debug!("{}", report.summary());
    Ok(LoadedDataset { examples, report })
}

/// Loads the files of one split (a Hub dataset's Parquet shards) as one dataset: every file's
/// records in order, validated together (an id in two files is a duplicate). The report names
/// `name` (the dataset) when there are several files.
pub fn load_files(paths: &[PathBuf], name: &Path, options: &LoadOptions) -> Result<LoadedDataset> {
    match paths {
        [] => return Err(DataError::format(name, "no data files")),
        [one] => return load(one, options),
        _ => {}
    }
    let mut report = LoadReport {
        path: name.to_path_buf(),
        ..Default::default()
    };
    let raws = read_many(paths, options, &mut report)?;
    let examples = validate(name, raws, options.alignment, &mut report)?;
    tracing::debug!("{}", report.summary());
    Ok(LoadedDataset { examples, report })
}

/// Reads the records of several files in order, numbering them as one file's (so duplicate ids
/// across files name distinct positions), noting the first format and version in `report`.
fn read_many(
    paths: &[PathBuf],
    options: &LoadOptions,
    report: &mut LoadReport,
) -> Result<Vec<RawExample>> {
    let mut raws = Vec::new();
    for path in paths {
        let mut file_report = LoadReport::default();
        let offset = raws.len();
        raws.extend(
            read_records(path, options, &mut file_report)?
                .into_iter()
                .map(|raw| RawExample {
                    position: raw.position + offset,
                    ..raw
                }),
        );
        report.format = report.format.or(file_report.format);
        if report.version.is_none() {
            report.version = file_report.version;
        }
        report.labels_not_found.extend(file_report.labels_not_found);
    }
    Ok(raws)
}

/// File extensions of data shards a folder may hold (`.json` is not one: a DEFNLP
/// publications folder holds `{Id}.json` files).
const SHARD_EXTENSIONS: [&str; 4] = ["parquet", "csv", "jsonl", "ndjson"];

/// The data shards of a folder, in file-name order: its `*.parquet` (or `*.csv`, or
/// `*.jsonl`) files, hidden files left out (Spark's `.part-*.crc`). `None` for a DEFNLP folder
/// (one holding `train.csv`) and for a folder without shards (read as DEFNLP, which names what
/// is missing). Shards of several formats are [`DataError::MixedShards`]; file names that say
/// several splits (`train-*` beside `validation-*`, as a Hub dataset's `data/` folder holds
/// them) are [`DataError::SeveralSplits`].
fn data_shards(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    if dir.join("train.csv").is_file() {
        return Ok(None);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let visible = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'));
            visible && has_extension(p, &SHARD_EXTENSIONS) && p.is_file()
        })
        .collect();
    if shards.is_empty() {
        return Ok(None);
    }
    shards.sort();
    let kind = |p: &PathBuf| {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ext == "ndjson" {
            "jsonl".to_string()
        } else {
            ext
        }
    };
    let kinds: std::collections::BTreeSet<String> = shards.iter().map(kind).collect();
    if kinds.len() > 1 {
        return Err(DataError::MixedShards {
            path: dir.to_path_buf(),
            extensions: kinds
                .iter()
                .map(|k| format!(".{k}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let splits: std::collections::BTreeSet<crate::hub::Split> = shards
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .filter_map(crate::hub::split_of_path)
        .collect();
    if splits.len() > 1 {
        return Err(DataError::SeveralSplits {
            path: dir.to_path_buf(),
            splits: splits
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Some(shards))
}

/// Reads one file's (or folder's) records in its format, noting the format, SQuAD version
/// and DEFNLP findings in `report`. A folder of data shards ([`data_shards`]) is read as one
/// file of all their records, in file-name order; any other folder is DEFNLP. A file (or
/// shard) that holds no examples is [`DataError::NoExamples`].
fn read_records(
    path: &Path,
    options: &LoadOptions,
    report: &mut LoadReport,
) -> Result<Vec<RawExample>> {
    if path.is_dir() && options.format != Some(DataFormat::Defnlp) {
        if let Some(shards) = data_shards(path)? {
            tracing::info!(
                "{}: reading its {} data files as one dataset, in file-name order",
                path.display(),
                shards.len()
            );
            return read_many(&shards, options, report);
        }
    }
    // A folder is DEFNLP (train.csv beside the publications); anything else is read now.
    let bytes = if path.is_dir() {
        None
    } else {
        Some(std::fs::read(path).map_err(|e| DataError::io(path, e))?)
    };
    let is_parquet =
        |bytes: &[u8]| bytes.starts_with(PARQUET_MAGIC) || has_extension(path, &["parquet"]);
    let format = match (options.format, &bytes) {
        (Some(f), _) => f,
        (None, None) => DataFormat::Defnlp,
        (None, Some(bytes)) if is_parquet(bytes) => DataFormat::Parquet,
        (None, Some(_)) => DataFormat::HfJson, // told from the text below
    };
    report.format = Some(format);
    let Some(bytes) = bytes else {
        return match format {
            DataFormat::Defnlp => {
                let dataset = defnlp::read(path, None, &options.defnlp)?;
                report.labels_not_found = dataset.labels_not_found;
                Ok(dataset.records)
            }
            _ => Err(DataError::format(
                path,
                "is a folder without data files (*.parquet, *.csv or *.jsonl shards); SQuAD and \
                 Hugging Face JSON data are one file each",
            )),
        };
    };
    let records = if format == DataFormat::Parquet {
        tabular::parse_parquet(path, bytes, &options.columns)?
    } else {
        let text = text_of(path, bytes)?;
        let format = match options.format {
            Some(f) => f,
            None => detect_format_of(path, &text)?,
        };
        report.format = Some(format);
        match format {
            DataFormat::Squad => {
                let file = squad::parse(path, &text)?;
                report.version = file.version;
                file.records
            }
            DataFormat::HfJson => hf_json::parse(path, &text, &options.columns)?,
            DataFormat::Csv => tabular::parse_csv(path, &text, &options.columns)?,
            DataFormat::Parquet => unreachable!("read above"),
            DataFormat::Defnlp => {
                // DEFNLP refuses a labels file without rows itself; publications whose labels
                // are not in their text are warned about and counted.
                let dataset = defnlp::read(path, Some(&text), &options.defnlp)?;
                report.labels_not_found = dataset.labels_not_found;
                return Ok(dataset.records);
            }
        }
    };
    if records.is_empty() {
        return Err(DataError::NoExamples {
            path: path.to_path_buf(),
        });
    }
    Ok(records)
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Guesses the format of a file or folder (reading the file: for a pipe, use [`load`], which
/// reads it once, or [`detect_format_of`] on its text). A folder of data shards has their
/// format; any other folder is DEFNLP.
pub fn detect_format(path: &Path) -> Result<DataFormat> {
    if path.is_dir() {
        // A folder of shards has its shards' format; any other folder is DEFNLP.
        return match data_shards(path)? {
            Some(shards) => detect_format(&shards[0]),
            None => Ok(DataFormat::Defnlp),
        };
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(PARQUET_MAGIC) || has_extension(path, &["parquet"]) {
        return Ok(DataFormat::Parquet);
    }
    detect_format_of(path, &text_of(path, bytes)?)
}

/// Guesses the format of a file's text: a CSV whose header has `dataset_label` is DEFNLP, any
/// other `.csv` holds `datasets` rows, `.jsonl` is HF, and JSON whose start mentions
/// `"paragraphs"` is SQuAD (any other JSON is HF). `path` only lends its extension and its name
/// in errors. (Parquet is binary: [`load`] tells it from its first bytes.)
pub fn detect_format_of(path: &Path, text: &str) -> Result<DataFormat> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let header = text.lines().next().unwrap_or("");
    let is_defnlp_header = header
        .split(',')
        .any(|c| c.trim().trim_matches('"') == "dataset_label");
    if has_extension(path, &["csv"]) {
        return Ok(if is_defnlp_header {
            DataFormat::Defnlp
        } else {
            DataFormat::Csv
        });
    }
    if has_extension(path, &["jsonl", "ndjson"]) {
        return Ok(DataFormat::HfJson);
    }
    // The start of the text is enough (and SQuAD files are tens of MB).
    let cut = (0..=text.len().min(1 << 16))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let head = &text[..cut];
    let trimmed = head.trim_start();
    if trimmed.starts_with('{') && head.contains("\"paragraphs\"") {
        Ok(DataFormat::Squad)
    } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
        Ok(DataFormat::HfJson)
    } else if is_defnlp_header {
        Ok(DataFormat::Defnlp)
    } else {
        Err(DataError::format(
            path,
            "cannot tell the data format (not JSON, JSON Lines, CSV or a folder); pass --format",
        ))
    }
}

fn validate(
    path: &Path,
    raws: Vec<RawExample>,
    alignment: AnswerAlignment,
    report: &mut LoadReport,
) -> Result<Vec<Example>> {
    // Keyed by the id's text: predictions files key answers by it, so `7` and `"7"` collide.
    let mut seen: HashMap<String, (usize, ExampleId)> = HashMap::with_capacity(raws.len());
    let mut examples: Vec<Example> = Vec::with_capacity(raws.len());
    // The char index of the last context, reused by its paragraph's other questions (building
    // one per question cost a pass over the whole context for each question).
    let mut last_index: Option<(Arc<str>, CharIndex)> = None;
    for raw in raws {
        // Rows (`datasets` JSON, Parquet, CSV) repeat their paragraph's context in each
        // question: consecutive equal contexts share one copy, as SQuAD's paragraphs do.
        let context = match examples.last() {
            Some(previous) if *previous.context == *raw.context => previous.context.clone(),
            _ => raw.context.clone(),
        };
        let id = raw.id;
        let key = id.to_string();
        if let Some((first, first_id)) = seen.get(&key) {
            return Err(DataError::DuplicateId {
                path: path.to_path_buf(),
                id: shown_id(&id),
                first: *first,
                second: raw.position,
                first_as: first_id.as_json().to_string(),
                second_as: id.as_json().to_string(),
            });
        }
        seen.insert(key, (raw.position, id.clone()));

        // run_qa strips the question's left side (some SQuAD questions start with spaces
        // that would waste window room); an all-blank question or context cannot be answered.
        let question = raw.question.trim_start().to_string();
        if question.trim().is_empty() {
            skip(path, report, &id, "empty question");
            continue;
        }
        if raw.context.trim().is_empty() {
            skip(path, report, &id, "empty context");
            continue;
        }

        if !last_index
            .as_ref()
            .is_some_and(|(of, _)| Arc::ptr_eq(of, &context))
        {
            last_index = Some((context.clone(), CharIndex::new(&context)));
        }
        let index = &last_index.as_ref().expect("set just above").1;
        let mut answers = Vec::with_capacity(raw.answers.len());
        for (text, given) in raw.answers {
            if raw.offsets == AnswerOffsets::Located {
                answers.push(Answer {
                    text,
                    char_start: Some(given),
                });
                continue;
            }
            // A blank answer marks no span: kept for scoring, never a training label.
            if text.trim().is_empty() {
                tracing::warn!(
                    "{}: example {id}: answer {text:?} is blank; kept for scoring, not a label",
                    path.display()
                );
                report.unrepairable.push(id.to_string());
                answers.push(Answer {
                    text,
                    char_start: None,
                });
                continue;
            }
            // Past the end is past the end: a huge `answer_start` must not overflow the
            // aligner's arithmetic, and any start beyond the context gives the same outcome.
            let probe = given.min(index.len_chars() + 1);
            let (start, outcome) = align_answer(&raw.context, index, &text, probe, alignment);
            match outcome {
                AlignOutcome::Aligned => {}
                AlignOutcome::Repaired { to, .. } => {
                    tracing::debug!(
                        "{}: example {id}: answer {text:?} moved from char {given} to {to}",
                        path.display()
                    );
                    report.repaired.push(id.to_string());
                }
                AlignOutcome::Unrepairable if alignment == AnswerAlignment::AsGiven => {
                    report.misaligned_kept.push(id.to_string())
                }
                AlignOutcome::Unrepairable => {
                    tracing::warn!(
                        "{}: example {id}: answer {text:?} (answer_start {given}) is not in the context",
                        path.display()
                    );
                    report.unrepairable.push(id.to_string());
                }
            }
            answers.push(Answer {
                text,
                char_start: start,
            });
        }
        let mut is_impossible = raw.is_impossible;
        // The official v2.0 rule: a question with gold answers is answerable, whatever its flag.
        if is_impossible && !answers.is_empty() {
            report.impossible_with_answers.push(id.to_string());
            is_impossible = false;
        }
        if answers.is_empty() && !is_impossible {
            report.without_answers.push(id.to_string());
            is_impossible = true;
        }
        report.answers += answers.len();
        report.impossible += usize::from(is_impossible);
        examples.push(Example {
            id,
            title: raw.title,
            question,
            context,
            answers,
            is_impossible,
        });
    }
    report.examples = examples.len();
    if !report.impossible_with_answers.is_empty() {
        tracing::warn!(
            "{}: {} questions flagged is_impossible have gold answers ({}); loaded as \
             answerable, as the official SQuAD v2.0 script scores them",
            path.display(),
            report.impossible_with_answers.len(),
            first_ids(&report.impossible_with_answers)
        );
    }
    Ok(examples)
}

/// The first few ids of a list, for one-line warnings.
fn first_ids(ids: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = ids[..ids.len().min(SHOWN)].join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(", … {} more", ids.len() - SHOWN));
    }
    s
}

fn skip(path: &Path, report: &mut LoadReport, id: &ExampleId, why: &str) {
    tracing::warn!("{}: example {id}: skipped: {why}", path.display());
    report.skipped.push((id.to_string(), why.to_string()));
}
