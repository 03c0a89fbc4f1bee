//! Training settings, named and defaulted as HF `TrainingArguments` where they overlap. The
//! struct is also the `qa train` flag set (as `TrainingArguments` is run_qa's, through
//! `HfArgumentParser`), so each default is stated once, in its `#[arg]` attribute, and
//! [`TrainConfig::new`] reads the defaults from there.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::{Args, FromArgMatches};
use qa_data::progress::Progress;
use qa_eval::{Metric, SquadVersion};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::optim::LrScheduler;

/// The dtype of the model's matrix products during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Matrix products in bf16 (CUDA), f32 master weights and optimizer state.
    Bf16,
    /// Matrix products in fp16 (CUDA) with dynamic loss scaling.
    Fp16,
    /// Matrix products in f64: no speed benefit, but it runs the whole mixed-precision path
    /// (casts, autodiff through them, loss scaling) on the CPU backend, which has no f16/bf16.
    F64,
}

impl std::str::FromStr for Precision {
    type Err = ConfigError;
    fn from_str(name: &str) -> Result<Self, ConfigError> {
        match name {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            "f64" => Ok(Precision::F64),
            _ => Err(ConfigError::UnknownPrecision(name.to_string())),
        }
    }
}

impl Precision {
    /// Half precision needs a backend and device with that type: the CPU backend (NdArray) has
    /// none, nor has a GPU without bf16; a cast would panic on the first product.
    pub fn check_backend<B: Backend>(self, device: &B::Device) -> Result<(), ConfigError> {
        let Some(dtype) = self.matmul_dtype() else {
            return Ok(());
        };
        if B::supports_dtype(device, dtype.into()) {
            return Ok(());
        }
        Err(ConfigError::PrecisionUnsupported {
            precision: self,
            dtype: format!("{dtype:?}"),
            device: format!("{device:?}"),
            hint: if cfg!(feature = "cuda") {
                "this GPU lacks it"
            } else {
                "this binary has the CPU backend: build with --features cuda"
            },
        })
    }

    /// The dtype matrix products run in.
    pub fn matmul_dtype(self) -> qa_model::model::MatmulDtype {
        use burn::tensor::FloatDType;
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::Fp16 => Some(FloatDType::F16),
            Precision::F64 => Some(FloatDType::F64),
        }
    }
}

/// torch `GradScaler`'s settings for dynamic loss scaling (see [`crate::LossScaler`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaling {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: usize,
}

impl Default for LossScaling {
    /// torch's defaults.
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// HF's `IntervalStrategy`: when to evaluate or save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntervalStrategy {
    No,
    Steps,
    Epoch,
}

/// A resolved evaluation or save schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Never,
    EverySteps(usize),
    EachEpoch,
}

impl Schedule {
    /// `--X-strategy` and `--X-steps` → the schedule. Without a strategy, giving `--X-steps`
    /// means `steps`, as run_qa users expect. `what` names the pair in errors (`eval`, `save`).
    pub fn from_flags(
        what: &'static str,
        strategy: Option<IntervalStrategy>,
        steps: Option<usize>,
    ) -> Result<Self, ConfigError> {
        match (strategy, steps) {
            (None | Some(IntervalStrategy::Steps), Some(n)) if n > 0 => Ok(Schedule::EverySteps(n)),
            (None | Some(IntervalStrategy::Steps), Some(_)) => Err(ConfigError::ZeroSteps { what }),
            (Some(IntervalStrategy::Steps), None) => {
                Err(ConfigError::StepsStrategyNeedsSteps { what })
            }
            (None | Some(IntervalStrategy::No), None) => Ok(Schedule::Never),
            (Some(IntervalStrategy::Epoch), None) => Ok(Schedule::EachEpoch),
            (Some(strategy), Some(_)) => {
                Err(ConfigError::StepsNeedStepsStrategy { what, strategy })
            }
        }
    }

    /// Whether the schedule fires after optimizer step `step` (1-based), ending an epoch or not.
    pub fn fires(self, step: usize, epoch_ended: bool) -> bool {
        match self {
            Schedule::Never => false,
            Schedule::EverySteps(n) => step.is_multiple_of(n),
            Schedule::EachEpoch => epoch_ended,
        }
    }
}

