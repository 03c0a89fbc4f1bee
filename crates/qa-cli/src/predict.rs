use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use qa_data::{build_features, load_tokenizer, Example, ExampleId, FeatureConfig};
use qa_eval::{DecodeConfig, NBestEntry};
use qa_model::backend::{Compute, Device};
use qa_model::infer::predict_logits;
use qa_model::QaModel;
use serde::Serialize;

use crate::common;

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuned Hugging Face QA model folder.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, requires = "context", conflicts_with_all = ["input", "defnlp_dir"])]
    question: Option<String>,
    #[arg(long, requires = "question")]
    context: Option<String>,
    /// JSON Lines of {"question", "context", "id"?}; answers go to stdout, one line each.
    #[arg(long, conflicts_with = "defnlp_dir")]
    input: Option<PathBuf>,
    /// DEFNLP: a folder of {Id}.json publications; writes an Id,PredictionString CSV.
    #[arg(long)]
    defnlp_dir: Option<PathBuf>,
    /// DEFNLP questions asked of every publication (repeatable).
    #[arg(long = "questions")]
    questions: Vec<String>,
    /// DEFNLP: keep a window's answer only if its probability is at least this.
    #[arg(long, default_value_t = 0.0)]
    min_score: f32,
    /// Where the DEFNLP submission goes.
    #[arg(long, requires = "defnlp_dir")]
    out: Option<PathBuf>,
    /// Answers per question.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Allow "no answer" (SQuAD v2 models).
    #[arg(long)]
    handle_impossible_answer: bool,
    #[arg(long, default_value_t = 30)]
    max_answer_length: usize,
    #[arg(long, default_value_t = 384)]
    max_seq_length: usize,
    #[arg(long, default_value_t = 128)]
    doc_stride: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto")]
    device: String,
}

/// The HF question-answering pipeline's answer keys.
#[derive(Serialize)]
struct PipelineAnswer {
    score: f32,
    start: usize,
    end: usize,
    answer: String,
}

struct Predictor {
    model: QaModel<Compute>,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    features: FeatureConfig,
    batch_size: usize,
}

