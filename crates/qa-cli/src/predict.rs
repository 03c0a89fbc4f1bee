//! `qa predict`: answer questions as the HF question-answering pipeline does (one question, a
//! JSON Lines batch), or find the datasets DEFNLP publications cite (string matching, a QA
//! model, or both merged: `--defnlp-mode`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use qa_data::progress::Progress;
use qa_data::requests::{read_documents, read_requests, request_example};
use qa_data::{ExampleId, FeatureConfig};
use qa_eval::defnlp::{
    find_candidates, read_publications_lenient, write_findings, write_submission, DefnlpMode,
    DefnlpPipeline, DefnlpQuestions,
};
use qa_eval::defnlp_match::{read_label_names, read_name_list, DatasetMatcher};
use qa_eval::defnlp_merge::MergeRule;
use qa_eval::pipeline::answer_json;
use qa_eval::{PipelineConfig, Predictor};
use qa_model::backend::Compute;

use crate::common::{self, NullThresholdArg, PrecisionArg, WindowArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuned Hugging Face QA model: a local folder or a Hub id (org/name); not needed with
    /// --defnlp-mode match.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    revision: common::RevisionArg,
    /// One question: about --context, or over --documents.
    #[arg(long, conflicts_with_all = ["input", "defnlp_dir"])]
    question: Option<String>,
    #[arg(long, requires = "question")]
    context: Option<String>,
    /// JSON Lines of {"id"?, "text"}: --question is asked over all of them and the answers
    /// ranked across them (start + end logit; score a probability over every document's
    /// candidates).
    #[arg(long, requires = "question", conflicts_with = "context")]
    documents: Option<PathBuf>,
    /// JSON Lines of {"question", "context", "id"?}; answers go to stdout, one line each.
    #[arg(long, conflicts_with = "defnlp_dir")]
    input: Option<PathBuf>,
    /// DEFNLP: a folder of {Id}.json publications; writes an Id,PredictionString CSV.
    #[arg(long)]
    defnlp_dir: Option<PathBuf>,
    /// DEFNLP: a question asked of every publication (repeatable; default: DEFNLP's two).
    #[arg(long = "defnlp-question", alias = "questions")]
    defnlp_questions: Vec<String>,
    /// DEFNLP: keep a window's answer only if its probability is at least this.
    #[arg(long, default_value_t = 0.0)]
    min_score: f32,
    /// DEFNLP: how datasets are found: known names in the text (match, no model), the model's
    /// answers (qa), or both merged.
    #[arg(long, value_enum, default_value_t = ModeArg::Both, requires = "defnlp_dir")]
    defnlp_mode: ModeArg,
    /// DEFNLP: known dataset names from a Coleridge labels CSV (its dataset_title,
    /// dataset_label and cleaned_label columns), for string matching.
    #[arg(long, requires = "defnlp_dir")]
    defnlp_labels: Option<PathBuf>,
    /// DEFNLP: more known dataset names, one per line (e.g. big_gov_datasets.txt).
    #[arg(long, requires = "defnlp_dir")]
    known_datasets: Option<PathBuf>,
    /// DEFNLP both: keep a QA answer only if its probability is at least this.
    #[arg(long, default_value_t = MergeRule::TUNED.min_probability)]
    merge_min_score: f32,
    /// DEFNLP both: keep a QA answer only if it has at most this many words.
    #[arg(long, default_value_t = MergeRule::TUNED.max_words)]
    merge_max_words: usize,
    /// Where the DEFNLP submission goes.
    #[arg(long, requires = "defnlp_dir")]
    out: Option<PathBuf>,
    /// DEFNLP: also write what matching and the model found per publication, before the
    /// merge (JSON lines), to tune the merge rule on with `qa score --defnlp --tune-merge`.
    #[arg(long, requires = "defnlp_dir")]
    defnlp_findings: Option<PathBuf>,
    /// Answers per question.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Allow "no answer" (SQuAD v2 models).
    #[arg(long)]
    handle_impossible_answer: bool,
    /// Longest answer in tokens [default: 15 as the HF pipeline; 30 with --defnlp-dir].
    #[arg(long)]
    max_answer_length: Option<usize>,
    /// Keep answers at token boundaries instead of widening them to whole words
    /// (the pipeline's align_to_words=False).
    #[arg(long)]
    no_align_to_words: bool,
    #[command(flatten)]
    null_threshold: NullThresholdArg,
    #[command(flatten)]
    windows: WindowArgs,
    #[command(flatten)]
    precision: PrecisionArg,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto")]
    device: String,
}

/// `--defnlp-mode` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Match,
    Qa,
    Both,
}

impl From<ModeArg> for DefnlpMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Match => DefnlpMode::Match,
            ModeArg::Qa => DefnlpMode::Qa,
            ModeArg::Both => DefnlpMode::Both,
        }
    }
}

