//! Hugging Face `datasets` exports: a top-level list, a `{"data": [...]}` wrapper, or JSON Lines,
//! of `{"id", "title"?, "question", "context", "answers": {"text": [...], "answer_start": [...]}}`.
//! The same rows from Parquet and CSV files ([`crate::tabular`]) are read here too
//! ([`read_rows`]); the question, context and answers columns may be renamed ([`Columns`]).

use std::path::Path;

use crate::error::{DataError, Result};
use crate::record::{record_id, record_name, AnswerOffsets, Columns, RawExample, Record};

/// Reads every record of a file's text (read once by `load`; `path` names it in errors and
/// its extension tells JSON Lines), in file order.
pub(crate) fn parse(path: &Path, text: &str, columns: &Columns) -> Result<Vec<RawExample>> {
    let first = text.trim_start().chars().next();
    let is_lines = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
    let whole = (!is_lines).then(|| serde_json::from_str::<serde_json::Value>(text));
    let records: Vec<serde_json::Value> = match whole {
        Some(Ok(serde_json::Value::Array(items))) => items,
        Some(Ok(root)) if root.get("data").is_some() => match root.get("data") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            _ => {
                return Err(DataError::format(
                    path,
                    "\"data\" must be a list of examples",
                ))
            }
        },
        // One object alone is a one-line JSON Lines file.
        Some(Ok(single)) => vec![single],
        // A malformed list cannot be JSON Lines: report its real syntax error.
        Some(Err(source)) if first == Some('[') => {
            return Err(DataError::Json {
                path: path.to_path_buf(),
                line: Some(source.line()),
                source,
            })
        }
        _ => json_lines(path, text)?,
    };
    read_rows(path, &records, columns)
}

/// Reads `datasets` rows (JSON objects) of `path`, in order.
pub(crate) fn read_rows(
    path: &Path,
    rows: &[serde_json::Value],
    columns: &Columns,
) -> Result<Vec<RawExample>> {
    rows.iter()
        .enumerate()
        .map(|(position, value)| read_record(path, position, value, columns))
        .collect()
}

fn json_lines(path: &Path, text: &str) -> Result<Vec<serde_json::Value>> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        items.push(
            serde_json::from_str(line).map_err(|source| DataError::Json {
                path: path.to_path_buf(),
                line: Some(n + 1),
                source,
            })?,
        );
    }
    Ok(items)
}

fn read_record(
    path: &Path,
    position: usize,
    value: &serde_json::Value,
    columns: &Columns,
) -> Result<RawExample> {
    let rec = Record {
        path,
        name: record_name(value, position),
        value,
    };
    if !value.is_object() {
        return Err(rec.wrong_type("(record)", "an object", value));
    }
    let answers_value = rec.field(&columns.answers)?;
    let answers = match answers_value {
        // The datasets layout: parallel lists.
        serde_json::Value::Object(_) => {
            let ans = Record {
                path,
                name: rec.name.clone(),
                value: answers_value,
            };
            let texts = ans.array_field("text")?;
            let starts = ans.array_field("answer_start")?;
            if texts.len() != starts.len() {
                return Err(DataError::example(
                    path,
                    &rec.name,
                    format!(
                        "answers has {} texts but {} answer_start values",
                        texts.len(),
                        starts.len()
                    ),
                ));
            }
            texts
                .iter()
                .zip(starts)
                .map(|(t, s)| {
                    let text = t
                        .as_str()
                        .ok_or_else(|| ans.wrong_type("text", "a list of strings", t))?;
                    Ok((text.to_string(), ans.start_field(s, "answer_start")?))
                })
                .collect::<Result<Vec<_>>>()?
        }
        // SQuAD-like list of {text, answer_start} is accepted too.
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                let a = Record {
                    path,
                    name: rec.name.clone(),
                    value: item,
                };
                Ok((
                    a.str_field("text")?,
                    a.start_field(a.field("answer_start")?, "answer_start")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?,
        other => return Err(rec.wrong_type(&columns.answers, "an object or a list", other)),
    };
    let is_impossible = match value.get("is_impossible") {
        None | Some(serde_json::Value::Null) => answers.is_empty(),
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => return Err(rec.wrong_type("is_impossible", "a boolean", other)),
    };
    let title = rec.opt_str_field("title")?.unwrap_or_default();
    let question = rec.str_field(&columns.question)?;
    let context = rec.str_field(&columns.context)?.into();
    Ok(RawExample {
        id: record_id(path, value, position)?,
        position,
        title,
        question,
        context,
        answers,
        is_impossible,
        offsets: AnswerOffsets::Given,
    })
}
