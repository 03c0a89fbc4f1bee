//! `datasets` rows in Parquet and CSV files (the Hub's own format, and what
//! `Dataset.to_parquet`/`to_csv` write): each row becomes the JSON object the Hugging Face JSON
//! reader ([`crate::hf_json`]) reads, so every format shares one set of checks.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::Value;

use crate::error::{DataError, Result};
use crate::hf_json;
use crate::record::{record_name, Columns, RawExample};

/// The first bytes of every Parquet file.
pub(crate) const PARQUET_MAGIC: &[u8] = b"PAR1";

/// Reads the rows of a Parquet file's `bytes` (the SQuAD schema: `id`, `title`, `context`,
/// `question`, `answers: struct<text: list<string>, answer_start: list<int32>>`).
///
/// A column the loader reads that is stored as `binary` or `large_binary` rather than `string`
/// (as Spark and some Arrow writers store text) is decoded as UTF-8 text, with one warning per
/// column naming the file and the column; bytes that are not UTF-8 are
/// [`DataError::BinaryNotUtf8`], naming the file, the column and the row. Columns the loader
/// does not read are left as they are.
pub(crate) fn parse_parquet(
    path: &Path,
    bytes: Vec<u8>,
    columns: &Columns,
) -> Result<Vec<RawExample>> {
    let unreadable = |e: parquet::errors::ParquetError| {
        DataError::format(path, format!("not a readable Parquet file: {e}"))
    };
    let read = || -> parquet::errors::Result<Vec<Row>> {
        SerializedFileReader::new(bytes::Bytes::from(bytes))?
            .get_row_iter(None)?
            .collect()
    };
    // The parquet crate can still panic on some corrupt files: bad input is an error here.
    let rows = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .map_err(|_| DataError::format(path, "not a readable Parquet file: corrupt"))?
        .map_err(unreadable)?;
    let read_columns = read_columns(columns);
    // Binary columns read as text, warned about once each.
    let mut decoded = std::collections::BTreeSet::new();
    let rows = rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let object = row
                .get_column_iter()
                .map(|(name, field)| {
                    let value = if read_columns.contains(&name.as_str()) {
                        field_json(path, index, name, field, &mut decoded)?
                    } else {
                        field.to_json_value()
                    };
                    Ok((name.clone(), value))
                })
                .collect::<Result<serde_json::Map<String, Value>>>()?;
            Ok(Value::Object(object))
        })
        .collect::<Result<Vec<Value>>>()?;
    for column in decoded {
        tracing::warn!(
            "{}: Parquet column {column:?} is stored as binary, not string; read as UTF-8 text",
            path.display()
        );
    }
    hf_json::read_rows(path, &rows, columns)
}

/// The columns of a row the loader reads: the configured three, and `id`, `title` and
/// `is_impossible`.
fn read_columns(columns: &Columns) -> [&str; 6] {
    [
        &columns.question,
        &columns.context,
        &columns.answers,
        "id",
        "title",
        "is_impossible",
    ]
}

/// A Parquet value as JSON, binary decoded as UTF-8 text (inside structs and lists too; the
/// column is named `answers.text` there) and noted in `decoded`.
fn field_json(
    path: &Path,
    row: usize,
    column: &str,
    field: &Field,
    decoded: &mut std::collections::BTreeSet<String>,
) -> Result<Value> {
    Ok(match field {
        Field::Bytes(bytes) => {
            let text = std::str::from_utf8(bytes.data()).map_err(|e| DataError::BinaryNotUtf8 {
                path: path.to_path_buf(),
                column: column.to_string(),
                row,
                at: e.valid_up_to(),
            })?;
            if !decoded.contains(column) {
                decoded.insert(column.to_string());
            }
            Value::String(text.to_string())
        }
        Field::Group(group) => Value::Object(
            group
                .get_column_iter()
                .map(|(name, field)| {
                    let inner = format!("{column}.{name}");
                    Ok((name.clone(), field_json(path, row, &inner, field, decoded)?))
                })
                .collect::<Result<_>>()?,
        ),
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(|field| field_json(path, row, column, field, decoded))
                .collect::<Result<_>>()?,
        ),
        other => other.to_json_value(),
    })
}