fn load_predictor(args: &Args, model: &str) -> anyhow::Result<Predictor<Compute>> {
    let device = common::device(&args.device)?;
    let model_dir = common::model_dir(model, &args.revision)?;
    let windows = FeatureConfig {
        word_ids: true,
        progress: Progress::Hidden,
        ..args.windows.config()
    };
    Ok(
        Predictor::<Compute>::load(&model_dir, windows, args.batch_size, &device)?
            .with_precision(args.precision.precision)?,
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.defnlp_dir {
        return defnlp(&args, dir);
    }
    let model = args
        .model
        .as_ref()
        .context("--model is required: a fine-tuned Hugging Face QA model folder")?;
    let predictor = load_predictor(&args, model)?;
    let null_threshold = args.null_threshold.resolve(&predictor.model_dir)?;
    let config = PipelineConfig {
        top_k: args.top_k,
        max_answer_len: args.max_answer_length.unwrap_or(15),
        // A no-answer threshold is only for models that may answer "".
        handle_impossible_answer: args.handle_impossible_answer || null_threshold.is_some(),
        align_to_words: !args.no_align_to_words,
        null_threshold,
    };
    let examples = match (&args.question, &args.context, &args.input, &args.documents) {
        (Some(q), Some(c), _, _) => vec![request_example(ExampleId::Number(0), q, c)],
        (Some(q), None, _, Some(path)) => return documents(&predictor, q, path, &config, &args),
        (_, _, Some(path), _) => read_requests(path)?,
        _ => bail!(
            "give --question and --context, --question and --documents FILE.jsonl, \
             --input FILE.jsonl, or --defnlp-dir DIR"
        ),
    };
    let progress = if examples.len() > 64 {
        Progress::Show
    } else {
        Progress::Hidden
    };
    let answers = predictor.pipeline(&examples, &config, progress)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (example, answers) in examples.iter().zip(&answers) {
        if args.input.is_some() {
            let line = serde_json::json!({"id": example.id.as_json(), "answers": answers});
            writeln!(out, "{line}")?;
        } else if args.json {
            let value = answer_json(answers, args.top_k)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        } else if answers.is_empty() {
            writeln!(out, "(no answer)")?;
        } else {
            for a in answers {
                writeln!(
                    out,
                    "{} (score {:.3}, chars {}..{})",
                    a.answer, a.score, a.start, a.end
                )?;
            }
        }
    }
    Ok(())
}

/// `--question Q --documents F.jsonl`: one ranking over every document.
fn documents(
    predictor: &Predictor<Compute>,
    question: &str,
    path: &Path,
    config: &PipelineConfig,
    args: &Args,
) -> anyhow::Result<()> {
    let documents = read_documents(path)?;
    let progress = if documents.len() > 64 {
        Progress::Show
    } else {
        Progress::Hidden
    };
    let answers = predictor.documents(question, &documents, config, progress)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answers)?)?;
        return Ok(());
    }
    if answers.is_empty() {
        writeln!(out, "(no answer)")?;
    }
    for a in &answers {
        match &a.document {
            Some(d) => writeln!(
                out,
                "{} (score {:.3}, document {}, chars {}..{})",
                a.answer,
                a.score,
                d.id.clone().unwrap_or_else(|| format!("#{}", d.index)),
                a.start,
                a.end
            )?,
            None => writeln!(out, "(no answer) (score {:.3})", a.score)?,
        }
    }
    Ok(())
}

fn defnlp(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let out_path = args
        .out
        .as_ref()
        .context("--defnlp-dir needs --out submission.csv")?;
    let mut inputs: Vec<&Path> = vec![dir];
    inputs.extend(args.defnlp_labels.as_deref());
    inputs.extend(args.known_datasets.as_deref());
    common::refuse_overwriting_inputs(out_path, &inputs)?;
    if let Some(findings) = &args.defnlp_findings {
        inputs.push(out_path);
        common::refuse_overwriting_inputs(findings, &inputs)?;
    }
    let mode = DefnlpMode::from(args.defnlp_mode);
    let mut names = Vec::new();
    if let Some(csv) = &args.defnlp_labels {
        names.extend(read_label_names(csv)?);
    }
    if let Some(list) = &args.known_datasets {
        names.extend(read_name_list(list)?);
    }
    let matcher = DatasetMatcher::new(&names)?;
    if mode == DefnlpMode::Match && matcher.is_empty() {
        bail!(
            "--defnlp-mode match needs known dataset names: --defnlp-labels train.csv and/or \
             --known-datasets names.txt (none given, or they hold no names)"
        );
    }
    let predictor = match (mode.needs_model(), &args.model) {
        (true, None) => bail!(
            "--defnlp-mode {mode} needs --model (a fine-tuned QA model folder); \
             --defnlp-mode match runs without one"
        ),
        (true, Some(model)) => Some(load_predictor(args, model)?),
        (false, _) => None,
    };
    let mut ask = DefnlpQuestions {
        min_score: args.min_score,
        ..Default::default()
    };
    if !args.defnlp_questions.is_empty() {
        ask.questions = args.defnlp_questions.clone();
    }
    if let Some(n) = args.max_answer_length {
        ask.decode.max_answer_length = n;
    }
    let pipeline = DefnlpPipeline {
        mode,
        matcher: (!matcher.is_empty()).then_some(&matcher),
        predictor: predictor.as_ref(),
        ask,
        rule: MergeRule {
            min_probability: args.merge_min_score,
            max_words: args.merge_max_words,
        },
    };
    let publications = read_publications_lenient(dir)?;
    let found = find_candidates(&publications, &pipeline, Progress::Show)?;
    let rows: Vec<_> = found
        .iter()
        .map(|f| f.labels(pipeline.mode, &pipeline.rule))
        .collect();
    if let Some(path) = &args.defnlp_findings {
        write_findings(path, publications.iter().map(|p| p.id.as_str()).zip(&found))?;
    }
    write_submission(
        out_path,
        publications.iter().map(|p| p.id.as_str()).zip(&rows),
    )?;
    eprintln!(
        "{} publications, {} dataset labels ({mode}; {} known names) → {}",
        publications.len(),
        rows.iter().map(|r| r.len()).sum::<usize>(),
        matcher.len(),
        out_path.display()
    );
    Ok(())
}
