use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use qa_data::{build_features, load_tokenizer, Example, ExampleId, FeatureConfig};
use qa_eval::{pipeline_answers, DecodeConfig, PipelineAnswer, PipelineConfig};
use qa_model::backend::{Compute, Device};
use qa_model::infer::predict_logits;
use qa_model::QaModel;

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
    /// Longest answer in tokens [default: 15 as the HF pipeline; 30 with --defnlp-dir].
    #[arg(long)]
    max_answer_length: Option<usize>,
    /// Keep answers at token boundaries instead of widening them to whole words
    /// (the pipeline's align_to_words=False).
    #[arg(long)]
    no_align_to_words: bool,
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

struct Predictor {
    model: QaModel<Compute>,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    features: FeatureConfig,
    batch_size: usize,
}

impl Predictor {
    /// The windows of `examples` and their logits.
    fn logits(
        &self,
        examples: &[Example],
    ) -> anyhow::Result<(Vec<qa_data::Feature>, Vec<qa_eval::decode::WindowLogits>)> {
        let set = build_features(&self.tokenizer, examples, &self.features)?;
        for (id, why) in &set.report.skipped {
            eprintln!("question {id}: skipped (no answer given): {why}");
        }
        let logits = predict_logits(
            &self.model,
            &set.features,
            self.batch_size,
            common::pad_id(&self.tokenizer),
            &self.device,
            set.features.len() > 64,
        );
        Ok((set.features, logits))
    }

    /// The HF pipeline's answers for each example.
    fn pipeline(
        &self,
        examples: &[Example],
        config: &PipelineConfig,
    ) -> anyhow::Result<Vec<Vec<PipelineAnswer>>> {
        let (features, logits) = self.logits(examples)?;
        Ok(pipeline_answers(examples, &features, &logits, config)?)
    }

    /// run_qa's decoding of every window as an example of its own (DEFNLP collects answers
    /// from every window).
    fn per_window(
        &self,
        examples: &[Example],
        decode: &DecodeConfig,
    ) -> anyhow::Result<Vec<qa_eval::decode::ExampleDecoding>> {
        let (mut features, logits) = self.logits(examples)?;
        let window_examples: Vec<Example> = features
            .iter()
            .map(|f| examples[f.example_index].clone())
            .collect();
        for (i, f) in features.iter_mut().enumerate() {
            f.example_index = i;
        }
        Ok(qa_eval::decode(&window_examples, &features, &logits, decode)?.examples)
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
            word_ids: true,
            ..Default::default()
        },
        batch_size: args.batch_size,
    };
    if let Some(dir) = &args.defnlp_dir {
        return defnlp(&args, dir, &predictor);
    }
    let examples: Vec<Example> = match (&args.question, &args.context, &args.input) {
        (Some(q), Some(c), _) => vec![example(ExampleId::Number(0), q, c)],
        (_, _, Some(path)) => read_jsonl(path)?,
        _ => bail!("give --question and --context, --input FILE.jsonl, or --defnlp-dir DIR"),
    };
    let config = PipelineConfig {
        top_k: args.top_k,
        max_answer_len: args.max_answer_length.unwrap_or(15),
        handle_impossible_answer: args.handle_impossible_answer,
        align_to_words: !args.no_align_to_words,
    };
    let answers = predictor.pipeline(&examples, &config)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (ex, answers) in examples.iter().zip(&answers) {
        if args.input.is_some() {
            let line = serde_json::json!({"id": ex.id.as_json(), "answers": answers});
            writeln!(out, "{line}")?;
        } else if args.json {
            // As the pipeline: one answer is a dict, several a list.
            let value = match answers.as_slice() {
                [one] if args.top_k == 1 => serde_json::to_value(one)?,
                _ => serde_json::to_value(answers)?,
            };
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
        max_answer_length: args.max_answer_length.unwrap_or(30),
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
        for d in predictor.per_window(&examples, &decode)? {
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
