//! The answer body (`POST /`, `/predict`, `/v1/answer`), read into questions, answer options and
//! window options, and the reply shaped as `qa predict --json` prints it.
//!
//! Accepted bodies (every shape the Hugging Face clients send; options at the top level or
//! under `"parameters"`, a top-level option winning):
//! * `{"question": "...", "context": "...", "parameters"?: {...}}` → one answer (an object when
//!   `top_k` is 1, a list otherwise); `"inputs": null` beside them is allowed;
//! * `{"inputs": {"question": "...", "context": "..."}, "parameters"?: {...}}` → the same;
//! * `{"inputs": [{"question", "context"}, ...]}` → a list of those, in order;
//! * `{"question": "...", "documents": [{"id"?: "...", "text": "..."}, ...]}` → one ranked list
//!   of answers over all documents ([`qa_eval::reader`]).
//!
//! Options, with the HF pipeline's meanings: `top_k`, `doc_stride`, `max_answer_len`,
//! `max_seq_len`, `max_question_len`, `handle_impossible_answer`, `align_to_words`, and run_qa's
//! `null_score_diff_threshold`. An unknown field anywhere is a 400 naming it: a misspelled
//! option must not be silently ignored. `"options"` (`use_cache`, `wait_for_model`) is accepted
//! because HF clients send it: it concerns the hosted API's cache and cold starts, which a
//! dedicated server does not have.

use qa_data::requests::request_example;
use qa_data::{Example, ExampleId, FeatureConfig};
pub use qa_eval::pipeline::answer_json;
use qa_eval::reader::{document_examples, Document};
use qa_eval::{DocumentAnswer, PipelineAnswer, PipelineConfig};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Field, Place, RequestError};

/// The most answers one question may ask for (the pipeline keeps `2·top_k + 10` spans per
/// window, so this bounds the work one request can ask for).
pub const MAX_TOP_K: usize = 100;

/// The most documents one question may be asked over.
pub const MAX_DOCUMENTS: usize = 1000;

/// Shortest window a request may ask for (special tokens, a question token, context).
pub const MIN_SEQ_LEN: usize = 8;

/// One question about one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub question: String,
    pub context: String,
}

/// Whether the request asked one question (its answer is returned alone) or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    One,
    List,
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Questions, each about its own context.
    Pairs {
        questions: Vec<Question>,
        shape: Shape,
    },
    /// One question over many documents, answered by one ranking.
    Documents {
        question: String,
        documents: Vec<Document>,
    },
}

/// How a request wants its windows cut (the server's settings where `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowOptions {
    pub max_seq_len: Option<usize>,
    pub doc_stride: Option<usize>,
    pub max_question_len: Option<usize>,
}

impl WindowOptions {
    /// `defaults` with this request's window options applied, checked against the model's
    /// longest window. As in the pipeline, a request setting `max_seq_len` alone gets
    /// `doc_stride` = min(max_seq_len / 2, the server's).
    pub fn resolve(
        &self,
        defaults: &FeatureConfig,
        longest: usize,
    ) -> Result<FeatureConfig, RequestError> {
        let max_length = match self.max_seq_len {
            None => defaults.max_length,
            Some(n) if (MIN_SEQ_LEN..=longest).contains(&n) => n,
            Some(n) => {
                return Err(RequestError::OutOfRange {
                    field: Field::MaxSeqLen,
                    why: format!(
                        "{n} is outside {MIN_SEQ_LEN}..={longest} (this model has {longest} \
                         positions)"
                    ),
                })
            }
        };
        let stride = match (self.doc_stride, self.max_seq_len) {
            (Some(stride), _) if stride >= max_length => {
                return Err(RequestError::OutOfRange {
                    field: Field::DocStride,
                    why: format!("{stride} must be smaller than the {max_length}-token window"),
                })
            }
            (Some(stride), _) => stride,
            (None, Some(_)) => defaults.stride.min(max_length / 2),
            (None, None) => defaults.stride,
        };
        let max_question_tokens = match self.max_question_len {
            Some(0) => {
                return Err(RequestError::OutOfRange {
                    field: Field::MaxQuestionLen,
                    why: "must be at least 1".into(),
                })
            }
            Some(n) => Some(n),
            None => defaults.max_question_tokens,
        };
        Ok(FeatureConfig {
            max_length,
            stride,
            max_question_tokens,
            ..defaults.clone()
        })
    }

