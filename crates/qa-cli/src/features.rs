//! `qa features`: cut a dataset into run_qa sliding windows and write them as JSON lines.

use std::path::PathBuf;
use std::time::Instant;

use qa_data::atomic::write_atomically;
use qa_data::defnlp_seed::{seed_examples, seed_features, DefnlpWindows};
use qa_data::features::{write_features_jsonl, Padding};
use qa_data::{build_features, load, load_tokenizer, select_subset, DataFormat, FeatureConfig};

use crate::common::{DataArgs, WindowArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Dataset: SQuAD JSON, HF JSON/JSONL, or a DEFNLP train.csv / folder.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    data_format: DataArgs,
    /// Model folder with tokenizer.json (or vocab.txt), or the file itself.
    #[arg(long)]
    tokenizer: PathBuf,
    #[command(flatten)]
    windows: WindowArgs,
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
    crate::common::refuse_overwriting_inputs(&args.out, &[&args.data, &args.tokenizer])?;
    let options = args.data_format.load_options();
    let windowing = args.data_format.defnlp_windows;
    let data = match windowing {
        DefnlpWindows::Sliding => load(&args.data, &options)?,
        DefnlpWindows::Seed => seed_examples(&args.data, &options.defnlp)?,
    };
    eprintln!("{}", data.report.summary());
    let examples = select_subset(data.examples, args.max_samples, args.seed);
    let tokenizer = load_tokenizer(&args.tokenizer)?;
    let config = FeatureConfig {
        padding: if args.pad_to_max_length {
            Padding::MaxLength
        } else {
            Padding::None
        },
        label_any_answer: data.report.format == Some(DataFormat::Defnlp),
        source: Some(args.data.clone()),
        ..args.windows.config()
    };
    // Only the windowing is timed: `cargo xtask bench` compares it with Python tokenizers.
    let started = Instant::now();
    let set = match windowing {
        DefnlpWindows::Sliding => build_features(&tokenizer, &examples, &config)?,
        DefnlpWindows::Seed => seed_features(&tokenizer, &examples, &config)?,
    };
    let secs = started.elapsed().as_secs_f64();
    write_atomically(&args.out, |out| {
        write_features_jsonl(out, &set.features, &examples)
    })?;
    let r = &set.report;
    eprintln!(
        "{} windows from {} examples ({} with an answer span, {} examples skipped) in {secs:.2}s \
         ({:.0} windows/s) → {}",
        r.windows,
        r.examples,
        r.windows_with_answer,
        r.skipped.len(),
        r.windows as f64 / secs.max(1e-9),
        args.out.display()
    );
    Ok(())
}
