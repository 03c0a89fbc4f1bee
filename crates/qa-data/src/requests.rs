//! Prediction requests: JSON Lines of `{"question", "context", "id"?}`, one question per line,
//! read into [`Example`]s without answers (or one built from `--question`/`--context`); and
//! the documents one question is asked over (`{"id"?, "text"}` per line).

use std::path::Path;

use crate::error::{DataError, Result};
use crate::example::{Example, ExampleId};
use crate::record::read_text;

/// Reads a JSON Lines request file (read once: a pipe works; a UTF-8 byte-order mark is
/// skipped). Blank lines are skipped; a line without an `id` gets its 0-based line number as
/// id, so answers can still be matched to lines. Two lines with the same id text (an explicit
/// id equal to another line's number included) are refused, naming both lines. A request whose question or context is blank
/// is refused (there is nothing to answer). Errors name the file and the 1-based line; an
/// empty file is [`DataError::EmptyFile`].
pub fn read_requests(path: &Path) -> Result<Vec<Example>> {
    let text = read_text(path)?;
    let mut examples = Vec::new();
    // id text → the 1-based line that has it.
    let mut lines_by_id: std::collections::HashMap<String, usize> = Default::default();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|source| DataError::Json {
                path: path.to_path_buf(),
                line: Some(line_number),
                source,
            })?;
        let text_field = |field: &'static str| {
            let text = value.get(field).and_then(|v| v.as_str()).ok_or_else(|| {
                DataError::MissingLineField {
                    path: path.to_path_buf(),
                    line: line_number,
                    field,
                }
            })?;
            if is_blank(text) {
                return Err(DataError::BlankLineField {
                    path: path.to_path_buf(),
                    line: line_number,
                    field,
                });
            }
            Ok(text)
        };
        let question = text_field("question")?;
        let context = text_field("context")?;
        let id = match value.get("id") {
            None | Some(serde_json::Value::Null) => ExampleId::Number(index as i64),
            Some(id) => ExampleId::from_json(id).ok_or_else(|| DataError::InvalidLineId {
                path: path.to_path_buf(),
                line: line_number,
                found: id.to_string(),
            })?,
        };
        if let Some(first) = lines_by_id.insert(id.to_string(), line_number) {
            return Err(DataError::DuplicateLineId {
                path: path.to_path_buf(),
                id: id.to_string(),
                first,
                second: line_number,
            });
        }
        examples.push(request_example(id, question, context));
    }
    Ok(examples)
}

/// Whether a question, context or document holds nothing to read: only whitespace (NBSP
/// included) and invisible format characters (zero-width spaces and joiners, word joiners,
/// byte-order marks), which tokenizers drop.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_whitespace() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
    })
}

/// One retrieved passage a question is asked over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The caller's name for it, echoed in answers.
    pub id: Option<String>,
    pub text: String,
}

/// Reads a JSON Lines file of documents, `{"id"?, "text"}` per line (blank lines skipped). A
/// line with another field, a blank text or an id that is not a string or integer is an error
/// naming the file and line; an empty file is [`DataError::EmptyFile`].
pub fn read_documents(path: &Path) -> Result<Vec<Document>> {
    let text = read_text(path)?;
    let mut documents = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|source| DataError::Json {
                path: path.to_path_buf(),
                line: Some(line_number),
                source,
            })?;
        if let Some(field) = value.keys().find(|k| !["id", "text"].contains(&k.as_str())) {
            return Err(DataError::UnknownLineField {
                path: path.to_path_buf(),
                line: line_number,
                field: field.clone(),
            });
        }
        let text = value.get("text").and_then(|v| v.as_str()).ok_or_else(|| {
            DataError::MissingLineField {
                path: path.to_path_buf(),
                line: line_number,
                field: "text",
            }
        })?;
        if is_blank(text) {
            return Err(DataError::BlankLineField {
                path: path.to_path_buf(),
                line: line_number,
                field: "text",
            });
        }
        let id = match value.get("id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(id)) => Some(id.clone()),
            Some(id @ serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Some(id.to_string())
            }
            Some(id) => {
                return Err(DataError::InvalidLineId {
                    path: path.to_path_buf(),
                    line: line_number,
                    found: id.to_string(),
                })
            }
        };
        documents.push(Document {
            id,
            text: text.to_string(),
        });
    }
    if documents.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(documents)
}

