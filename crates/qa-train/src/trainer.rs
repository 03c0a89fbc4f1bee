//! The training loop as a sequence of named steps: [`Run::start`] (plan, set up or resume),
//! then for every optimizer step [`crate::step::train_step`] (micro-batches, loss, backward),
//! [`crate::step::Update::apply`] (clip, loss scaler, AdamW) and [`Run::on_step_end`] (log,
//! evaluate, save, best model, prune), and last [`Run::finish`] (best model, final files).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use indicatif::ProgressBar;
use qa_data::features::pad_batch_in_buckets;
use qa_data::progress::{self, Progress};
use qa_data::{Example, Feature, WindowSource};
use qa_eval::evaluate::{decode_streamed, WINDOWS_PER_CHUNK};
use qa_eval::{squad_metrics, DecodeConfig, Metrics, SquadVersion};
use qa_model::infer::predict_logits;
use qa_model::{ModelConfig, QaModel};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoint::{self, RunFingerprint, TrainerState};
use crate::config::{Precision, Schedule, TrainConfig};
use crate::data_parallel::Peer;
use crate::error::{io, CheckpointProblem, Result, TrainError};
use crate::loss_scaler::LossScaler;
use crate::model_card::{self, CardFacts};
use crate::optim::{AdamW, AdamWConfig};
use crate::step::{train_step, MicroBatch, StepGradients, Update, UpdateOutcome, UpdateReport};

/// A labelled evaluation set: examples, their windows, and how to decode.
pub struct EvalSet<'a> {
    pub examples: &'a [Example],
    /// In memory or in a window file: evaluation reads and decodes them a chunk of whole
    /// examples at a time, never holding every window's logits.
    pub features: &'a dyn WindowSource,
    pub decode: DecodeConfig,
}

impl EvalSet<'_> {
    /// Which official script scores it.
    pub fn version(&self) -> SquadVersion {
        if self.decode.version_2_with_negative {
            SquadVersion::V2
        } else {
            SquadVersion::V1
        }
    }
}

/// What a run trains on, besides the model and the settings.
pub struct TrainJob<'a> {
    pub model_config: &'a ModelConfig,
    /// Tokenizer files are copied from here into every saved model folder.
    pub tokenizer_dir: Option<&'a Path>,
    /// In memory or in a window file (read a batch at a time).
    pub train_features: &'a dyn WindowSource,
    pub eval: Option<&'a EvalSet<'a>>,
    /// What the final folder's `README.md` model card says the model came from; `None` writes
    /// no card.
    pub card: Option<&'a CardFacts>,
}

/// `train_results.json`, as HF writes it, plus what our runs add.
#[derive(Debug, Clone, Serialize)]
pub struct TrainResults {
    pub epoch: f64,
    pub global_step: usize,
    pub train_loss: f64,
    /// The whole run, evaluations inside the loop included (as HF's).
    pub train_runtime: f64,
    pub train_samples: usize,
    /// Windows per second of training: unlike HF's, evaluation inside the loop is left out, so
    /// the rate is the engine's whatever the eval set's size.
    pub train_samples_per_second: f64,
    pub train_steps_per_second: f64,
    /// Seconds of `train_runtime` spent evaluating inside the loop.
    pub eval_runtime: f64,
    pub time_to_first_step: f64,
    pub resumed_from: Option<PathBuf>,
    pub interrupted: bool,
    pub precision: Precision,
    /// fp16: updates skipped because gradients overflowed.
    pub skipped_steps: usize,
    /// Peers that trained together (torch's world size).
    pub world_size: usize,
    /// Seconds the reporting peer (rank 0 on node 0, a node's first peer elsewhere) spent in
    /// collective operations, waiting included (0 on one device).
    pub collective_seconds: f64,
}

pub struct TrainOutcome<B: AutodiffBackend> {
    pub model: QaModel<B>,
    pub results: TrainResults,
    /// Metrics of the last evaluation (of the returned model, when loading the best).
    pub eval_metrics: Option<Metrics>,
}

