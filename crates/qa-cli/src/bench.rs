//! `qa bench` (hidden): one timed workload on synthetic windows, reported as a JSON line for
//! `cargo xtask bench`. Runs in its own process so peak memory is the workload's own.

use std::path::PathBuf;

use qa_model::backend::{Train, BACKEND_NAME};
use qa_model::ModelConfig;
use qa_train::bench::{run_workload, BenchSpec, Workload};
use qa_train::Precision;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    workload: Workload,
    /// An HF model folder (only its config is used: weights are random).
    #[arg(long, conflicts_with = "config")]
    model: Option<PathBuf>,
    /// A built-in size instead of a folder.
    #[arg(long, value_enum)]
    config: Option<BuiltinSize>,
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
    #[command(flatten)]
    precision: crate::common::PrecisionArg,
    #[command(flatten)]
    tf32: crate::common::Tf32Arg,
    #[arg(long, default_value = "auto")]
    device: String,
    /// When the caller launched this process (Unix seconds, as `cargo xtask bench` passes it):
    /// the first step is then also timed from launch, start-up included, as a user waits for it.
    #[arg(long)]
    launched_at: Option<f64>,
}

/// Model sizes the benchmark knows without a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
enum BuiltinSize {
    BertBase,
    Minilm,
    /// MiniLM's sizes with DeBERTa-v3's vocabulary and relative attention (256 buckets).
    DebertaV3Minilm,
}

fn model_config(args: &Args) -> anyhow::Result<ModelConfig> {
    match (&args.model, args.config) {
        (Some(dir), _) => Ok(ModelConfig::from_file(&dir.join("config.json"))?),
        (None, Some(BuiltinSize::BertBase)) => Ok(ModelConfig::bert(30522, 768, 12, 12, 3072)),
        (None, Some(BuiltinSize::Minilm)) => Ok(ModelConfig::bert(30522, 384, 6, 12, 1536)),
        (None, Some(BuiltinSize::DebertaV3Minilm)) => Ok(ModelConfig::small(
            qa_model::Architecture::DebertaV2,
            128_100,
            384,
            6,
            12,
            1536,
        )),
        (None, None) => {
            anyhow::bail!("give --model DIR or --config bert-base|minilm|deberta-v3-minilm")
        }
    }
}

/// Seconds from `launched_at` (Unix seconds) to `moment`.
fn seconds_since(launched_at: f64, moment: std::time::SystemTime) -> Option<f64> {
    let at = moment
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(at - launched_at)
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.tf32.apply()?;
    let device = crate::common::device(&args.device)?;
    let config = model_config(&args)?;
    let spec = BenchSpec {
        workload: args.workload,
        seq: args.seq,
        batch: args.batch,
        steps: args.steps,
        products: args.products,
        precision: args.precision.precision,
    };
    let times = run_workload::<Train>(&config, spec, &device)?;
    let result = serde_json::json!({
        "workload": args.workload,
        "model": match (&args.model, args.config) {
            (Some(dir), _) => serde_json::json!(dir.display().to_string()),
            (None, size) => serde_json::json!(size),
        },
        "hidden": config.hidden_size,
        "layers": config.num_layers,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "backend": BACKEND_NAME,
        "products": args.products,
        "precision": args.precision.precision,
        "tf32": args.tf32.tf32,
        // The engine of the CUDA build's products (cuBLASLt or Burn's kernels); none on the CPU.
        "gpu_products": cfg!(feature = "cuda")
            .then(|| format!("{:?}", qa_model::cublaslt::engine())),
        "windows_per_second": times.windows_per_second,
        "time_to_first_step_s": times.time_to_first_step_s,
        "first_step_from_launch_s": args
            .launched_at
            .and_then(|launched| seconds_since(launched, times.first_step_done)),
        "peak_rss_mib": peak_rss_mib(),
    });
    println!("{result}");
    Ok(())
}
