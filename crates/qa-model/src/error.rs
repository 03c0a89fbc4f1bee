//! Errors of reading configs and checkpoints, typed so callers can tell them apart.

use std::path::PathBuf;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "the config describes a model of {parameters} parameters ({gib:.1} GiB in f32), more \
         than this machine's {memory_gib:.1} GiB of memory: check config.json's sizes"
    )]
    TooLarge {
        parameters: u128,
        gib: f64,
        memory_gib: f64,
    },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error("{path}: {what}")]
    Checkpoint { path: PathBuf, what: String },
    #[error("{path}: tensor {name}: expected shape {expected:?}, found {found:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name} is missing")]
    Missing { path: PathBuf, name: String },
    #[error(
        "{path}: tensor {name} holds NaN or infinite values (a diverged training run?): \
         refusing to use it"
    )]
    NonFinite { path: PathBuf, name: String },
    #[error(
        "{path}: a model answering in {precision} cannot be saved (its linear layers hold only \
         their {precision} form): save the f32 model it was loaded from"
    )]
    LowPrecisionSave {
        path: PathBuf,
        precision: crate::InferencePrecision,
    },
    #[error(transparent)]
    Write(#[from] qa_data::atomic::WriteError),
    #[error(
        "{path}: the tokenizer has {tokenizer} tokens but the model's embeddings hold \
         {embeddings}: they do not belong together"
    )]
    VocabularyMismatch {
        path: PathBuf,
        tokenizer: usize,
        embeddings: usize,
    },
}

/// Token ids beyond the embedding table would index out of range: refuse a tokenizer of
/// `tokenizer_tokens` tokens for a model folder `dir` whose embeddings are smaller.
pub fn check_vocabulary(
    config: &crate::ModelConfig,
    tokenizer_tokens: usize,
    dir: &std::path::Path,
) -> Result<()> {
    if tokenizer_tokens > config.vocab_size {
        return Err(ModelError::VocabularyMismatch {
            path: dir.to_path_buf(),
            tokenizer: tokenizer_tokens,
            embeddings: config.vocab_size,
        });
    }
    Ok(())
}

/// Why a `config.json` cannot be built as given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("malformed JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A required key is missing or a key has the wrong type (serde names the key).
    #[error("{0}")]
    BadKey(#[source] serde_json::Error),
    #[error("no \"model_type\" (expected one of {expected:?})")]
    NoModelType { expected: &'static [&'static str] },
    #[error("model_type {found:?} is not supported (expected one of {expected:?})")]
    UnsupportedModelType {
        found: String,
        expected: &'static [&'static str],
    },
    #[error("{key:?} = {value:?} is not supported (only {supported})")]
    Unsupported {
        key: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("decoder configs (\"is_decoder\": true) are not supported")]
    Decoder,
    #[error("hidden size {hidden_size} is not divisible by {num_heads} attention heads")]
    HeadsDoNotDivide {
        hidden_size: usize,
        num_heads: usize,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
