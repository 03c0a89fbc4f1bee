//! A data file made ready for a model: loaded and validated, cut to `max_samples`, and cut into
//! windows. What `qa train`, `qa eval` and the reproduce presets do first.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::cache::{fingerprint, WindowCache};
use crate::defnlp_seed::seed_features;
use crate::error::{DataError, Result};
use crate::example::Example;
use crate::features::{build_features, FeatureConfig, FeatureReport, FeatureSet};
use crate::load::{load_files, DataFormat, LoadOptions, LoadReport, LoadedDataset};
use crate::progress::{self, Progress};
use crate::subset::select_subset;
use crate::window_file::WindowFile;
use crate::windows::Windows;

/// The examples of a data file and their windows.
pub struct PreparedData {
    pub examples: Vec<Example>,
    /// In memory, or (with the windows cache) in the cached file, read window by window.
    pub windows: Windows,
    pub window_report: FeatureReport,
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

/// Loads `source`, keeps the examples `sample` selects, and cuts their windows, or reads them
/// from `cache` when it holds the windows of the same data, tokenizer and settings (and writes
/// them there otherwise). DEFNLP data labels each window with any answer inside it (a dataset
/// is usually named many times).
pub fn prepare(
    source: &DataSource,
    options: &LoadOptions,
    windows: &FeatureConfig,
    sample: Sample,
    tokenizer: &Tokenizer,
    cache: Option<&WindowCache>,
) -> Result<PreparedData> {
    let started = std::time::Instant::now();
    let path = source.name();
    let files = match source {
        DataSource::Path(path) => std::slice::from_ref(path),
        DataSource::Files { files, .. } => files.as_slice(),
    };
    let loaded = load_files(files, path, options)?;
    let config = FeatureConfig {
        label_any_answer: loaded.report.format == Some(DataFormat::Defnlp),
        ..windows.clone()
    };
    let cached = match cache {
        Some(cache) => {
            let fingerprint =
                fingerprint(files, tokenizer, &config, sample, options, Cut::Sliding)?;
            Some((cache, fingerprint))
        }
        None => None,
    };
    let windowing = Windowing {
        tokenizer,
        cut: Cut::Sliding,
        cached,
    };
    sample_and_cut(path, loaded, sample, config, windowing, started)
}

/// How [`sample_and_cut`] makes windows: with which tokenizer, which cut, and (when cached)
/// the cache and the windows' fingerprint.
pub(crate) struct Windowing<'a> {
    pub tokenizer: &'a Tokenizer,
    pub cut: Cut,
    pub cached: Option<(&'a WindowCache, String)>,
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
    windowing: Windowing,
    started: std::time::Instant,
) -> Result<PreparedData> {
    let Windowing {
        tokenizer,
        cut,
        cached,
    } = windowing;
    tracing::info!("{}", loaded.report.summary());
    let examples = select_subset(loaded.examples, sample.max_samples, sample.shuffle_seed);
    let labelled = loaded.report.has_gold_labels(&examples);
    let config = FeatureConfig {
        source: Some(path.to_path_buf()),
        ..config
    };
    let kind = match cut {
        Cut::Sliding => "windows",
        Cut::Seed => "seed windows",
    };
    let on_disk = match &cached {
        Some((cache, fingerprint)) => match cache.read(fingerprint) {
            Some(file) => {
                let report = file.meta.report(file.len());
                Some((file, report))
            }
            None => cut_into_cache(&examples, &config, tokenizer, cut, cache, fingerprint)?,
        },
        None => None,
    };
    let (windows, window_report) = match on_disk {
        Some((file, report)) => (Windows::File { file, keep: None }, report),
        None => {
            let set = cut_windows(&examples, &config, tokenizer, cut)?;
            (Windows::Memory(set.features), set.report)
        }
    };
    tracing::info!(
        "{}: {} {kind} from {} examples ({} with an answer span, {} examples skipped); data \
         ready in {:.2} s",
        path.display(),
        window_report.windows,
        window_report.examples,
        window_report.windows_with_answer,
        window_report.skipped.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(PreparedData {
        examples,
        windows,
        window_report,
        report: loaded.report,
        labelled,
    })
}

fn cut_windows(
    examples: &[Example],
    config: &FeatureConfig,
    tokenizer: &Tokenizer,
    cut: Cut,
) -> Result<FeatureSet> {
    match cut {
        Cut::Sliding => build_features(tokenizer, examples, config),
        Cut::Seed => seed_features(tokenizer, examples, config),
    }
}

/// Examples cut at a time when windows go straight into the cache: one chunk's windows are
/// all that is held in memory (COVID-QA's articles give ~28 windows an example, ~200 MB here).
const CHUNK_EXAMPLES: usize = 512;

/// Cuts the windows of `examples` chunk by chunk into the cache file for `fingerprint`, and
/// opens it. `None` when the cache cannot be written (said as a warning): the caller then cuts
/// them in memory.
fn cut_into_cache(
    examples: &[Example],
    config: &FeatureConfig,
    tokenizer: &Tokenizer,
    cut: Cut,
    cache: &WindowCache,
    fingerprint: &str,
) -> Result<Option<(WindowFile, FeatureReport)>> {
    let not_cached = |e: DataError| {
        tracing::warn!("windows not cached: {e}");
        None
    };
    let mut writer = match cache.writer(fingerprint, tokenizer.get_vocab_size(true)) {
        Ok(writer) => writer,
        Err(e) => return Ok(not_cached(e)),
    };
    let bar = progress::bar(
        examples.len() as u64,
        "windows",
        "examples",
        config.progress,
    );
    let quiet = FeatureConfig {
        progress: Progress::Hidden,
        ..config.clone()
    };
    let mut report = FeatureReport::default();
    for (chunk, examples) in examples.chunks(CHUNK_EXAMPLES).enumerate() {
        let mut set = cut_windows(examples, &quiet, tokenizer, cut)?;
        let first = chunk * CHUNK_EXAMPLES;
        set.features
            .iter_mut()
            .for_each(|f| f.example_index += first);
        report.examples += set.report.examples;
        report.windows += set.report.windows;
        report.windows_with_answer += set.report.windows_with_answer;
        report.skipped.extend(set.report.skipped);
        if let Err(e) = writer.write(&set.features) {
            return Ok(not_cached(e));
        }
        bar.inc(examples.len() as u64);
    }
    bar.finish_and_clear();
    match cache.publish(fingerprint, writer, &report) {
        Ok(file) => Ok(Some((file, report))),
        Err(e) => Ok(not_cached(e)),
    }
}
