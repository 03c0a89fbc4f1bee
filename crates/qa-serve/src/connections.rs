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
//! * a connection's first request head is read here before hyper sees it, so that a malformed
//!   `Content-Length` gets a JSON 400 naming it (hyper answers those with an empty 400);
//! * on shutdown the listener closes, idle connections close, requests read whole are answered
//!   for up to [`ConnectionLimits::shutdown_grace`], and whatever is left — clients still
//!   sending, or work past the grace — is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
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
                    let mut stream = stream;
                    let head = tokio::select! {
                        head = first_head(&mut stream, limits.header_read_timeout) => head,
                        _ = closing.wait_for(|closing| *closing) => return,
                    };
                    let Some(head) = head else { return };
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout);
                    let io = TokioIo::new(Prefixed { head, read: 0, stream });
                    let connection = builder.serve_connection(io, service);
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

/// Longest first request head read before hyper (hyper refuses longer heads itself).
const MAX_HEAD: usize = 64 << 10;

/// Reads the connection's first request head (within `timeout`). Returns the bytes read, for
/// hyper to parse, or `None` when the connection closed, timed out, or had a malformed
/// `Content-Length`, which gets a JSON 400 naming it.
async fn first_head(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 4096];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok()?;
    if head.is_empty() {
        return None;
    }
    match malformed_content_length(&head) {
        None => Some(head),
        Some(why) => {
            let body = serde_json::json!({ "error": why }).to_string();
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// What is wrong with a request head's `Content-Length` headers, if anything: each must be a
/// decimal byte count, and several must agree (RFC 9110 §8.6).
fn malformed_content_length(head: &[u8]) -> Option<String> {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let text = String::from_utf8_lossy(&head[..end]);
    let mut seen: Option<&str> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("content-length") {
            continue;
        }
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 19 {
            return Some(format!(
                "malformed Content-Length header {value:?}: it must be the body's size in bytes"
            ));
        }
        match seen {
            Some(first) if first.trim_start_matches('0') != value.trim_start_matches('0') => {
                return Some(format!(
                    "conflicting Content-Length headers {first:?} and {value:?}: send one"
                ));
            }
            _ => seen = Some(value),
        }
    }
    None
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed {
    head: Vec<u8>,
    read: usize,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.read < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.read);
            buf.put_slice(&this.head[this.read..this.read + n]);
            this.read += n;
            if this.read == this.head.len() {
                this.head = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::malformed_content_length;

    #[test]
    fn content_lengths_must_be_byte_counts_that_agree() {
        let head = |headers: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        for good in [
            "Content-Length: 12\r\n",
            "",
            "content-length: 0\r\nContent-Length: 00\r\n",
        ] {
            assert_eq!(
                malformed_content_length(head(good).as_bytes()),
                None,
                "{good}"
            );
        }
        for (bad, says) in [
            (
                "Content-Length: 12abc\r\n",
                "malformed Content-Length header \"12abc\"",
            ),
            ("Content-Length: -1\r\n", "malformed"),
            ("Content-Length:\r\n", "malformed"),
            ("Content-Length: 99999999999999999999\r\n", "malformed"),
            ("Content-Length: 3\r\nContent-Length: 4\r\n", "conflicting"),
        ] {
            let why = malformed_content_length(head(bad).as_bytes()).expect(bad);
            assert!(why.contains(says), "{bad}: {why}");
        }
    }
}
