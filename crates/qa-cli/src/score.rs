//! `qa score`: the official SQuAD v1.1/v2.0 evaluation of a predictions file, or the
//! Coleridge (DEFNLP) score of a submission.

use std::path::PathBuf;

use qa_eval::score::{score_defnlp_files, score_squad_files, tune_merge_files};
use qa_eval::SquadVersion;

#[derive(clap::Args)]
pub struct Args {
    /// Gold data: a SQuAD JSON file (or, with --defnlp, a Coleridge train.csv).
    data: PathBuf,
    /// Predictions: `{id: answer}` JSON (or, with --defnlp, an Id,PredictionString CSV).
    predictions: PathBuf,
    /// No-answer probabilities `{id: p}` (SQuAD v2.0).
    #[arg(long, short = 'n')]
    na_prob_file: Option<PathBuf>,
    /// Predict "" where the no-answer probability exceeds this (SQuAD v2.0).
    #[arg(long, short = 't', default_value_t = 1.0)]
    na_prob_thresh: f64,
    /// Force the SQuAD version (default: the data file's `version` field).
    #[arg(long = "squad-version", value_parser = parse_version)]
    version: Option<SquadVersion>,
    /// Score a DEFNLP / Coleridge submission (Jaccard ≥ 0.5 matching, micro F0.5).
    #[arg(long)]
    defnlp: bool,
    /// With --defnlp: the second file is a findings file (`qa predict --defnlp-findings`);
    /// find the merge rule (--merge-min-score, --merge-max-words) that scores best on it.
    /// Tune on held-out publications, never on the ones you report.
    #[arg(long, requires = "defnlp")]
    tune_merge: bool,
    /// Also write the result JSON here.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

fn parse_version(text: &str) -> Result<SquadVersion, String> {
    match text {
        "1" | "1.1" => Ok(SquadVersion::V1),
        "2" | "2.0" => Ok(SquadVersion::V2),
        _ => Err(format!("{text:?} is not a SQuAD version (1 or 2)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        let mut inputs = vec![args.data.as_path(), args.predictions.as_path()];
        inputs.extend(args.na_prob_file.as_deref());
        crate::common::refuse_overwriting_inputs(out, &inputs)?;
    }
    let result = if args.tune_merge {
        tune_merge_files(&args.data, &args.predictions)?
    } else if args.defnlp {
        score_defnlp_files(&args.data, &args.predictions)?
    } else {
        score_squad_files(
            &args.data,
            &args.predictions,
            args.na_prob_file.as_deref(),
            args.na_prob_thresh,
            args.version,
        )?
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(out) = &args.out {
        qa_eval::decode::write_json(out, &result)?;
    }
    Ok(())
}
