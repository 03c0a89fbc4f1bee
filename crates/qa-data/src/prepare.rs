//! A data file made ready for a model: loaded and validated, cut to `max_samples`, and cut into
//! windows. What `qa train`, `qa eval` and the reproduce presets do first.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::Result;
use crate::example::Example;
use crate::features::{build_features, FeatureConfig, FeatureSet};
use crate::load::{load, DataFormat, LoadOptions, LoadReport};
use crate::subset::select_subset;

/// The examples of a data file and their windows.
pub struct PreparedData {
    pub examples: Vec<Example>,
    pub windows: FeatureSet,
    pub report: LoadReport,
    /// Whether any selected example carries a gold label ([`LoadReport::has_gold_labels`]).
    pub labelled: bool,
}

/// Which examples of a file to keep: run_qa's `max_*_samples`, after a seeded shuffle if asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub max_samples: Option<usize>,
    pub shuffle_seed: Option<u64>,
}

impl Sample {
    /// The first `max_samples` examples in file order (all when `None`), as run_qa keeps them.
    pub fn first(max_samples: Option<usize>) -> Self {
        Self {
            max_samples,
            shuffle_seed: None,
        }
    }
}

/// Loads `path`, keeps the examples `sample` selects, and cuts their windows. DEFNLP data
/// labels each window with any answer inside it (a dataset is usually named many times).
pub fn prepare(
    path: &Path,
    options: &LoadOptions,
    windows: &FeatureConfig,
    sample: Sample,
    tokenizer: &Tokenizer,
) -> Result<PreparedData> {
    let loaded = load(path, options)?;
    tracing::info!("{}", loaded.report.summary());
    let examples = select_subset(loaded.examples, sample.max_samples, sample.shuffle_seed);
    let labelled = loaded.report.has_gold_labels(&examples);
    let config = FeatureConfig {
        label_any_answer: loaded.report.format == Some(DataFormat::Defnlp),
        source: Some(path.to_path_buf()),
        ..windows.clone()
    };
    let set = build_features(tokenizer, &examples, &config)?;
    tracing::info!(
        "{}: {} windows from {} examples ({} with an answer span, {} examples skipped)",
        path.display(),
        set.report.windows,
        set.report.examples,
        set.report.windows_with_answer,
        set.report.skipped.len()
    );
    Ok(PreparedData {
        examples,
        windows: set,
        report: loaded.report,
        labelled,
    })
}
