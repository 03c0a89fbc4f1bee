//! Training settings, named and defaulted as HF `TrainingArguments` where they overlap.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
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
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            "f64" => Ok(Precision::F64),
            _ => Err(format!(
                "unknown precision {name:?} (f32, bf16, fp16 or f64)"
            )),
        }
    }
}

impl Precision {
    /// Half precision needs a backend and device with that type: the CPU backend (NdArray) has
    /// none, nor has a GPU without bf16; a cast would panic on the first product.
    pub fn check_backend<B: Backend>(self, device: &B::Device) -> Result<(), String> {
        let Some(dtype) = self.matmul_dtype() else {
            return Ok(());
        };
        if B::supports_dtype(device, dtype.into()) {
            return Ok(());
        }
        let hint = if cfg!(feature = "cuda") {
            "this GPU lacks it"
        } else {
            "this binary has the CPU backend: build with --features cuda"
        };
        Err(format!(
            "{self:?} mixed precision needs {dtype:?} support on {device:?} ({hint}), or use f32"
        ))
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

/// torch `GradScaler`'s dynamic loss scaling: multiply the loss by `scale` so small fp16
/// gradients do not flush to zero; skip steps whose gradients overflow and halve the scale;
/// double it after `growth_interval` good steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaling {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: usize,
}

impl Default for LossScaling {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub output_dir: PathBuf,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    pub num_train_epochs: f64,
    /// Overrides `num_train_epochs` when set.
    pub max_steps: Option<usize>,
    pub lr_scheduler_type: crate::optim::LrScheduler,
    pub warmup_ratio: f64,
    /// Overrides `warmup_ratio` when set.
    pub warmup_steps: Option<usize>,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub seed: u64,
    pub logging_steps: usize,
    /// Evaluate every N optimizer steps; with an eval set there is always one at the end.
    pub eval_steps: Option<usize>,
    /// Also evaluate at the end of every epoch (HF `eval_strategy="epoch"`).
    pub eval_each_epoch: bool,
    /// Save `checkpoint-STEP/` every N optimizer steps.
    pub save_steps: Option<usize>,
    /// Also save a checkpoint at the end of every epoch (HF `save_strategy="epoch"`).
    pub save_each_epoch: bool,
    pub save_total_limit: Option<usize>,
    pub load_best_model_at_end: bool,
    /// `f1` or `exact_match` (SQuAD v2: `exact`).
    pub metric_for_best_model: String,
    /// A `checkpoint-STEP` folder to continue from; `None` resumes from the newest checkpoint in
    /// `output_dir`, if any (as run_qa does), unless `overwrite_output_dir`.
    pub resume_from_checkpoint: Option<PathBuf>,
    pub overwrite_output_dir: bool,
    pub precision: Precision,
    /// Dynamic loss scaling; `None` turns it off. Always on for fp16.
    pub loss_scaling: Option<LossScaling>,
    pub pad_token_id: u32,
    /// Stop (without saving a final model) after this many optimizer steps: simulates a killed
    /// run for resume tests and pre-emptible machines.
    pub interrupt_after_steps: Option<usize>,
    pub show_progress: bool,
}

impl TrainConfig {
    pub fn new(output_dir: impl Into<PathBuf>) -> Self {
        Self {
            output_dir: output_dir.into(),
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            num_train_epochs: 3.0,
            max_steps: None,
            lr_scheduler_type: Default::default(),
            warmup_ratio: 0.0,
            warmup_steps: None,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            seed: 42,
            logging_steps: 50,
            eval_steps: None,
            eval_each_epoch: false,
            save_steps: None,
            save_each_epoch: false,
            save_total_limit: None,
            load_best_model_at_end: false,
            metric_for_best_model: "f1".into(),
            resume_from_checkpoint: None,
            overwrite_output_dir: false,
            precision: Precision::F32,
            loss_scaling: None,
            pad_token_id: 0,
            interrupt_after_steps: None,
            show_progress: true,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.per_device_train_batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return Err("batch size and gradient_accumulation_steps must be at least 1".into());
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return Err(format!(
                "learning_rate must be positive, got {}",
                self.learning_rate
            ));
        }
        if self.max_steps.is_none()
            && (self.num_train_epochs.is_nan() || self.num_train_epochs <= 0.0)
        {
            return Err("set num_train_epochs > 0 or max_steps".into());
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(format!(
                "warmup_ratio must be in [0, 1], got {}",
                self.warmup_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.adam_beta1)
            || !(0.0..1.0).contains(&self.adam_beta2)
            || self.adam_epsilon.is_nan()
            || self.adam_epsilon <= 0.0
        {
            return Err(format!(
                "Adam needs 0 ≤ beta1, beta2 < 1 and epsilon > 0 (got {}, {}, {})",
                self.adam_beta1, self.adam_beta2, self.adam_epsilon
            ));
        }
        if self.load_best_model_at_end {
            // As HF: the best model is judged at save time, on the latest evaluation, so every
            // save must come right after an evaluation.
            let steps_ok = match (self.eval_steps, self.save_steps) {
                (_, None) => true,
                (Some(e), Some(s)) => s % e == 0,
                (None, Some(_)) => false,
            };
            let epochs_ok = !self.save_each_epoch || self.eval_each_epoch;
            let saves = self.save_steps.is_some() || self.save_each_epoch;
            if !(steps_ok && epochs_ok && saves) {
                return Err(format!(
                    "load_best_model_at_end needs evaluation and saving on the same schedule: both per \
                     epoch, or save_steps a multiple of eval_steps (eval: {:?} steps{}, save: {:?} steps{})",
                    self.eval_steps,
                    if self.eval_each_epoch { " + each epoch" } else { "" },
                    self.save_steps,
                    if self.save_each_epoch { " + each epoch" } else { "" },
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_best_needs_every_save_to_follow_an_evaluation() {
        let check = |eval_steps, eval_each_epoch, save_steps, save_each_epoch| {
            TrainConfig {
                load_best_model_at_end: true,
                eval_steps,
                eval_each_epoch,
                save_steps,
                save_each_epoch,
                ..TrainConfig::new("out")
            }
            .validate()
            .is_ok()
        };
        assert!(check(None, true, None, true));
        assert!(check(Some(2), false, Some(4), false));
        assert!(check(Some(2), true, Some(4), true));
        assert!(!check(Some(2), false, Some(3), false));
        assert!(!check(None, true, Some(4), false));
        assert!(!check(Some(2), false, None, true));
        assert!(!check(None, true, Some(4), true));
        assert!(!check(Some(2), true, None, false));
    }
}
