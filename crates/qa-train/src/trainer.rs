//! The training loop.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use qa_data::features::pad_batch;
use qa_data::{Example, Feature};
use qa_eval::squad::{evaluate_v1, evaluate_v2, Gold};
use qa_eval::{decode, DecodeConfig};
use qa_model::infer::predict_logits;
use qa_model::model::QaBatch;
use qa_model::{ModelConfig, QaModel};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoint::{self, TrainerState};
use crate::config::{Precision, TrainConfig};
use crate::error::{io, Result, TrainError};
use crate::loss::qa_loss;
use crate::optim::{clip_scale, unscaled_grad_norm, AdamW, AdamWConfig};

/// A labelled evaluation set: examples, their windows, and how to decode.
pub struct EvalSet<'a> {
    pub examples: &'a [Example],
    pub features: &'a [Feature],
    pub decode: DecodeConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainResults {
    pub epoch: f64,
    pub global_step: usize,
    pub train_loss: f64,
    pub train_runtime: f64,
    pub train_samples: usize,
    pub train_samples_per_second: f64,
    pub train_steps_per_second: f64,
    pub time_to_first_step: f64,
    pub resumed_from: Option<PathBuf>,
    pub interrupted: bool,
    pub precision: Precision,
    /// fp16: updates skipped because gradients overflowed.
    pub skipped_steps: usize,
}

pub struct TrainOutcome<B: AutodiffBackend> {
    pub model: QaModel<B>,
    pub results: TrainResults,
    /// Metrics of the last evaluation (of the returned model, when loading the best).
    pub eval_metrics: Option<BTreeMap<String, f64>>,
}

/// The epoch's window order: a permutation seeded by (seed, epoch), so a resumed run reads the
/// same batches.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mix = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix));
    order
}

