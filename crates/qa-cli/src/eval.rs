//! `qa eval`: predict a data file with a fine-tuned model and score it, as
//! `run_qa.py --do_eval` (or `--do_predict` for a file without answers).

use std::path::PathBuf;

use anyhow::Context;

use qa_eval::evaluate::{evaluate_prepared, EvalKind};
use qa_eval::Predictor;
use qa_model::backend::Compute;

use qa_data::hub::Split;
use qa_data::DataSource;

use crate::common::{
    self, CacheArgs, DataArgs, DatasetArgs, DecodeArgs, PrecisionArg, RevisionArg, WindowArgs,
};

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuned Hugging Face QA model: a local folder or a Hub id (org/name).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    revision: RevisionArg,
    /// Labelled data (SQuAD JSON, HF JSON/JSONL, Parquet, CSV, DEFNLP).
    #[arg(
        long,
        required_unless_present = "dataset_name",
        conflicts_with = "dataset_name"
    )]
    data: Option<PathBuf>,
    /// Or a Hub dataset: its validation split is evaluated.
    #[command(flatten)]
    dataset: DatasetArgs,
    #[arg(long)]
    output_dir: PathBuf,
    #[command(flatten)]
    windows: WindowArgs,
    #[command(flatten)]
    data_format: DataArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    precision: PrecisionArg,
    /// Instead of the usual outputs, answer the data in f32 and in this precision too (repeat
    /// for several) and write what each costs — EM/F1, the share of answers identical to f32's,
    /// the largest and mean logit error, the share of windows whose best start and end stay —
    /// to precision_comparison.json and .md.
    #[arg(long, conflicts_with = "precision")]
    compare_precision: Vec<qa_model::InferencePrecision>,
    /// SQuAD v2.0: write the best_f1_thresh found into the model folder (null_threshold.json),
    /// where `qa predict` and `qa serve` then answer "" by it.
    #[arg(
        long,
        requires = "version_2_with_negative",
        conflicts_with = "compare_precision"
    )]
    write_null_threshold: bool,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long)]
    max_eval_samples: Option<usize>,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = common::device(&args.device)?;
    let model_dir = common::model_dir(&args.model, &args.revision)?;
    let source = match (&args.data, args.dataset.resolve(&[Split::Validation])?) {
        (Some(path), _) => DataSource::Path(path.clone()),
        (None, Some(files)) => common::split_source(&files, Split::Validation)?,
        (None, None) => anyhow::bail!("give --data FILE or --dataset-name NAME"),
    };
    // Before any tokenizing or predicting.
    if args.output_dir.exists() && !args.output_dir.is_dir() {
        anyhow::bail!("{}: the output folder is a file", args.output_dir.display());
    }
    if let Some(data) = &args.data {
        // The files `evaluate_prepared` writes.
        for kind in ["eval", "predict"] {
            for file in ["predictions", "nbest_predictions", "null_odds", "results"] {
                let output = args.output_dir.join(format!("{kind}_{file}.json"));
                common::refuse_overwriting_inputs(&output, &[data])?;
            }
        }
    }
    let predictor =
        Predictor::<Compute>::load(&model_dir, args.windows.config(), args.batch_size, &device)?
            .with_precision(args.precision.precision)?;
    let data = common::prepare(
        &source,
        &args.data_format,
        &predictor.windows,
        args.max_eval_samples,
        &predictor.tokenizer,
        &args.cache,
    )?;
    if !args.compare_precision.is_empty() {
        return compare(predictor, &data, &args);
    }
    let (kind, results) =
        evaluate_prepared(&predictor, &data, &args.decode.config(), &args.output_dir)?;
    if kind == EvalKind::Predict {
        eprintln!(
            "{}: no gold answers, so no scores: wrote predict_predictions.json (as run_qa --do_predict)",
            source.name().display()
        );
    }
    if args.write_null_threshold {
        write_null_threshold(&model_dir, &results, &source)?;
    }
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}

/// `--write-null-threshold`: the official best_f1_thresh, into the model folder.
fn write_null_threshold(
    model_dir: &std::path::Path,
    results: &serde_json::Map<String, serde_json::Value>,
    source: &DataSource,
) -> anyhow::Result<()> {
    let found = |key: &str| results.get(key).and_then(serde_json::Value::as_f64);
    let threshold = found("eval_best_f1_thresh").with_context(|| {
        format!(
            "{}: no best_f1_thresh to write (the data has no gold answers)",
            source.name().display()
        )
    })?;
    let written = qa_eval::threshold::write(
        model_dir,
        &qa_eval::threshold::NullThreshold {
            null_score_diff_threshold: threshold as f32,
            best_f1: found("eval_best_f1"),
            chosen_on: Some(source.name().display().to_string()),
        },
    )?;
    eprintln!(
        "wrote the no-answer threshold {threshold} to {} (qa predict and qa serve use it)",
        written.display()
    );
    Ok(())
}

/// `--compare-precision`: the same windows in f32 and in each precision asked for.
fn compare(
    predictor: Predictor<Compute>,
    data: &qa_data::PreparedData,
    args: &Args,
) -> anyhow::Result<()> {
    if !data.labelled {
        anyhow::bail!(
            "{}: --compare-precision needs gold answers to score",
            data.report.path.display()
        );
    }
    let rows = qa_eval::precision::compare_precisions(
        &predictor,
        data,
        &args.decode.config(),
        &args.compare_precision,
    )?;
    let table = qa_eval::precision::markdown_table(&rows);
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("{}: cannot create", args.output_dir.display()))?;
    qa_eval::decode::write_json(&args.output_dir.join("precision_comparison.json"), &rows)?;
    qa_data::atomic::write_atomically(&args.output_dir.join("precision_comparison.md"), |out| {
        std::io::Write::write_all(out, table.as_bytes())
    })?;
    print!("{table}");
    Ok(())
}