/// Everything a training run is told. Defaults are HF `TrainingArguments`' unless said.
/// Numbers may be negative on the command line (`--learning-rate -1`), so that validation,
/// not the flag parser, explains what is wrong with them.
#[derive(Debug, Clone, Args)]
pub struct TrainConfig {
    /// Where the model, checkpoints, logs and results go.
    #[arg(long)]
    pub output_dir: PathBuf,
    #[arg(long, allow_negative_numbers = true, default_value_t = 5e-5)]
    pub learning_rate: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    pub adam_beta1: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.999)]
    pub adam_beta2: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-8)]
    pub adam_epsilon: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 3.0)]
    pub num_train_epochs: f64,
    /// Train this many optimizer steps, overriding --num-train-epochs (0: unset, as HF's -1).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Learning-rate schedule after warmup: linear, cosine, constant or constant_with_warmup.
    #[arg(long, default_value = "linear")]
    pub lr_scheduler_type: LrScheduler,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub warmup_ratio: f64,
    /// Overrides --warmup-ratio when set.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub per_device_train_batch_size: usize,
    #[arg(long, default_value_t = 8)]
    pub per_device_eval_batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub gradient_accumulation_steps: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub logging_steps: usize,
    /// When to evaluate: `steps` (every --eval-steps), `epoch`, or `no`; with a validation
    /// set there is always an evaluation at the end.
    #[arg(long, value_enum)]
    pub eval_strategy: Option<IntervalStrategy>,
    /// Evaluate every N optimizer steps.
    #[arg(long)]
    pub eval_steps: Option<usize>,
    /// When to save checkpoint-STEP/: `steps` (every --save-steps), `epoch`, or `no`.
    #[arg(long, value_enum)]
    pub save_strategy: Option<IntervalStrategy>,
    /// Save checkpoint-STEP/ every N optimizer steps.
    #[arg(long)]
    pub save_steps: Option<usize>,
    /// Keep at most this many checkpoints (never deleting the best one).
    #[arg(long)]
    pub save_total_limit: Option<usize>,
    /// After training, load the checkpoint whose evaluation scored best on
    /// --metric-for-best-model.
    #[arg(long)]
    pub load_best_model_at_end: bool,
    /// A metric the evaluation reports (f1, exact_match; SQuAD v2: exact, best_f1, ...),
    /// with or without the `eval_` prefix.
    #[arg(long, default_value = "f1")]
    pub metric_for_best_model: Metric,
    /// Continue from this checkpoint-STEP folder (default: the newest one in --output-dir).
    #[arg(long)]
    pub resume_from_checkpoint: Option<PathBuf>,
    /// Start afresh even if --output-dir holds checkpoints.
    #[arg(long)]
    pub overwrite_output_dir: bool,
    /// Set by `qa train` from --bf16/--fp16.
    #[arg(skip)]
    pub precision: Precision,
    /// Dynamic loss scaling; `None` turns it off. Always on for fp16.
    #[arg(skip)]
    pub loss_scaling: Option<LossScaling>,
    /// The tokenizer's padding id (see `qa_data::tokenizer`).
    #[arg(skip)]
    pub pad_token_id: u32,
    /// Stop (without saving a final model) after this many optimizer steps: simulates a killed
    /// run for resume tests and pre-emptible machines.
    #[arg(skip)]
    pub interrupt_after_steps: Option<usize>,
    #[arg(skip = Progress::Show)]
    pub progress: Progress,
}

impl TrainConfig {
    /// The defaults, with `output_dir`.
    pub fn new(output_dir: impl Into<PathBuf>) -> Self {
        let command = Self::augment_args(clap::Command::new("defaults"));
        let matches = command
            .try_get_matches_from(["defaults", "--output-dir", "."])
            .expect("the defaults parse");
        let mut config = Self::from_arg_matches(&matches).expect("the defaults parse");
        config.output_dir = output_dir.into();
        config
    }

    /// `max_steps`, where 0 means unset (HF's ≤ 0).
    pub fn max_steps(&self) -> Option<usize> {
        self.max_steps.filter(|&n| n > 0)
    }

    pub fn eval_schedule(&self) -> Result<Schedule, ConfigError> {
        Schedule::from_flags("eval", self.eval_strategy, self.eval_steps)
    }

