//! The HTTP face: `POST /v1/answer`, `GET /health`, `GET /metrics`, and JSON errors for
//! everything else. A request is read, admitted to the queue, tokenized on tokio's blocking
//! pool, sent to the model thread as one job, and decoded from its own windows' logits.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use qa_data::build_features;
use qa_eval::pipeline_answers;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::batcher::{Job, ModelState, Windowing};
use crate::error::RequestError;
use crate::metrics::{Metrics, QueueSlot, Readiness};
use crate::request::AnswerRequest;
use crate::ServeConfig;

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
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts every response by status, and times `/v1/answer`.
async fn count(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let timed = request.uri().path() == "/v1/answer";
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics.response(response.status().as_u16());
    if timed {
        app.metrics.answer_latency(started.elapsed());
    }
    response
}

async fn answer(State(app): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    match answer_body(&app, body).await {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(err) => err.into_response(),
    }
}

async fn answer_body(
    app: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, RequestError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RequestError::TooLarge {
                limit: app.config.max_body_bytes,
            }
        } else {
            RequestError::Body(rejection)
        }
    })?;
    let request = AnswerRequest::parse(&body, &app.config.answers)?;
    let windowing = app.windowing()?;
    let slot = QueueSlot::admit(&app.metrics, app.config.max_queue)
        .ok_or(RequestError::QueueFull(app.config.max_queue))?;

    let examples = request.examples();
    let (examples, features) = tokio::task::spawn_blocking(move || {
        let set = build_features(&windowing.tokenizer, &examples, &windowing.config)?;
        for (id, why) in &set.report.skipped {
            tracing::debug!("question {id}: skipped: {why}");
        }
        Ok::<_, qa_data::DataError>((examples, set.features))
    })
    .await
    .map_err(|_| RequestError::Worker)?
    .map_err(RequestError::Windows)?;

    let features = Arc::new(features);
    // A question too long to leave room for context has no windows (and no answers).
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

    let options = request.options;
    let answers = tokio::task::spawn_blocking(move || {
        pipeline_answers(&examples, &features, &logits, &options)
    })
    .await
    .map_err(|_| RequestError::Worker)?
    .map_err(RequestError::Decode)?;
    request.reply(&answers)
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
