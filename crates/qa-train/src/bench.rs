//! Synthetic timing workloads for `qa bench` (and so `cargo xtask bench`): forward passes, or
//! training steps through the trainer's own [`train_step`] and [`Update`], on random windows.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use qa_data::features::PaddedBatch;
use qa_model::checkpoint::build_model;
use qa_model::model::QaBatch;
use qa_model::{InferencePrecision, ModelConfig};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{Precision, TrainConfig};
use crate::error::{ConfigError, Result};
use crate::loss_scaler::LossScaler;
use crate::optim::{AdamW, AdamWConfig};
use crate::step::{train_step, MicroBatch, Update};

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Forward passes (dropout off).
    Infer,
    /// Training steps with `qa train`'s default optimizer settings.
    Train,
}

/// The size and length of a timing run.
#[derive(Debug, Clone, Copy)]
pub struct BenchSpec {
    pub workload: Workload,
    /// Window length (every window is full: no padding).
    pub seq: usize,
    pub batch: usize,
    /// Timed iterations after the first (the first is reported as time to first step).
    pub steps: usize,
    /// Precision of the matrix products (Burn's own, as training casts them).
    pub products: Precision,
    /// Inference only: the precision of the linear layers (`--precision`; int8/bf16 kernels).
    pub precision: InferencePrecision,
}

/// What a timing run measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BenchTimes {
    pub windows_per_second: f64,
    /// From the start (model built at random) to the end of the first step.
    pub time_to_first_step_s: f64,
    /// When the first step ended, on the wall clock (to time it from the process's launch).
    #[serde(skip)]
    pub first_step_done: std::time::SystemTime,
}

/// Random full windows of ids in `1000..vocab`, with random labels (seeded: every run times
/// the same work).
fn synthetic(batch: usize, seq: usize, vocab: usize) -> PaddedBatch {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let n = batch * seq;
    let mut positions = |count| {
        (0..count)
            .map(|_| rng.random_range(0..seq as i64))
            .collect()
    };
    let start_positions = positions(batch);
    let end_positions = positions(batch);
    PaddedBatch {
        batch,
        seq_len: seq,
        input_ids: (0..n)
            .map(|_| rng.random_range(1000..vocab as i64))
            .collect(),
        token_type_ids: (0..n).map(|i| i64::from(i % seq >= seq / 4)).collect(),
        attention_mask: vec![1; n],
        start_positions,
        end_positions,
    }
}

/// Times `spec` on a randomly initialised model of shape `config`, printing each step's time
/// to stderr (compilation and autotuning show up in the first steps, a stall as an outlier).
/// `AB` is the training backend; inference runs on its inner backend.
pub fn run_workload<AB: AutodiffBackend>(
    config: &ModelConfig,
    spec: BenchSpec,
    device: &AB::Device,
) -> Result<BenchTimes> {
    spec.products.check_backend::<AB>(device)?;
    let padded = synthetic(spec.batch, spec.seq, config.vocab_size);
    let dtype = spec.products.matmul_dtype();
    let started = Instant::now();
    let mut first_step = None;
    let mut timed_from = None;
    let mut step_done = |step: usize, t: Instant| {
        eprintln!("step {step}: {:.3}s", t.elapsed().as_secs_f64());
        if step == 0 {
            first_step = Some((
                started.elapsed().as_secs_f64(),
                std::time::SystemTime::now(),
            ));
            timed_from = Some(Instant::now());
        }
    };
    match spec.workload {
        Workload::Infer => {
            let (model, _) = build_model::<AB::InnerBackend>(config, None, 0, device)?;
            let model = model.with_precision(spec.precision, device)?;
            let batch = QaBatch::<AB::InnerBackend>::from_padded(&padded, device);
            for step in 0..=spec.steps {
                let t = Instant::now();
                let output = match spec.precision {
                    InferencePrecision::F32 => model.forward_with(&batch, dtype),
                    _ => model.forward(&batch),
                };
                // Reading the logits back waits for the device.
                let _ = output.start_logits.into_data();
                step_done(step, t);
            }
        }
        Workload::Train => {
            if spec.precision != InferencePrecision::F32 {
                return Err(ConfigError::InferencePrecisionInTraining(spec.precision).into());
            }
            let training = TrainConfig::new(".");
            let (mut model, _) = build_model::<AB>(config, None, 0, device)?;
            let mut update = Update::<AB::InnerBackend> {
                optimizer: AdamW::new(AdamWConfig::from(&training)),
                scaler: training.loss_scaling().map(LossScaler::new),
                max_grad_norm: training.max_grad_norm,
            };
            let micro_batches = [MicroBatch::whole(padded)];
            for step in 0..=spec.steps {
                let t = Instant::now();
                let gradients = train_step(
                    &model,
                    &micro_batches,
                    micro_batches.len(),
                    dtype,
                    update.loss_scale(),
                    step as u64,
                    device,
                );
                model = update
                    .apply(model, &gradients.grads, training.learning_rate)
                    .0;
                let _ = model.qa_outputs.weight.val().into_data();
                step_done(step, t);
            }
        }
    }
    let timed = timed_from.expect("step 0 ran").elapsed().as_secs_f64();
    let (time_to_first_step_s, first_step_done) = first_step.expect("step 0 ran");
    Ok(BenchTimes {
        windows_per_second: (spec.batch * spec.steps) as f64 / timed.max(1e-9),
        time_to_first_step_s,
        first_step_done,
    })
}
