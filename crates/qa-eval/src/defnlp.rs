//! DEFNLP (Coleridge) predictions: the dataset labels a QA model finds in a publication, and
//! the `Id,PredictionString` submission file (labels joined by `|`).

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::backend::Backend;
use qa_data::atomic::write_atomically;
use qa_data::defnlp::{publication_examples, Publication, DEFAULT_QUESTIONS};
use qa_data::progress::{self, Progress};

use crate::coleridge::clean_label;
use crate::decode::DecodeConfig;
use crate::error::Result;
use crate::predictor::Predictor;

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

/// The cleaned dataset labels the model answers anywhere in `publication`: every window's best
/// non-null answer, when the window does not prefer "no answer" and the answer is probable
/// enough.
pub fn predict_labels<B: Backend>(
    predictor: &Predictor<B>,
    publication: &Publication,
    ask: &DefnlpQuestions,
) -> Result<BTreeSet<String>> {
    let examples = publication_examples(publication, &ask.questions);
    let mut labels = BTreeSet::new();
    for window in predictor.per_window(&examples, &ask.decode)? {
        if window.text.is_empty() {
            continue;
        }
        let best = window.nbest.iter().find(|n| !n.text.is_empty());
        if let Some(best) = best.filter(|b| b.probability >= ask.min_score) {
            let cleaned = clean_label(&best.text);
            if !cleaned.is_empty() {
                labels.insert(cleaned);
            }
        }
    }
    Ok(labels)
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
