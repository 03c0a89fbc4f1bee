//! A data file made ready for a model: loaded and validated, cut to `max_samples`, and cut into
//! windows. What `qa train`, `qa eval` and the reproduce presets do first.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::defnlp_seed::seed_features;
use crate::error::Result;
use crate::example::Example;
use crate::features::{build_features, FeatureConfig, FeatureSet};
use crate::load::{load_files, DataFormat, LoadOptions, LoadReport, LoadedDataset};
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

/// Where one split's data is: a file (or DEFNLP folder), or the files of a Hub dataset split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    Path(PathBuf),
    /// Files read as one dataset (Parquet shards), `name`d in messages.
    Files {
        name: PathBuf,
        files: Vec<PathBuf>,
    },
}

impl DataSource {
    /// What messages call it: the path, or the dataset split's name.
    pub fn name(&self) -> &Path {
        match self {
            Self::Path(path) => path,
            Self::Files { name, .. } => name,
        }
    }
}

/// Loads `source`, keeps the examples `sample` selects, and cuts their windows. DEFNLP data
/// labels each window with any answer inside it (a dataset is usually named many times).
pub fn prepare(
    source: &DataSource,
    options: &LoadOptions,
    windows: &FeatureConfig,
    sample: Sample,
    tokenizer: &Tokenizer,
) -> Result<PreparedData> {
    let path = source.name();
    let loaded = match source {
        DataSource::Path(path) => load_files(std::slice::from_ref(path), path, options)?,
        DataSource::Files { name, files } => load_files(files, name, options)?,
    };
    let config = FeatureConfig {
        label_any_answer: loaded.report.format == Some(DataFormat::Defnlp),
        ..windows.clone()
    };
    sample_and_cut(path, loaded, sample, config, tokenizer, Cut::Sliding)
}

/// How a prepared dataset's examples become windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// run_qa's sliding windows ([`build_features`]).
    Sliding,
    /// The seed DEFNLP notebook's one truncated window ([`crate::defnlp_seed::seed_features`]).
    Seed,
}

/// What every way of preparing data ends with: keep the examples `sample` selects from
/// `loaded`, cut their windows, and log both steps.
pub(crate) fn sample_and_cut(
    path: &Path,
    loaded: LoadedDataset,
    sample: Sample,
    config: FeatureConfig,
    tokenizer: &Tokenizer,
    cut: Cut,
) -> Result<PreparedData> {
    tracing::info!("{}", loaded.report.summary());
    let examples = select_subset(loaded.examples, sample.max_samples, sample.shuffle_seed);
    let labelled = loaded.report.has_gold_labels(&examples);
    let config = FeatureConfig {
        source: Some(path.to_path_buf()),
        ..config
    };
    let (set, kind) = match cut {
        Cut::Sliding => (build_features(tokenizer, &examples, &config)?, "windows"),
        Cut::Seed => (
            seed_features(tokenizer, &examples, &config)?,
            "seed windows",
        ),
    };
    tracing::info!(
        "{}: {} {kind} from {} examples ({} with an answer span, {} examples skipped)",
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
