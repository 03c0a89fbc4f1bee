//! DEFNLP (Coleridge) predictions end to end: the dataset names a publication cites, found by
//! string matching ([`crate::defnlp_match`], phase I), by a QA model (phase II, here), or both
//! merged ([`crate::defnlp_merge`], phase III); and the `Id,PredictionString` submission file
//! (labels joined by `|`). Publications that cannot be read are kept with no labels, with a
//! warning naming the file ([`read_publications_lenient`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use qa_data::atomic::write_atomically;
use qa_data::defnlp::{publication_examples, read_publication, Publication, DEFAULT_QUESTIONS};
use qa_data::progress::{self, Progress};
use serde::Serialize;

use crate::coleridge::clean_label;
use crate::decode::DecodeConfig;
use crate::defnlp_match::{DatasetMatcher, MatcherBuildError};
use crate::defnlp_merge::{merge, MergeRule, QaCandidate};
use crate::error::{EvalError, Result};
use crate::predictor::Predictor;

/// Which phases find the datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefnlpMode {
    /// Known names found in the cleaned text (no model).
    Match,
    /// A QA model's answers ("Which datasets are used?").
    Qa,
    /// Both, merged ([`crate::defnlp_merge::merge`]).
    #[default]
    Both,
}

impl DefnlpMode {
    pub fn needs_model(self) -> bool {
        matches!(self, DefnlpMode::Qa | DefnlpMode::Both)
    }
}

impl std::fmt::Display for DefnlpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DefnlpMode::Match => "match",
            DefnlpMode::Qa => "qa",
            DefnlpMode::Both => "both",
        })
    }
}

