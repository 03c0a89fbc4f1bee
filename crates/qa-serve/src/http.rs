//! The HTTP face: the answer routes (`POST /v1/answer`, and `POST /` and `POST /predict` as
//! Hugging Face Inference Endpoints call them), `GET /health` (and `GET /`, as the HF inference
//! toolkit answers it), `GET /metrics`, `GET /openapi.json`, and JSON errors for everything else.
//! A request is read, admitted to the queue, tokenized on tokio's blocking pool, sent to the
//! model thread as one job, and decoded from its own windows' logits.
//!
//! An oversized body is read to its end and discarded, up to [`DRAIN_FACTOR`] times the limit
//! (at least [`DRAIN_MIN_BYTES`]) or [`DRAIN_TIME`], before the 413 is sent, as nginx's
//! lingering close does: a client that writes its whole body before reading (Python's
//! `urllib`) would otherwise see a reset connection instead of the 413.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use qa_data::build_features;
use qa_eval::{document_answers, pipeline_answers};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::batcher::{Job, ModelState, Windowing};
use crate::error::RequestError;
use crate::metrics::{InFlight, Metrics, QueueLimits, QueueSlot, Readiness};
use crate::request::{AnswerRequest, Answers, Input};
use crate::ServeConfig;

/// An oversized body is drained up to this many times the limit...
pub const DRAIN_FACTOR: usize = 8;
/// ...or this many bytes, whichever is more...
pub const DRAIN_MIN_BYTES: usize = 32 << 20;
/// ...for at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The paths that answer questions.
pub const ANSWER_PATHS: [&str; 3] = ["/v1/answer", "/", "/predict"];

/// What the handlers share.
pub struct AppState {
    jobs: Sender<Job>,
    model: watch::Receiver<ModelState>,
    metrics: Arc<Metrics>,
    config: ServeConfig,
}

impl AppState {
    pub fn new(
        jobs: Sender<Job>,
        model: watch::Receiver<ModelState>,
        metrics: Arc<Metrics>,
        config: ServeConfig,
    ) -> Self {
        Self {
            jobs,
            model,
            metrics,
            config,
        }
    }

    fn windowing(&self) -> Result<Arc<Windowing>, RequestError> {
        match &*self.model.borrow() {
            ModelState::Ready(windowing) => Ok(windowing.clone()),
            ModelState::Loading => Err(RequestError::Loading),
            ModelState::Failed => Err(RequestError::ModelUnavailable),
        }
    }
}

/// The server's routes, with the body limit and the response counters.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/v1/answer", post(answer))
        .route("/predict", post(answer))
        .route("/", post(answer).get(health))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts every response by status, and times the answer routes.
async fn count(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let timed = request.method() == Method::POST && ANSWER_PATHS.contains(&request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics.response(response.status().as_u16());
    if timed {
        app.metrics.answer_latency(started.elapsed());
    }
    response
}

async fn answer(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let limits = (
        app.config.max_body_bytes,
        app.config.connections.body_read_timeout,
    );
    let result = match read_body(request, limits).await {
        Ok(body) => {
            // Read whole: a shutdown now answers it before closing.
            let _in_flight = InFlight::new(&app.metrics);
            answer_body(&app, body).await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(err @ (RequestError::TooLarge { .. } | RequestError::BodyTimeout(_))) => {
            let mut response = err.into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Err(err) => err.into_response(),
    }
}

/// The body, at most `limit` bytes, each piece arriving within `pause`; a larger one is drained
/// (read and discarded, within the bounds above) and refused.
async fn read_body(
    request: Request,
    (limit, pause): (usize, Duration),
) -> Result<Bytes, RequestError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let drain_bound = limit.saturating_mul(DRAIN_FACTOR).max(DRAIN_MIN_BYTES);
    let too_large = RequestError::TooLarge { limit };
    if declared.is_some_and(|n| n > drain_bound as u64) {
        // Not worth reading: refuse at once and close.
        return Err(too_large);
    }
    let mut body: Body = request.into_body();
    let mut data: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    let mut over = declared.is_some_and(|n| n > limit as u64);
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let frame = if over {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            }
        } else {
            tokio::time::timeout(pause, body.frame())
                .await
                .map_err(|_| RequestError::BodyTimeout(pause))?
        };
        let Some(frame) = frame else { break };
        let Ok(chunk) = frame.map_err(RequestError::Body)?.into_data() else {
            continue;
        };
        seen = seen.saturating_add(chunk.len());
        if !over && seen > limit {
            over = true;
            data = Vec::new();
        }
        if over {
            if seen > drain_bound {
                break;
            }
        } else {
            data.extend_from_slice(&chunk);
        }
    }
    if over {
        return Err(too_large);
    }
    Ok(Bytes::from(data))
}

