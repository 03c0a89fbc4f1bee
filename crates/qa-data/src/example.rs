//! The one in-memory example type all loaders produce.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An example id as the dataset spelled it. SQuAD uses strings, COVID-QA uses integers; we keep
/// which one so that outputs (features JSONL, predictions) echo ids in the user's own form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExampleId {
    Text(String),
    Number(i64),
}

impl ExampleId {
    pub fn as_json(&self) -> serde_json::Value {
        match self {
            ExampleId::Text(s) => serde_json::Value::String(s.clone()),
            ExampleId::Number(n) => serde_json::Value::from(*n),
        }
    }

    /// Reads an id from JSON: a string or an integer; anything else is `None`.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::String(s) => Some(ExampleId::Text(s.clone())),
            serde_json::Value::Number(n) => n.as_i64().map(ExampleId::Number),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExampleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExampleId::Text(s) => f.write_str(s),
            ExampleId::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for ExampleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExampleId::Text(t) => s.serialize_str(t),
            ExampleId::Number(n) => s.serialize_i64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for ExampleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        ExampleId::from_json(&v)
            .ok_or_else(|| serde::de::Error::custom("id must be a string or an integer"))
    }
}

/// A gold answer. `char_start` counts Unicode scalar values (Python string indices), as SQuAD's
/// `answer_start` does; `None` means the text could not be located in the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    pub char_start: Option<usize>,
}

impl Answer {
    /// Character end (exclusive) of a located answer.
    pub fn char_end(&self) -> Option<usize> {
        self.char_start.map(|s| s + self.text.chars().count())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: ExampleId,
    pub title: String,
    pub question: String,
    /// Shared by the questions of one paragraph (one copy per context, not per question).
    pub context: Arc<str>,
    pub answers: Vec<Answer>,
    /// SQuAD v2.0 unanswerable question (no answers).
    pub is_impossible: bool,
}

impl Example {
    /// The answer run_qa trains on: the first one, if it was located in the context.
    pub fn training_answer(&self) -> Option<(usize, usize)> {
        let first = self.answers.first()?;
        Some((first.char_start?, first.char_end()?))
    }
}