/// One question about one context, to predict on (no answers).
pub fn request_example(id: ExampleId, question: &str, context: &str) -> Example {
    Example {
        id,
        title: String::new(),
        // Kept as given, as the HF pipeline keeps it (run_qa's loaders strip it; for byte-level
        // BPE tokenizers the leading spaces are tokens, so stripping would change answers).
        question: question.to_string(),
        context: context.into(),
        answers: Vec::new(),
        is_impossible: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn ids_are_kept_blank_lines_skipped_and_missing_ids_numbered_by_line() {
        let (_dir, path) = requests_file(concat!(
            r#"{"id": "q1", "question": "  Where?", "context": "In Paris."}"#,
            "\n\n",
            r#"{"id": 7, "question": "Who?", "context": "Nobody."}"#,
            "\n   \n",
            r#"{"question": "When?", "context": "Now."}"#,
            "\n",
        ));
        let examples = read_requests(&path).unwrap();
        let ids: Vec<&ExampleId> = examples.iter().map(|e| &e.id).collect();
        assert_eq!(
            ids,
            [
                &ExampleId::Text("q1".into()),
                &ExampleId::Number(7),
                &ExampleId::Number(4)
            ]
        );
        // Questions are kept as given, as the HF pipeline keeps them.
        assert_eq!(examples[0].question, "  Where?");
        assert_eq!(&*examples[0].context, "In Paris.");
        assert!(examples
            .iter()
            .all(|e| e.answers.is_empty() && !e.is_impossible));
    }

    #[test]
    fn duplicate_ids_name_both_lines_even_a_generated_one() {
        let (_dir, path) = requests_file(concat!(
            r#"{"question": "q", "context": "c"}"#,
            "\n",
            r#"{"id": 0, "question": "q", "context": "c"}"#,
            "\n"
        ));
        let msg = read_requests(&path).unwrap_err().to_string();
        assert!(msg.contains("lines 1 and 2 both have id 0"), "{msg}");
        let (_dir, path) = requests_file(concat!(
            r#"{"id": "a", "question": "q", "context": "c"}"#,
            "\n\n",
            r#"{"id": "a", "question": "q2", "context": "c"}"#,
            "\n"
        ));
        let msg = read_requests(&path).unwrap_err().to_string();
        assert!(msg.contains("lines 1 and 3 both have id a"), "{msg}");
    }

    #[test]
    fn invisible_characters_alone_are_blank() {
        for blank in ["", " \n\t", "\u{A0}\u{200B}", "\u{FEFF}\u{2060}\u{200D}"] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["a", "\u{200B}x", "¿?"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }

    #[test]
    fn documents_keep_their_ids_and_bad_lines_are_named() {
        let (_dir, path) = requests_file(concat!(
            r#"{"id": "a", "text": "Ann did."}"#,
            "\n\n",
            r#"{"text": "Bob did."}"#,
            "\n",
            r#"{"id": 7, "text": "Cy did."}"#,
            "\n"
        ));
        let documents = read_documents(&path).unwrap();
        let ids: Vec<Option<&str>> = documents.iter().map(|d| d.id.as_deref()).collect();
        assert_eq!(ids, [Some("a"), None, Some("7")]);
        assert_eq!(documents[1].text, "Bob did.");
        for (bad, says) in [
            (r#"{"id": "a", "txt": "x"}"#, "unknown field \"txt\""),
            (r#"{"id": "a"}"#, "\"text\""),
            (r#"{"text": "  "}"#, "text"),
            (r#"{"id": [1], "text": "x"}"#, "id must be"),
            ("", "empty"),
        ] {
            let (_dir, path) = requests_file(&format!("{{\"text\": \"ok\"}}\n{bad}\n"));
            let path = if bad.is_empty() {
                std::fs::write(&path, "\n").unwrap();
                path
            } else {
                path
            };
            let msg = read_documents(&path).unwrap_err().to_string();
            assert!(
                msg.contains("requests.jsonl") && msg.contains(says),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn malformed_line_names_the_file_and_line() {
        let (_dir, path) = requests_file(concat!(
            r#"{"question": "q", "context": "c"}"#,
            "\n",
            "{oops\n"
        ));
        let err = read_requests(&path).unwrap_err();
        assert!(
            matches!(err, DataError::Json { line: Some(2), .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("requests.jsonl") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_non_string_fields_name_the_field_and_line() {
        let (_dir, path) = requests_file(concat!("\n", r#"{"id": "a", "context": "c"}"#, "\n"));
        let msg = read_requests(&path).unwrap_err().to_string();
        assert!(
            msg.contains("requests.jsonl")
                && msg.contains("line 2")
                && msg.contains("\"question\""),
            "{msg}"
        );
        let (_dir, path) = requests_file(r#"{"question": "q", "context": 3}"#);
        let err = read_requests(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::MissingLineField {
                    line: 1,
                    field: "context",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn ids_that_are_neither_strings_nor_integers_are_errors() {
        let (_dir, path) = requests_file(r#"{"id": [1], "question": "q", "context": "c"}"#);
        let msg = read_requests(&path).unwrap_err().to_string();
        assert!(
            msg.contains("requests.jsonl") && msg.contains("line 1") && msg.contains("[1]"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let msg = read_requests(&dir.path().join("absent.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("absent.jsonl"), "{msg}");
    }
}
