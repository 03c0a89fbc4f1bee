//! `datasets` rows in Parquet and CSV files (the Hub's own format, and what
//! `Dataset.to_parquet`/`to_csv` write): each row becomes the JSON object the Hugging Face JSON
//! reader ([`crate::hf_json`]) reads, so every format shares one set of checks.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use crate::error::{DataError, Result};
use crate::hf_json;
use crate::record::{record_name, Columns, RawExample};

/// The first bytes of every Parquet file.
pub(crate) const PARQUET_MAGIC: &[u8] = b"PAR1";

/// Reads the rows of a Parquet file's `bytes` (the SQuAD schema: `id`, `title`, `context`,
/// `question`, `answers: struct<text: list<string>, answer_start: list<int32>>`).
pub(crate) fn parse_parquet(
    path: &Path,
    bytes: Vec<u8>,
    columns: &Columns,
) -> Result<Vec<RawExample>> {
    let unreadable = |e: parquet::errors::ParquetError| {
        DataError::format(path, format!("not a readable Parquet file: {e}"))
    };
    let read = || -> parquet::errors::Result<Vec<Value>> {
        SerializedFileReader::new(bytes::Bytes::from(bytes))?
            .get_row_iter(None)?
            .map(|row| row.map(|r| r.to_json_value()))
            .collect()
    };
    // The parquet crate can still panic on some corrupt files: bad input is an error here.
    let rows = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .map_err(|_| DataError::format(path, "not a readable Parquet file: corrupt"))?
        .map_err(unreadable)?;
    hf_json::read_rows(path, &rows, columns)
}

/// Reads the rows of a CSV file's text: one column per field, the answers column holding the
/// `{"text": [...], "answer_start": [...]}` object as JSON, as a Python literal, or as
/// `datasets`' `to_csv` writes it (NumPy arrays: `{'text': array(['x'], dtype=object), ...}`).
/// An empty answers cell is no answers; an `is_impossible` column is read as a boolean.
pub(crate) fn parse_csv(path: &Path, text: &str, columns: &Columns) -> Result<Vec<RawExample>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let csv_error = |source| DataError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let mut rows = Vec::new();
    for (position, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error)?;
        let mut row: serde_json::Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        // A record's name (its id, else its position), for errors only.
        let name = |row: &serde_json::Map<String, Value>| {
            let id = row.get("id").cloned().unwrap_or(Value::Null);
            record_name(&serde_json::json!({ "id": id }), position)
        };
        if let Some(Value::String(cell)) = row.get(&columns.answers) {
            let answers = answers_cell(cell).ok_or_else(|| {
                DataError::example(
                    path,
                    name(&row),
                    format!(
                        "{:?} cell is not an answers object (JSON, or a Python literal with lists \
                         or NumPy arrays of texts and starts): {}",
                        columns.answers,
                        crate::record::shorten(cell.clone())
                    ),
                )
            })?;
            row.insert(columns.answers.clone(), answers);
        }
        if let Some(Value::String(cell)) = row.get("is_impossible") {
            let flag = match cell.trim().to_ascii_lowercase().as_str() {
                "" => Value::Null,
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => {
                    return Err(DataError::example(
                        path,
                        name(&row),
                        format!("is_impossible {cell:?} is not true or false"),
                    ))
                }
            };
            row.insert("is_impossible".into(), flag);
        }
        rows.push(Value::Object(row));
    }
    hf_json::read_rows(path, &rows, columns)
}

/// An answers cell as JSON: JSON itself, or a Python literal (JSON5 reads single-quoted
/// strings), after unwrapping NumPy's `array([...], dtype=...)`. Empty is no answers.
fn answers_cell(cell: &str) -> Option<Value> {
    if cell.trim().is_empty() {
        return Some(serde_json::json!({"text": [], "answer_start": []}));
    }
    json5::from_str(&unwrap_numpy_arrays(cell)).ok()
}

/// `array([1, 2], dtype=int32)` → `[1, 2]`, outside string literals only (an answer's text may
/// say "array(").
fn unwrap_numpy_arrays(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    let mut rest = cell;
    let mut quote: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        match quote {
            Some(q) => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
                if c == '\\' {
                    if let Some(escaped) = rest.chars().next() {
                        out.push(escaped);
                        rest = &rest[escaped.len_utf8()..];
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if rest.starts_with("array(") => rest = &rest["array(".len()..],
            None if c == ',' && rest[1..].trim_start().starts_with("dtype=") => {
                // Drop `, dtype=<name>)`.
                let end = rest.find(')').map_or(rest.len(), |i| i + 1);
                rest = &rest[end..];
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_cells_in_every_spelling() {
        let want = serde_json::json!({"text": ["it's", "array(x)"], "answer_start": [9, 3]});
        for cell in [
            r#"{"text": ["it's", "array(x)"], "answer_start": [9, 3]}"#,
            r#"{'text': ["it's", 'array(x)'], 'answer_start': [9, 3]}"#,
            "{'text': array([\"it's\", 'array(x)'],\n      dtype=object), 'answer_start': array([9, 3], dtype=int32)}",
        ] {
            assert_eq!(answers_cell(cell), Some(want.clone()), "{cell}");
        }
        assert_eq!(
            answers_cell(
                "{'text': array([], dtype=object), 'answer_start': array([], dtype=int32)}"
            ),
            Some(serde_json::json!({"text": [], "answer_start": []}))
        );
        assert_eq!(
            answers_cell("  "),
            Some(serde_json::json!({"text": [], "answer_start": []}))
        );
        assert_eq!(answers_cell("{'text': ['x'"), None);
    }
}
