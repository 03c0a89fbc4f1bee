use std::path::PathBuf;
use std::time::Instant;

use qa_data::load_tokenizer;
use qa_eval::squad::{evaluate_v1, evaluate_v2, Gold};
use qa_model::backend::Compute;
use qa_model::infer::predict_logits;

use crate::common::{self, DecodeArgs, WindowArgs};

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
    let tokenizer = load_tokenizer(&model_dir)?;
    let common::Windowed {
        examples,
        set,
        labelled,
    } = common::examples_and_windows(&args.data, &args.windows, args.max_eval_samples, &tokenizer)?;
    let (model, config, report) =
        qa_model::load_pretrained::<Compute>(&model_dir, None, 0, &device)?;
    common::check_vocab(&tokenizer, &config, &model_dir)?;
    if !report.initialized.is_empty() {
        eprintln!(
            "warning: {} has no trained QA head ({} freshly initialised): answers will be random",
            model_dir.display(),
            report.initialized.join(", ")
        );
    }
    let started = Instant::now();
    let logits = predict_logits(
        &model,
        &set.features,
        args.batch_size,
        common::pad_id(&tokenizer),
        &device,
        true,
    );
    let infer_secs = started.elapsed().as_secs_f64();
    let decode_started = Instant::now();
    let decoded = qa_eval::decode(&examples, &set.features, &logits, &args.decode.config())?;
    let decode_secs = decode_started.elapsed().as_secs_f64();
    // A file without any gold label is a test set: predictions only, named as run_qa's
    // --do_predict names them, and no (meaningless) scores.
    let prefix = if labelled { "eval" } else { "predict" };
    decoded.write(&args.output_dir, &format!("{prefix}_"))?;

    let gold = Gold::from_examples(&examples);
    let mut results = serde_json::Map::new();
    if !labelled {
        eprintln!(
            "{}: no gold answers, so no scores: wrote {prefix}_predictions.json (as run_qa --do_predict)",
            args.data.display()
        );
    } else if args.decode.version_2_with_negative {
        let r = evaluate_v2(&gold, &decoded.predictions(), None, 1.0);
        for (k, v) in serde_json::to_value(&r)?.as_object().expect("object") {
            results.insert(format!("eval_{k}"), v.clone());
        }
        // The best threshold, searched on the best non-null answers with our null odds
        // (run_qa passes zeros here, which makes its best_* numbers meaningless).
        let best = evaluate_v2(
            &gold,
            &decoded.best_non_null(),
            Some(&decoded.null_odds()),
            1.0,
        );
        for k in [
            "best_exact",
            "best_exact_thresh",
            "best_f1",
            "best_f1_thresh",
        ] {
            results.insert(format!("eval_{k}"), serde_json::to_value(&best)?[k].clone());
        }
    } else {
        let r = evaluate_v1(&gold, &decoded.predictions());
        results.insert("eval_exact_match".into(), r.exact_match.into());
        results.insert("eval_f1".into(), r.f1.into());
    }
    let key = |k: &str| format!("{prefix}_{k}");
    results.insert(key("samples"), set.features.len().into());
    results.insert(key("examples"), examples.len().into());
    results.insert(key("runtime"), (infer_secs + decode_secs).into());
    results.insert(
        key("windows_per_second"),
        (set.features.len() as f64 / infer_secs.max(1e-9)).into(),
    );
    results.insert(key("decode_seconds"), decode_secs.into());
    results.insert("backend".into(), qa_model::backend::BACKEND_NAME.into());
    common::write_json(
        &args.output_dir.join(format!("{prefix}_results.json")),
        &results,
    )?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
