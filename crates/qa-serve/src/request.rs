//! The `POST /v1/answer` body, read into questions and answer options, and the reply shaped as
//! `qa predict --json` prints it.
//!
//! Accepted bodies (options at the top level or, as the Hugging Face Inference API sends them,
//! under `"parameters"`; a top-level option wins):
//! * `{"question": "...", "context": "...", "top_k"?: n, "handle_impossible_answer"?: b,
//!   "max_answer_len"?: n}` → one answer (an object; a list when `top_k` > 1);
//! * `{"inputs": {"question": "...", "context": "..."}}` (the HF shape) → the same;
//! * `{"inputs": [{"question", "context"}, ...]}` → a list of those, in order.
//!
//! Unknown fields are ignored, as the HF API ignores them (e.g. its `"options"`).

use qa_data::requests::request_example;
use qa_data::{Example, ExampleId};
pub use qa_eval::pipeline::answer_json;
use qa_eval::{PipelineAnswer, PipelineConfig};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Field, Place, RequestError};

/// The most answers one question may ask for (the pipeline keeps `2·top_k + 10` spans per
/// window, so this bounds the work one request can ask for).
pub const MAX_TOP_K: usize = 100;

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

/// A parsed `/v1/answer` request.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRequest {
    pub questions: Vec<Question>,
    pub shape: Shape,
    /// The server's defaults with this request's options applied.
    pub options: PipelineConfig,
}

impl AnswerRequest {
    /// Reads a body. Malformed JSON, missing fields and wrong types are 400s; empty questions
    /// or contexts and out-of-range options are 422s.
    pub fn parse(body: &[u8], defaults: &PipelineConfig) -> Result<Self, RequestError> {
        let value: Value = serde_json::from_slice(body).map_err(RequestError::Json)?;
        let Value::Object(top) = value else {
            return Err(RequestError::NotAnObject);
        };
        let (questions, shape) = match top.get("inputs").filter(|v| !v.is_null()) {
            Some(inputs) => {
                if has(&top, "question") || has(&top, "context") {
                    return Err(RequestError::Ambiguous);
                }
                match inputs {
                    Value::Object(item) => (vec![pair(item, Place::Top)?], Shape::One),
                    Value::Array(items) if items.is_empty() => return Err(RequestError::NoInputs),
                    Value::Array(items) => {
                        let questions = items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| match item {
                                Value::Object(item) => pair(item, |f| Place::Item(i, f)),
                                _ => Err(RequestError::InputsShape),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        (questions, Shape::List)
                    }
                    _ => return Err(RequestError::InputsShape),
                }
            }
            None => (vec![pair(&top, Place::Top)?], Shape::One),
        };
        let options = options(&top, defaults)?;
        Ok(Self {
            questions,
            shape,
            options,
        })
    }

    /// The questions as examples (ids 0, 1, ... in request order), as `qa predict` builds them.
    pub fn examples(&self) -> Vec<Example> {
        self.questions
            .iter()
            .enumerate()
            .map(|(i, q)| request_example(ExampleId::Number(i as i64), &q.question, &q.context))
            .collect()
    }

    /// The reply body: each question's answers as `qa predict --json` prints them, alone or in
    /// a list as the request asked.
    pub fn reply(&self, answers: &[Vec<PipelineAnswer>]) -> Result<Value, RequestError> {
        let mut each = answers
            .iter()
            .map(|a| answer_json(a, self.options.top_k).map_err(RequestError::Encode));
        match self.shape {
            Shape::One => each.next().unwrap_or_else(|| Ok(Value::Array(Vec::new()))),
            Shape::List => Ok(Value::Array(each.collect::<Result<_, _>>()?)),
        }
    }
}

fn has(object: &Map<String, Value>, key: &str) -> bool {
    object.get(key).is_some_and(|v| !v.is_null())
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

/// A `{"question", "context"}` object; `place` says where it sits, for messages.
fn pair(
    object: &Map<String, Value>,
    place: impl Fn(Field) -> Place,
) -> Result<Question, RequestError> {
    let text = |f: Field| -> Result<String, RequestError> {
        let key = f.to_string();
        let text: String = field(object, &key, place(f))?.ok_or(RequestError::Missing(place(f)))?;
        if text.trim().is_empty() {
            return Err(RequestError::Blank(place(f)));
        }
        Ok(text)
    };
    Ok(Question {
        question: text(Field::Question)?,
        context: text(Field::Context)?,
    })
}

/// `defaults` with the request's options applied (top level first, then `"parameters"`).
fn options(
    top: &Map<String, Value>,
    defaults: &PipelineConfig,
) -> Result<PipelineConfig, RequestError> {
    let parameters = match top.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(RequestError::ParametersShape),
    };
    fn option<T: DeserializeOwned>(
        top: &Map<String, Value>,
        parameters: &Map<String, Value>,
        f: Field,
    ) -> Result<Option<T>, RequestError> {
        let key = f.to_string();
        match field(top, &key, Place::Top(f))? {
            Some(v) => Ok(Some(v)),
            None => field(parameters, &key, Place::Parameter(f)),
        }
    }
    let top_k: usize = option(top, &parameters, Field::TopK)?.unwrap_or(defaults.top_k);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(RequestError::TopK {
            found: top_k,
            max: MAX_TOP_K,
        });
    }
    let max_answer_len: usize =
        option(top, &parameters, Field::MaxAnswerLen)?.unwrap_or(defaults.max_answer_len);
    if max_answer_len == 0 {
        return Err(RequestError::MaxAnswerLen);
    }
    let handle_impossible_answer = option(top, &parameters, Field::HandleImpossibleAnswer)?
        .unwrap_or(defaults.handle_impossible_answer);
    Ok(PipelineConfig {
        top_k,
        max_answer_len,
        handle_impossible_answer,
        align_to_words: defaults.align_to_words,
    })
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

