use std::path::PathBuf;

use anyhow::Context;
use qa_data::load_tokenizer;
use qa_model::backend::Train;
use qa_train::{EvalSet, LrScheduler, Precision, TrainConfig};

use crate::common::{self, DecodeArgs, WindowArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Local Hugging Face model folder to start from (a base encoder or a QA checkpoint).
    #[arg(long)]
    model_name_or_path: PathBuf,
    #[arg(long)]
    train_file: PathBuf,
    /// Labelled data to evaluate on (at --eval-steps and at the end).
    #[arg(long)]
    validation_file: Option<PathBuf>,
    #[arg(long)]
    output_dir: PathBuf,
    #[command(flatten)]
    windows: WindowArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    #[arg(long, default_value_t = 8)]
    per_device_train_batch_size: usize,
    #[arg(long, default_value_t = 8)]
    per_device_eval_batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    learning_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    adam_beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    adam_beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    adam_epsilon: f64,
    /// Learning-rate schedule after warmup (HF Trainer's lr_scheduler_type): linear, cosine,
    /// constant or constant_with_warmup.
    #[arg(long, default_value = "linear")]
    lr_scheduler_type: LrScheduler,
    #[arg(long, default_value_t = 3.0)]
    num_train_epochs: f64,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    warmup_ratio: f64,
    #[arg(long)]
    warmup_steps: Option<usize>,
    #[arg(long, default_value_t = 1)]
    gradient_accumulation_steps: usize,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    logging_steps: usize,
    /// Evaluate every N optimizer steps (with --validation-file there is always one at the end).
    #[arg(long)]
    eval_steps: Option<usize>,
    /// When to evaluate: `steps` (every --eval-steps), `epoch`, or `no` (only at the end).
    #[arg(long, value_enum)]
    eval_strategy: Option<Strategy>,
    /// Save checkpoint-STEP/ every N optimizer steps.
    #[arg(long)]
    save_steps: Option<usize>,
    /// When to save checkpoints: `steps` (every --save-steps), `epoch`, or `no`.
    #[arg(long, value_enum)]
    save_strategy: Option<Strategy>,
    #[arg(long)]
    save_total_limit: Option<usize>,
    #[arg(long)]
    load_best_model_at_end: bool,
    #[arg(long, default_value = "f1")]
    metric_for_best_model: String,
    /// Continue from this checkpoint-STEP folder (default: the newest one in --output-dir).
    #[arg(long)]
    resume_from_checkpoint: Option<PathBuf>,
    /// Start afresh even if --output-dir holds checkpoints.
    #[arg(long)]
    overwrite_output_dir: bool,
    #[arg(long)]
    max_train_samples: Option<usize>,
    #[arg(long)]
    max_eval_samples: Option<usize>,
    /// bf16 mixed precision (CUDA).
    #[arg(long, conflicts_with = "fp16")]
    bf16: bool,
    /// fp16 mixed precision with dynamic loss scaling (CUDA).
    #[arg(long)]
    fp16: bool,
    /// cpu, cuda or cuda:N (must match how `qa` was built).
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = common::device(&args.device)?;
    let model_dir = common::model_dir(&args.model_name_or_path)?;
    let tokenizer = load_tokenizer(&model_dir)?;
    let train_data = common::examples_and_windows(
        &args.train_file,
        &args.windows,
        args.max_train_samples,
        &tokenizer,
    )?;
    if !train_data.labelled {
        anyhow::bail!(
            "{}: no question has a gold answer, so there is nothing to train on",
            args.train_file.display()
        );
    }
    let eval_data = match &args.validation_file {
        Some(path) => {
            let data = common::examples_and_windows(
                path,
                &args.windows,
                args.max_eval_samples,
                &tokenizer,
            )?;
            if !data.labelled {
                anyhow::bail!(
                    "{}: no gold answers, so it cannot be evaluated: leave out --validation-file, \
                     or predict on it afterwards with qa eval",
                    path.display()
                );
            }
            Some(data)
        }
        None => None,
    };
    let (model, model_config, report) =
        qa_model::load_pretrained::<Train>(&model_dir, None, args.seed, &device)?;
    common::check_vocab(&tokenizer, &model_config, &model_dir)?;
    if !report.initialized.is_empty() {
        eprintln!("newly initialised: {}", report.initialized.join(", "));
    }
    let mut config = TrainConfig::new(&args.output_dir);
    config.learning_rate = args.learning_rate;
    config.weight_decay = args.weight_decay;
    config.adam_beta1 = args.adam_beta1;
    config.adam_beta2 = args.adam_beta2;
    config.adam_epsilon = args.adam_epsilon;
    config.lr_scheduler_type = args.lr_scheduler_type;
    config.num_train_epochs = args.num_train_epochs;
    config.max_steps = args.max_steps;
    config.warmup_ratio = args.warmup_ratio;
    config.warmup_steps = args.warmup_steps;
    config.per_device_train_batch_size = args.per_device_train_batch_size;
    config.per_device_eval_batch_size = args.per_device_eval_batch_size;
    config.gradient_accumulation_steps = args.gradient_accumulation_steps;
    config.max_grad_norm = args.max_grad_norm;
    config.seed = args.seed;
    config.logging_steps = args.logging_steps;
    (config.eval_steps, config.eval_each_epoch) =
        schedule("eval", args.eval_strategy, args.eval_steps)?;
    (config.save_steps, config.save_each_epoch) =
        schedule("save", args.save_strategy, args.save_steps)?;
    config.save_total_limit = args.save_total_limit;
    config.load_best_model_at_end = args.load_best_model_at_end;
    config.metric_for_best_model = args.metric_for_best_model.clone();
    config.resume_from_checkpoint = args.resume_from_checkpoint.clone();
    config.overwrite_output_dir = args.overwrite_output_dir;
    config.pad_token_id = common::pad_id(&tokenizer);
    config.precision = match (args.bf16, args.fp16) {
        (true, _) => Precision::Bf16,
        (_, true) => Precision::Fp16,
        _ => Precision::F32,
    };
    let eval_set = eval_data.as_ref().map(|data| EvalSet {
        examples: &data.examples,
        features: &data.set.features,
        decode: args.decode.config(),
    });
    let outcome = qa_train::train(
        model,
        &model_config,
        Some(&model_dir),
        &train_data.set.features,
        eval_set.as_ref(),
        &config,
        &device,
    )
    .context("training failed")?;
    let r = &outcome.results;
    eprintln!(
        "trained {} steps in {:.1}s: loss {:.4}, {:.1} windows/s, first step after {:.1}s → {}",
        r.global_step,
        r.train_runtime,
        r.train_loss,
        r.train_samples_per_second,
        r.time_to_first_step,
        args.output_dir.display()
    );
    if let Some(metrics) = &outcome.eval_metrics {
        let json: serde_json::Map<String, serde_json::Value> = metrics
            .iter()
            .map(|(k, v)| (format!("eval_{k}"), (*v).into()))
            .collect();
        common::write_json(&args.output_dir.join("eval_results.json"), &json)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

/// HF's `IntervalStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    No,
    Steps,
    Epoch,
}

/// `--X-strategy` and `--X-steps` → (every N steps, each epoch). Without a strategy, giving
/// `--X-steps` means `steps`, as run_qa users expect.
fn schedule(
    what: &str,
    strategy: Option<Strategy>,
    steps: Option<usize>,
) -> anyhow::Result<(Option<usize>, bool)> {
    match (strategy, steps) {
        (None, steps) => Ok((steps, false)),
        (Some(Strategy::Steps), Some(n)) if n > 0 => Ok((Some(n), false)),
        (Some(Strategy::Steps), _) => {
            anyhow::bail!("--{what}-strategy steps needs --{what}-steps N (N ≥ 1)")
        }
        (Some(Strategy::Epoch), None) => Ok((None, true)),
        (Some(Strategy::No), None) => Ok((None, false)),
        (Some(s), Some(_)) => anyhow::bail!(
            "--{what}-steps only goes with --{what}-strategy steps, not {}",
            format!("{s:?}").to_lowercase()
        ),
    }
}