/// Fine-tunes `model` on `train_features`, evaluating on `eval` if given. Resumes from
/// `cfg.resume_from_checkpoint`, or from the newest checkpoint in the output dir.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    model: QaModel<B>,
    model_config: &ModelConfig,
    tokenizer_dir: Option<&Path>,
    train_features: &[Feature],
    eval: Option<&EvalSet>,
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<TrainOutcome<B>> {
    let started = Instant::now();
    cfg.validate().map_err(TrainError::Config)?;
    cfg.precision
        .check_backend::<B>(device)
        .map_err(TrainError::Config)?;
    let dtype = cfg.precision.matmul_dtype();
    let scaling = match (cfg.loss_scaling, cfg.precision) {
        (Some(s), _) => Some(s),
        (None, Precision::Fp16) => Some(crate::config::LossScaling::default()),
        (None, _) => None,
    };
    if train_features.is_empty() {
        return Err(TrainError::Config("no training windows".into()));
    }
    let out_dir = &cfg.output_dir;
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;

    let n = train_features.len();
    let bs = cfg.per_device_train_batch_size;
    let accum = cfg.gradient_accumulation_steps;
    let batches_per_epoch = n.div_ceil(bs);
    let steps_per_epoch = batches_per_epoch.div_ceil(accum);
    let total_steps = cfg
        .max_steps
        .unwrap_or_else(|| (cfg.num_train_epochs * steps_per_epoch as f64).ceil() as usize);
    let warmup = cfg
        .warmup_steps
        .unwrap_or_else(|| (cfg.warmup_ratio * total_steps as f64).ceil() as usize);

    let fresh_optimizer = AdamW::new(AdamWConfig {
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        epsilon: cfg.adam_epsilon,
        weight_decay: cfg.weight_decay,
    });
    let resume_dir = match &cfg.resume_from_checkpoint {
        Some(dir) => Some(dir.clone()),
        None if !cfg.overwrite_output_dir => {
            checkpoint::list_checkpoints(out_dir).pop().map(|(_, p)| p)
        }
        None => None,
    };
    let (mut model, mut optimizer, mut state) = match &resume_dir {
        Some(dir) => {
            let r = checkpoint::load_checkpoint::<B>(dir, fresh_optimizer, device)?;
            if r.state.total_steps != total_steps {
                return Err(TrainError::Checkpoint {
                    path: dir.clone(),
                    what: format!(
                        "was written by a run of {} steps, this run has {total_steps}: resume with the same data and settings, or pass --overwrite-output-dir",
                        r.state.total_steps
                    ),
                });
            }
            tracing::info!(
                "resuming from {} (step {})",
                dir.display(),
                r.state.global_step
            );
            (r.model, r.optimizer, r.state)
        }
        None => (
            model,
            fresh_optimizer,
            TrainerState {
                total_steps,
                warmup_steps: warmup,
                seed: cfg.seed,
                loss_scale: scaling.map(|s| s.init_scale),
                ..Default::default()
            },
        ),
    };

    let log_path = out_dir.join("train_log.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let progress = if cfg.show_progress {
        ProgressBar::new(total_steps as u64).with_style(
            ProgressStyle::with_template("train {bar:30} {pos}/{len} steps {msg} (ETA {eta})")
                .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    };
    progress.set_position(state.global_step as u64);

    let mut order = epoch_order(n, cfg.seed, state.epoch);
    let mut windows_seen = 0usize;
    let mut steps_run = 0usize;
    let mut loss_since_log = (0.0, 0usize);
    let mut first_step_at = None;
    let mut last_metrics = None;
    let mut interrupted = false;
    let loop_started = Instant::now();

    while state.global_step < total_steps {
        if cfg.interrupt_after_steps == Some(steps_run) {
            interrupted = true;
            break;
        }
        let micro_batches = accum.min(batches_per_epoch - state.batch_in_epoch);
        let mut accumulator = GradientsAccumulator::<QaModel<B>>::new();
        let mut step_loss = 0.0;
        for micro in 0..micro_batches {
            let b = state.batch_in_epoch;
            let idx = &order[b * bs..((b + 1) * bs).min(n)];
            // Dropout masks depend only on (seed, step, micro-batch): a resumed run draws the
            // same ones.
            B::seed(
                device,
                cfg.seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((state.global_step * accum + micro) as u64),
            );
            let refs: Vec<&Feature> = idx.iter().map(|&i| &train_features[i]).collect();
            let padded = pad_batch(&refs, cfg.pad_token_id);
            let batch = QaBatch::<B>::from_padded(&padded, device);
            let labels = |v: &[i64]| {
                Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
            };
            let out = model.forward_with(&batch, dtype);
            let loss = qa_loss(
                &out,
                labels(&padded.start_positions),
                labels(&padded.end_positions),
            )
            .div_scalar(micro_batches as f64);
            step_loss += loss.clone().into_scalar().elem::<f64>();
            let loss = match state.loss_scale {
                Some(scale) => loss.mul_scalar(scale),
                None => loss,
            };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
            windows_seen += idx.len();
            state.batch_in_epoch += 1;
        }
        let grads = accumulator.grads();
        let scale = state.loss_scale.unwrap_or(1.0);
        // The norm of the true (unscaled) gradients; unscaling is folded into the update.
        let norm = unscaled_grad_norm(&model, &grads, scale);
        let lr =
            cfg.lr_scheduler_type
                .lr(state.global_step, warmup, total_steps, cfg.learning_rate);
        match (scaling, norm.is_finite()) {
            (Some(s), false) => {
                // Overflow: skip the update, back off (as torch GradScaler).
                state.skipped_steps += 1;
                state.loss_scale = Some(scale * s.backoff_factor);
                state.loss_scale_good_steps = 0;
            }
            _ => {
                model = optimizer.step(
                    lr,
                    model,
                    &grads,
                    clip_scale(norm, cfg.max_grad_norm) / scale,
                );
                if let Some(s) = scaling {
                    state.loss_scale_good_steps += 1;
                    if state.loss_scale_good_steps == s.growth_interval {
                        state.loss_scale = Some(scale * s.growth_factor);
                        state.loss_scale_good_steps = 0;
                    }
                }
            }
        }
        state.global_step += 1;
        steps_run += 1;
        state.loss_sum += step_loss;
        loss_since_log.0 += step_loss;
        loss_since_log.1 += 1;
        let epoch_ended = state.batch_in_epoch >= batches_per_epoch;
        if epoch_ended {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            order = epoch_order(n, cfg.seed, state.epoch);
        }
        first_step_at.get_or_insert_with(|| started.elapsed().as_secs_f64());
        let rate = windows_seen as f64 / loop_started.elapsed().as_secs_f64().max(1e-9);
        progress.set_position(state.global_step as u64);
        progress.set_message(format!(
            "loss {step_loss:.4} lr {lr:.2e} {rate:.1} windows/s"
        ));
        let epoch_f = state.epoch as f64 + state.batch_in_epoch as f64 / batches_per_epoch as f64;

        let at = |every: Option<usize>| every.is_some_and(|e| e > 0 && state.global_step % e == 0);
        let last = state.global_step == total_steps;
        if state.global_step % cfg.logging_steps.max(1) == 0 || last {
            let mut entry = serde_json::json!({
                "step": state.global_step,
                "epoch": epoch_f,
                "loss": loss_since_log.0 / loss_since_log.1.max(1) as f64,
                "learning_rate": lr,
                "grad_norm": norm,
                "windows_per_second": rate,
            });
            if let Some(scale) = state.loss_scale {
                entry["loss_scale"] = scale.into();
                entry["skipped_steps"] = state.skipped_steps.into();
            }
            write_log(&mut log, &log_path, &entry)?;
            state.log_history.push(entry);
            loss_since_log = (0.0, 0);
        }
        if let Some(eval) = eval {
            if at(cfg.eval_steps) || (cfg.eval_each_epoch && epoch_ended) || last {
                let metrics = evaluate(&model, eval, cfg)?;
                let mut entry = serde_json::json!({"step": state.global_step, "epoch": epoch_f});
                for (k, v) in &metrics {
                    entry[format!("eval_{k}")] = (*v).into();
                }
                progress.println(format!("step {}: {}", state.global_step, entry));
                write_log(&mut log, &log_path, &entry)?;
                state.log_history.push(entry);
                last_metrics = Some(metrics);
            }
        }
        if at(cfg.save_steps) || (cfg.save_each_epoch && epoch_ended) {
            // The best model is judged at save time, on the latest evaluation.
            let this = checkpoint::checkpoint_dir(out_dir, state.global_step);
            if let Some(m) = last_metrics
                .as_ref()
                .and_then(|m| m.get(&cfg.metric_for_best_model))
            {
                if state.best_metric.is_none_or(|b| *m > b) {
                    state.best_metric = Some(*m);
                    state.best_checkpoint = Some(this.clone());
                }
            }
            checkpoint::save_checkpoint(
                out_dir,
                &model,
                model_config,
                tokenizer_dir,
                &optimizer,
                &state,
            )?;
            if let Some(limit) = cfg.save_total_limit {
                checkpoint::prune(out_dir, limit, state.best_checkpoint.as_deref())?;
            }
        }
    }
    progress.finish_and_clear();

    let runtime = started.elapsed().as_secs_f64();
    let results = TrainResults {
        epoch: state.epoch as f64 + state.batch_in_epoch as f64 / batches_per_epoch as f64,
        global_step: state.global_step,
        train_loss: state.loss_sum / state.global_step.max(1) as f64,
        train_runtime: runtime,
        train_samples: n,
        train_samples_per_second: windows_seen as f64 / runtime.max(1e-9),
        train_steps_per_second: steps_run as f64 / runtime.max(1e-9),
        time_to_first_step: first_step_at.unwrap_or(0.0),
        resumed_from: resume_dir,
        interrupted,
        precision: cfg.precision,
        skipped_steps: state.skipped_steps,
    };
    if interrupted {
        return Ok(TrainOutcome {
            model,
            results,
            eval_metrics: last_metrics,
        });
    }
    if cfg.load_best_model_at_end {
        if let Some(best) = &state.best_checkpoint {
            tracing::info!(
                "loading the best model ({}) from {}",
                cfg.metric_for_best_model,
                best.display()
            );
            model = qa_model::load_pretrained::<B>(best, None, cfg.seed, device)?.0;
            if let Some(eval) = eval {
                last_metrics = Some(evaluate(&model, eval, cfg)?);
            }
        }
    }
    qa_model::save_pretrained(&model, model_config, out_dir, tokenizer_dir)?;
    checkpoint::write_state(&out_dir.join(checkpoint::STATE_FILE), &state)?;
    let results_path = out_dir.join("train_results.json");
    std::fs::write(
        &results_path,
        serde_json::to_string_pretty(&results).expect("serializes") + "\n",
    )
    .map_err(io(&results_path))?;
    Ok(TrainOutcome {
        model,
        results,
        eval_metrics: last_metrics,
    })
}

fn write_log(log: &mut std::fs::File, path: &Path, entry: &serde_json::Value) -> Result<()> {
    writeln!(log, "{entry}").map_err(io(path))
}

/// EM/F1 of the model (dropout off) on a labelled set, with the official rules. SQuAD v2
/// also reports the best no-answer threshold (searched on the best non-null answers).
pub fn evaluate<B: AutodiffBackend>(
    model: &QaModel<B>,
    eval: &EvalSet,
    cfg: &TrainConfig,
) -> Result<BTreeMap<String, f64>> {
    let inner = model.valid();
    let device = inner.qa_outputs.weight.val().device();
    evaluate_inner::<B::InnerBackend>(
        &inner,
        eval,
        cfg.per_device_eval_batch_size,
        cfg.pad_token_id,
        &device,
    )
}

/// [`evaluate`] for a model already on an inference backend.
pub fn evaluate_inner<B: Backend>(
    model: &QaModel<B>,
    eval: &EvalSet,
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Result<BTreeMap<String, f64>> {
    let logits = predict_logits(model, eval.features, batch_size, pad_id, device, false);
    let decoded = decode(eval.examples, eval.features, &logits, &eval.decode)?;
    let gold = Gold::from_examples(eval.examples);
    let mut metrics = BTreeMap::new();
    if eval.decode.version_2_with_negative {
        let r = evaluate_v2(&gold, &decoded.predictions(), None, 1.0);
        metrics.insert("exact".into(), r.exact);
        metrics.insert("f1".into(), r.f1);
        let best = evaluate_v2(
            &gold,
            &decoded.best_non_null(),
            Some(&decoded.null_odds()),
            1.0,
        );
        metrics.insert("best_f1".into(), best.best_f1.unwrap_or(0.0));
        metrics.insert("best_f1_thresh".into(), best.best_f1_thresh.unwrap_or(0.0));
    } else {
        let r = evaluate_v1(&gold, &decoded.predictions());
        metrics.insert("exact_match".into(), r.exact_match);
        metrics.insert("f1".into(), r.f1);
    }
    Ok(metrics)
}
