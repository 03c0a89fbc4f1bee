//! Typed errors: [`RequestError`] is what one request gets back (each variant has its HTTP
//! status, and the body is `{"error": "..."}`); [`ServeError`] is why the server could not start
//! or run.

use std::fmt;
use std::net::SocketAddr;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A request field, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Question,
    Context,
    TopK,
    DocStride,
    MaxAnswerLen,
    MaxSeqLen,
    MaxQuestionLen,
    HandleImpossibleAnswer,
    AlignToWords,
    NullScoreDiffThreshold,
    /// A document's text.
    Text,
}

impl Field {
    /// The field's JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Field::Question => "question",
            Field::Context => "context",
            Field::TopK => "top_k",
            Field::DocStride => "doc_stride",
            Field::MaxAnswerLen => "max_answer_len",
            Field::MaxSeqLen => "max_seq_len",
            Field::MaxQuestionLen => "max_question_len",
            Field::HandleImpossibleAnswer => "handle_impossible_answer",
            Field::AlignToWords => "align_to_words",
            Field::NullScoreDiffThreshold => "null_score_diff_threshold",
            Field::Text => "text",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where in the body a field sits: top level, the `inputs` object, item `n` of an `inputs`
/// list, `parameters`, or document `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Top(Field),
    Input(Field),
    Item(usize, Field),
    Parameter(Field),
    Document(usize, Field),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Top(field) => write!(f, "\"{field}\""),
            Place::Input(field) => write!(f, "inputs.{field}"),
            Place::Item(index, field) => write!(f, "inputs[{index}].{field}"),
            Place::Parameter(field) => write!(f, "parameters.{field}"),
            Place::Document(index, field) => write!(f, "documents[{index}].{field}"),
        }
    }
}

/// Why one request was not answered. None of them affects other requests.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error(
        "the body must be a JSON object, e.g. {{\"question\": \"...\", \"context\": \"...\"}}"
    )]
    NotAnObject,
    #[error("{0}: {1}")]
    BadValue(Place, #[source] serde_json::Error),
    #[error(
        "missing field {0} (send \"question\" and \"context\", \"inputs\", or \"question\" and \"documents\")"
    )]
    Missing(Place),
    #[error("unknown field \"{field}\" (known here: {known})")]
    UnknownField { field: String, known: String },
    #[error(
        "send one of: \"question\" and \"context\"; \"inputs\"; \"question\" and \"documents\""
    )]
    Ambiguous,
    #[error("\"{0}\" must be a boolean inside an \"options\" object")]
    OptionsShape(String),
    #[error("\"documents\" must be a list of {{\"id\"?, \"text\"}} objects")]
    DocumentsShape,
    #[error("\"documents\" is an empty list: there is nothing to search")]
    NoDocuments,
    #[error("{found} documents: at most {max} per request")]
    TooManyDocuments { found: usize, max: usize },
    #[error("documents[{0}].id must be a string or a number")]
    DocumentId(usize),
    #[error("{field}: {why}")]
    OutOfRange { field: Field, why: String },
    #[error("{0}")]
    NoWindows(String),
    #[error("\"inputs\" must be an object {{\"question\", \"context\"}} or a list of them")]
    InputsShape,
    #[error("\"parameters\" must be an object")]
    ParametersShape,
    #[error("\"inputs\" is an empty list: there is nothing to answer")]
    NoInputs,
    #[error("{0} is empty: there is nothing to answer")]
    Blank(Place),
    #[error("top_k must be between 1 and {max}, not {found}")]
    TopK { found: usize, max: usize },
    #[error("max_answer_len must be at least 1")]
    MaxAnswerLen,
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body stopped arriving for {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("reading the body: {0}")]
    Body(#[source] axum::Error),
    #[error("the server is busy ({requests} requests, {bytes} bytes queued): retry later")]
    QueueFull { requests: usize, bytes: usize },
    #[error("the model is still loading: retry later")]
    Loading,
    #[error("the model is not available (it failed to load, or the server is stopping)")]
    ModelUnavailable,
    #[error("the model failed on a batch holding this request")]
    ModelFailed,
    #[error("cutting windows: {0}")]
    Windows(#[source] qa_data::DataError),
    #[error("decoding answers: {0}")]
    Decode(#[source] qa_eval::EvalError),
    #[error("encoding the answer: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("a worker task failed")]
    Worker,
    #[error(
        "no such path: {0} (try POST / or /v1/answer, GET /health, GET /metrics, GET /openapi.json)"
    )]
    NotFound(String),
    #[error("method not allowed here")]
    MethodNotAllowed,
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        use RequestError::*;
        match self {
            Json(_)
            | NotAnObject
            | BadValue(..)
            | Missing(_)
            | UnknownField { .. }
            | Ambiguous
            | InputsShape
            | ParametersShape
            | OptionsShape(_)
            | DocumentsShape
            | DocumentId(_)
            | Body(_) => StatusCode::BAD_REQUEST,
            NoInputs
            | NoDocuments
            | TooManyDocuments { .. }
            | Blank(_)
            | TopK { .. }
            | MaxAnswerLen
            | OutOfRange { .. }
            | NoWindows(_) => StatusCode::UNPROCESSABLE_ENTITY,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueueFull { .. } | Loading | ModelUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ModelFailed | Windows(_) | Decode(_) | Encode(_) | Worker => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            NotFound(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Seconds a client should wait before retrying, for the refusals that pass.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            RequestError::QueueFull { .. } => Some("1"),
            RequestError::Loading => Some("5"),
            _ => None,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("request refused ({status}): {self}");
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("max_padding must be a fraction between 0 and 1, not {0}")]
    MaxPadding(f64),
    #[error("top_k {0} is more than the server allows ({max})", max = crate::request::MAX_TOP_K)]
    TopKTooLarge(usize),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot start the model thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("loading the model: {0}")]
    Load(#[source] qa_eval::EvalError),
    #[error("the model is not available (it failed to load)")]
    ModelUnavailable,
    #[error("the model thread panicked")]
    ModelThreadPanicked,
    #[error("the server task panicked")]
    ServerTaskPanicked,
}