/// Reads the rows of a CSV file's text: one column per field, the answers column holding the
/// `{"text": [...], "answer_start": [...]}` object as JSON, as a Python literal, or as
/// `datasets`' `to_csv` writes it (NumPy arrays: `{'text': array(['x'], dtype=object), ...}`).
/// An empty answers cell is no answers; an `is_impossible` column is read as a boolean.
///
/// The header is checked first ([`check_header`]): a column the loader reads named twice is
/// [`DataError::DuplicateColumn`] (any other repeated column keeps its first field, as pandas
/// does, its later ones being renamed `name.1`, ...); a missing question, context or answers
/// column is [`DataError::MissingColumns`], which says so when the file looks `;`-, tab- or
/// `|`-delimited. Fields are split on commas only: the delimiter is never guessed.
pub(crate) fn parse_csv(path: &Path, text: &str, columns: &Columns) -> Result<Vec<RawExample>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let csv_error = |source| DataError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let first_of_name = check_header(path, text, &headers, columns)?;
    let mut rows = Vec::new();
    for (position, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error)?;
        let mut row: serde_json::Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .zip(&first_of_name)
            .filter(|(_, &first)| first)
            .map(|((h, v), _)| (h.to_string(), Value::String(v.to_string())))
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

/// Checks a CSV header: every column the loader reads ([`read_columns`]) appears at most once
/// ([`DataError::DuplicateColumn`] naming it and both fields), and the question, context and
/// answers columns are there ([`DataError::MissingColumns`]; when the first line of `text`,
/// split on `;`, tab or `|` instead, has more of them, the error names that delimiter). Returns,
/// for each field, whether it is the first of its name (the one a row's value is taken from).
fn check_header(
    path: &Path,
    text: &str,
    headers: &csv::StringRecord,
    columns: &Columns,
) -> Result<Vec<bool>> {
    let read = read_columns(columns);
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    let mut first_of_name = Vec::with_capacity(headers.len());
    for (index, name) in headers.iter().enumerate() {
        match seen.get(name) {
            Some(&first) if read.contains(&name) => {
                return Err(DataError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    first: first + 1,
                    second: index + 1,
                })
            }
            Some(_) => first_of_name.push(false),
            None => {
                seen.insert(name, index);
                first_of_name.push(true);
            }
        }
    }
    let mut wanted: Vec<&str> = Vec::new();
    for column in [&columns.question, &columns.context, &columns.answers] {
        if !wanted.contains(&column.as_str()) {
            wanted.push(column);
        }
    }
    // How many of the wanted columns a header's names hold (trimmed: `a; b` splits to " b").
    let found = |names: &mut dyn Iterator<Item = &str>| {
        let names: Vec<&str> = names.map(str::trim).collect();
        wanted.iter().filter(|w| names.contains(w)).count()
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !headers.iter().any(|h| h == **w))
        .map(|w| w.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(first_of_name);
    }
    let by_commas = found(&mut headers.iter());
    let first_line = text.lines().next().unwrap_or("");
    let delimiter = [';', '\t', '|'].into_iter().find(|&d| {
        csv::ReaderBuilder::new()
            .delimiter(d as u8)
            .has_headers(false)
            .from_reader(first_line.as_bytes())
            .records()
            .next()
            .and_then(|r| r.ok())
            .is_some_and(|r| r.len() > 1 && found(&mut r.iter()) > by_commas)
    });
    Err(DataError::MissingColumns {
        path: path.to_path_buf(),
        missing,
        header: headers.iter().map(str::to_string).collect(),
        delimiter,
    })
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
