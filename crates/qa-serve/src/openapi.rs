//! `GET /openapi.json`: the server's routes, bodies and errors as an OpenAPI 3.0 document.
//!
//! Written out here rather than derived: the bodies are read from `serde_json::Value` (so that
//! every HF client shape and every unknown field can be told apart), which a derive crate
//! could not describe; the options come from [`crate::request::OPTIONS`], so a new option
//! cannot be missed.

use serde_json::{json, Map, Value};

use crate::error::Field;
use crate::http::ANSWER_PATHS;
use crate::request::{MAX_DOCUMENTS, MAX_TOP_K, MIN_SEQ_LEN, OPTIONS};

/// The JSON schema and meaning of one answer option.
fn option_schema(field: Field) -> Value {
    let (schema, what) = match field {
        Field::TopK => (
            json!({"type": "integer", "minimum": 1, "maximum": MAX_TOP_K}),
            "answers to return; 1 returns an object, more a list",
        ),
        Field::DocStride => (
            json!({"type": "integer", "minimum": 0}),
            "context tokens shared by consecutive windows; below max_seq_len",
        ),
        Field::MaxAnswerLen => (
            json!({"type": "integer", "minimum": 1}),
            "longest answer in tokens",
        ),
        Field::MaxSeqLen => (
            json!({"type": "integer", "minimum": MIN_SEQ_LEN}),
            "tokens per window; at most the model's positions; alone, doc_stride becomes \
             min(max_seq_len / 2, the server's)",
        ),
        Field::MaxQuestionLen => (
            json!({"type": "integer", "minimum": 1}),
            "keep only the question's first tokens (the pipeline's documented meaning)",
        ),
        Field::HandleImpossibleAnswer => (json!({"type": "boolean"}), "allow the answer \"\""),
        Field::AlignToWords => (json!({"type": "boolean"}), "widen answers to whole words"),
        Field::NullScoreDiffThreshold => (
            json!({"type": "number"}),
            "with handle_impossible_answer: answer \"\" when the null logit beats the best span's \
             by more than this (run_qa's rule; qa eval's best_f1_thresh)",
        ),
        Field::Question | Field::Context | Field::Text => (json!({"type": "string"}), ""),
    };
    let mut schema = schema;
    schema["description"] = Value::from(what);
    schema
}

/// The document.
pub fn document() -> Value {
    let options: Map<String, Value> = OPTIONS
        .iter()
        .map(|&f| (f.to_string(), option_schema(f)))
        .collect();
    let pair = json!({
        "type": "object", "additionalProperties": false,
        "required": ["question", "context"],
        "properties": {"question": {"type": "string"}, "context": {"type": "string"}}
    });
    let with_options = |mut body: Value| {
        let properties = body["properties"]
            .as_object_mut()
            .expect("an object schema");
        properties.extend(options.clone());
        properties.insert(
            "parameters".into(),
            json!({"$ref": "#/components/schemas/Parameters"}),
        );
        properties.insert("options".into(), json!({
            "type": "object", "additionalProperties": false,
            "description": "the hosted API's; accepted, without effect here",
            "properties": {"use_cache": {"type": "boolean"}, "wait_for_model": {"type": "boolean"}}
        }));
        body["additionalProperties"] = Value::Bool(false);
        body
    };
    let request = json!({"oneOf": [
        with_options(json!({
            "description": "one question (\"inputs\": null may stand beside it)",
            "type": "object", "required": ["question", "context"],
            "properties": {"question": {"type": "string"}, "context": {"type": "string"},
                           "inputs": {"type": "null"}}
        })),
        with_options(json!({
            "description": "the Hugging Face shape: one pair, or a list of pairs",
            "type": "object", "required": ["inputs"],
            "properties": {"inputs": {"oneOf": [pair, {"type": "array", "minItems": 1, "items": pair}]}}
        })),
        with_options(json!({
            "description": "one question over many documents, answered by one ranking",
            "type": "object", "required": ["question", "documents"],
            "properties": {
                "question": {"type": "string"},
                "documents": {"type": "array", "minItems": 1, "maxItems": MAX_DOCUMENTS, "items": {
                    "type": "object", "additionalProperties": false, "required": ["text"],
                    "properties": {"id": {"type": ["string", "number"]}, "text": {"type": "string"}}
                }}
            }
        })),
    ]});
    let answer = json!({
        "type": "object",
        "properties": {"score": {"type": "number"}, "start": {"type": "integer"},
                       "end": {"type": "integer"}, "answer": {"type": "string"}}
    });
    let document_answer = json!({
        "type": "object",
        "description": "start and end are char offsets into the document; score is a \
                        probability over every document's candidates",
        "properties": {"score": {"type": "number"}, "start": {"type": "integer"},
                       "end": {"type": "integer"}, "answer": {"type": "string"},
                       "document": {"type": "object", "nullable": true, "properties": {
                           "index": {"type": "integer"}, "id": {"type": "string", "nullable": true}}}}
    });
    let error = |what: &str| {
        json!({"description": what, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let answer_route = json!({"post": {
        "summary": "answer questions (the HF question-answering task)",
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/AnswerRequest"}}}},
        "responses": {
            "200": {"description": "the answers", "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/Answer"},
                {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}},
                {"type": "array", "items": {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}}},
                {"type": "array", "items": {"$ref": "#/components/schemas/DocumentAnswer"}}
            ]}}}},
            "400": error("malformed JSON, a missing, unknown or mistyped field"),
            "413": error("the body is larger than --max-body-bytes"),
            "422": error("an empty question, context or list; an option out of range; a question that leaves no room for context"),
            "500": error("the model failed on a batch holding this request"),
            "503": error("the model is loading, or the queue is full (with Retry-After)")
        }
    }});
    let health = json!({
        "summary": "readiness",
        "responses": {
            "200": {"description": "{\"status\": \"ready\"}"},
            "503": {"description": "{\"status\": \"loading\" | \"unavailable\"}"}
        }
    });
    let mut paths = Map::new();
    for path in ANSWER_PATHS {
        paths.insert(path.into(), answer_route.clone());
    }
    paths
        .get_mut("/")
        .and_then(Value::as_object_mut)
        .expect("/ answers")
        .insert("get".into(), health.clone());
    paths.insert("/health".into(), json!({"get": health}));
    paths.insert(
        "/metrics".into(),
        json!({"get": {
        "summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain"}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
        "summary": "this document", "responses": {"200": {"description": "OpenAPI 3.0"}}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "qa serve", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {
            "AnswerRequest": request,
            "Parameters": {"type": "object", "additionalProperties": false, "properties": options},
            "Answer": answer,
            "DocumentAnswer": document_answer,
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}}}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_option_is_described() {
        let doc = document();
        for path in ANSWER_PATHS {
            assert!(
                doc["paths"][path]["post"]["responses"]["413"].is_object(),
                "{path}"
            );
        }
        for path in ["/", "/health", "/metrics", "/openapi.json"] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
        let parameters = &doc["components"]["schemas"]["Parameters"]["properties"];
        for option in OPTIONS {
            let described = &parameters[option.to_string()];
            assert!(
                described["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{option}"
            );
        }
    }
}