    pub fn save_schedule(&self) -> Result<Schedule, ConfigError> {
        Schedule::from_flags("save", self.save_strategy, self.save_steps)
    }

    /// The loss scaling in force: the configured one, or torch's defaults for fp16.
    pub fn loss_scaling(&self) -> Option<LossScaling> {
        match (self.loss_scaling, self.precision) {
            (Some(s), _) => Some(s),
            (None, Precision::Fp16) => Some(LossScaling::default()),
            (None, _) => None,
        }
    }

    /// Checks the settings before any work starts. `eval_version` is the SQuAD version of the
    /// evaluation set, `None` when there is none: evaluating during training and loading the
    /// best model then have nothing to run on (as the HF Trainer refuses), and the metric for
    /// the best model must be one the set reports.
    pub fn validate(&self, eval_version: Option<SquadVersion>) -> Result<(), ConfigError> {
        if self.per_device_train_batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return Err(ConfigError::ZeroBatch);
        }
        positive_finite("learning_rate", self.learning_rate)?;
        if self.max_steps().is_none() {
            positive_finite("num_train_epochs", self.num_train_epochs)?;
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(ConfigError::WarmupRatio(self.warmup_ratio));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::NotFinite {
                name: "weight_decay",
                value: self.weight_decay,
            });
        }
        if !(0.0..1.0).contains(&self.adam_beta1)
            || !(0.0..1.0).contains(&self.adam_beta2)
            || !self.adam_epsilon.is_finite()
            || self.adam_epsilon <= 0.0
        {
            return Err(ConfigError::Adam {
                beta1: self.adam_beta1,
                beta2: self.adam_beta2,
                epsilon: self.adam_epsilon,
            });
        }
        let eval = self.eval_schedule()?;
        let save = self.save_schedule()?;
        if eval_version.is_none() && (eval != Schedule::Never || self.load_best_model_at_end) {
            return Err(ConfigError::EvaluationWithoutData {
                load_best: self.load_best_model_at_end,
            });
        }
        if self.load_best_model_at_end {
            self.check_best_model_schedule(eval, save)?;
            let metric = self.metric_for_best_model;
            if !metric.is_score() {
                return Err(ConfigError::MetricNotAScore(metric));
            }
            if let Some(version) = eval_version.filter(|v| !metric.reported_for(*v)) {
                return Err(ConfigError::MetricNotReported { metric, version });
            }
        }
        Ok(())
    }

    /// As HF: the best model is judged at save time, on the latest evaluation, so every save
    /// must come right after an evaluation.
    fn check_best_model_schedule(&self, eval: Schedule, save: Schedule) -> Result<(), ConfigError> {
        let aligned = match (eval, save) {
            (Schedule::EverySteps(e), Schedule::EverySteps(s)) => s.is_multiple_of(e),
            (Schedule::EachEpoch, Schedule::EachEpoch) => true,
            _ => false,
        };
        if aligned {
            Ok(())
        } else {
            Err(ConfigError::BestModelSchedule { eval, save })
        }
    }
}

impl From<&TrainConfig> for crate::optim::AdamWConfig {
    fn from(cfg: &TrainConfig) -> Self {
        Self {
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            epsilon: cfg.adam_epsilon,
            weight_decay: cfg.weight_decay,
        }
    }
}

