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
    self, DataArgs, DatasetArgs, DecodeArgs, PrecisionArg, RevisionArg, WindowArgs,
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
    decode: DecodeArgs,
    #[command(flatten)]
    precision: PrecisionArg,
    /// Instead of the usual outputs, answer the data in f32 and in this precision too (repeat
    /// for several) and write what each costs — EM/F1, the share of answers identical to f32's,
    /// the largest logit error — to precision_comparison.json and .md.
    #[arg(long, conflicts_with = "precision")]
    compare_precision: Vec<qa_model::InferencePrecision>,
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
    let predictor =
        Predictor::<Compute>::load(&model_dir, args.windows.config(), args.batch_size, &device)?
            .with_precision(args.precision.precision)?;
    let data = common::prepare(
        &source,
        &args.data_format,
        &predictor.windows,
        args.max_eval_samples,
        &predictor.tokenizer,
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
    println!("{}", serde_json::to_string_pretty(&results)?);
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