/// Why a DEFNLP run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum DefnlpError {
    #[error("DEFNLP mode {mode} needs a fine-tuned QA model")]
    NoModel { mode: DefnlpMode },
    #[error(
        "DEFNLP mode {mode} needs known dataset names (a Coleridge labels CSV or a list of names)"
    )]
    NoNames { mode: DefnlpMode },
    #[error(transparent)]
    Matcher(#[from] MatcherBuildError),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// How the model is asked about a publication.
#[derive(Debug, Clone)]
pub struct DefnlpQuestions {
    /// Asked of every publication (default: DEFNLP's two).
    pub questions: Vec<String>,
    /// run_qa decoding of each window; a window without a dataset mention answers [CLS].
    pub decode: DecodeConfig,
    /// Keep a window's answer only if its probability is at least this.
    pub min_score: f32,
}

impl Default for DefnlpQuestions {
    fn default() -> Self {
        Self {
            questions: DEFAULT_QUESTIONS.iter().map(|q| q.to_string()).collect(),
            decode: DecodeConfig {
                n_best_size: 20,
                max_answer_length: 30,
                version_2_with_negative: true,
                ..Default::default()
            },
            min_score: 0.0,
        }
    }
}

/// Every answer the model gives anywhere in `publication`, cleaned, with its best probability:
/// each window's best non-null answer, when the window does not prefer "no answer". Sorted by
/// label. A blank publication has none (and costs no model call).
pub fn predict_candidates<B: Backend>(
    predictor: &Predictor<B>,
    publication: &Publication,
    ask: &DefnlpQuestions,
) -> Result<Vec<QaCandidate>> {
    if publication.text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let examples = publication_examples(publication, &ask.questions);
    let mut best: BTreeMap<String, f32> = BTreeMap::new();
    for window in predictor.per_window(&examples, &ask.decode)? {
        if window.text.is_empty() {
            continue;
        }
        let Some(answer) = window.nbest.iter().find(|n| !n.text.is_empty()) else {
            continue;
        };
        let label = clean_label(&answer.text);
        if label.is_empty() {
            continue;
        }
        let slot = best.entry(label).or_insert(answer.probability);
        *slot = slot.max(answer.probability);
    }
    Ok(best
        .into_iter()
        .map(|(label, probability)| QaCandidate { label, probability })
        .collect())
}

/// The cleaned dataset labels the model answers anywhere in `publication` with a probability
/// of at least `ask.min_score` in some window ([`predict_candidates`]).
pub fn predict_labels<B: Backend>(
    predictor: &Predictor<B>,
    publication: &Publication,
    ask: &DefnlpQuestions,
) -> Result<BTreeSet<String>> {
    Ok(predict_candidates(predictor, publication, ask)?
        .into_iter()
        .filter(|c| c.probability >= ask.min_score)
        .map(|c| c.label)
        .collect())
}

/// The labels of every publication, with a progress bar over publications.
pub fn predict_all<B: Backend>(
    predictor: &Predictor<B>,
    publications: &[Publication],
    ask: &DefnlpQuestions,
    progress: Progress,
) -> Result<Vec<BTreeSet<String>>> {
    let bar = progress::bar(
        publications.len() as u64,
        "defnlp",
        "publications",
        progress,
    );
    let mut rows = Vec::with_capacity(publications.len());
    for publication in publications {
        rows.push(predict_labels(predictor, publication, ask)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// One line of a findings file: the fixture's `qa_candidates.jsonl` shape plus the matches.
#[derive(Serialize, serde::Deserialize)]
struct FindingsLine {
    #[serde(rename = "Id")]
    id: String,
    #[serde(default)]
    matched: BTreeSet<String>,
    candidates: Vec<CandidateLine>,
}

#[derive(Serialize, serde::Deserialize)]
struct CandidateLine {
    probability: f32,
    text: String,
}

/// Writes what each publication's phases found (JSON lines: `Id`, `matched`, `candidates` with
/// `text` and `probability`), whole or not at all: what a merge rule is tuned on.
pub fn write_findings<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = (&'a str, &'a Findings)>,
) -> Result<()> {
    use std::io::Write;
    Ok(write_atomically(path, |out| {
        for (id, found) in rows {
            let line = FindingsLine {
                id: id.to_string(),
                matched: found.matched.clone(),
                candidates: found
                    .answers
                    .iter()
                    .map(|c| CandidateLine {
                        probability: c.probability,
                        text: c.label.clone(),
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?)
}

/// Reads a findings file ([`write_findings`]; the fixture's `qa_candidates.jsonl` too), by
/// publication id. Candidate texts are cleaned as labels are.
pub fn read_findings(path: &Path) -> Result<BTreeMap<String, Findings>> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = BTreeMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: FindingsLine = serde_json::from_str(line)
            .map_err(|e| EvalError::format(path, format!("line {}: {e}", n + 1)))?;
        let found = Findings {
            matched: row.matched,
            answers: row
                .candidates
                .iter()
                .map(|c| QaCandidate::new(&c.text, c.probability))
                .collect(),
        };
        if out.insert(row.id.clone(), found).is_some() {
            return Err(EvalError::format(
                path,
                format!("line {}: publication {} appears twice", n + 1, row.id),
            ));
        }
    }
    Ok(out)
}

/// Writes `Id,PredictionString` rows, whole or not at all.
pub fn write_submission<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = (&'a str, &'a BTreeSet<String>)>,
) -> Result<()> {
    Ok(write_atomically(path, |out| {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(["Id", "PredictionString"])?;
        for (id, labels) in rows {
            let joined = labels
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("|");
            writer.write_record([id, joined.as_str()])?;
        }
        writer.flush()
    })?)
}

/// Every `*.json` publication of a folder, sorted by id. A file that cannot be read (not
/// UTF-8, empty, malformed JSON, a section without text) is kept with no text, so it gets a
/// submission row with no labels, and named in a warning. Fails only when the folder cannot be
/// listed or holds no `.json` file.
pub fn read_publications_lenient(dir: &Path) -> Result<Vec<Publication>> {
    let entries = std::fs::read_dir(dir).map_err(|source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.is_dir())
        .collect();
    if paths.is_empty() {
        return Err(EvalError::format(
            dir,
            "no {Id}.json publications in this folder",
        ));
    }
    paths.sort();
    Ok(paths
        .iter()
        .map(|path| match read_publication(path) {
            Ok(publication) => publication,
            Err(e) => {
                tracing::warn!("{e}; publication kept with no labels");
                Publication {
                    id: path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    text: String::new(),
                }
            }
        })
        .collect())
}

/// What a DEFNLP run finds datasets with.
pub struct DefnlpPipeline<'a, B: Backend> {
    pub mode: DefnlpMode,
    /// Known names (phase I); required by [`DefnlpMode::Match`]. Without it, `Both` runs as
    /// `Qa` with a warning.
    pub matcher: Option<&'a DatasetMatcher>,
    /// The QA model (phase II); required by `Qa` and `Both`.
    pub predictor: Option<&'a Predictor<B>>,
    pub ask: DefnlpQuestions,
    /// Which QA answers `Both` keeps.
    pub rule: MergeRule,
}

/// What the two phases found in one publication, before the merge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Known names matched in the text (phase I; empty in `qa` mode).
    pub matched: BTreeSet<String>,
    /// The model's answers with at least `min_score` (phase II; empty in `match` mode).
    pub answers: Vec<QaCandidate>,
}

impl Findings {
    /// The labels `mode` submits: the matches, the answers, or both merged by `rule`.
    pub fn labels(&self, mode: DefnlpMode, rule: &MergeRule) -> BTreeSet<String> {
        match mode {
            DefnlpMode::Match => self.matched.clone(),
            DefnlpMode::Qa => self.answers.iter().map(|c| c.label.clone()).collect(),
            DefnlpMode::Both => merge(&self.matched, &self.answers, rule),
        }
    }
}

/// The cleaned dataset labels of every publication, in order, as `pipeline.mode` finds them.
pub fn find_datasets<B: Backend>(
    publications: &[Publication],
    pipeline: &DefnlpPipeline<'_, B>,
    progress: Progress,
) -> std::result::Result<Vec<BTreeSet<String>>, DefnlpError> {
    Ok(find_candidates(publications, pipeline, progress)?
        .iter()
        .map(|found| found.labels(pipeline.mode, &pipeline.rule))
        .collect())
}

/// What each phase of `pipeline.mode` finds in every publication, in order (the merge's input:
/// what a merge rule is tuned on).
pub fn find_candidates<B: Backend>(
    publications: &[Publication],
    pipeline: &DefnlpPipeline<'_, B>,
    progress: Progress,
) -> std::result::Result<Vec<Findings>, DefnlpError> {
    let mode = pipeline.mode;
    let predictor = match (mode.needs_model(), pipeline.predictor) {
        (true, None) => return Err(DefnlpError::NoModel { mode }),
        (_, predictor) => predictor,
    };
    let matcher = match (mode, pipeline.matcher) {
        (DefnlpMode::Match, None) => return Err(DefnlpError::NoNames { mode }),
        (DefnlpMode::Both, None) => {
            tracing::warn!(
                "DEFNLP mode both without known dataset names: only the model's answers are used"
            );
            None
        }
        (DefnlpMode::Qa, _) => None,
        (_, matcher) => matcher,
    };
    let matched = match matcher {
        Some(m) => m.find_all(publications, progress),
        None => vec![BTreeSet::new(); publications.len()],
    };
    let Some(predictor) = predictor.filter(|_| mode.needs_model()) else {
        return Ok(matched
            .into_iter()
            .map(|matched| Findings {
                matched,
                answers: Vec::new(),
            })
            .collect());
    };
    let bar = progress::bar(
        publications.len() as u64,
        "defnlp",
        "publications",
        progress,
    );
    let mut rows = Vec::with_capacity(publications.len());
    for (publication, matched) in publications.iter().zip(matched) {
        let answers: Vec<QaCandidate> = predict_candidates(predictor, publication, &pipeline.ask)?
            .into_iter()
            .filter(|c| c.probability >= pipeline.ask.min_score)
            .collect();
        rows.push(Findings { matched, answers });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}
