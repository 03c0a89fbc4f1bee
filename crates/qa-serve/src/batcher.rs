//! The model thread and its dynamic batcher.
//!
//! The thread loads the model (so a large one loads while `/health` already answers 503), then
//! loops: wait for a job (one request's windows), gather more until `max_windows` windows are
//! waiting or the oldest job has waited `max_wait`, take the next `max_windows` windows in
//! arrival order as one batch, run it (sorted by length, in as few forward passes as keep the
//! padding under `max_padding`), and hand each job its logits once all its windows have run.
//! A long context's windows may run over several batches; a batch may hold windows of many
//! requests. Logits go back per job, so each request decodes only its own windows. The
//! async runtime never waits on the model: jobs arrive over a channel and answers leave over
//! oneshot channels.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use qa_data::progress::Progress;
use qa_data::{Feature, FeatureConfig};
use qa_eval::{EvalError, Predictor};
use qa_model::infer::WindowLogits;
use tokenizers::Tokenizer;
use tokio::sync::{oneshot, watch};

use crate::error::ServeError;
use crate::metrics::{Metrics, QueueSlot, Readiness};

/// How windows are grouped into batches and forward passes.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Most windows in one forward pass (`--max-batch-windows`).
    pub max_windows: usize,
    /// Longest a job waits for others to share its batch (`--max-wait-ms`).
    pub max_wait: Duration,
    /// Largest share of a forward pass's tokens that may be padding (`--max-padding`): a
    /// batch's windows, sorted by length, run in as few passes as keep padding under it
    /// (1 runs every batch in one pass).
    pub max_padding: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_windows: 32,
            max_wait: Duration::from_millis(5),
            // Measured on the 2-core CPU with 200–350-token windows: one pass per batch cost
            // 10–25% more CPU per request than length groups under 10% padding, which cost
            // about what no batching does (bench/results/serve-cpu-2core.md).
            max_padding: 0.1,
        }
    }
}

/// What requests need to cut windows as the model expects them.
#[derive(Debug)]
pub struct Windowing {
    pub tokenizer: Tokenizer,
    /// The server's window settings (a request may set its own).
    pub config: FeatureConfig,
    /// The longest window the model's position table allows.
    pub longest: usize,
}

/// The model thread's state, watched by the HTTP side.
#[derive(Debug, Clone)]
pub enum ModelState {
    Loading,
    Ready(Arc<Windowing>),
    /// It failed to load, or its thread ended.
    Failed,
}

impl ModelState {
    pub fn readiness(&self) -> Readiness {
        match self {
            ModelState::Loading => Readiness::Loading,
            ModelState::Ready(_) => Readiness::Ready,
            ModelState::Failed => Readiness::Unavailable,
        }
    }
}

/// The forward pass holding a job's windows panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFailed;

/// One request's windows, waiting for the model.
#[derive(Debug)]
pub struct Job {
    pub features: Arc<Vec<Feature>>,
    /// Logits of `features`, in their order.
    pub reply: oneshot::Sender<Result<Vec<WindowLogits>, BatchFailed>>,
    pub enqueued: Instant,
    /// The request's queue place, given back when the job is done or dropped.
    pub slot: QueueSlot,
}

impl Job {
    /// Gives the queue place back, then the answer: a client that reads the queue's metrics
    /// once answered never sees its own request still queued. The client may have gone
    /// meanwhile; the place is given back either way.
    fn answer(self, answer: Result<Vec<WindowLogits>, BatchFailed>) {
        let Job { reply, slot, .. } = self;
        drop(slot);
        let _ = reply.send(answer);
    }
}

/// A job partly run: windows before `next` have been put into passes.
struct Pending {
    job: Job,
    logits: Vec<Option<WindowLogits>>,
    next: usize,
}

impl Pending {
    fn new(job: Job) -> Self {
        Self {
            logits: vec![None; job.features.len()],
            job,
            next: 0,
        }
    }

    fn unscheduled(&self) -> usize {
        self.job.features.len() - self.next
    }
}

/// Publishes `Failed` if the model thread ends for any reason (panic included).
struct FailOnExit(watch::Sender<ModelState>);

impl Drop for FailOnExit {
    fn drop(&mut self) {
        self.0.send_replace(ModelState::Failed);
    }
}

/// The model thread; it ends with the model's load error, if that is why it ended.
pub type ModelThread = std::thread::JoinHandle<Result<(), ServeError>>;

/// Starts the model thread: it runs `load`, publishes the tokenizer and window settings, then
/// serves jobs until every sender is gone and no job is left.
pub fn spawn_model_thread<B, L>(
    load: L,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    state: watch::Sender<ModelState>,
) -> Result<(Sender<Job>, ModelThread), ServeError>
where
    B: Backend,
    L: FnOnce() -> Result<Predictor<B>, EvalError> + Send + 'static,
{
    let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
    let thread = std::thread::Builder::new()
        .name("qa-model".into())
        .spawn(move || {
            let state = FailOnExit(state);
            let mut predictor = load().map_err(ServeError::Load)?;
            // A group is at most `max_windows` windows: one forward pass per call.
            predictor.batch_size = config.max_windows;
            let windowing = Windowing {
                tokenizer: predictor.tokenizer.clone(),
                config: FeatureConfig {
                    // The pipeline widens answers to whole words.
                    word_ids: true,
                    progress: Progress::Hidden,
                    ..predictor.windows.clone()
                },
                longest: predictor.config.max_window_length(),
            };
            tracing::info!(
                "model loaded from {}: batches of up to {} windows, waiting up to {:?}, \
                 forward passes with at most {:.0}% padding",
                predictor.model_dir.display(),
                config.max_windows,
                config.max_wait,
                config.max_padding * 100.0
            );
            state.0.send_replace(ModelState::Ready(Arc::new(windowing)));
            run_batches(&predictor, &receiver, &config, &metrics);
            Ok(())
        })
        .map_err(ServeError::Thread)?;
    Ok((jobs, thread))
}

