//! `qa-serve`: the HTTP question-answering server behind `qa serve`.
//!
//! * [`request`] reads an answer body (one question, a list, the Hugging Face shapes, or one
//!   question over many documents) with its options, refusing unknown fields, and shapes the
//!   answers as `qa predict --json` prints them.
//! * [`batcher`] is the model thread: it loads the model, then collects the windows of
//!   concurrent requests into shared batches (dynamic batching), run in forward passes of
//!   windows of similar length.
//! * [`connections`] is the accept loop: hyper HTTP/1 connections with header and body read
//!   timeouts, and a shutdown that answers the requests received and closes the rest.
//! * [`metrics`] counts responses, queue depth, batch sizes, forward passes and latency
//!   (Prometheus text).
//! * [`http`] is the axum router: `/v1/answer` (and `/`, `/predict` as HF endpoints call
//!   them), `/health`, `/metrics`, `/openapi.json` ([`openapi`]).
//! * [`error`]: [`RequestError`] (one HTTP status each) and [`ServeError`] (the server's own).
//!
//! A request is tokenized on tokio's blocking pool, its windows go to the model thread, and its
//! answers are decoded from its own windows only, so requests never mix however they are
//! batched. [`Server::start`] runs the server on the current runtime (tests);
//! [`run`] is the binary's blocking entry point, which stops on SIGTERM or Ctrl-C after
//! finishing the requests in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::backend::Backend;
use qa_eval::{EvalError, PipelineConfig, Predictor};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

pub mod batcher;
pub mod connections;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod request;

pub use batcher::BatchConfig;
pub use connections::ConnectionLimits;
pub use error::{RequestError, ServeError};
pub use request::{answer_json, AnswerRequest, Answers, Input, Question, Shape, WindowOptions};

use batcher::ModelState;
use metrics::Metrics;

/// Everything `qa serve` can be told, with its flags' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// How the model thread groups windows into forward passes.
    pub batching: BatchConfig,
    /// Requests admitted and not yet answered by the model; more are refused with 503.
    pub max_queue: usize,
    /// Request-body bytes admitted and not yet answered; more are refused with 503 (a request
    /// alone is admitted whatever its size). This bounds the memory a burst of large contexts
    /// can take: each holds its tokens, windows and logits until answered.
    pub max_queued_bytes: usize,
    /// Timeouts for slow clients, and the shutdown grace.
    pub connections: ConnectionLimits,
    /// Largest request body; larger ones are refused with 413.
    pub max_body_bytes: usize,
    /// Answer options a request does not set itself (`top_k`, `max_answer_len`,
    /// `handle_impossible_answer`), as `qa predict` takes them.
    pub answers: PipelineConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            batching: BatchConfig::default(),
            max_queue: 256,
            // A queued request holds ~170× its body in tokens, windows and logits (measured:
            // 10 × 300 KB contexts peaked at +509 MB with MiniLM), so 2 MiB of long contexts
            // is ~350 MB; short questions (a few KB) meet `max_queue` first.
            max_queued_bytes: 2 << 20,
            max_body_bytes: 1 << 20,
            connections: ConnectionLimits::default(),
            answers: PipelineConfig::default(),
        }
    }
}

impl ServeConfig {
    fn validate(&self) -> Result<(), ServeError> {
        let zero = [
            ("max_batch_windows", self.batching.max_windows),
            ("max_queue", self.max_queue),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_body_bytes", self.max_body_bytes),
            ("top_k", self.answers.top_k),
            ("max_answer_length", self.answers.max_answer_len),
        ]
        .into_iter()
        .find(|&(_, value)| value == 0);
        let timeouts = [
            self.connections.header_read_timeout,
            self.connections.body_read_timeout,
        ];
        if timeouts.iter().any(Duration::is_zero) {
            return Err(ServeError::ZeroLimit("read_timeout"));
        }
        let padding = self.batching.max_padding;
        match zero {
            Some((name, _)) => Err(ServeError::ZeroLimit(name)),
            None if !(0.0..=1.0).contains(&padding) => Err(ServeError::MaxPadding(padding)),
            None if self.answers.top_k > request::MAX_TOP_K => {
                Err(ServeError::TopKTooLarge(self.answers.top_k))
            }
            None => Ok(()),
        }
    }
}

