//! `qa eval`: predict a data file with a fine-tuned model and score it, as
//! `run_qa.py --do_eval` (or `--do_predict` for a file without answers).

use std::path::PathBuf;
use std::time::Instant;

use qa_data::progress::Progress;
use qa_eval::{squad_metrics, Predictor, SquadVersion};
use qa_model::backend::{Compute, BACKEND_NAME};

use crate::common::{self, DataArgs, DecodeArgs, WindowArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuned Hugging Face QA model folder.
    #[arg(long)]
    model: PathBuf,
    /// Labelled data (SQuAD JSON, HF JSON/JSONL, DEFNLP).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    output_dir: PathBuf,
    #[command(flatten)]
    windows: WindowArgs,
    #[command(flatten)]
    data_format: DataArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long)]
    max_eval_samples: Option<usize>,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = common::device(&args.device)?;
    let model_dir = common::model_dir(&args.model)?;
    let predictor =
        Predictor::<Compute>::load(&model_dir, args.windows.config(), args.batch_size, &device)?;
    let data = common::examples_and_windows(
        &args.data,
        &args.data_format,
        &args.windows,
        args.max_eval_samples,
        &predictor.tokenizer,
    )?;
    let started = Instant::now();
    let features = &data.set.features;
    let logits = predictor.window_logits(features, Progress::Show);
    let infer_secs = started.elapsed().as_secs_f64();
    let decode_started = Instant::now();
    let decoded = qa_eval::decode(&data.examples, features, &logits, &args.decode.config())?;
    let decode_secs = decode_started.elapsed().as_secs_f64();
    // A file without any gold label is a test set: predictions only, named as run_qa's
    // --do_predict names them, and no (meaningless) scores.
    let prefix = if data.labelled { "eval" } else { "predict" };
    decoded.write(&args.output_dir, &format!("{prefix}_"))?;

    let mut results = serde_json::Map::new();
    if data.labelled {
        let version = if args.decode.version_2_with_negative {
            SquadVersion::V2
        } else {
            SquadVersion::V1
        };
        results = squad_metrics(&data.examples, &decoded, version).to_json("eval_");
    } else {
        eprintln!(
            "{}: no gold answers, so no scores: wrote {prefix}_predictions.json (as run_qa --do_predict)",
            args.data.display()
        );
    }
    let key = |k: &str| format!("{prefix}_{k}");
    results.insert(key("samples"), features.len().into());
    results.insert(key("examples"), data.examples.len().into());
    results.insert(key("runtime"), (infer_secs + decode_secs).into());
    results.insert(
        key("windows_per_second"),
        (features.len() as f64 / infer_secs.max(1e-9)).into(),
    );
    results.insert(key("decode_seconds"), decode_secs.into());
    results.insert("backend".into(), BACKEND_NAME.into());
    qa_eval::decode::write_json(
        &args.output_dir.join(format!("{prefix}_results.json")),
        &results,
    )?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
