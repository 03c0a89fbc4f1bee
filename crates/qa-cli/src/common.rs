//! Flags and steps several subcommands share: model folders, devices, data + windows, decoding.

use std::path::{Path, PathBuf};

use anyhow::bail;
use qa_data::defnlp_seed::{prepare_seed, DefnlpWindows};
use qa_data::hub::{self, DatasetFiles, HubSettings, Split};
use qa_data::{Columns, DataFormat, DataSource, FeatureConfig, LoadOptions, PreparedData, Sample};
use qa_eval::DecodeConfig;
use qa_model::backend::{parse_device, Device};
use qa_model::InferencePrecision;
use qa_train::Origin;

/// Which revision of a Hub model to use (a branch, tag or commit; run_qa's `--model_revision`).
#[derive(clap::Args, Clone)]
pub struct RevisionArg {
    #[arg(long, alias = "model-revision", default_value = hub::DEFAULT_REVISION)]
    pub revision: String,
}

/// A model given as a local folder or as a Hugging Face Hub id (`org/name`), resolved through
/// the HF cache (downloading what is missing unless `HF_HUB_OFFLINE=1`): the folder to load,
/// with a hint when it is not one.
pub fn model_dir(spec: &str, revision: &RevisionArg) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() {
        bail!(
            "{} is a file: --model takes a Hugging Face model folder (config.json, \
             model.safetensors, tokenizer.json) or a Hub id",
            path.display()
        );
    }
    let dir = match hub::resolve_model(spec, Some(&revision.revision), &HubSettings::from_env()) {
        Ok(dir) => dir,
        Err(hub::HubError::NotAnId { .. }) => bail!(
            "model folder {} does not exist\n  hint: point at a local Hugging Face folder \
             (config.json, model.safetensors, tokenizer.json), or give a Hub id (org/name)",
            path.display()
        ),
        Err(e) => return Err(anyhow::anyhow!(e).context(format!("{spec} is not a local folder"))),
    };
    if !dir.join("config.json").is_file() {
        bail!(
            "{} has no config.json: not a Hugging Face model folder",
            dir.display()
        );
    }
    Ok(dir)
}

/// Where a model came from, for the model card: the Hub id when it was one.
pub fn model_origin(spec: &str) -> Origin {
    if Path::new(spec).is_dir() {
        Origin::Local(PathBuf::from(spec))
    } else {
        Origin::Hub(spec.to_string())
    }
}

/// A Hugging Face Hub dataset instead of files (run_qa's `--dataset_name`).
#[derive(clap::Args, Clone)]
pub struct DatasetArgs {
    /// `squad`, `squad_v2` or `org/name`: the dataset's Parquet splits, through the HF cache.
    #[arg(long)]
    pub dataset_name: Option<String>,
    /// The dataset's configuration (a folder of its repo), when it has several.
    #[arg(long)]
    pub dataset_config_name: Option<String>,
    #[arg(long, default_value = hub::DEFAULT_REVISION)]
    pub dataset_revision: String,
}

impl DatasetArgs {
    /// The files of the `wanted` splits, when a dataset is named.
    pub fn resolve(&self, wanted: &[Split]) -> anyhow::Result<Option<DatasetFiles>> {
        let Some(name) = &self.dataset_name else {
            return Ok(None);
        };
        Ok(Some(hub::resolve_dataset(
            name,
            self.dataset_config_name.as_deref(),
            Some(&self.dataset_revision),
            wanted,
            &HubSettings::from_env(),
        )?))
    }
}

/// One split of a Hub dataset as a data source, named `org/name (split)` in messages.
pub fn split_source(files: &DatasetFiles, split: Split) -> anyhow::Result<DataSource> {
    let paths = files.split(split).map_err(anyhow::Error::msg)?;
    Ok(DataSource::Files {
        name: PathBuf::from(format!("{} ({split})", files.repo.id)),
        files: paths.to_vec(),
    })
}

pub fn device(spec: &str) -> anyhow::Result<Device> {
    Ok(parse_device(spec)?)
}

