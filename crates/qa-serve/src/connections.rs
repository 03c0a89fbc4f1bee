//! The accept loop: HTTP/1 connections served by hyper with the timeouts a server facing slow
//! or stalled clients needs, and a shutdown that cannot be held up by them.
//!
//! `axum::serve` sets no timer (so no header read timeout) and waits for every connection at
//! shutdown, so one client holding a half-sent request kept a stopping server up for as long
//! as it liked. Here:
//! * a request's head must arrive within [`ConnectionLimits::header_read_timeout`] (hyper's
//!   header read timeout, which also closes keep-alive connections idle that long);
//! * a body that pauses longer than [`ConnectionLimits::body_read_timeout`] gets a 408
//!   (`http::read_body` enforces it);
//! * on shutdown the listener closes, idle connections close, requests read whole are answered
//!   for up to [`ConnectionLimits::shutdown_grace`], and whatever is left — clients still
//!   sending, or work past the grace — is closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// How long the server waits on clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's line and headers must arrive within this; a keep-alive connection idle this
    /// long is closed.
    pub header_read_timeout: Duration,
    /// Longest pause while a request body arrives (408 past it).
    pub body_read_timeout: Duration,
    /// On shutdown, how long admitted requests may take to be answered.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            // nginx's client_header_timeout and client_body_timeout are 60 s; a QA request is
            // small, so half that is plenty for a slow client and short for a stalled one.
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            // Kubernetes' default termination grace period.
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// After the grace, how long answered requests get to finish writing their responses.
const FLUSH_TIME: Duration = Duration::from_millis(500);

/// Serves `app` on `listener` until `shutdown` completes, then stops as the module says.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) {
    let (closing, closing_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, a connection reset before accept: pause
                        // rather than spin, and go on.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let mut closing = closing_seen.clone();
                connections.spawn(async move {
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = closing.wait_for(|closing| *closing) => {}
                    }
                    // Closes now if idle, else after the response in flight.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                });
                while connections.try_join_next().is_some() {}
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    closing.send_replace(true);
    // Requests read whole are answered (within the grace); connections still sending are not
    // waited for.
    let admitted_done = async {
        while metrics.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(limits.shutdown_grace, admitted_done)
        .await
        .is_err()
    {
        tracing::warn!(
            "{} requests still unanswered after the {:?} shutdown grace: closing them",
            metrics.in_flight(),
            limits.shutdown_grace
        );
    }
    let flushed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(FLUSH_TIME, flushed).await.is_err() {
        tracing::info!(
            "closing {} connections that were still sending or waiting",
            connections.len()
        );
        connections.shutdown().await;
    }
}