/// Fine-tunes `model` on `job.train_features`, evaluating on `job.eval` if given. Resumes from
/// `cfg.resume_from_checkpoint`, or from the newest checkpoint in the output dir.
pub fn train<B: AutodiffBackend>(
    model: QaModel<B>,
    job: &TrainJob,
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<TrainOutcome<B>> {
    train_as_peer(model, job, cfg, device, &Peer::alone())
}

/// [`train`] as one peer of a data-parallel run (see [`crate::data_parallel`]): the peer reads
/// its share of every global batch, and rank 0 alone logs and writes files.
pub fn train_as_peer<B: AutodiffBackend>(
    model: QaModel<B>,
    job: &TrainJob,
    cfg: &TrainConfig,
    device: &B::Device,
    peer: &Peer,
) -> Result<TrainOutcome<B>> {
    let mut run = Run::start(model, job, cfg, device, peer)?;
    while run.state.global_step < run.plan.total_steps {
        if cfg.interrupt_after_steps == Some(run.clock.steps_run) {
            return run.interrupted();
        }
        let step = run.train_step()?;
        let lr = run.learning_rate();
        let (model, report) = run.update.apply(run.model, &step.grads, lr);
        run.model = model;
        run.on_step_end(&step, report, lr)?;
    }
    run.finish()
}

/// The shape of a run, fixed by the data and the settings.
struct Plan {
    windows: usize,
    /// Per device.
    batch_size: usize,
    world_size: usize,
    accumulation: usize,
    batches_per_epoch: usize,
    total_steps: usize,
    warmup_steps: usize,
    eval: Schedule,
    save: Schedule,
    fingerprint: RunFingerprint,
}

impl Plan {
    fn new(cfg: &TrainConfig, job: &TrainJob, world_size: usize) -> Result<Self> {
        let windows = job.train_features.len();
        if windows == 0 {
            return Err(TrainError::NoTrainingWindows);
        }
        let longest = (0..windows)
            .map(|i| job.train_features.window_len(i))
            .max()
            .unwrap_or(0);
        let positions = job.model_config.max_window_length();
        if longest > positions {
            return Err(TrainError::WindowTooLong { longest, positions });
        }
        let batch_size = cfg.per_device_train_batch_size;
        let accumulation = cfg.gradient_accumulation_steps;
        // HF with several devices: each reads `batch_size` windows of every global batch.
        let batches_per_epoch = windows.div_ceil(batch_size * world_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(accumulation);
        let total_steps = cfg
            .max_steps()
            .unwrap_or_else(|| (cfg.num_train_epochs * steps_per_epoch as f64).ceil() as usize);
        Ok(Self {
            windows,
            batch_size,
            world_size,
            accumulation,
            batches_per_epoch,
            total_steps,
            warmup_steps: cfg
                .warmup_steps
                .unwrap_or_else(|| (cfg.warmup_ratio * total_steps as f64).ceil() as usize),
            eval: cfg.eval_schedule()?,
            save: cfg.save_schedule()?,
            fingerprint: RunFingerprint {
                windows_hash: job.train_features.fingerprint()?,
                windows,
                per_device_train_batch_size: batch_size,
                gradient_accumulation_steps: accumulation,
            },
        })
    }

    /// A checkpoint this run can continue from: same run length, same windows and batching,
    /// and a position inside the run.
    fn check_resumable(&self, state: &TrainerState) -> std::result::Result<(), CheckpointProblem> {
        if state.world_size != self.world_size {
            return Err(CheckpointProblem::OtherWorldSize {
                written: state.world_size,
                this_run: self.world_size,
            });
        }
        if state.total_steps != self.total_steps {
            return Err(CheckpointProblem::OtherRunLength {
                written: state.total_steps,
                this_run: self.total_steps,
            });
        }
        if state.run != self.fingerprint {
            return Err(CheckpointProblem::OtherRun {
                written: state.run,
                this_run: self.fingerprint,
            });
        }
        if state.global_step > state.total_steps || state.batch_in_epoch >= self.batches_per_epoch {
            return Err(CheckpointProblem::PositionOutOfRange {
                step: state.global_step,
                batch_in_epoch: state.batch_in_epoch,
            });
        }
        Ok(())
    }

    /// Windows in a global micro-batch: every peer's together.
    fn global_batch_size(&self) -> usize {
        self.batch_size * self.world_size
    }

    /// The epoch as a fraction, HF style.
    fn epoch(&self, state: &TrainerState) -> f64 {
        state.epoch as f64 + state.batch_in_epoch as f64 / self.batches_per_epoch as f64
    }
}

/// How a run in this process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    Finished,
    /// Stopped at `interrupt_after_steps`, as a kill would stop it.
    Interrupted,
}

/// Wall-clock and throughput bookkeeping of this process's part of the run.
struct Clock {
    started: Instant,
    loop_started: Instant,
    first_step_at: Option<f64>,
    steps_run: usize,
    windows_seen: usize,
    /// Seconds spent evaluating inside the loop: left out of the training rates.
    eval_seconds: f64,
}

impl Clock {
    /// Seconds since `from`, less the evaluation time since the run started.
    fn training_seconds(&self, from: Instant) -> f64 {
        (from.elapsed().as_secs_f64() - self.eval_seconds).max(1e-9)
    }
}

/// `train_log.jsonl`: one JSON object per logged step or evaluation.
struct TrainLog {
    path: PathBuf,
    file: std::fs::File,
}

impl TrainLog {
    /// Opens the log for appending, first dropping entries past `step` (left by a killed run
    /// that is now resumed from an earlier checkpoint), so no step is logged twice.
    fn open(dir: &Path, step: usize) -> Result<Self> {
        let path = dir.join("train_log.jsonl");
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|e| e["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, kept).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self { path, file })
    }

    fn write(&mut self, entry: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{entry}").map_err(io(&self.path))
    }
}

/// A run in progress: everything the loop's steps read and change.
struct Run<'a, B: AutodiffBackend> {
    job: &'a TrainJob<'a>,
    cfg: &'a TrainConfig,
    peer: &'a Peer,
    plan: Plan,
    device: B::Device,
    model: QaModel<B>,
    update: Update<B::InnerBackend>,
    state: TrainerState,
    /// This epoch's window order.
    order: Vec<usize>,
    /// Rank 0's; other peers write nothing.
    log: Option<TrainLog>,
    progress: ProgressBar,
    resumed_from: Option<PathBuf>,
    clock: Clock,
    /// Loss summed over the steps since the last log line, and their count.
    loss_since_log: (f64, usize),
    last_metrics: Option<Metrics>,
}

impl<'a, B: AutodiffBackend> Run<'a, B> {
    /// Checks the settings, plans the run, and sets it up fresh or from a checkpoint.
    fn start(
        model: QaModel<B>,
        job: &'a TrainJob<'a>,
        cfg: &'a TrainConfig,
        device: &B::Device,
        peer: &'a Peer,
    ) -> Result<Self> {
        let started = Instant::now();
        cfg.validate(job.eval.map(EvalSet::version))?;
        cfg.precision.check_backend::<B>(device)?;
        let plan = Plan::new(cfg, job, peer.world_size)?;
        let out_dir = &cfg.output_dir;
        if peer.is_main() {
            std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
        }
        let fresh_update = Update {
            optimizer: AdamW::new(AdamWConfig::from(cfg)),
            scaler: cfg.loss_scaling().map(LossScaler::new),
            max_grad_norm: cfg.max_grad_norm,
        };
        let resume_dir = match &cfg.resume_from_checkpoint {
            Some(dir) => Some(dir.clone()),
            None if !cfg.overwrite_output_dir => {
                checkpoint::list_checkpoints(out_dir).pop().map(|(_, p)| p)
            }
            None => None,
        };
        let (model, update, state) = match &resume_dir {
            Some(dir) => {
                let resumed =
                    checkpoint::load_checkpoint::<B>(dir, fresh_update.optimizer, device)?;
                plan.check_resumable(&resumed.state)
                    .and_then(|()| {
                        checkpoint::check_state(
                            dir,
                            &resumed.state,
                            plan.batches_per_epoch,
                            plan.accumulation,
                        )
                    })
                    .map_err(|what| TrainError::Checkpoint {
                        path: dir.join(checkpoint::STATE_FILE),
                        what,
                    })?;
                tracing::info!(
                    "resuming from {} (step {})",
                    dir.display(),
                    resumed.state.global_step
                );
                let update = Update {
                    optimizer: resumed.optimizer,
                    scaler: resumed.state.loss_scaler,
                    max_grad_norm: cfg.max_grad_norm,
                };
                (resumed.model, update, resumed.state)
            }
            None => {
                let state = TrainerState {
                    total_steps: plan.total_steps,
                    warmup_steps: plan.warmup_steps,
                    seed: cfg.seed,
                    run: plan.fingerprint,
                    world_size: plan.world_size,
                    loss_scaler: fresh_update.scaler,
                    ..Default::default()
                };
                (model, fresh_update, state)
            }
        };
        // Every peer must start where rank 0 does (a node that cannot see the checkpoint would
        // start afresh); then a fresh start takes rank 0's weights.
        let inner_device = model.qa_outputs.weight.val().inner().device();
        peer.check_same_start::<B::InnerBackend>(state.global_step, &inner_device)?;
        let model = match resume_dir {
            Some(_) => model,
            None => peer.broadcast_weights(model)?,
        };
        let shown = if peer.is_main() {
            cfg.progress
        } else {
            Progress::Hidden
        };
        let progress = progress::bar(plan.total_steps as u64, "train", "steps", shown);
        progress.set_position(state.global_step as u64);
        Ok(Self {
            job,
            cfg,
            order: epoch_order(plan.windows, cfg.seed, state.epoch),
            log: match peer.is_main() {
                true => Some(TrainLog::open(out_dir, state.global_step)?),
                false => None,
            },
            plan,
            peer,
            device: device.clone(),
            model,
            update,
            state,
            progress,
            resumed_from: resume_dir,
            clock: Clock {
                started,
                loop_started: Instant::now(),
                first_step_at: None,
                steps_run: 0,
                windows_seen: 0,
                eval_seconds: 0.0,
            },
            loss_since_log: (0.0, 0),
            last_metrics: None,
        })
    }

    /// The learning rate of the coming step.
    fn learning_rate(&self) -> f64 {
        self.cfg.lr_scheduler_type.lr(
            self.state.global_step,
            self.plan.warmup_steps,
            self.plan.total_steps,
            self.cfg.learning_rate,
        )
    }

    /// The next optimizer step's micro-batches (at most `accumulation`, fewer at an epoch's
    /// end), forward and backward of this peer's share, gradients summed over the peers;
    /// advances the data position.
    fn train_step(&mut self) -> Result<StepGradients> {
        let plan = &self.plan;
        let count = plan
            .accumulation
            .min(plan.batches_per_epoch - self.state.batch_in_epoch);
        let global = plan.global_batch_size();
        let mut micro_batches = Vec::with_capacity(count);
        for i in 0..count {
            let b = self.state.batch_in_epoch + i;
            let indices = &self.order[b * global..((b + 1) * global).min(plan.windows)];
            // This peer's windows, read from disk when the run's windows are there.
            let windows = self
                .peer
                .share(indices.len())
                .into_iter()
                .map(|at| self.job.train_features.window(indices[at]))
                .collect::<qa_data::Result<Vec<_>>>()?;
            if windows.is_empty() {
                continue;
            }
            let windows: Vec<&Feature> = windows.iter().map(|w| w.as_ref()).collect();
            micro_batches.push(MicroBatch {
                share: windows.len() as f64 / indices.len() as f64,
                windows: pad_batch_in_buckets(
                    &windows,
                    self.cfg.pad_token_id,
                    qa_model::backend::SEQ_BUCKET,
                    self.job.model_config.max_window_length(),
                ),
            });
        }
        // Dropout masks depend only on (seed, rank, step, micro-batch): a resumed run draws the
        // same, and peers draw different ones. (On the CPU each thread has its own mask stream;
        // a GPU backend's RNG is one per process, so peers on threads of one process draw from
        // it in turn and their masks also depend on timing.)
        let dropout_seed = self
            .cfg
            .seed
            .wrapping_add((self.peer.rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_mul(1_000_003)
            .wrapping_add((self.state.global_step * plan.accumulation) as u64);
        let step = train_step(
            &self.model,
            &micro_batches,
            count,
            self.cfg.precision.matmul_dtype(),
            self.update.loss_scale(),
            dropout_seed,
            &self.device,
        );
        let step = self.peer.sum_step(&self.model, step)?;
        self.state.batch_in_epoch += count;
        self.clock.windows_seen += step.windows;
        Ok(step)
    }

    /// After an update: counters, epoch end, log, evaluation, checkpoint, best model, pruning.
    fn on_step_end(&mut self, step: &StepGradients, update: UpdateReport, lr: f64) -> Result<()> {
        if update.outcome == UpdateOutcome::NonFinite || !step.loss.is_finite() {
            let (what, value) = if step.loss.is_finite() {
                ("gradient norm", update.grad_norm)
            } else {
                ("loss", step.loss)
            };
            return Err(TrainError::Diverged {
                step: self.state.global_step + 1,
                what,
                value,
            });
        }
        self.state.global_step += 1;
        self.clock.steps_run += 1;
        self.state.loss_sum += step.loss;
        self.state.loss_scaler = self.update.scaler;
        self.loss_since_log.0 += step.loss;
        self.loss_since_log.1 += 1;
        let epoch_ended = self.state.batch_in_epoch >= self.plan.batches_per_epoch;
        if epoch_ended {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.order = epoch_order(self.plan.windows, self.cfg.seed, self.state.epoch);
        }
        let started = self.clock.started;
        self.clock
            .first_step_at
            .get_or_insert_with(|| started.elapsed().as_secs_f64());
        let rate =
            self.clock.windows_seen as f64 / self.clock.training_seconds(self.clock.loop_started);
        self.progress.set_position(self.state.global_step as u64);
        self.progress.set_message(format!(
            "loss {:.4} lr {lr:.2e} {rate:.1} windows/s",
            step.loss
        ));

        let step_no = self.state.global_step;
        let last = step_no == self.plan.total_steps;
        if step_no.is_multiple_of(self.cfg.logging_steps.max(1)) || last {
            self.log_step(lr, update.grad_norm, rate)?;
        }
        if self.job.eval.is_some() && (self.plan.eval.fires(step_no, epoch_ended) || last) {
            self.evaluate_and_log()?;
        }
        if self.plan.save.fires(step_no, epoch_ended) {
            self.save_checkpoint()?;
        }
        Ok(())
    }

    fn log_step(&mut self, lr: f64, grad_norm: f64, rate: f64) -> Result<()> {
        let (loss_sum, steps) = std::mem::take(&mut self.loss_since_log);
        let mut entry = serde_json::json!({
            "step": self.state.global_step,
            "epoch": self.plan.epoch(&self.state),
            "loss": loss_sum / steps.max(1) as f64,
            "learning_rate": lr,
            "grad_norm": grad_norm,
            "windows_per_second": rate,
        });
        if let Some(scaler) = self.state.loss_scaler {
            entry["loss_scale"] = scaler.scale.into();
            entry["skipped_steps"] = scaler.skipped_steps.into();
        }
        self.write_log(entry)
    }

    fn evaluate_and_log(&mut self) -> Result<()> {
        let eval = self
            .job
            .eval
            .expect("evaluation is scheduled only with an eval set");
        let evaluating = Instant::now();
        let metrics = evaluate_on_peers(&self.model, eval, self.cfg, self.peer)?;
        self.clock.eval_seconds += evaluating.elapsed().as_secs_f64();
        let mut entry = serde_json::json!({
            "step": self.state.global_step,
            "epoch": self.plan.epoch(&self.state),
        });
        for (key, value) in metrics.to_json("eval_") {
            entry[key] = value;
        }
        if self.peer.is_main() {
            self.progress
                .println(format!("step {}: {entry}", self.state.global_step));
        }
        self.last_metrics = Some(metrics);
        self.write_log(entry)
    }

    /// Keeps a log entry in the state (every peer, so their states stay equal) and appends it to
    /// `train_log.jsonl` (rank 0).
    fn write_log(&mut self, entry: serde_json::Value) -> Result<()> {
        if let Some(log) = &mut self.log {
            log.write(&entry)?;
        }
        self.state.log_history.push(entry);
        Ok(())
    }

    /// Writes `checkpoint-STEP/` (rank 0). The best model is judged here, on the latest
    /// evaluation, by every peer.
    fn save_checkpoint(&mut self) -> Result<()> {
        let out_dir = &self.cfg.output_dir;
        let this = checkpoint::checkpoint_dir(out_dir, self.state.global_step);
        let latest = self.last_metrics.as_ref();
        if let Some(score) = latest.and_then(|m| m.get(self.cfg.metric_for_best_model)) {
            if self.state.best_metric.is_none_or(|best| score > best) {
                self.state.best_metric = Some(score);
                self.state.best_checkpoint = Some(this);
            }
        }
        if !self.peer.is_main() {
            return Ok(());
        }
        checkpoint::save_checkpoint(
            out_dir,
            &self.model,
            self.job.model_config,
            self.job.tokenizer_dir,
            &self.update.optimizer,
            &self.state,
        )?;
        if let Some(limit) = self.cfg.save_total_limit {
            checkpoint::prune(out_dir, limit, self.state.best_checkpoint.as_deref())?;
        }
        Ok(())
    }

    fn results(&self, end: RunEnd) -> TrainResults {
        let runtime = self.clock.started.elapsed().as_secs_f64();
        let training = self.clock.training_seconds(self.clock.started);
        TrainResults {
            epoch: self.plan.epoch(&self.state),
            global_step: self.state.global_step,
            train_loss: self.state.loss_sum / self.state.global_step.max(1) as f64,
            train_runtime: runtime,
            train_samples: self.plan.windows,
            train_samples_per_second: self.clock.windows_seen as f64 / training,
            train_steps_per_second: self.clock.steps_run as f64 / training,
            eval_runtime: self.clock.eval_seconds,
            time_to_first_step: self.clock.first_step_at.unwrap_or(0.0),
            resumed_from: self.resumed_from.clone(),
            interrupted: end == RunEnd::Interrupted,
            precision: self.cfg.precision,
            skipped_steps: self.state.loss_scaler.map_or(0, |s| s.skipped_steps),
            world_size: self.plan.world_size,
            collective_seconds: self.peer.collective_seconds(),
        }
    }

    /// Stops without a final model (a simulated kill): checkpoints stay for a resume.
    fn interrupted(self) -> Result<TrainOutcome<B>> {
        self.progress.finish_and_clear();
        let results = self.results(RunEnd::Interrupted);
        Ok(TrainOutcome {
            model: self.model,
            results,
            eval_metrics: self.last_metrics,
        })
    }

    /// Loads the best model if asked, then writes the final model folder, `trainer_state.json`
    /// and `train_results.json` (rank 0; the other peers end with the last weights).
    fn finish(mut self) -> Result<TrainOutcome<B>> {
        self.progress.finish_and_clear();
        let cfg = self.cfg;
        if !self.peer.is_main() {
            let results = self.results(RunEnd::Finished);
            return Ok(TrainOutcome {
                model: self.model,
                results,
                eval_metrics: self.last_metrics,
            });
        }
        if let (true, Some(best)) = (cfg.load_best_model_at_end, &self.state.best_checkpoint) {
            tracing::info!(
                "loading the best model ({}) from {}",
                cfg.metric_for_best_model,
                best.display()
            );
            self.model = qa_model::load_pretrained::<B>(best, None, cfg.seed, &self.device)?.0;
            // Rank 0 alone: the other peers may have left already.
            if let Some(eval) = self.job.eval {
                self.last_metrics = Some(evaluate(&self.model, eval, cfg)?);
            }
        }
        let out_dir = &cfg.output_dir;
        qa_model::save_pretrained(
            &self.model,
            self.job.model_config,
            out_dir,
            self.job.tokenizer_dir,
        )
        .map_err(|source| TrainError::SaveFailed {
            what: format!("the final model into {}", out_dir.display()),
            previous: checkpoint::latest_checkpoint(out_dir),
            source: Box::new(source.into()),
        })?;
        checkpoint::write_state(&out_dir.join(checkpoint::STATE_FILE), &self.state)?;
        let results = self.results(RunEnd::Finished);
        qa_eval::decode::write_json(&out_dir.join("train_results.json"), &results)?;
        if let Some(facts) = self.job.card {
            let name = out_dir
                .file_name()
                .map_or("model".into(), |n| n.to_string_lossy().into_owned());
            let card = model_card::render(
                facts,
                &name,
                cfg,
                &results,
                self.last_metrics.as_ref(),
                &self.state.log_history,
            );
            model_card::write(out_dir, &card)?;
        }
        Ok(TrainOutcome {
            model: self.model,
            results,
            eval_metrics: self.last_metrics,
        })
    }
}

/// The epoch's window order: a permutation seeded by (seed, epoch), so a resumed run reads the
/// same batches.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mix = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix));
    order
}

/// [`evaluate`] with each chunk's windows dealt among the peers: each predicts its share, the
/// chunk's logits are gathered, and every peer decodes them (the same metrics as on one device;
/// every peer walks the same chunks, so the gathers pair up).
fn evaluate_on_peers<B: AutodiffBackend>(
    model: &QaModel<B>,
    eval: &EvalSet,
    cfg: &TrainConfig,
    peer: &Peer,
) -> Result<Metrics> {
    if peer.world_size == 1 {
        return evaluate(model, eval, cfg);
    }
    let inner = model.valid();
    let device = inner.qa_outputs.weight.val().device();
    let streamed = decode_streamed(
        eval.examples,
        eval.features,
        &eval.decode,
        WINDOWS_PER_CHUNK,
        Progress::Hidden,
        |chunk| {
            let mine = peer.share(chunk.len());
            let shard: Vec<Feature> = mine.iter().map(|&i| chunk[i].clone()).collect();
            let logits = predict_logits(
                &inner,
                &shard,
                cfg.per_device_eval_batch_size,
                cfg.pad_token_id,
                &device,
                Progress::Hidden,
            );
            peer.gather_logits::<B::InnerBackend>(
                chunk,
                mine.into_iter().zip(logits).collect(),
                &device,
            )
        },
    )?;
    Ok(squad_metrics(
        eval.examples,
        &streamed.decoded,
        eval.version(),
    ))
}

/// The official metrics of the model (dropout off) on a labelled set.
pub fn evaluate<B: AutodiffBackend>(
    model: &QaModel<B>,
    eval: &EvalSet,
    cfg: &TrainConfig,
) -> Result<Metrics> {
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
) -> Result<Metrics> {
    let streamed = decode_streamed::<TrainError>(
        eval.examples,
        eval.features,
        &eval.decode,
        WINDOWS_PER_CHUNK,
        Progress::Hidden,
        |chunk| {
            Ok(predict_logits(
                model,
                chunk,
                batch_size,
                pad_id,
                device,
                Progress::Hidden,
            ))
        },
    )?;
    Ok(squad_metrics(
        eval.examples,
        &streamed.decoded,
        eval.version(),
    ))
}