/// The precision a model answers in.
#[derive(clap::Args, Clone, Copy)]
pub struct PrecisionArg {
    /// Precision of the linear layers' products: f32, bf16 (bf16 operands, f32 accumulation)
    /// or int8 (dynamic quantization: int8 weights per output channel, u8 activations per
    /// token, as torch `quantize_dynamic` / ONNX Runtime `quantize_dynamic(per_channel=True)`).
    /// Attention's two products run in bf16 where the CPU has AVX512-BF16 (else f32); int8
    /// keeps the feed-forward's second product in bf16 (or f32); embeddings, LayerNorm, softmax
    /// and the QA head stay f32. QA_LOW_PRECISION_KERNELS=emulated computes, on any CPU, what
    /// the AVX-512 VNNI/BF16 kernels compute (attention's products included).
    #[arg(long, default_value_t = InferencePrecision::F32)]
    pub precision: InferencePrecision,
}

/// Whether f32 matrix products may use TF32 tensor cores.
#[derive(clap::Args, Clone, Copy)]
pub struct Tf32Arg {
    /// f32 matrix products on the GPU's TF32 tensor cores (inputs rounded to 10 mantissa bits;
    /// HF's --tf32). CUDA builds only; without it f32 products are exact f32.
    #[arg(long)]
    pub tf32: bool,
}

impl Tf32Arg {
    /// Sets the process's products as asked.
    pub fn apply(self) -> anyhow::Result<()> {
        let tf32 = match self.tf32 {
            true => qa_model::cublaslt::Tf32::On,
            false => qa_model::cublaslt::Tf32::Off,
        };
        Ok(qa_model::cublaslt::set_tf32(tf32)?)
    }
}

/// How examples are cut into windows.
#[derive(clap::Args, Clone)]
pub struct WindowArgs {
    /// Tokens per window (question + context + specials).
    #[arg(long, alias = "max-length", default_value_t = 384)]
    pub max_seq_length: usize,
    /// Context tokens shared by consecutive windows.
    #[arg(long, alias = "stride", default_value_t = 128)]
    pub doc_stride: usize,
    /// Keep only each question's first this many tokens (the HF pipeline's max_question_len,
    /// run_squad's max_query_length) [default: whole questions, as run_qa].
    #[arg(long, alias = "max-question-len")]
    pub max_question_length: Option<usize>,
}

impl WindowArgs {
    pub fn config(&self) -> FeatureConfig {
        FeatureConfig {
            max_length: self.max_seq_length,
            stride: self.doc_stride,
            max_question_tokens: self.max_question_length,
            ..Default::default()
        }
    }
}

/// How a data file is read.
#[derive(clap::Args, Clone)]
pub struct DataArgs {
    /// Data format (default: detected from the file).
    #[arg(long)]
    pub format: Option<DataFormat>,
    /// DEFNLP: a question asked of every publication (repeatable; default: DEFNLP's two).
    #[arg(long = "defnlp-question", alias = "questions")]
    pub defnlp_questions: Vec<String>,
    /// DEFNLP training windows: `sliding` (every window of every publication, every mention
    /// labelled) or `seed` (the seed notebook's: one truncated window per CSV row × question,
    /// answer = first match of dataset_title, [CLS] when outside).
    #[arg(long, default_value_t = DefnlpWindows::Sliding)]
    pub defnlp_windows: DefnlpWindows,
    /// The column holding questions (HF JSON, Parquet and CSV rows).
    #[arg(long, default_value = "question")]
    pub question_column_name: String,
    /// The column holding contexts.
    #[arg(long, default_value = "context")]
    pub context_column_name: String,
    /// The column holding answers (`{text: [...], answer_start: [...]}`).
    #[arg(long, default_value = "answers")]
    pub answer_column_name: String,
}

impl DataArgs {
    pub fn load_options(&self) -> LoadOptions {
        let mut options = LoadOptions {
            format: self.format,
            columns: Columns {
                question: self.question_column_name.clone(),
                context: self.context_column_name.clone(),
                answers: self.answer_column_name.clone(),
            },
            ..Default::default()
        };
        if !self.defnlp_questions.is_empty() {
            options.defnlp.questions = self.defnlp_questions.clone();
        }
        options
    }
}

/// Where windows are cached between runs (as `datasets` caches run_qa's `.map`).
#[derive(clap::Args, Clone)]
pub struct CacheArgs {
    /// Folder of cached windows [default: $HF_HOME/qa-windows].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Cut the windows again even when the cache holds them, and replace them there (run_qa's
    /// --overwrite_cache).
    #[arg(long, alias = "overwrite_cache")]
    pub overwrite_cache: bool,
    /// Neither read nor write cached windows.
    #[arg(long, conflicts_with_all = ["cache_dir", "overwrite_cache"])]
    pub no_cache: bool,
}