/// Serves on `listener` until `shutdown` completes (or the model fails to load), then stops
/// accepting, finishes the requests in flight and joins the model thread. `load` runs on the
/// model thread, so `/health` answers 503 while a large model loads.
pub async fn serve<B, L, S>(
    listener: TcpListener,
    load: L,
    config: ServeConfig,
    shutdown: S,
) -> Result<(), ServeError>
where
    B: Backend,
    L: FnOnce() -> Result<Predictor<B>, EvalError> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let (model_tx, model_rx) = watch::channel(ModelState::Loading);
    run_server(listener, load, config, shutdown, model_tx, model_rx).await
}

async fn run_server<B, L, S>(
    listener: TcpListener,
    load: L,
    config: ServeConfig,
    shutdown: S,
    model_tx: watch::Sender<ModelState>,
    model_rx: watch::Receiver<ModelState>,
) -> Result<(), ServeError>
where
    B: Backend,
    L: FnOnce() -> Result<Predictor<B>, EvalError> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let (jobs, model_thread) =
        batcher::spawn_model_thread(load, config.batching.clone(), metrics.clone(), model_tx)?;
    let mut failed = model_rx.clone();
    let limits = config.connections;
    let app = http::router(http::AppState::new(jobs, model_rx, metrics.clone(), config));
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            // The model failed to load, or its thread ended: nothing could be answered.
            _ = failed.wait_for(|state| matches!(state, ModelState::Failed)) => {}
        }
    };
    connections::serve(listener, app, stop, limits, metrics).await;
    // The router (and with it the job sender) is gone: the model thread finishes what it holds
    // and ends.
    let joined = tokio::task::spawn_blocking(move || model_thread.join())
        .await
        .map_err(|_| ServeError::ModelThreadPanicked)?
        .map_err(|_| ServeError::ModelThreadPanicked)?;
    joined
}

/// A server running on the current tokio runtime, and the means to stop it.
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    model: watch::Receiver<ModelState>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Starts serving on `listener` (bind port 0 for an ephemeral port); `load` runs on the
    /// model thread. Call inside a tokio runtime.
    pub fn start<B, L>(
        listener: TcpListener,
        load: L,
        config: ServeConfig,
    ) -> Result<Self, ServeError>
    where
        B: Backend,
        L: FnOnce() -> Result<Predictor<B>, EvalError> + Send + 'static,
    {
        config.validate()?;
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (model_tx, model_rx) = watch::channel(ModelState::Loading);
        let shutdown = async move {
            // A dropped handle stops the server too.
            let _ = stopped.await;
        };
        let task = tokio::spawn(run_server(
            listener,
            load,
            config,
            shutdown,
            model_tx,
            model_rx.clone(),
        ));
        Ok(Self {
            addr,
            stop,
            model: model_rx,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the model is loaded ([`ServeError::ModelUnavailable`] if it failed).
    pub async fn ready(&mut self) -> Result<(), ServeError> {
        let state = self
            .model
            .wait_for(|state| !matches!(state, ModelState::Loading))
            .await
            .map_err(|_| ServeError::ModelUnavailable)?;
        match &*state {
            ModelState::Ready(_) => Ok(()),
            _ => Err(ServeError::ModelUnavailable),
        }
    }

    /// Stops accepting connections, finishes the requests in flight, and returns how the
    /// server ended (the model's load error, if that is why).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        // The server may have stopped already (its receiver is then gone).
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|_| ServeError::ServerTaskPanicked)?
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: no new connections; finishing the requests in flight");
}

/// `qa serve`: binds `addr`, serves until SIGTERM or Ctrl-C, finishes the requests in flight,
/// and returns. Blocks the calling thread (it builds its own tokio runtime).
pub fn run<B, L>(addr: SocketAddr, load: L, config: ServeConfig) -> Result<(), ServeError>
where
    B: Backend,
    L: FnOnce() -> Result<Predictor<B>, EvalError> + Send + 'static,
{
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("qa-serve")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(ServeError::LocalAddr)?;
        tracing::info!(
            "listening on http://{bound} (POST / or /v1/answer, GET /health, GET /metrics, \
             GET /openapi.json); loading the model"
        );
        serve(listener, load, config, shutdown_signal()).await
    })?;
    // Blocking-pool threads still tokenizing for a client that went away are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