fn positive_finite(name: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::NotPositive { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_hf_training_arguments() {
        let c = TrainConfig::new("out");
        assert_eq!(c.output_dir, PathBuf::from("out"));
        assert_eq!(c.learning_rate, 5e-5);
        assert_eq!(
            (c.adam_beta1, c.adam_beta2, c.adam_epsilon),
            (0.9, 0.999, 1e-8)
        );
        assert_eq!(c.num_train_epochs, 3.0);
        assert_eq!(c.per_device_train_batch_size, 8);
        assert_eq!(c.metric_for_best_model, Metric::F1);
        assert_eq!(c.lr_scheduler_type, LrScheduler::Linear);
        assert_eq!(c.precision, Precision::F32);
        assert_eq!(c.progress, Progress::Show);
    }

    #[test]
    fn load_best_needs_every_save_to_follow_an_evaluation() {
        use IntervalStrategy::*;
        let check = |eval_strategy, eval_steps, save_strategy, save_steps| {
            TrainConfig {
                load_best_model_at_end: true,
                eval_strategy,
                eval_steps,
                save_strategy,
                save_steps,
                ..TrainConfig::new("out")
            }
            .validate(Some(SquadVersion::V1))
            .is_ok()
        };
        assert!(check(Some(Epoch), None, Some(Epoch), None));
        assert!(check(None, Some(2), None, Some(4)));
        assert!(check(Some(Steps), Some(2), Some(Steps), Some(4)));
        assert!(!check(None, Some(2), None, Some(3)));
        assert!(!check(Some(Epoch), None, None, Some(4)));
        assert!(!check(None, Some(2), Some(Epoch), None));
        assert!(!check(None, None, None, None));
    }

    #[test]
    fn evaluating_without_an_evaluation_set_is_refused_up_front() {
        let without = |eval_strategy, eval_steps, load_best_model_at_end| {
            TrainConfig {
                load_best_model_at_end,
                eval_strategy,
                eval_steps,
                save_strategy: eval_strategy,
                save_steps: eval_steps,
                ..TrainConfig::new("out")
            }
            .validate(None)
        };
        let refused = |load_best| Err(ConfigError::EvaluationWithoutData { load_best });
        assert_eq!(
            without(Some(IntervalStrategy::Epoch), None, false),
            refused(false)
        );
        assert_eq!(without(None, Some(5), false), refused(false));
        assert_eq!(
            without(Some(IntervalStrategy::Epoch), None, true),
            refused(true)
        );
        assert_eq!(without(None, None, false), Ok(()));
        assert!(refused(true)
            .unwrap_err()
            .to_string()
            .contains("--validation-file"));
    }

    #[test]
    fn strategies_and_steps_resolve_as_run_qa_users_expect() {
        use IntervalStrategy::*;
        assert_eq!(
            Schedule::from_flags("eval", None, Some(5)),
            Ok(Schedule::EverySteps(5))
        );
        assert_eq!(
            Schedule::from_flags("eval", None, None),
            Ok(Schedule::Never)
        );
        assert_eq!(
            Schedule::from_flags("eval", Some(Epoch), None),
            Ok(Schedule::EachEpoch)
        );
        assert_eq!(
            Schedule::from_flags("save", Some(Steps), None),
            Err(ConfigError::StepsStrategyNeedsSteps { what: "save" })
        );
        assert_eq!(
            Schedule::from_flags("save", None, Some(0)),
            Err(ConfigError::ZeroSteps { what: "save" })
        );
        assert_eq!(
            Schedule::from_flags("eval", Some(Epoch), Some(3)),
            Err(ConfigError::StepsNeedStepsStrategy {
                what: "eval",
                strategy: Epoch
            })
        );
        assert!(Schedule::EverySteps(3).fires(6, false));
        assert!(!Schedule::EachEpoch.fires(6, false));
    }

    #[test]
    fn the_best_model_metric_must_be_a_score_the_evaluation_reports() {
        let best = |metric: &str, version| {
            TrainConfig {
                load_best_model_at_end: true,
                eval_strategy: Some(IntervalStrategy::Epoch),
                save_strategy: Some(IntervalStrategy::Epoch),
                metric_for_best_model: metric.parse().unwrap(),
                ..TrainConfig::new("out")
            }
            .validate(Some(version))
        };
        assert_eq!(best("eval_f1", SquadVersion::V1), Ok(()));
        assert_eq!(best("exact_match", SquadVersion::V1), Ok(()));
        assert_eq!(
            best("exact", SquadVersion::V1),
            Err(ConfigError::MetricNotReported {
                metric: Metric::Exact,
                version: SquadVersion::V1
            })
        );
        assert_eq!(
            best("best_f1_thresh", SquadVersion::V2),
            Err(ConfigError::MetricNotAScore(Metric::BestF1Thresh))
        );
    }

    #[test]
    fn absurd_numbers_are_refused() {
        for lr in [f64::INFINITY, f64::NAN, -1.0, 0.0] {
            let c = TrainConfig {
                learning_rate: lr,
                ..TrainConfig::new("out")
            };
            assert!(
                matches!(
                    c.validate(None),
                    Err(ConfigError::NotPositive {
                        name: "learning_rate",
                        ..
                    })
                ),
                "{lr}"
            );
        }
    }
}
