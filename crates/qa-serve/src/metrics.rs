//! The server's counters, rendered in the Prometheus text format at `GET /metrics`: responses
//! by status code, queue depth, windows and requests per batch, forward passes, and answer
//! latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the windows-per-batch buckets.
const WINDOW_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Upper bounds of the requests-per-batch buckets.
const REQUEST_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A Prometheus histogram: counts per bucket (not yet cumulative), sum and count.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, and one for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total: u64 = self.counts.iter().sum();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

#[derive(Debug)]
struct Counters {
    responses: BTreeMap<u16, u64>,
    latency: Histogram,
    batch_windows: Histogram,
    batch_requests: Histogram,
    failed_batches: u64,
    forward_passes: u64,
}

/// Where the model stands, as `qa_serve_model_ready` and `/health` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Loading,
    Ready,
    /// It failed to load, or its thread ended.
    Unavailable,
}

/// Shared by the HTTP handlers and the model thread.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<Counters>,
    /// Requests admitted and not yet answered by the model, and their body bytes.
    queue: Mutex<Queued>,
    /// Requests read whole and not yet answered (the work a shutdown finishes).
    in_flight: AtomicUsize,
}

/// What the queue holds.
#[derive(Debug, Default, Clone, Copy)]
struct Queued {
    requests: usize,
    bytes: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            counters: Mutex::new(Counters {
                responses: BTreeMap::new(),
                latency: Histogram::new(LATENCY_BOUNDS),
                batch_windows: Histogram::new(WINDOW_BOUNDS),
                batch_requests: Histogram::new(REQUEST_BOUNDS),
                failed_batches: 0,
                forward_passes: 0,
            }),
            queue: Mutex::new(Queued::default()),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queued> {
        // Each update is one statement: the counts stay consistent even after a panic.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // Counters stay consistent even if a holder panicked (each update is one statement).
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One response sent, with its status code.
    pub fn response(&self, status: u16) {
        *self.counters().responses.entry(status).or_default() += 1;
    }

    /// How long one `/v1/answer` request took, from its arrival to its response.
    pub fn answer_latency(&self, elapsed: Duration) {
        self.counters().latency.observe(elapsed.as_secs_f64());
    }

    /// One batch of `windows` windows from `requests` distinct requests.
    pub fn batch(&self, windows: usize, requests: usize) {
        let mut c = self.counters();
        c.batch_windows.observe(windows as f64);
        c.batch_requests.observe(requests as f64);
    }

    /// One forward pass (a batch runs in one or more, grouped by window length).
    pub fn forward_pass(&self) {
        self.counters().forward_passes += 1;
    }

    /// A batch whose forward pass panicked (its requests got 500s).
    pub fn failed_batch(&self) {
        self.counters().failed_batches += 1;
    }

    /// Requests admitted and not yet answered by the model.
    pub fn queue_depth(&self) -> usize {
        self.queue().requests
    }

    /// Body bytes of the requests admitted and not yet answered by the model.
    pub fn queued_bytes(&self) -> usize {
        self.queue().bytes
    }

    /// Requests read whole and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The Prometheus text exposition of everything counted so far.
    pub fn render(&self, model: Readiness) -> String {
        let c = self.counters();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP qa_serve_requests_total HTTP responses by status code.\n\
             # TYPE qa_serve_requests_total counter"
        );
        for (code, count) in &c.responses {
            let _ = writeln!(out, "qa_serve_requests_total{{code=\"{code}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP qa_serve_queue_depth Requests admitted and not yet answered by the model.\n\
             # TYPE qa_serve_queue_depth gauge\nqa_serve_queue_depth {}\n\
             # HELP qa_serve_queued_bytes Request-body bytes admitted and not yet answered.\n\
             # TYPE qa_serve_queued_bytes gauge\nqa_serve_queued_bytes {}",
            self.queue_depth(),
            self.queued_bytes()
        );
        let _ = writeln!(
            out,
            "# HELP qa_serve_model_ready Whether the model is loaded (1) or not (0).\n\
             # TYPE qa_serve_model_ready gauge\nqa_serve_model_ready {}",
            u8::from(model == Readiness::Ready)
        );
        let _ = writeln!(
            out,
            "# HELP qa_serve_failed_batches_total Batches whose forward pass failed.\n\
             # TYPE qa_serve_failed_batches_total counter\nqa_serve_failed_batches_total {}",
            c.failed_batches
        );
        let _ = writeln!(
            out,
            "# HELP qa_serve_forward_passes_total Forward passes (a batch's windows are grouped \
             by length into one or more).\n\
             # TYPE qa_serve_forward_passes_total counter\nqa_serve_forward_passes_total {}",
            c.forward_passes
        );
        c.batch_windows.render(
            &mut out,
            "qa_serve_batch_windows",
            "Windows per batch (gathered from concurrent requests).",
        );
        c.batch_requests.render(
            &mut out,
            "qa_serve_batch_requests",
            "Distinct requests whose windows shared a batch.",
        );
        c.latency.render(
            &mut out,
            "qa_serve_request_duration_seconds",
            "Time from a /v1/answer request's arrival to its response.",
        );
        out
    }
}

/// A place in the queue, held from admission until the model has answered (or the request
/// was dropped); giving it back lowers the queue depth and the bytes queued.
#[derive(Debug)]
pub struct QueueSlot {
    metrics: Arc<Metrics>,
    bytes: usize,
}

/// The queue limits a request is admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most requests admitted at once.
    pub requests: usize,
    /// Most request-body bytes admitted at once (a request alone is admitted whatever its
    /// size: the body limit bounds it).
    pub bytes: usize,
}

