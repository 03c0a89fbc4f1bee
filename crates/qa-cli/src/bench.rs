//! `qa bench` (hidden): one timed workload on synthetic windows, reported as a JSON line for
//! `cargo xtask bench`. Runs in its own process so peak memory is the workload's own.

use std::path::PathBuf;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use qa_data::features::PaddedBatch;
use qa_model::backend::{Compute, Train, BACKEND_NAME};
use qa_model::checkpoint::build_model;
use qa_model::model::QaBatch;
use qa_model::ModelConfig;
use qa_train::optim::{clip_scale, global_grad_norm, AdamW, AdamWConfig};
use qa_train::Precision;
use rand::{Rng, SeedableRng};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_parser = ["infer", "train"])]
    workload: String,
    /// An HF model folder (its config; weights are random unless --load-weights).
    #[arg(long, conflicts_with = "config")]
    model: Option<PathBuf>,
    /// A built-in size instead of a folder: bert-base or minilm.
    #[arg(long)]
    config: Option<String>,
    #[arg(long, default_value_t = 384)]
    seq: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed iterations after the first (the first is reported as time to first step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Precision of the matrix products (bf16/fp16 need the CUDA build; f64 runs the
    /// mixed-precision casts on the CPU).
    #[arg(long, default_value = "f32")]
    products: Precision,
    #[arg(long, default_value = "auto")]
    device: String,
}

fn model_config(args: &Args) -> anyhow::Result<ModelConfig> {
    match (&args.model, args.config.as_deref()) {
        (Some(dir), _) => Ok(ModelConfig::from_file(&dir.join("config.json"))?),
        (None, Some("bert-base")) => Ok(ModelConfig::bert(30522, 768, 12, 12, 3072)),
        (None, Some("minilm")) => Ok(ModelConfig::bert(30522, 384, 6, 12, 1536)),
        _ => anyhow::bail!("give --model DIR or --config bert-base|minilm"),
    }
}

fn synthetic(batch: usize, seq: usize, vocab: usize) -> PaddedBatch {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let n = batch * seq;
    PaddedBatch {
        batch,
        seq_len: seq,
        input_ids: (0..n)
            .map(|_| rng.random_range(1000..vocab as i64))
            .collect(),
        token_type_ids: (0..n).map(|i| i64::from(i % seq >= seq / 4)).collect(),
        attention_mask: vec![1; n],
        start_positions: (0..batch)
            .map(|_| rng.random_range(0..seq as i64))
            .collect(),
        end_positions: (0..batch)
            .map(|_| rng.random_range(0..seq as i64))
            .collect(),
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = crate::common::device(&args.device)?;
    let config = model_config(&args)?;
    let padded = synthetic(args.batch, args.seq, config.vocab_size);
    args.products
        .check_backend::<Compute>(&device)
        .map_err(anyhow::Error::msg)?;
    let dtype = args.products.matmul_dtype();
    let started = Instant::now();
    let mut first_step = 0.0;
    let timed_start;
    if args.workload == "infer" {
        let (model, _) = build_model::<Compute>(&config, None, 0, &device)?;
        let batch = QaBatch::<Compute>::from_padded(&padded, &device);
        let sync = |out: qa_model::QaOutput<Compute>| out.start_logits.into_data();
        sync(model.forward_with(&batch, dtype));
        first_step = started.elapsed().as_secs_f64();
        eprintln!("step 0 (first): {first_step:.2}s");
        timed_start = Instant::now();
        for step in 1..=args.steps {
            let t = Instant::now();
            sync(model.forward_with(&batch, dtype));
            eprintln!("step {step}: {:.3}s", t.elapsed().as_secs_f64());
        }
    } else {
        let (mut model, _) = build_model::<Train>(&config, None, 0, &device)?;
        let batch = QaBatch::<Train>::from_padded(&padded, &device);
        let labels = |v: &[i64]| {
            Tensor::<Train, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
        };
        let mut optimizer = AdamW::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        });
        let mut timed = None;
        for step in 0..=args.steps {
            if step == 1 {
                first_step = started.elapsed().as_secs_f64();
                timed = Some(Instant::now());
            }
            let t = Instant::now();
            let out = model.forward_with(&batch, dtype);
            let loss = qa_train::loss::qa_loss(
                &out,
                labels(&padded.start_positions),
                labels(&padded.end_positions),
            );
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let norm = global_grad_norm(&model, &grads);
            model = optimizer.step(5e-5, model, &grads, clip_scale(norm, 1.0));
            // Wait for the update to finish before the clock reads.
            let _ = model.qa_outputs.weight.val().into_data();
            // Per-step times show where GPU time goes: kernel compilation and autotuning make
            // the first steps slow, a stall shows up as one outlier.
            eprintln!("step {step}: {:.3}s", t.elapsed().as_secs_f64());
        }
        timed_start = timed.expect("at least one timed step");
    }
    let secs = timed_start.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "workload": args.workload,
        "model": args.model.as_ref().map(|m| m.display().to_string()).or(args.config.clone()),
        "hidden": config.hidden_size,
        "layers": config.num_layers,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "backend": BACKEND_NAME,
        "products": args.products,
        "windows_per_second": (args.batch * args.steps) as f64 / secs.max(1e-9),
        "time_to_first_step_s": first_step,
        "peak_rss_mib": peak_rss_mib(),
    });
    println!("{result}");
    Ok(())
}
