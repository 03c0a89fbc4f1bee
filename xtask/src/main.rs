//! `cargo xtask`: the project's automation, in Rust (the rust-analyzer xtask pattern).
//!
//! * `fetch`: SQuAD from its official URLs (sha256-checked), models from the Hugging Face Hub,
//!   a model imported from a local folder / wheel / zip, or the generated DEFNLP fixture.
//! * `reproduce`: fetch → train → eval → report for a named preset.
//! * `bench`: the side-by-side performance table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

mod bench;
mod defnlp_fixture;
mod fetch;
mod report;
mod reproduce;
mod scale;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project automation for the qa toolkit")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download or import datasets and models.
    Fetch(fetch::Args),
    /// Train and evaluate a preset end to end and write a report.
    Reproduce(reproduce::Args),
    /// Performance table: features, training, inference (and PyTorch peers where available).
    Bench(bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Fetch(a) => fetch::run(a),
        Cmd::Reproduce(a) => reproduce::run(a),
        Cmd::Bench(a) => bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The repository root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repo")
        .to_path_buf()
}

/// `../shared` beside the repository, or `$QA_SHARED_DIR`.
pub use qa_testkit::shared_dir;

/// Builds the release `qa` binary (CUDA when xtask itself was built with `--features cuda`)
/// and returns its path.
pub fn build_qa() -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root())
        .args(["build", "--release", "-p", "qa-cli"]);
    if cfg!(feature = "cuda") {
        cmd.args(["--features", "cuda"]);
    }
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building qa failed");
    }
    Ok(repo_root().join("target/release/qa"))
}

/// Runs a command, failing with its command line when it fails.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