    fn is_set(&self) -> bool {
        *self != Self::default()
    }
}

/// A parsed answer request.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRequest {
    pub input: Input,
    /// The server's answer defaults with this request's options applied.
    pub options: PipelineConfig,
    pub windows: WindowOptions,
}

/// The options a request may set, at the top level or under `"parameters"`.
pub const OPTIONS: [Field; 8] = [
    Field::TopK,
    Field::DocStride,
    Field::MaxAnswerLen,
    Field::MaxSeqLen,
    Field::MaxQuestionLen,
    Field::HandleImpossibleAnswer,
    Field::AlignToWords,
    Field::NullScoreDiffThreshold,
];

/// Top-level keys besides the options.
const TOP_KEYS: [&str; 6] = [
    "inputs",
    "question",
    "context",
    "documents",
    "parameters",
    "options",
];

/// The keys of the HF `"options"` object.
const HF_OPTIONS: [&str; 2] = ["use_cache", "wait_for_model"];

impl AnswerRequest {
    /// Reads a body. Malformed JSON, missing or unknown fields and wrong types are 400s; empty
    /// questions or contexts and out-of-range options are 422s.
    pub fn parse(body: &[u8], defaults: &PipelineConfig) -> Result<Self, RequestError> {
        let value: Value = serde_json::from_slice(body).map_err(RequestError::Json)?;
        let Value::Object(top) = value else {
            return Err(RequestError::NotAnObject);
        };
        known_keys(
            &top,
            "",
            TOP_KEYS
                .iter()
                .copied()
                .chain(OPTIONS.iter().map(|f| f.name())),
        )?;
        check_hf_options(&top)?;
        let input = match (
            top.get("inputs").filter(|v| !v.is_null()),
            has(&top, "documents"),
        ) {
            (Some(_), true) => return Err(RequestError::Ambiguous),
            (Some(inputs), false) => {
                if has(&top, "question") || has(&top, "context") {
                    return Err(RequestError::Ambiguous);
                }
                inputs_pairs(inputs)?
            }
            (None, true) => {
                if has(&top, "context") {
                    return Err(RequestError::Ambiguous);
                }
                documents(&top)?
            }
            (None, false) => Input::Pairs {
                questions: vec![pair(&top, Place::Top)?],
                shape: Shape::One,
            },
        };
        let (options, windows) = options(&top, defaults)?;
        Ok(Self {
            input,
            options,
            windows,
        })
    }

    /// The examples to cut into windows: the questions in request order (ids 0, 1, ...), as
    /// `qa predict` builds them, or the question about each document.
    pub fn examples(&self) -> Vec<Example> {
        match &self.input {
            Input::Pairs { questions, .. } => questions
                .iter()
                .enumerate()
                .map(|(i, q)| request_example(ExampleId::Number(i as i64), &q.question, &q.context))
                .collect(),
            Input::Documents {
                question,
                documents,
            } => document_examples(question, documents),
        }
    }

    /// Whether the request set any window option (its windows then differ from the server's).
    pub fn sets_windows(&self) -> bool {
        self.windows.is_set()
    }
}

/// The answers of a request, as it asked them.
#[derive(Debug, Clone, PartialEq)]
pub enum Answers {
    Pairs(Vec<Vec<PipelineAnswer>>),
    Documents(Vec<DocumentAnswer>),
}

impl Answers {
    /// The reply body: each question's answers as `qa predict --json` prints them, alone or in
    /// a list as the request asked; a document ranking as a list.
    pub fn reply(&self, request: &AnswerRequest) -> Result<Value, RequestError> {
        let top_k = request.options.top_k;
        match (self, &request.input) {
            (Answers::Pairs(answers), Input::Pairs { shape, .. }) => {
                let mut each = answers
                    .iter()
                    .map(|a| answer_json(a, top_k).map_err(RequestError::Encode));
                match shape {
                    Shape::One => each.next().unwrap_or_else(|| Ok(Value::Array(Vec::new()))),
                    Shape::List => Ok(Value::Array(each.collect::<Result<_, _>>()?)),
                }
            }
            (Answers::Documents(answers), Input::Documents { .. }) => {
                serde_json::to_value(answers).map_err(RequestError::Encode)
            }
            _ => Err(RequestError::Worker),
        }
    }
}