    #[test]
    fn the_three_shapes_read_the_same_questions() {
        let one = parse(r#"{"question": "Who?", "context": "Ann did."}"#).unwrap();
        assert_eq!(one.questions, [q("Who?", "Ann did.")]);
        assert_eq!(one.shape, Shape::One);
        let hf = parse(r#"{"inputs": {"question": "Who?", "context": "Ann did."}}"#).unwrap();
        assert_eq!(hf, one);
        let list = parse(
            r#"{"inputs": [{"question": "Who?", "context": "Ann did."},
                           {"question": "When?", "context": "In May."}]}"#,
        )
        .unwrap();
        assert_eq!(
            list.questions,
            [q("Who?", "Ann did."), q("When?", "In May.")]
        );
        assert_eq!(list.shape, Shape::List);
        let ids: Vec<ExampleId> = list.examples().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [ExampleId::Number(0), ExampleId::Number(1)]);
    }

    #[test]
    fn options_come_from_the_top_level_then_parameters_then_the_defaults() {
        let defaults = PipelineConfig {
            top_k: 2,
            ..PipelineConfig::default()
        };
        let read = |body: &str| {
            AnswerRequest::parse(body.as_bytes(), &defaults)
                .unwrap()
                .options
        };
        let plain = read(r#"{"question": "q", "context": "c"}"#);
        assert_eq!(plain, defaults);
        let top = read(
            r#"{"question": "q", "context": "c", "top_k": 3, "handle_impossible_answer": true,
                "max_answer_len": 4, "parameters": {"top_k": 9}}"#,
        );
        assert_eq!(
            (top.top_k, top.handle_impossible_answer, top.max_answer_len),
            (3, true, 4)
        );
        let hf =
            read(r#"{"inputs": {"question": "q", "context": "c"}, "parameters": {"top_k": 5}}"#);
        assert_eq!(hf.top_k, 5);
    }

    #[test]
    fn each_bad_body_gets_its_own_error() {
        use RequestError::*;
        type Check = fn(&RequestError) -> bool;
        let cases: [(&str, Check); 12] = [
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
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(expected(&err), "{body}: {err:?}");
        }
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
            list.reply(&[vec![answer("Ann")]]).unwrap(),
            serde_json::json!([one])
        );
    }
}
