//! `qa serve`: an HTTP server answering as `qa predict --json` does (`POST /v1/answer`, also in
//! the Hugging Face Inference API shape), with dynamic batching, `/health` and `/metrics`.
//! Flags only; the server is `qa_serve`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use qa_data::progress::Progress;
use qa_data::FeatureConfig;
use qa_eval::{PipelineConfig, Predictor};
use qa_model::backend::Compute;
use qa_serve::{BatchConfig, ConnectionLimits, ServeConfig};

use crate::common::{self, NullThresholdArg, PrecisionArg, WindowArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuned Hugging Face QA model: a local folder or a Hub id (org/name).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    revision: common::RevisionArg,
    /// Address to listen on (0.0.0.0 to accept connections from other machines).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most windows in one batch (windows of concurrent requests share batches).
    #[arg(long, default_value_t = 32)]
    max_batch_windows: usize,
    /// Longest a request waits for others to share its batch, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Largest share of a forward pass's tokens that may be padding: a batch's windows, sorted
    /// by length, run in as few passes as keep it under this (1: one pass per batch).
    #[arg(long, default_value_t = 0.1)]
    max_padding: f64,
    /// Requests waiting for the model before new ones get 503 (with Retry-After).
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Request-body bytes waiting for the model before new requests get 503 (with
    /// Retry-After); bounds the memory a burst of long contexts takes.
    #[arg(long, default_value_t = 2 << 20)]
    max_queued_bytes: usize,
    /// Seconds a client may take to send a request's headers, or pause while sending its body;
    /// also how long an idle keep-alive connection stays open.
    #[arg(long, default_value_t = 30)]
    read_timeout_s: u64,
    /// On SIGTERM/Ctrl-C, seconds the requests already received get to be answered before
    /// every connection is closed.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_s: u64,
    /// Answers per question, unless a request sets top_k.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Allow "no answer" (SQuAD v2 models), unless a request sets handle_impossible_answer.
    #[arg(long)]
    handle_impossible_answer: bool,
    /// Longest answer in tokens, unless a request sets max_answer_len.
    #[arg(long, default_value_t = 15)]
    max_answer_length: usize,
    /// Keep answers at token boundaries instead of widening them to whole words.
    #[arg(long)]
    no_align_to_words: bool,
    #[command(flatten)]
    null_threshold: NullThresholdArg,
    #[command(flatten)]
    windows: WindowArgs,
    #[command(flatten)]
    precision: PrecisionArg,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = common::device(&args.device)?;
    let model_dir = common::model_dir(&args.model, &args.revision)?;
    let windows = FeatureConfig {
        word_ids: true,
        progress: Progress::Hidden,
        ..args.windows.config()
    };
    // Refused before listening: a server that reports ready and then fails every request
    // helps no one.
    // (The stride is left out: loading fits one that does not fit the window, as the
    // pipeline does.)
    FeatureConfig {
        stride: 0,
        ..windows.clone()
    }
    .validate()?;
    let batch_size = args.max_batch_windows;
    let null_threshold = args.null_threshold.resolve(&model_dir)?;
    let config = ServeConfig {
        batching: BatchConfig {
            max_windows: args.max_batch_windows,
            max_wait: Duration::from_millis(args.max_wait_ms),
            max_padding: args.max_padding,
        },
        max_queue: args.max_queue,
        max_queued_bytes: args.max_queued_bytes,
        max_body_bytes: args.max_body_bytes,
        connections: ConnectionLimits {
            header_read_timeout: Duration::from_secs(args.read_timeout_s),
            body_read_timeout: Duration::from_secs(args.read_timeout_s),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_s),
        },
        answers: PipelineConfig {
            top_k: args.top_k,
            max_answer_len: args.max_answer_length,
            // A no-answer threshold is only for models that may answer "" (a request can
            // still say handle_impossible_answer: false).
            handle_impossible_answer: args.handle_impossible_answer || null_threshold.is_some(),
            align_to_words: !args.no_align_to_words,
            null_threshold,
        },
    };
    let precision = args.precision.precision;
    let load = move || {
        Predictor::<Compute>::load(&model_dir, windows, batch_size, &device)?
            .with_precision(precision)
    };
    qa_serve::run(SocketAddr::new(args.host, args.port), load, config)?;
    Ok(())
}
