//! `qa features`: cut a dataset into run_qa sliding windows and write them as JSON lines.

use std::path::PathBuf;

use anyhow::Context;
use qa_data::features::{write_features_jsonl, Padding};
use qa_data::{
    build_features, load, load_tokenizer, select_subset, DataFormat, FeatureConfig, LoadOptions,
};

#[derive(clap::Args)]
pub struct Args {
    /// Dataset: SQuAD JSON, HF JSON/JSONL, or a DEFNLP train.csv / folder.
    #[arg(long)]
    data: PathBuf,
    /// Data format (default: detected from the file).
    #[arg(long)]
    format: Option<DataFormat>,
    /// Model folder with tokenizer.json (or vocab.txt), or the file itself.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Tokens per window (question + context + specials).
    #[arg(long, alias = "max-length", default_value_t = 384)]
    max_seq_length: usize,
    /// Context tokens shared by consecutive windows.
    #[arg(long, alias = "stride", default_value_t = 128)]
    doc_stride: usize,
    /// Pad every window to --max-seq-length.
    #[arg(long)]
    pad_to_max_length: bool,
    /// Keep only the first N examples (after shuffling, with --seed).
    #[arg(long)]
    max_samples: Option<usize>,
    /// Shuffle examples with this seed before --max-samples.
    #[arg(long)]
    seed: Option<u64>,
    /// Output JSON Lines file (one window per line).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let data = load(
        &args.data,
        &LoadOptions {
            format: args.format,
            ..Default::default()
        },
    )?;
    eprintln!("{}", data.report.summary());
    let examples = select_subset(data.examples, args.max_samples, args.seed);
    let tokenizer = load_tokenizer(&args.tokenizer)?;
    let config = FeatureConfig {
        max_length: args.max_seq_length,
        stride: args.doc_stride,
        padding: if args.pad_to_max_length {
            Padding::MaxLength
        } else {
            Padding::None
        },
        label_any_answer: data.report.format == Some(DataFormat::Defnlp),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let set = build_features(&tokenizer, &examples, &config)?;
    let secs = started.elapsed().as_secs_f64();
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_features_jsonl(std::io::BufWriter::new(file), &set.features, &examples)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "{} windows from {} examples ({} with an answer span, {} examples skipped) in {:.2}s ({:.0} windows/s) → {}",
        set.report.windows,
        set.report.examples,
        set.report.windows_with_answer,
        set.report.skipped.len(),
        secs,
        set.report.windows as f64 / secs.max(1e-9),
        args.out.display()
    );
    Ok(())
}