impl QueueSlot {
    /// A place for a request of `bytes`, if the queue has room for it under `limits`.
    pub fn admit(metrics: &Arc<Metrics>, limits: QueueLimits, bytes: usize) -> Option<Self> {
        let mut queue = metrics.queue();
        let fits = queue.requests < limits.requests
            && (queue.requests == 0 || queue.bytes.saturating_add(bytes) <= limits.bytes);
        if !fits {
            return None;
        }
        queue.requests += 1;
        queue.bytes = queue.bytes.saturating_add(bytes);
        Some(Self {
            metrics: metrics.clone(),
            bytes,
        })
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let mut queue = self.metrics.queue();
        queue.requests -= 1;
        queue.bytes -= self.bytes;
    }
}

/// Counts a request read whole until its response is made.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl InFlight {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_responses_counted_by_code() {
        let metrics = Arc::new(Metrics::new());
        metrics.batch(3, 1);
        metrics.batch(32, 4);
        metrics.response(200);
        metrics.response(200);
        metrics.response(404);
        metrics.answer_latency(Duration::from_millis(20));
        let text = metrics.render(Readiness::Ready);
        for line in [
            "qa_serve_requests_total{code=\"200\"} 2",
            "qa_serve_requests_total{code=\"404\"} 1",
            "qa_serve_batch_windows_bucket{le=\"2\"} 0",
            "qa_serve_batch_windows_bucket{le=\"4\"} 1",
            "qa_serve_batch_windows_bucket{le=\"32\"} 2",
            "qa_serve_batch_windows_bucket{le=\"+Inf\"} 2",
            "qa_serve_batch_windows_sum 35",
            "qa_serve_batch_requests_bucket{le=\"1\"} 1",
            "qa_serve_batch_requests_count 2",
            "qa_serve_request_duration_seconds_bucket{le=\"0.01\"} 0",
            "qa_serve_request_duration_seconds_bucket{le=\"0.025\"} 1",
            "qa_serve_model_ready 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn the_queue_admits_up_to_its_limit_and_slots_free_places() {
        let metrics = Arc::new(Metrics::new());
        let limits = QueueLimits {
            requests: 2,
            bytes: 100,
        };
        let a = QueueSlot::admit(&metrics, limits, 10).unwrap();
        let _b = QueueSlot::admit(&metrics, limits, 10).unwrap();
        assert!(QueueSlot::admit(&metrics, limits, 10).is_none());
        assert_eq!(metrics.queue_depth(), 2);
        drop(a);
        assert_eq!(metrics.queue_depth(), 1);
        assert!(QueueSlot::admit(&metrics, limits, 10).is_some());
    }

    #[test]
    fn the_queue_admits_up_to_its_bytes_and_a_large_request_when_alone() {
        let metrics = Arc::new(Metrics::new());
        let limits = QueueLimits {
            requests: 10,
            bytes: 100,
        };
        let a = QueueSlot::admit(&metrics, limits, 60).unwrap();
        assert!(QueueSlot::admit(&metrics, limits, 41).is_none());
        let b = QueueSlot::admit(&metrics, limits, 40).unwrap();
        assert_eq!(metrics.queued_bytes(), 100);
        drop((a, b));
        assert_eq!(metrics.queued_bytes(), 0);
        // Alone, a request over the budget is admitted (the body limit bounds it).
        let big = QueueSlot::admit(&metrics, limits, 500).unwrap();
        assert!(QueueSlot::admit(&metrics, limits, 1).is_none());
        drop(big);
        assert!(QueueSlot::admit(&metrics, limits, 1).is_some());
    }
}
