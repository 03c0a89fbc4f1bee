//! Format detection, the shared validation pass every reader's records go through, and the
//! report of what was repaired or skipped. The readers (`squad`, `hf_json`, `defnlp`) only read
//! their layout; everything they share lives in `record`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::align::{align_answer, AlignOutcome, AnswerAlignment, CharIndex};
use crate::defnlp::{self, DefnlpOptions};
use crate::error::{DataError, Result};
use crate::example::{Answer, Example, ExampleId};
use crate::record::{AnswerOffsets, RawExample};
use crate::{hf_json, squad};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// SQuAD v1.1 / v2.0: `data[].paragraphs[].qas[]`.
    Squad,
    /// Hugging Face `datasets` export: list, `{"data": [...]}` or JSON Lines of
    /// `{"id","question","context","answers":{"text":[],"answer_start":[]}}`.
    HfJson,
    /// DEFNLP / Coleridge: `train.csv` + a folder of `{Id}.json` publications.
    Defnlp,
}

impl std::str::FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "squad" => Ok(Self::Squad),
            "hf-json" | "json" | "jsonl" => Ok(Self::HfJson),
            "defnlp" | "coleridge" => Ok(Self::Defnlp),
            other => Err(format!(
                "unknown data format {other:?} (expected squad, hf-json or defnlp)"
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
    /// Answers whose text is not in the context (kept for scoring, unusable as training labels).
    pub unrepairable: Vec<String>,
    /// Answers whose offsets did not match, kept as given (`AnswerAlignment::AsGiven`).
    pub misaligned_kept: Vec<String>,
    /// Examples not loaded, with the reason (empty question or context).
    pub skipped: Vec<(String, String)>,
    /// Answerable-looking examples with no answers, loaded as unanswerable.
    pub without_answers: Vec<String>,
    /// DEFNLP publications whose labelled dataset was not found in the text.
    pub labels_not_found: Vec<String>,
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
        s
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
pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<LoadedDataset> {
    let path = path.as_ref();
    let format = match options.format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    let mut report = LoadReport {
        path: path.to_path_buf(),
        format: Some(format),
        ..Default::default()
    };
    let raws = match format {
        DataFormat::Squad => {
            let file = squad::read(path)?;
            report.version = file.version;
            file.records
        }
        DataFormat::HfJson => hf_json::read(path)?,
        DataFormat::Defnlp => {
            let dataset = defnlp::read(path, &options.defnlp)?;
            report.labels_not_found = dataset.labels_not_found;
            dataset.records
        }
    };
    let examples = validate(path, raws, options.alignment, &mut report)?;
    tracing::debug!("{}", report.summary());
    Ok(LoadedDataset { examples, report })
}

/// Guesses the format: a folder or `.csv` is DEFNLP, `.jsonl` is HF, and a `.json` whose
/// `data[0]` has `paragraphs` is SQuAD (any other JSON is HF).
pub fn detect_format(path: &Path) -> Result<DataFormat> {
    if path.is_dir() {
        return Ok(DataFormat::Defnlp);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => return Ok(DataFormat::Defnlp),
        "jsonl" | "ndjson" => return Ok(DataFormat::HfJson),
        _ => {}
    }
    // Peek at the start of the file rather than parsing it twice.
    let head = read_head(path, 1 << 16)?;
    let trimmed = head.trim_start();
    if trimmed.starts_with('{') && head.contains("\"paragraphs\"") {
        Ok(DataFormat::Squad)
    } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
        Ok(DataFormat::HfJson)
    } else {
        Err(DataError::format(
            path,
            "cannot tell the data format (not JSON, JSON Lines, CSV or a folder); pass --format",
        ))
    }
}

fn read_head(path: &Path, bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn validate(
    path: &Path,
    raws: Vec<RawExample>,
    alignment: AnswerAlignment,
    report: &mut LoadReport,
) -> Result<Vec<Example>> {
    let mut seen: HashMap<ExampleId, usize> = HashMap::with_capacity(raws.len());
    let mut examples = Vec::with_capacity(raws.len());
    for raw in raws {
        let id = raw.id;
        if let Some(&first) = seen.get(&id) {
            return Err(DataError::DuplicateId {
                path: path.to_path_buf(),
                id: id.to_string(),
                first,
                second: raw.position,
            });
        }
        seen.insert(id.clone(), raw.position);

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

        let index = CharIndex::new(&raw.context);
        let mut answers = Vec::with_capacity(raw.answers.len());
        for (text, given) in raw.answers {
            if raw.offsets == AnswerOffsets::Located {
                answers.push(Answer {
                    text,
                    char_start: Some(given),
                });
                continue;
            }
            let (start, outcome) = align_answer(&raw.context, &index, &text, given, alignment);
            match outcome {
                AlignOutcome::Aligned => {}
                AlignOutcome::Repaired { from, to } => {
                    tracing::debug!(
                        "{}: example {id}: answer {text:?} moved from char {from} to {to}",
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
            context: raw.context,
            answers,
            is_impossible,
        });
    }
    report.examples = examples.len();
    Ok(examples)
}

fn skip(path: &Path, report: &mut LoadReport, id: &ExampleId, why: &str) {
    tracing::warn!("{}: example {id}: skipped: {why}", path.display());
    report.skipped.push((id.to_string(), why.to_string()));
}
