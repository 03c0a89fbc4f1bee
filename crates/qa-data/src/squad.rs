//! SQuAD v1.1 / v2.0 JSON: `{"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::record::{parse_json, record_id, record_name, AnswerOffsets, RawExample, Record};

/// What a SQuAD file holds: its questions and its `version` field.
pub(crate) struct SquadFile {
    pub records: Vec<RawExample>,
    pub version: Option<String>,
}

/// Reads every question of a SQuAD file's text (read once by `load`; `path` names it in
/// errors), in file order, and the file's `version` field.
pub(crate) fn parse(path: &Path, text: &str) -> Result<SquadFile> {
    let root = parse_json(path, text)?;
    let version = root.get("version").and_then(|v| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| Some(v.to_string()))
    });
    let articles = root
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| DataError::format(path, "SQuAD file must have a \"data\" list"))?;

    let mut out = Vec::new();
    for (a, article) in articles.iter().enumerate() {
        let title = article
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_string();
        let paragraphs = article
            .get("paragraphs")
            .and_then(|p| p.as_array())
            .ok_or_else(|| {
                DataError::format(path, format!("data[{a}] has no \"paragraphs\" list"))
            })?;
        for (p, paragraph) in paragraphs.iter().enumerate() {
            let par = Record {
                path,
                name: format!("data[{a}].paragraphs[{p}]"),
                value: paragraph,
            };
            let context: std::sync::Arc<str> = par.str_field("context")?.into();
            for qa in par.array_field("qas")? {
                let position = out.len();
                let rec = Record {
                    path,
                    name: record_name(qa, position),
                    value: qa,
                };
                let is_impossible = match qa.get("is_impossible") {
                    None | Some(serde_json::Value::Null) => false,
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(other) => return Err(rec.wrong_type("is_impossible", "a boolean", other)),
                };
                let answers = match qa.get("answers") {
                    None | Some(serde_json::Value::Null) if is_impossible => Vec::new(),
                    _ => rec
                        .array_field("answers")?
                        .iter()
                        .map(|ans| {
                            let a = Record {
                                path,
                                name: rec.name.clone(),
                                value: ans,
                            };
                            Ok((
                                a.str_field("text")?,
                                a.start_field(a.field("answer_start")?, "answer_start")?,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?,
                };
                let question = rec.str_field("question")?;
                out.push(RawExample {
                    id: record_id(path, qa, position)?,
                    position,
                    title: title.clone(),
                    question,
                    context: context.clone(),
                    answers,
                    is_impossible,
                    offsets: AnswerOffsets::Given,
                });
            }
        }
    }
    Ok(SquadFile {
        records: out,
        version,
    })
}
