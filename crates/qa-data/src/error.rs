//! One error type for the crate; every variant names the file, and the example id where
//! one is involved, so a user can go straight to the bad record.

use std::path::PathBuf;

pub type Result<T, E = DataError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON{}: {source}", line_hint(*.line))]
    Json {
        path: PathBuf,
        line: Option<usize>,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: malformed CSV: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    #[error("{path}: example {id}: {what}")]
    Example {
        path: PathBuf,
        id: String,
        what: String,
    },
    #[error("{path}: example #{position} (no id): missing field \"id\"")]
    MissingId { path: PathBuf, position: usize },
    #[error("{path}: example #{position}: id is blank")]
    BlankId { path: PathBuf, position: usize },
    #[error("{path}: example #{position}: id must be a string or an integer, found {found}")]
    InvalidId {
        path: PathBuf,
        position: usize,
        /// The id as the file wrote it (JSON).
        found: String,
    },
    /// Two records whose ids have the same text form (`7` and `"7"` included): a predictions
    /// file, keyed by that text, could not tell them apart.
    #[error(
        "{path}: duplicate example id {id}: example #{first} (id {first_as}) and example \
         #{second} (id {second_as}) have the same id text, which keys predictions"
    )]
    DuplicateId {
        path: PathBuf,
        /// The id's text form.
        id: String,
        first: usize,
        second: usize,
        /// Each record's id as the file wrote it (JSON: `7` or `"7"`).
        first_as: String,
        second_as: String,
    },
    /// A file of 0 bytes, or of whitespace (and a byte-order mark) only.
    #[error("{path}: the file is empty")]
    EmptyFile { path: PathBuf },
    #[error("{path}: line {line} is not valid UTF-8 text")]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{path}: line {line}: field {field:?} is blank")]
    BlankLineField {
        path: PathBuf,
        line: usize,
        field: &'static str,
    },
    /// JSON, but not what `tokenizers` saves (`{}`, a `config.json`, ...).
    #[error("{path}: not a Hugging Face tokenizer file ({why})")]
    NotATokenizer { path: PathBuf, why: String },
    #[error(
        "{path}: no tokenizer found (expected tokenizer.json, or vocab.txt for a BERT \
         WordPiece tokenizer)"
    )]
    NoTokenizer { path: PathBuf },
    #[error("{path}: cannot read line {line}: {source}")]
    ReadLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: missing string field {field:?}")]
    MissingLineField {
        path: PathBuf,
        line: usize,
        field: &'static str,
    },
    #[error("{path}: line {line}: unknown field \"{field}\" (a document line holds \"id\"? and \"text\")")]
    UnknownLineField {
        path: PathBuf,
        line: usize,
        field: String,
    },
    #[error("{path}: line {line}: id must be a string or an integer, found {found}")]
    InvalidLineId {
        path: PathBuf,
        line: usize,
        /// The id as the line wrote it (JSON).
        found: String,
    },
    #[error("tokenizer {path}: {what}")]
    Tokenizer { path: PathBuf, what: String },
    #[error("invalid feature settings: {0}")]
    Config(String),
}

fn line_hint(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            what: what.into(),
        }
    }
    pub(crate) fn example(
        path: impl Into<PathBuf>,
        id: impl Into<String>,
        what: impl Into<String>,
    ) -> Self {
        Self::Example {
            path: path.into(),
            id: id.into(),
            what: what.into(),
        }
    }
}
