use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use qa_eval::squad::{evaluate_v1, evaluate_v2, read_id_map, Gold, SquadVersion};

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
    #[arg(long = "squad-version", value_parser = ["1", "2"])]
    version: Option<String>,
    /// Score a DEFNLP / Coleridge submission (Jaccard ≥ 0.5 matching, micro F0.5).
    #[arg(long)]
    defnlp: bool,
    /// Also write the result JSON here.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let result = if args.defnlp {
        let gold = qa_eval::coleridge::read_labels(&args.data)?;
        let predicted = qa_eval::coleridge::read_labels(&args.predictions)?;
        let score = qa_eval::coleridge::score(&gold, &predicted, 0.5);
        if !score.missing_publications.is_empty() {
            eprintln!(
                "{} publications have no submission row (their labels count as misses)",
                score.missing_publications.len()
            );
        }
        serde_json::to_value(score)?
    } else {
        let gold = Gold::from_squad_file(&args.data)?;
        let predictions: HashMap<String, String> = read_id_map::<String>(&args.predictions)?
            .into_iter()
            .collect();
        let version = match args.version.as_deref() {
            Some("2") => SquadVersion::V2,
            Some(_) => SquadVersion::V1,
            None => gold.guess_version(),
        };
        let unknown = predictions
            .keys()
            .filter(|k| !gold.questions.iter().any(|q| &q.id == *k))
            .count();
        if unknown > 0 {
            eprintln!("{unknown} predictions have ids that are not in the data (ignored)");
        }
        match version {
            SquadVersion::V1 => {
                let r = evaluate_v1(&gold, &predictions);
                report_missing(&r.missing);
                serde_json::to_value(r)?
            }
            SquadVersion::V2 => {
                let na = match &args.na_prob_file {
                    Some(p) => Some(read_id_map::<f64>(p)?),
                    None => None,
                };
                let r = evaluate_v2(&gold, &predictions, na.as_deref(), args.na_prob_thresh);
                report_missing(&r.missing);
                serde_json::to_value(r)?
            }
        }
    };
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}

fn report_missing(missing: &[String]) {
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        eprintln!(
            "{} questions have no prediction and score 0 (first: {})",
            missing.len(),
            shown.join(", ")
        );
    }
}
