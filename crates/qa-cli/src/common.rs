//! Pieces several subcommands share: model folders, devices, data + windows, decode flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use qa_data::{
    build_features, load, select_subset, DataFormat, Example, FeatureConfig, FeatureSet,
    LoadOptions,
};
use qa_eval::DecodeConfig;
use qa_model::backend::{parse_device, Device};

/// Checks that `path` is a usable HF model folder, with a hint when it is not.
pub fn model_dir(path: &Path) -> anyhow::Result<PathBuf> {
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
    parse_device(spec).map_err(anyhow::Error::msg)
}

/// Flags shared by everything that cuts windows.
#[derive(clap::Args, Clone)]
pub struct WindowArgs {
    /// Tokens per window (question + context + specials).
    #[arg(long, default_value_t = 384)]
    pub max_seq_length: usize,
    /// Context tokens shared by consecutive windows.
    #[arg(long, default_value_t = 128)]
    pub doc_stride: usize,
    /// Data format (default: detected).
    #[arg(long)]
    pub format: Option<DataFormat>,
    /// DEFNLP: the questions asked of every publication (repeatable; default: DEFNLP's two).
    #[arg(long = "defnlp-question")]
    pub defnlp_questions: Vec<String>,
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

/// A loaded data file cut into windows.
pub struct Windowed {
    pub examples: Vec<Example>,
    pub set: FeatureSet,
    /// Whether any selected example has gold labels: answers, or an explicit `is_impossible`
    /// (the loader also marks answer-less questions impossible, but that is no label).
    pub labelled: bool,
}

/// Loads a data file, keeps the first `max_samples` examples, and cuts windows.
pub fn examples_and_windows(
    path: &Path,
    windows: &WindowArgs,
    max_samples: Option<usize>,
    tokenizer: &tokenizers::Tokenizer,
) -> anyhow::Result<Windowed> {
    let mut options = LoadOptions {
        format: windows.format,
        ..Default::default()
    };
    if !windows.defnlp_questions.is_empty() {
        options.defnlp.questions = windows.defnlp_questions.clone();
    }
    let data = load(path, &options)?;
    eprintln!("{}", data.report.summary());
    let examples = select_subset(data.examples, max_samples, None);
    let unlabelled: std::collections::HashSet<&str> = data
        .report
        .without_answers
        .iter()
        .map(String::as_str)
        .collect();
    let labelled = examples
        .iter()
        .any(|e| !e.answers.is_empty() || !unlabelled.contains(e.id.to_string().as_str()));
    let config = FeatureConfig {
        max_length: windows.max_seq_length,
        stride: windows.doc_stride,
        label_any_answer: data.report.format == Some(DataFormat::Defnlp),
        ..Default::default()
    };
    let set = build_features(tokenizer, &examples, &config)
        .with_context(|| format!("cutting {} into windows", path.display()))?;
    eprintln!(
        "{}: {} windows from {} examples ({} skipped)",
        path.display(),
        set.report.windows,
        set.report.examples,
        set.report.skipped.len()
    );
    Ok(Windowed {
        examples,
        set,
        labelled,
    })
}

pub fn pad_id(tokenizer: &tokenizers::Tokenizer) -> u32 {
    tokenizer.token_to_id("[PAD]").unwrap_or(0)
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    qa_eval::decode::write_json(path, value)?;
    Ok(())
}

/// Token ids beyond the embedding table would index out of range: refuse such a pair up front.
pub fn check_vocab(
    tokenizer: &tokenizers::Tokenizer,
    config: &qa_model::ModelConfig,
    model_dir: &Path,
) -> anyhow::Result<()> {
    let tokens = tokenizer.get_vocab_size(true);
    if tokens > config.vocab_size {
        bail!(
            "{}: the tokenizer has {tokens} tokens but the model's embeddings hold {}: \
             they do not belong together",
            model_dir.display(),
            config.vocab_size
        );
    }
    Ok(())
}
