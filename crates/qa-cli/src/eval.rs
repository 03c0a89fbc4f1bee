//! `qa eval`: predict a data file with a fine-tuned model and score it, as
//! `run_qa.py --do_eval` (or `--do_predict` for a file without answers).

use std::path::PathBuf;

use qa_eval::evaluate::{evaluate_prepared, EvalKind};
use qa_eval::Predictor;
use qa_model::backend::Compute;

use qa_data::hub::Split;
use qa_data::DataSource;

use crate::common::{self, DataArgs, DatasetArgs, DecodeArgs, RevisionArg, WindowArgs};

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
        Predictor::<Compute>::load(&model_dir, args.windows.config(), args.batch_size, &device)?;
    let data = common::prepare(
        &source,
        &args.data_format,
        &predictor.windows,
        args.max_eval_samples,
        &predictor.tokenizer,
    )?;
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
