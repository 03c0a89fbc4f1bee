//! The no-answer threshold a model folder carries: `qa eval --version-2-with-negative
//! --write-null-threshold` writes the official `best_f1_thresh` into [`FILE_NAME`] beside
//! `config.json`, and `qa predict` / `qa serve` answer "" by run_qa's rule with it unless told
//! otherwise (`--null-score-diff-threshold`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// The file's name in the model folder.
pub const FILE_NAME: &str = "null_threshold.json";

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullThreshold {
    /// Answer "" when `null logit − best span logit` exceeds this (run_qa's
    /// `null_score_diff_threshold`; the official script's `best_f1_thresh`).
    pub null_score_diff_threshold: f32,
    /// The F1 the threshold reached where it was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_f1: Option<f64>,
    /// The data it was chosen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_on: Option<String>,
}

/// The threshold file of `model_dir`, if it has one. A file that cannot be read or holds
/// anything else is an error naming it (a wrong threshold would silently change answers).
pub fn read(model_dir: &Path) -> Result<Option<NullThreshold>> {
    let path = model_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EvalError::Io { path, source }),
    };
    let threshold: NullThreshold =
        serde_json::from_str(&text).map_err(|source| EvalError::Json {
            path: path.clone(),
            source,
        })?;
    if !threshold.null_score_diff_threshold.is_finite() {
        return Err(EvalError::format(
            path,
            "null_score_diff_threshold is not finite",
        ));
    }
    Ok(Some(threshold))
}

/// Writes `threshold` into `model_dir` (atomically); returns the file's path.
pub fn write(model_dir: &Path, threshold: &NullThreshold) -> Result<PathBuf> {
    let path = model_dir.join(FILE_NAME);
    let text = serde_json::to_string_pretty(threshold).map_err(|source| EvalError::Json {
        path: path.clone(),
        source,
    })?;
    qa_data::atomic::write_atomically(&path, |out| writeln!(out, "{text}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_thresholds_read_back_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let threshold = NullThreshold {
            null_score_diff_threshold: -1.25,
            best_f1: Some(71.5),
            chosen_on: Some("dev.json".into()),
        };
        write(dir.path(), &threshold).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(threshold));
        for bad in [
            r#"{"null_score_diff_threshold": "high"}"#,
            r#"{"null_score_diff_threshold": 1.0, "treshold": 2}"#,
            "{}",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains(FILE_NAME), "{bad}: {err}");
        }
    }
}