impl Predictor {
    /// One decoding per example (windows merged), or per window with `per_window`.
    fn answers(
        &self,
        examples: &[Example],
        decode: &DecodeConfig,
        per_window: bool,
    ) -> anyhow::Result<Vec<qa_eval::decode::ExampleDecoding>> {
        let mut set = build_features(&self.tokenizer, examples, &self.features)?;
        for (id, why) in &set.report.skipped {
            eprintln!("question {id}: skipped: {why}");
        }
        let logits = predict_logits(
            &self.model,
            &set.features,
            self.batch_size,
            common::pad_id(&self.tokenizer),
            &self.device,
            set.features.len() > 64,
        );
        if !per_window {
            return Ok(qa_eval::decode(examples, &set.features, &logits, decode)?.examples);
        }
        // Each window as an example of its own (DEFNLP collects answers from every window).
        let window_examples: Vec<Example> = set
            .features
            .iter()
            .map(|f| examples[f.example_index].clone())
            .collect();
        for (i, f) in set.features.iter_mut().enumerate() {
            f.example_index = i;
        }
        Ok(qa_eval::decode(&window_examples, &set.features, &logits, decode)?.examples)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = common::device(&args.device)?;
    let model_dir = common::model_dir(&args.model)?;
    let (model, config, report) =
        qa_model::load_pretrained::<Compute>(&model_dir, None, 0, &device)?;
    if !report.initialized.is_empty() {
        eprintln!(
            "warning: {} has no trained QA head: fine-tune it first (qa train); answers will be random",
            model_dir.display()
        );
    }
    let tokenizer = load_tokenizer(&model_dir)?;
    common::check_vocab(&tokenizer, &config, &model_dir)?;
    let predictor = Predictor {
        model,
        tokenizer,
        device,
        features: FeatureConfig {
            max_length: args.max_seq_length,
            stride: args.doc_stride,
            show_progress: false,
            ..Default::default()
        },
        batch_size: args.batch_size,
    };
    let decode = DecodeConfig {
        n_best_size: args.top_k.max(20),
        max_answer_length: args.max_answer_length,
        version_2_with_negative: args.handle_impossible_answer,
        ..Default::default()
    };
    if let Some(dir) = &args.defnlp_dir {
        return defnlp(&args, dir, &predictor);
    }
    let examples: Vec<Example> = match (&args.question, &args.context, &args.input) {
        (Some(q), Some(c), _) => vec![example(ExampleId::Number(0), q, c)],
        (_, _, Some(path)) => read_jsonl(path)?,
        _ => bail!("give --question and --context, --input FILE.jsonl, or --defnlp-dir DIR"),
    };
    let decoded = predictor.answers(&examples, &decode, false)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (ex, d) in examples.iter().zip(&decoded) {
        let answers = top_answers(&d.nbest, args.top_k, args.handle_impossible_answer, &d.text);
        if args.input.is_some() {
            let line = serde_json::json!({"id": ex.id.as_json(), "answers": answers});
            writeln!(out, "{line}")?;
        } else if args.json {
            let value = if args.top_k == 1 {
                serde_json::to_value(&answers[0])?
            } else {
                serde_json::to_value(&answers)?
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        } else {
            for a in &answers {
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

fn example(id: ExampleId, question: &str, context: &str) -> Example {
    Example {
        id,
        title: String::new(),
        question: question.trim_start().to_string(),
        context: context.to_string(),
        answers: Vec::new(),
        is_impossible: false,
    }
}

/// The best `k` answers; with "no answer" allowed and chosen, the first is "" at 0..0.
fn top_answers(
    nbest: &[NBestEntry],
    k: usize,
    allow_empty: bool,
    chosen: &str,
) -> Vec<PipelineAnswer> {
    let mut answers: Vec<PipelineAnswer> = nbest
        .iter()
        .filter(|n| allow_empty || !n.text.is_empty())
        .map(|n| PipelineAnswer {
            score: n.probability,
            start: n.offsets[0],
            end: n.offsets[1],
            answer: n.text.clone(),
        })
        .collect();
    if allow_empty && chosen.is_empty() {
        if let Some(pos) = answers.iter().position(|a| a.answer.is_empty()) {
            let empty = answers.remove(pos);
            answers.insert(0, empty);
        }
    }
    answers.truncate(k.max(1));
    if answers.is_empty() {
        answers.push(PipelineAnswer {
            score: 0.0,
            start: 0,
            end: 0,
            answer: String::new(),
        });
    }
    answers
}

fn read_jsonl(path: &PathBuf) -> anyhow::Result<Vec<Example>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut examples = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {}: malformed JSON", path.display(), n + 1))?;
        let field = |k: &str| {
            v.get(k).and_then(|x| x.as_str()).with_context(|| {
                format!(
                    "{}: line {}: missing string field {k:?}",
                    path.display(),
                    n + 1
                )
            })
        };
        let id = v
            .get("id")
            .and_then(ExampleId::from_json)
            .unwrap_or(ExampleId::Number(n as i64));
        examples.push(example(id, field("question")?, field("context")?));
    }
    Ok(examples)
}

fn defnlp(args: &Args, dir: &std::path::Path, predictor: &Predictor) -> anyhow::Result<()> {
    let out_path = args
        .out
        .clone()
        .context("--defnlp-dir needs --out submission.csv")?;
    let questions: Vec<String> = if args.questions.is_empty() {
        qa_data::defnlp::DEFAULT_QUESTIONS
            .iter()
            .map(|q| q.to_string())
            .collect()
    } else {
        args.questions.clone()
    };
    let publications = qa_data::defnlp::read_publications(dir)?;
    let decode = DecodeConfig {
        n_best_size: 20,
        max_answer_length: args.max_answer_length,
        // A window without a dataset mention should answer [CLS].
        version_2_with_negative: true,
        ..Default::default()
    };
    let mut writer = csv::Writer::from_path(&out_path)
        .with_context(|| format!("cannot create {}", out_path.display()))?;
    writer.write_record(["Id", "PredictionString"])?;
    let mut found_total = 0;
    for publication in &publications {
        let examples: Vec<Example> = questions
            .iter()
            .enumerate()
            .map(|(q, question)| {
                example(
                    ExampleId::Text(format!("{}_q{q}", publication.id)),
                    question,
                    &publication.text,
                )
            })
            .collect();
        let mut labels = BTreeSet::new();
        for d in predictor.answers(&examples, &decode, true)? {
            let best = d.nbest.iter().find(|n| !n.text.is_empty());
            if let (false, Some(b)) = (d.text.is_empty(), best) {
                if b.probability >= args.min_score {
                    let cleaned = qa_eval::coleridge::clean_label(&b.text);
                    if !cleaned.is_empty() {
                        labels.insert(cleaned);
                    }
                }
            }
        }
        found_total += labels.len();
        let joined = labels.into_iter().collect::<Vec<_>>().join("|");
        writer.write_record([publication.id.as_str(), joined.as_str()])?;
    }
    writer.flush()?;
    eprintln!(
        "{} publications, {} distinct dataset labels → {}",
        publications.len(),
        found_total,
        out_path.display()
    );
    Ok(())
}