fn has(object: &Map<String, Value>, key: &str) -> bool {
    object.get(key).is_some_and(|v| !v.is_null())
}

/// Refuses any key of `object` not in `known`; `prefix` says where the object sits.
fn known_keys<'a>(
    object: &Map<String, Value>,
    prefix: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), RequestError> {
    match object
        .keys()
        .find(|key| !known.clone().any(|k| k == key.as_str()))
    {
        Some(key) => Err(RequestError::UnknownField {
            field: format!("{prefix}{key}"),
            known: known.collect::<Vec<_>>().join(", "),
        }),
        None => Ok(()),
    }
}

/// The HF `"options"` object: only its known keys, with boolean values.
fn check_hf_options(top: &Map<String, Value>) -> Result<(), RequestError> {
    match top.get("options") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(options)) => {
            known_keys(options, "options.", HF_OPTIONS.iter().copied())?;
            match options
                .iter()
                .find(|(_, v)| !v.is_boolean() && !v.is_null())
            {
                Some((key, _)) => Err(RequestError::OptionsShape(key.clone())),
                None => Ok(()),
            }
        }
        Some(_) => Err(RequestError::OptionsShape("options".into())),
    }
}

/// `key` of `object` as a `T`; `None` when absent or null.
fn field<T: DeserializeOwned>(
    object: &Map<String, Value>,
    key: &str,
    place: Place,
) -> Result<Option<T>, RequestError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| RequestError::BadValue(place, e)),
    }
}

/// A non-blank text field.
fn text(
    object: &Map<String, Value>,
    f: Field,
    place: impl Fn(Field) -> Place,
) -> Result<String, RequestError> {
    let text: String =
        field(object, &f.to_string(), place(f))?.ok_or(RequestError::Missing(place(f)))?;
    if qa_data::requests::is_blank(&text) {
        return Err(RequestError::Blank(place(f)));
    }
    Ok(text)
}

/// A `{"question", "context"}` object; `place` says where it sits, for messages.
fn pair(
    object: &Map<String, Value>,
    place: impl Fn(Field) -> Place,
) -> Result<Question, RequestError> {
    Ok(Question {
        question: text(object, Field::Question, &place)?,
        context: text(object, Field::Context, &place)?,
    })
}

/// `"inputs"`: one pair or a list of them.
fn inputs_pairs(inputs: &Value) -> Result<Input, RequestError> {
    let item = |i: Option<usize>, value: &Value| match value {
        Value::Object(item) => {
            let prefix = i.map_or("inputs.".to_string(), |i| format!("inputs[{i}]."));
            known_keys(item, &prefix, ["question", "context"].into_iter())?;
            pair(item, |f| match i {
                Some(i) => Place::Item(i, f),
                None => Place::Input(f),
            })
        }
        _ => Err(RequestError::InputsShape),
    };
    match inputs {
        Value::Object(_) => Ok(Input::Pairs {
            questions: vec![item(None, inputs)?],
            shape: Shape::One,
        }),
        Value::Array(items) if items.is_empty() => Err(RequestError::NoInputs),
        Value::Array(items) => Ok(Input::Pairs {
            questions: items
                .iter()
                .enumerate()
                .map(|(i, v)| item(Some(i), v))
                .collect::<Result<_, _>>()?,
            shape: Shape::List,
        }),
        _ => Err(RequestError::InputsShape),
    }
}

