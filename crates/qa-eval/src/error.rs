//! Typed errors of decoding, scoring and prediction, each naming the file involved.

use std::path::PathBuf;

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON at line {}: {source}", .source.line())]
    Json {
        path: PathBuf,
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
    #[error("decoding: {0}")]
    Decode(String),
    #[error("question {id}: the {field} is empty: there is nothing to answer")]
    BlankInput { id: String, field: &'static str },
    #[error(transparent)]
    Data(#[from] qa_data::DataError),
    #[error(transparent)]
    Write(#[from] qa_data::atomic::WriteError),
    #[error(transparent)]
    Model(#[from] qa_model::ModelError),
    #[error(transparent)]
    Precision(#[from] qa_model::model::PrecisionError),
}

impl EvalError {
    pub(crate) fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            what: what.into(),
        }
    }
}

pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}