/// The batching loop; returns once the channel is closed and every job is answered.
fn run_batches<B: Backend>(
    predictor: &Predictor<B>,
    jobs: &Receiver<Job>,
    config: &BatchConfig,
    metrics: &Metrics,
) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            match jobs.recv() {
                Ok(job) => pending.push_back(Pending::new(job)),
                Err(_) => return,
            }
        }
        if open {
            open = gather(&mut pending, jobs, config);
        }
        // Clients that went away need no answer.
        pending.retain(|p| !p.job.reply.is_closed());
        if pending.is_empty() {
            continue;
        }
        run_batch(predictor, &mut pending, config, metrics);
        // Jobs whose windows have all run get their logits.
        let mut kept = VecDeque::with_capacity(pending.len());
        for p in pending.drain(..) {
            if p.logits.iter().all(Option::is_some) {
                let logits = p.logits.into_iter().flatten().collect();
                p.job.answer(Ok(logits));
            } else {
                kept.push_back(p);
            }
        }
        pending = kept;
    }
}

/// Takes jobs until `max_windows` windows wait or the oldest job has waited `max_wait`.
/// Returns whether the channel is still open.
fn gather(pending: &mut VecDeque<Pending>, jobs: &Receiver<Job>, config: &BatchConfig) -> bool {
    let Some(oldest) = pending.iter().map(|p| p.job.enqueued).min() else {
        return true;
    };
    let deadline = oldest + config.max_wait;
    let mut waiting: usize = pending.iter().map(Pending::unscheduled).sum();
    while waiting < config.max_windows {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => return false,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match jobs.recv_timeout(deadline - now) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        };
        waiting += job.features.len();
        pending.push_back(Pending::new(job));
    }
    true
}

/// The next `max_windows` windows, in arrival order, as one batch.
fn run_batch<B: Backend>(
    predictor: &Predictor<B>,
    pending: &mut VecDeque<Pending>,
    config: &BatchConfig,
    metrics: &Metrics,
) {
    // (job index in `pending`, window index in the job) of each batch row.
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(config.max_windows);
    for (index, p) in pending.iter_mut().enumerate() {
        let take = p.unscheduled().min(config.max_windows - rows.len());
        rows.extend((p.next..p.next + take).map(|window| (index, window)));
        p.next += take;
        if rows.len() == config.max_windows {
            break;
        }
    }
    if rows.is_empty() {
        return;
    }
    let mut jobs: Vec<usize> = rows.iter().map(|&(job, _)| job).collect();
    jobs.dedup();
    metrics.batch(rows.len(), jobs.len());
    let length = |&(job, window): &(usize, usize)| pending[job].job.features[window].len();
    rows.sort_by_key(|row| std::cmp::Reverse(length(row)));
    let lengths: Vec<usize> = rows.iter().map(length).collect();
    // A panic in the model fails this batch's requests, not the server.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        padding_groups(&lengths, config.max_padding)
            .into_iter()
            .flat_map(|group| {
                metrics.forward_pass();
                let features: Vec<Feature> = rows[group]
                    .iter()
                    .map(|&(job, window)| pending[job].job.features[window].clone())
                    .collect();
                predictor.window_logits(&features, Progress::Hidden)
            })
            .collect::<Vec<_>>()
    }));
    match result {
        Ok(logits) => {
            for ((job, window), logits) in rows.into_iter().zip(logits) {
                pending[job].logits[window] = Some(logits);
            }
        }
        Err(_) => {
            metrics.failed_batch();
            tracing::error!(
                "the model panicked on a batch of {} windows; failing its {} requests",
                rows.len(),
                jobs.len()
            );
            for &job in jobs.iter().rev() {
                if let Some(p) = pending.remove(job) {
                    p.job.answer(Err(BatchFailed));
                }
            }
        }
    }
}

/// Cuts window lengths sorted longest first into consecutive groups, each as long as it can be
/// while padding (to the group's first, longest window) stays within `max_padding` of its
/// tokens.
fn padding_groups(lengths: &[usize], max_padding: f64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &length) in lengths.iter().enumerate() {
        let padded = (i + 1 - start) * lengths[start];
        let padding = padded - (tokens + length);
        if i > start && padding as f64 > max_padding * padded as f64 {
            groups.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += length;
    }
    if start < lengths.len() {
        groups.push(start..lengths.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::padding_groups;

    #[test]
    fn groups_keep_padding_under_the_limit() {
        let lengths = [349, 335, 320, 305, 290, 275, 240, 200, 199];
        // 349·5 = 1745 tokens, 1599 real: 8.4% padding; adding 275 would make 10.5%.
        assert_eq!(padding_groups(&lengths, 0.1), [0..5, 5..7, 7..9]);
        assert_eq!(padding_groups(&lengths, 1.0), vec![0..9]);
        assert_eq!(
            padding_groups(&lengths, 0.0),
            (0..9).map(|i| i..i + 1).collect::<Vec<_>>()
        );
        assert_eq!(padding_groups(&[384; 5], 0.0), vec![0..5]);
        assert!(padding_groups(&[], 0.1).is_empty());
    }
}
