//! `qa`: the thin command-line face of the toolkit. Each subcommand parses flags (spelled like
//! HF `run_qa.py` where they overlap) and calls into the library crates; no logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod common;
mod eval;
mod features;
mod predict;
mod score;
mod serve;
mod train;

// The CPU backend allocates and frees large tensors on every op; glibc's malloc hands those
// to mmap and the kernel zeroes fresh pages each time (40% of CPU inference time went to page
// faults). mimalloc, told never to give freed memory back (see `tune_allocator`), reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, set before the first large allocation:
/// - `purge_delay = -1`: keep freed pages instead of returning them to the OS after 10 ms.
/// - `arena_eager_commit = 1` and `arena_reserve = 4 GiB`: the arenas a model's tensors come
///   from are committed when reserved (address space only: pages become resident when touched)
///   and large enough that training stays in one or two of them. A model's first steps touch a
///   gigabyte or more of fresh memory, and faulting it in arena by lazily committed arena made
///   MiniLM's first training step 2.1 s instead of 0.9 s (BERT-base's ~6 s instead of 3–4 s).
///
/// The options' numbers are fixed by mimalloc's stable C API (`mi_option_e`); `libmimalloc-sys`
/// names no constants for these three.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocator() {
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const MI_OPTION_ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;
    const ARENA_RESERVE_KIB: std::ffi::c_long = 4 << 20;
    // SAFETY: each call sets a process-wide integer option; any value is valid for mimalloc.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 1);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_RESERVE, ARENA_RESERVE_KIB);
    }
}

/// `qa serve` gives memory back ten seconds after it was last used: a burst of long contexts
/// must not keep the server at its peak for good, while the steady state, whose batches of
/// varying shapes reuse their pages within seconds, keeps them (a 1 s delay cost ~5% of
/// requests/s at concurrency 32 on the 2-core machine; never purging costs nothing but keeps
/// a burst's peak).
fn return_memory_after_bursts() {
    const PURGE_DELAY_MS: std::ffi::c_long = 10_000;
    // SAFETY: as in `tune_allocator`; mimalloc reads the option each time it purges.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

/// No transparent huge pages for `qa features`: its windows are millions of small vectors, and
/// with huge pages every first touch zeroes (and may first compact memory for) a 2 MiB page; on
/// the 2-core bench machine windowing ran at ~18k windows/s without them and ~12.5k with them.
/// The model commands keep huge pages: their tensors are large and reused. This is what
/// mimalloc's `MIMALLOC_ALLOW_THP=0` does at start-up.
fn avoid_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory of ours; a kernel
    // without it returns an error, which leaves huge pages on (only slower).
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(
    name = "qa",
    version,
    about = "Extractive question answering with transformer encoders: train, evaluate, answer, score",
    after_help = "Examples:\n  \
        qa features --data dev.json --tokenizer models/all-MiniLM-L6-v2 --out dev.features.jsonl\n  \
        qa score dev.json predictions.json\n  \
        qa score dev-v2.0.json predictions.json --na-prob-file null_odds.json\n  \
        qa score --defnlp train.csv submission.csv\n  \
        qa train --model-name-or-path all-MiniLM-L6-v2 --train-file train.json --validation-file dev.json --output-dir out\n  \
        qa eval --model out --data dev.json --output-dir out\n  \
        qa predict --model out --question \"What causes COVID-19?\" --context \"COVID-19 is caused by SARS-CoV-2.\"\n  \
        qa serve --model out --port 8080"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cut a dataset into run_qa sliding windows and write them as JSON lines.
    Features(features::Args),
    /// Score predictions with the official SQuAD v1.1/v2.0 rules (or the Coleridge metric).
    Score(score::Args),
    /// Fine-tune a model (BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA, ALBERT) for extractive QA
    /// (run_qa.py --do_train).
    Train(Box<train::Args>),
    /// Predict and score a labelled set with a fine-tuned model (run_qa.py --do_eval).
    Eval(eval::Args),
    /// Answer questions: one, a JSONL batch, or DEFNLP publications.
    Predict(predict::Args),
    /// Serve answers over HTTP (POST /v1/answer) with dynamic batching.
    Serve(Box<serve::Args>),
    /// Time one synthetic workload (used by `cargo xtask bench`).
    #[command(hide = true)]
    Bench(bench::Args),
}

fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    // Burn's collective logs every connection and download at info.
                    "info,burn_collective=warn,burn_communication=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Features(args) => {
            avoid_huge_pages();
            features::run(args)
        }
        Command::Score(args) => score::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Serve(args) => {
            return_memory_after_bursts();
            serve::run(*args)
        }
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out causes whose text the message already
/// holds (our error types name their source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