/// `{"question", "documents": [{"id"?, "text"}, ...]}`.
fn documents(top: &Map<String, Value>) -> Result<Input, RequestError> {
    let question = text(top, Field::Question, Place::Top)?;
    let Some(Value::Array(items)) = top.get("documents") else {
        return Err(RequestError::DocumentsShape);
    };
    if items.is_empty() {
        return Err(RequestError::NoDocuments);
    }
    if items.len() > MAX_DOCUMENTS {
        return Err(RequestError::TooManyDocuments {
            found: items.len(),
            max: MAX_DOCUMENTS,
        });
    }
    let documents = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(item) = item else {
                return Err(RequestError::DocumentsShape);
            };
            known_keys(
                item,
                &format!("documents[{i}]."),
                ["id", "text"].into_iter(),
            )?;
            let id = match item.get("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => return Err(RequestError::DocumentId(i)),
            };
            Ok(Document {
                id,
                text: text(item, Field::Text, |f| Place::Document(i, f))?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Input::Documents {
        question,
        documents,
    })
}

/// `defaults` with the request's options applied (top level first, then `"parameters"`), and
/// its window options.
fn options(
    top: &Map<String, Value>,
    defaults: &PipelineConfig,
) -> Result<(PipelineConfig, WindowOptions), RequestError> {
    let none = Map::new();
    let parameters = match top.get("parameters") {
        None | Some(Value::Null) => &none,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(RequestError::ParametersShape),
    };
    known_keys(parameters, "parameters.", OPTIONS.iter().map(|f| f.name()))?;
    // The option's value and where it was found: the top level first, then "parameters".
    let option = |f: Field| -> Option<(Value, Place)> {
        [(top, Place::Top(f)), (parameters, Place::Parameter(f))]
            .into_iter()
            .find_map(|(object, place)| {
                object
                    .get(f.name())
                    .filter(|v| !v.is_null())
                    .map(|v| (v.clone(), place))
            })
    };
    fn typed<T: DeserializeOwned>(
        found: Option<(Value, Place)>,
    ) -> Result<Option<T>, RequestError> {
        found
            .map(|(v, place)| {
                serde_json::from_value(v).map_err(|e| RequestError::BadValue(place, e))
            })
            .transpose()
    }
    let top_k: usize = typed(option(Field::TopK))?.unwrap_or(defaults.top_k);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(RequestError::TopK {
            found: top_k,
            max: MAX_TOP_K,
        });
    }
    let max_answer_len: usize =
        typed(option(Field::MaxAnswerLen))?.unwrap_or(defaults.max_answer_len);
    if max_answer_len == 0 {
        return Err(RequestError::MaxAnswerLen);
    }
    let null_threshold = match typed::<f32>(option(Field::NullScoreDiffThreshold))? {
        Some(t) if !t.is_finite() => {
            return Err(RequestError::OutOfRange {
                field: Field::NullScoreDiffThreshold,
                why: "must be a finite number".into(),
            })
        }
        Some(t) => Some(t),
        None => defaults.null_threshold,
    };
    let answers = PipelineConfig {
        top_k,
        max_answer_len,
        handle_impossible_answer: typed(option(Field::HandleImpossibleAnswer))?
            .unwrap_or(defaults.handle_impossible_answer),
        align_to_words: typed(option(Field::AlignToWords))?.unwrap_or(defaults.align_to_words),
        null_threshold,
    };
    let windows = WindowOptions {
        max_seq_len: typed(option(Field::MaxSeqLen))?,
        doc_stride: typed(option(Field::DocStride))?,
        max_question_len: typed(option(Field::MaxQuestionLen))?,
    };
    Ok((answers, windows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<AnswerRequest, RequestError> {
        AnswerRequest::parse(body.as_bytes(), &PipelineConfig::default())
    }

    fn q(question: &str, context: &str) -> Question {
        Question {
            question: question.into(),
            context: context.into(),
        }
    }

    fn one(questions: Vec<Question>) -> Input {
        Input::Pairs {
            questions,
            shape: Shape::One,
        }
    }

    #[test]
    fn every_hf_client_shape_reads_the_same_question() {
        let plain = parse(r#"{"question": "Who?", "context": "Ann did."}"#).unwrap();
        assert_eq!(plain.input, one(vec![q("Who?", "Ann did.")]));
        for body in [
            r#"{"inputs": {"question": "Who?", "context": "Ann did."}}"#,
            r#"{"inputs": {"question": "Who?", "context": "Ann did."}, "parameters": {}}"#,
            r#"{"inputs": null, "question": "Who?", "context": "Ann did.", "parameters": {}}"#,
            r#"{"question": "Who?", "context": "Ann did.", "options": {"wait_for_model": true}}"#,
        ] {
            assert_eq!(parse(body).unwrap(), plain, "{body}");
        }
        let list = parse(
            r#"{"inputs": [{"question": "Who?", "context": "Ann did."},
                           {"question": "When?", "context": "In May."}]}"#,
        )
        .unwrap();
        assert_eq!(
            list.input,
            Input::Pairs {
                questions: vec![q("Who?", "Ann did."), q("When?", "In May.")],
                shape: Shape::List
            }
        );
        let ids: Vec<ExampleId> = list.examples().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [ExampleId::Number(0), ExampleId::Number(1)]);
    }

    #[test]
    fn documents_read_with_their_ids() {
        let request = parse(
            r#"{"question": "Who?", "documents": [{"id": "a", "text": "Ann did."},
                {"text": "Bob did."}, {"id": 7, "text": "Cy did."}], "top_k": 2}"#,
        )
        .unwrap();
        let doc = |id: Option<&str>, text: &str| Document {
            id: id.map(str::to_string),
            text: text.into(),
        };
        assert_eq!(
            request.input,
            Input::Documents {
                question: "Who?".into(),
                documents: vec![
                    doc(Some("a"), "Ann did."),
                    doc(None, "Bob did."),
                    doc(Some("7"), "Cy did.")
                ]
            }
        );
        assert_eq!(request.options.top_k, 2);
        let contexts: Vec<String> = request
            .examples()
            .into_iter()
            .map(|e| e.context.to_string())
            .collect();
        assert_eq!(contexts, ["Ann did.", "Bob did.", "Cy did."]);
    }

    #[test]
    fn options_come_from_the_top_level_then_parameters_then_the_defaults() {
        let defaults = PipelineConfig {
            top_k: 2,
            ..PipelineConfig::default()
        };
        let read = |body: &str| AnswerRequest::parse(body.as_bytes(), &defaults).unwrap();
        let plain = read(r#"{"question": "q", "context": "c"}"#);
        assert_eq!(plain.options, defaults);
        assert!(!plain.sets_windows());
        let top = read(
            r#"{"question": "q", "context": "c", "top_k": 3, "handle_impossible_answer": true,
                "max_answer_len": 4, "parameters": {"top_k": 9, "align_to_words": false,
                "null_score_diff_threshold": -1.5}}"#,
        )
        .options;
        assert_eq!(
            (top.top_k, top.handle_impossible_answer, top.max_answer_len),
            (3, true, 4)
        );
        assert!(!top.align_to_words);
        assert_eq!(top.null_threshold, Some(-1.5));
        let hf = read(
            r#"{"inputs": {"question": "q", "context": "c"}, "parameters": {"top_k": 5,
                "max_seq_len": 128, "doc_stride": 32, "max_question_len": 20}}"#,
        );
        assert_eq!(hf.options.top_k, 5);
        assert_eq!(
            hf.windows,
            WindowOptions {
                max_seq_len: Some(128),
                doc_stride: Some(32),
                max_question_len: Some(20)
            }
        );
    }

    #[test]
    fn window_options_resolve_as_the_pipeline_does_and_are_bounded() {
        let defaults = FeatureConfig::default();
        let resolve = |w: WindowOptions| w.resolve(&defaults, 512);
        let plain = resolve(WindowOptions::default()).unwrap();
        assert_eq!((plain.max_length, plain.stride), (384, 128));
        let short = resolve(WindowOptions {
            max_seq_len: Some(128),
            ..Default::default()
        })
        .unwrap();
        // The pipeline's doc_stride = min(max_seq_len // 2, 128).
        assert_eq!((short.max_length, short.stride), (128, 64));
        let both = resolve(WindowOptions {
            max_seq_len: Some(128),
            doc_stride: Some(32),
            max_question_len: Some(9),
        })
        .unwrap();
        assert_eq!(
            (both.max_length, both.stride, both.max_question_tokens),
            (128, 32, Some(9))
        );
        let refused = [
            (Some(513), None, None, Field::MaxSeqLen),
            (Some(4), None, None, Field::MaxSeqLen),
            (None, Some(384), None, Field::DocStride),
            (Some(128), Some(200), None, Field::DocStride),
            (None, None, Some(0), Field::MaxQuestionLen),
        ];
        for (max_seq_len, doc_stride, max_question_len, named) in refused {
            let err = resolve(WindowOptions {
                max_seq_len,
                doc_stride,
                max_question_len,
            })
            .unwrap_err();
            assert!(
                matches!(&err, RequestError::OutOfRange { field, .. } if *field == named),
                "{err:?}"
            );
            assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert!(err.to_string().contains(&named.to_string()), "{err}");
        }
    }

    #[test]
    fn each_bad_body_gets_its_own_error() {
        use RequestError::*;
        type Check = fn(&RequestError) -> bool;
        let cases: [(&str, Check); 22] = [
            (
                r#"{"question": "q", "context": "\u200b\u00a0\u2060 "}"#,
                |e| matches!(e, Blank(Place::Top(Field::Context))),
            ),
            ("{oops", |e| matches!(e, Json(_))),
            ("[1, 2]", |e| matches!(e, NotAnObject)),
            (r#"{"context": "c"}"#, |e| {
                matches!(e, Missing(Place::Top(Field::Question)))
            }),
            (r#"{"question": "q"}"#, |e| {
                matches!(e, Missing(Place::Top(Field::Context)))
            }),
            (r#"{"question": 3, "context": "c"}"#, |e| {
                matches!(e, BadValue(Place::Top(Field::Question), _))
            }),
            (r#"{"question": "q", "context": "c", "inputs": []}"#, |e| {
                matches!(e, Ambiguous)
            }),
            (r#"{"inputs": "text"}"#, |e| matches!(e, InputsShape)),
            (r#"{"inputs": []}"#, |e| matches!(e, NoInputs)),
            (
                r#"{"inputs": [{"question": "q", "context": "c"}, {"question": "q"}]}"#,
                |e| matches!(e, Missing(Place::Item(1, Field::Context))),
            ),
            (r#"{"question": "  ", "context": "c"}"#, |e| {
                matches!(e, Blank(Place::Top(Field::Question)))
            }),
            (r#"{"question": "q", "context": "c", "top_k": 0}"#, |e| {
                matches!(e, TopK { found: 0, .. })
            }),
            (
                r#"{"question": "q", "context": "c", "parameters": {"top_k": "x"}}"#,
                |e| matches!(e, BadValue(Place::Parameter(Field::TopK), _)),
            ),
            (
                r#"{"question": "q", "context": "c", "parameters": {"doc_strid": 3}}"#,
                |e| matches!(e, UnknownField { field, .. } if field == "parameters.doc_strid"),
            ),
            (
                r#"{"question": "q", "context": "c", "topk": 3}"#,
                |e| matches!(e, UnknownField { field, .. } if field == "topk"),
            ),
            (
                r#"{"inputs": {"question": "q", "context": "c", "lang": "en"}}"#,
                |e| matches!(e, UnknownField { field, .. } if field == "inputs.lang"),
            ),
            (
                r#"{"question": "q", "context": "c", "options": {"cache": true}}"#,
                |e| matches!(e, UnknownField { field, .. } if field == "options.cache"),
            ),
            (r#"{"question": "q", "documents": []}"#, |e| {
                matches!(e, NoDocuments)
            }),
            (
                r#"{"question": "q", "documents": [{"text": "a"}, {"txt": "b"}]}"#,
                |e| matches!(e, UnknownField { field, .. } if field == "documents[1].txt"),
            ),
            (
                r#"{"question": "q", "documents": [{"text": "a"}, {"text": " "}]}"#,
                |e| matches!(e, Blank(Place::Document(1, Field::Text))),
            ),
            (
                r#"{"question": "q", "context": "c", "documents": [{"text": "a"}]}"#,
                |e| matches!(e, Ambiguous),
            ),
            (
                r#"{"question": "q", "context": "c", "null_score_diff_threshold": "x"}"#,
                |e| matches!(e, BadValue(Place::Top(Field::NullScoreDiffThreshold), _)),
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(expected(&err), "{body}: {err:?}");
            assert!(err.status().is_client_error(), "{body}: {err:?}");
        }
        let unknown = parse(r#"{"question": "q", "context": "c", "parameters": {"doc_strid": 3}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("parameters.doc_strid") && unknown.contains("doc_stride"),
            "{unknown}"
        );
    }

    #[test]
    fn answers_are_shaped_as_qa_predict_prints_them() {
        let answer = |text: &str| PipelineAnswer {
            score: 0.5,
            start: 0,
            end: text.chars().count(),
            answer: text.into(),
        };
        let one = answer_json(&[answer("Ann")], 1).unwrap();
        assert_eq!(
            one,
            serde_json::json!({"score": 0.5, "start": 0, "end": 3, "answer": "Ann"})
        );
        let three = answer_json(&[answer("Ann")], 3).unwrap();
        assert!(three.is_array());
        assert_eq!(answer_json(&[], 1).unwrap(), serde_json::json!([]));
        let list = parse(r#"{"inputs": [{"question": "q", "context": "c"}]}"#).unwrap();
        assert_eq!(
            Answers::Pairs(vec![vec![answer("Ann")]])
                .reply(&list)
                .unwrap(),
            serde_json::json!([one])
        );
    }
}
