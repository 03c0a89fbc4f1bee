//! `qa`: the thin command-line face of the toolkit. Each subcommand parses flags (spelled like
//! HF `run_qa.py` where they overlap) and calls into the library crates; no logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod features;
mod score;

#[derive(Parser)]
#[command(
    name = "qa",
    version,
    about = "Extractive question answering with BERT-family models: features, scoring, and more",
    after_help = "Examples:\n  \
        qa features --data dev.json --tokenizer models/all-MiniLM-L6-v2 --out dev.features.jsonl\n  \
        qa score dev.json predictions.json\n  \
        qa score dev-v2.0.json predictions.json --na-prob-file null_odds.json\n  \
        qa score --defnlp train.csv submission.csv"
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Features(args) => features::run(args),
        Command::Score(args) => score::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