impl CacheArgs {
    pub fn cache(&self) -> Option<qa_data::WindowCache> {
        (!self.no_cache).then(|| qa_data::WindowCache {
            dir: self
                .cache_dir
                .clone()
                .unwrap_or_else(qa_data::WindowCache::default_dir),
            overwrite: self.overwrite_cache,
        })
    }
}

/// Flags of run_qa's post-processing.
#[derive(clap::Args, Clone)]
pub struct DecodeArgs {
    /// SQuAD v2.0: questions may have no answer.
    #[arg(long)]
    pub version_2_with_negative: bool,
    #[arg(long, default_value_t = 20)]
    pub n_best_size: usize,
    #[arg(long, default_value_t = 30)]
    pub max_answer_length: usize,
    /// v2: answer "" when (null score − best span score) exceeds this.
    #[arg(long, default_value_t = 0.0)]
    pub null_score_diff_threshold: f32,
}

impl DecodeArgs {
    pub fn config(&self) -> DecodeConfig {
        DecodeConfig {
            n_best_size: self.n_best_size,
            max_answer_length: self.max_answer_length,
            version_2_with_negative: self.version_2_with_negative,
            null_score_diff_threshold: self.null_score_diff_threshold,
            use_max_context: false,
        }
    }
}

/// Loads a data file (or Hub dataset split), keeps the first `max_samples` examples, and cuts
/// windows (or reads them from the windows cache).
pub fn prepare(
    source: &DataSource,
    data: &DataArgs,
    windows: &FeatureConfig,
    max_samples: Option<usize>,
    tokenizer: &tokenizers::Tokenizer,
    cache: &CacheArgs,
) -> anyhow::Result<PreparedData> {
    let (options, sample) = (data.load_options(), Sample::first(max_samples));
    Ok(match (data.defnlp_windows, source) {
        (DefnlpWindows::Sliding, _) => qa_data::prepare(
            source,
            &options,
            windows,
            sample,
            tokenizer,
            cache.cache().as_ref(),
        )?,
        (DefnlpWindows::Seed, DataSource::Path(path)) => {
            prepare_seed(path, &options, windows, sample, tokenizer)?
        }
        (DefnlpWindows::Seed, DataSource::Files { name, .. }) => bail!(
            "{}: the seed's windows (--defnlp-windows seed) are for a DEFNLP folder",
            name.display()
        ),
    })
}

/// `--null-score-diff-threshold` for answering (`qa predict`, `qa serve`).
#[derive(clap::Args, Clone, Copy)]
pub struct NullThresholdArg {
    /// Answer "" when the null logit beats the best span's by more than this (run_qa's rule;
    /// `qa eval`'s best_f1_thresh); turns no-answer handling on [default: the model folder's
    /// null_threshold.json, if it has one].
    #[arg(long, allow_hyphen_values = true)]
    pub null_score_diff_threshold: Option<f32>,
}

impl NullThresholdArg {
    /// The threshold to answer with: the flag's, else the one `qa eval --write-null-threshold`
    /// left in `model_dir` (said in the log), else none.
    pub fn resolve(&self, model_dir: &Path) -> anyhow::Result<Option<f32>> {
        if let Some(threshold) = self.null_score_diff_threshold {
            anyhow::ensure!(
                threshold.is_finite(),
                "--null-score-diff-threshold must be a finite number"
            );
            return Ok(Some(threshold));
        }
        let Some(file) = qa_eval::threshold::read(model_dir)? else {
            return Ok(None);
        };
        tracing::info!(
            "no-answer threshold {} from {}: \"\" is answered when the null logit beats the \
             best span's by more than it (--null-score-diff-threshold overrides)",
            file.null_score_diff_threshold,
            model_dir.join(qa_eval::threshold::FILE_NAME).display()
        );
        Ok(Some(file.null_score_diff_threshold))
    }
}

/// Refuses to write `output` when it is one of `inputs` — the same file, however spelled
/// (links, `..`, another relative path): writing would destroy the input.
pub fn refuse_overwriting_inputs(output: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    if let Some(input) = inputs.iter().find(|input| same_file(output, input)) {
        anyhow::bail!(
            "{}: this output is the input {}: writing it would destroy the input; write \
             elsewhere",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// Whether two paths name one existing file (or folder).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => a.canonicalize().ok() == b.canonicalize().ok(),
        _ => false,
    }
}
