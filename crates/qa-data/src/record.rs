//! Records as the dataset readers produce them, before validation, and the JSON helpers the
//! readers share. Readers depend on this module and `load` depends on the readers, never back.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::example::ExampleId;

/// A record as a reader read it, before validation. `position` is its index in the file
/// (duplicate-id errors name both positions).
#[derive(Debug, Clone)]
pub(crate) struct RawExample {
    pub id: ExampleId,
    pub position: usize,
    pub title: String,
    pub question: String,
    pub context: std::sync::Arc<str>,
    /// `(text, answer_start)` pairs as the file gives them.
    pub answers: Vec<(String, usize)>,
    pub is_impossible: bool,
    pub offsets: AnswerOffsets,
}

/// The columns of `datasets` rows that hold the question, the context and the answers: run_qa's
/// `--question_column_name`, `--context_column_name` and `--answer_column_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub question: String,
    pub context: String,
    pub answers: String,
}

impl Default for Columns {
    /// SQuAD's names, run_qa's defaults.
    fn default() -> Self {
        Self {
            question: "question".into(),
            context: "context".into(),
            answers: "answers".into(),
        }
    }
}

/// Whether a record's answer offsets still need checking against its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerOffsets {
    /// As written by the dataset's authors: validated, and repaired as configured.
    Given,
    /// Found by searching the context (DEFNLP), so correct by construction.
    Located,
}

/// Reads a whole data file (or stream: a pipe or `/dev/stdin` is read exactly once) as text,
/// without its UTF-8 byte-order mark. A file of whitespace only is [`DataError::EmptyFile`];
/// bytes that are not UTF-8 are [`DataError::NotUtf8`] naming the line.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    text_of(path, bytes)
}

/// [`read_text`] on bytes already read from `path`.
pub(crate) fn text_of(path: &Path, mut bytes: Vec<u8>) -> Result<String> {
    if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        DataError::NotUtf8 {
            path: path.to_path_buf(),
            line: 1 + good.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    if text.trim().is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// The UTF-8 byte-order mark some Windows tools write at the start of a text file.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

pub(crate) fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| DataError::Json {
        path: path.to_path_buf(),
        line: Some(source.line()),
        source,
    })
}

/// A record's `id` field as an [`ExampleId`]; a record without one, or with one that is neither
/// a string nor an integer, is an error naming the file and the record's position.
pub(crate) fn record_id(
    path: &Path,
    value: &serde_json::Value,
    position: usize,
) -> Result<ExampleId> {
    match value.get("id") {
        None => Err(DataError::MissingId {
            path: path.to_path_buf(),
            position,
        }),
        Some(id) => match ExampleId::from_json(id) {
            // A blank id names nothing (and keys a predictions file with "").
            Some(ExampleId::Text(text)) if text.trim().is_empty() => Err(DataError::BlankId {
                path: path.to_path_buf(),
                position,
            }),
            Some(id) => Ok(id),
            None => Err(DataError::InvalidId {
                path: path.to_path_buf(),
                position,
                found: shorten(id.to_string()),
            }),
        },
    }
}

/// A human name for a record: its id when it has one (quoted when it holds control characters,
/// so messages stay one line), else its position.
pub(crate) fn record_name(value: &serde_json::Value, position: usize) -> String {
    match value.get("id").and_then(ExampleId::from_json) {
        Some(id) if !id.to_string().trim().is_empty() => shown_id(&id),
        _ => format!("#{position}"),
    }
}

/// An id as messages show it: its text, quoted when it is blank or holds control characters
/// (a newline would break a one-line message).
pub(crate) fn shown_id(id: &ExampleId) -> String {
    let text = id.to_string();
    if text.trim().is_empty() || text.chars().any(char::is_control) {
        format!("{text:?}")
    } else {
        text
    }
}

/// A JSON value as shown in a message: cut after 60 bytes (on a char boundary).
pub(crate) fn shorten(mut shown: String) -> String {
    if shown.len() > 60 {
        let cut = (0..=60)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    shown
}

/// Field access on loosely-typed JSON records with errors naming the file and the record.
pub(crate) struct Record<'a> {
    pub path: &'a Path,
    pub name: String,
    pub value: &'a serde_json::Value,
}

impl<'a> Record<'a> {
    pub fn field(&self, key: &str) -> Result<&'a serde_json::Value> {
        self.value.get(key).ok_or_else(|| {
            DataError::example(self.path, &self.name, format!("missing field {key:?}"))
        })
    }

    pub fn str_field(&self, key: &str) -> Result<String> {
        match self.field(key)? {
            serde_json::Value::String(s) => Ok(s.clone()),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    pub fn opt_str_field(&self, key: &str) -> Result<Option<String>> {
        match self.value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    pub fn array_field(&self, key: &str) -> Result<&'a Vec<serde_json::Value>> {
        match self.field(key)? {
            serde_json::Value::Array(a) => Ok(a),
            other => Err(self.wrong_type(key, "a list", other)),
        }
    }

    pub fn start_field(&self, value: &serde_json::Value, key: &str) -> Result<usize> {
        value
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", value))
    }

    pub fn wrong_type(&self, key: &str, expected: &str, found: &serde_json::Value) -> DataError {
        // Cut on a char boundary: found values may hold any Unicode text.
        let shown = shorten(found.to_string());
        DataError::example(
            self.path,
            &self.name,
            format!("field {key:?} must be {expected}, found {shown}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_wrong_values_are_cut_on_a_char_boundary() {
        let value = serde_json::json!({ "id": "r1", "question": "é".repeat(70) });
        let record = Record {
            path: Path::new("data.json"),
            name: record_name(&value, 0),
            value: &value,
        };
        let msg = record
            .wrong_type("question", "a list", &value["question"])
            .to_string();
        assert!(
            msg.contains("data.json") && msg.contains("r1") && msg.ends_with('…'),
            "{msg}"
        );
    }
}
