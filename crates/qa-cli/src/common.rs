//! Flags and steps several subcommands share: model folders, devices, data + windows, decoding.

use std::path::{Path, PathBuf};

use anyhow::bail;
use qa_data::defnlp_seed::{prepare_seed, DefnlpWindows};
use qa_data::{DataFormat, FeatureConfig, LoadOptions, PreparedData, Sample};
use qa_eval::DecodeConfig;
use qa_model::backend::{parse_device, Device};

/// Checks that `path` is a usable HF model folder, with a hint when it is not.
pub fn model_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        bail!(
            "{} is a file: --model takes a Hugging Face model folder (config.json, \
             model.safetensors, tokenizer.json)",
            path.display()
        );
    }
    if !path.is_dir() {
        bail!(
            "model folder {} does not exist\n  hint: point at a local Hugging Face folder (config.json, model.safetensors, tokenizer.json), \
             or download one first: cargo xtask fetch model <hub-id>",
            path.display()
        );
    }
    if !path.join("config.json").is_file() {
        bail!(
            "{} has no config.json: not a Hugging Face model folder",
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

pub fn device(spec: &str) -> anyhow::Result<Device> {
    Ok(parse_device(spec)?)
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
}

impl WindowArgs {
    pub fn config(&self) -> FeatureConfig {
        FeatureConfig {
            max_length: self.max_seq_length,
            stride: self.doc_stride,
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
}

impl DataArgs {
    pub fn load_options(&self) -> LoadOptions {
        let mut options = LoadOptions {
            format: self.format,
            ..Default::default()
        };
        if !self.defnlp_questions.is_empty() {
            options.defnlp.questions = self.defnlp_questions.clone();
        }
        options
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

/// Loads a data file, keeps the first `max_samples` examples, and cuts windows.
pub fn prepare(
    path: &Path,
    data: &DataArgs,
    windows: &FeatureConfig,
    max_samples: Option<usize>,
    tokenizer: &tokenizers::Tokenizer,
) -> anyhow::Result<PreparedData> {
    let prepare = match data.defnlp_windows {
        DefnlpWindows::Sliding => qa_data::prepare,
        DefnlpWindows::Seed => prepare_seed,
    };
    Ok(prepare(
        path,
        &data.load_options(),
        windows,
        Sample::first(max_samples),
        tokenizer,
    )?)
}