async fn answer_body(app: &AppState, body: Bytes) -> Result<Value, RequestError> {
    let request = AnswerRequest::parse(&body, &app.config.answers)?;
    let windowing = app.windowing()?;
    let windows = request
        .windows
        .resolve(&windowing.config, windowing.longest)?;
    let limits = QueueLimits {
        requests: app.config.max_queue,
        bytes: app.config.max_queued_bytes,
    };
    let slot =
        QueueSlot::admit(&app.metrics, limits, body.len()).ok_or(RequestError::QueueFull {
            requests: app.metrics.queue_depth(),
            bytes: app.metrics.queued_bytes(),
        })?;

    let examples = request.examples();
    let what = match request.input {
        Input::Pairs { .. } => "question",
        Input::Documents { .. } => "document",
    };
    let (examples, features) = tokio::task::spawn_blocking(move || {
        let set = build_features(&windowing.tokenizer, &examples, &windows)
            .map_err(RequestError::Windows)?;
        // A question too long to leave room for context gets no window: say so rather than
        // answer nothing.
        if let Some((id, why)) = set.report.skipped.first() {
            return Err(RequestError::NoWindows(format!(
                "{what} {id} gets no window: {why} (shorten the question, or set max_seq_len, \
                 doc_stride or max_question_len)"
            )));
        }
        Ok((examples, set.features))
    })
    .await
    .map_err(|_| RequestError::Worker)??;

    let features = Arc::new(features);
    let logits = if features.is_empty() {
        drop(slot);
        Vec::new()
    } else {
        let (reply, answered) = oneshot::channel();
        app.jobs
            .send(Job {
                features: features.clone(),
                reply,
                enqueued: Instant::now(),
                slot,
            })
            .map_err(|_| RequestError::ModelUnavailable)?;
        answered
            .await
            .map_err(|_| RequestError::ModelUnavailable)?
            .map_err(|_| RequestError::ModelFailed)?
    };

    let (request, answers) = tokio::task::spawn_blocking(move || {
        let options = &request.options;
        let answers = match &request.input {
            Input::Pairs { .. } => {
                pipeline_answers(&examples, &features, &logits, options).map(Answers::Pairs)
            }
            Input::Documents { documents, .. } => {
                document_answers(documents, &examples, &features, &logits, options)
                    .map(Answers::Documents)
            }
        };
        (request, answers)
    })
    .await
    .map_err(|_| RequestError::Worker)?;
    answers.map_err(RequestError::Decode)?.reply(&request)
}

/// 200 once the model is loaded; 503 while it loads or when it failed.
async fn health(State(app): State<Arc<AppState>>) -> Response {
    let readiness = app.model.borrow().readiness();
    let (status, text) = match readiness {
        Readiness::Ready => (StatusCode::OK, "ready"),
        Readiness::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        Readiness::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    json_response(status, &serde_json::json!({ "status": text }))
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let readiness = app.model.borrow().readiness();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.metrics.render(readiness),
    )
        .into_response()
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, &crate::openapi::document())
}

async fn not_found(uri: Uri) -> RequestError {
    RequestError::NotFound(uri.path().to_string())
}

async fn method_not_allowed() -> RequestError {
    RequestError::MethodNotAllowed
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}
