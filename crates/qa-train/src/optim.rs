//! AdamW as `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments) with HF's
//! parameter groups (no decay for biases and LayerNorm weights), torch's global gradient-norm
//! clipping, and HF's linear schedule with warmup.
//!
//! Burn's own AdamW decays every parameter and its clipping is per parameter, so both are ours.
//! Moments are keyed by the parameter's full HF name (`bert.encoder.layer.0.attention.self.
//! query.weight`), so checkpoints survive a reload (which gives parameters new ids), and the
//! decay groups follow HF's module names, not our Rust field names.

use std::collections::{BTreeMap, HashMap};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use qa_model::{hf_param_names, HfParam, QaModel};

/// HF Trainer's `lr_scheduler_type`s (`transformers.get_scheduler`), all with linear warmup
/// from 0 except `Constant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// Linear decay to 0 at the last step (HF's default).
    #[default]
    Linear,
    /// Half a cosine wave from the peak to 0.
    Cosine,
    Constant,
    ConstantWithWarmup,
}

impl std::str::FromStr for LrScheduler {
    type Err = crate::ConfigError;
    /// HF's names (`constant_with_warmup`), or with dashes.
    fn from_str(name: &str) -> Result<Self, crate::ConfigError> {
        match name.replace('-', "_").as_str() {
            "linear" => Ok(LrScheduler::Linear),
            "cosine" => Ok(LrScheduler::Cosine),
            "constant" => Ok(LrScheduler::Constant),
            "constant_with_warmup" => Ok(LrScheduler::ConstantWithWarmup),
            _ => Err(crate::ConfigError::UnknownScheduler(name.to_string())),
        }
    }
}

impl LrScheduler {
    /// The learning rate for optimizer step `step` (0-based) of `total`.
    pub fn lr(self, step: usize, warmup: usize, total: usize, lr: f64) -> f64 {
        let warming = step < warmup && self != LrScheduler::Constant;
        if warming {
            return lr * step as f64 / warmup.max(1) as f64;
        }
        match self {
            LrScheduler::Linear => linear_schedule(step, warmup, total, lr),
            LrScheduler::Cosine => {
                let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
                lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
            LrScheduler::Constant | LrScheduler::ConstantWithWarmup => lr,
        }
    }
}

/// HF `get_linear_schedule_with_warmup`: 0 → lr over `warmup` steps, then linearly to 0 at `total`.
pub fn linear_schedule(step: usize, warmup: usize, total: usize, lr: f64) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup.max(1) as f64;
    }
    lr * ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64)
        .max(0.0)
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

/// First and second moments of one parameter, flattened, on the inner backend.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
}

/// Optimizer state: step count and moments by full HF parameter name.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    pub step: usize,
    pub moments: BTreeMap<String, Moments<B>>,
}

/// HF Trainer's `get_decay_parameter_names`: every parameter decays except those inside a
/// LayerNorm module and those whose name contains `bias`.
pub fn decays(param: &HfParam) -> bool {
    !param.in_layer_norm && !param.name.contains("bias")
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient, with gradients scaled by `grad_scale`
    /// (the clipping factor).
    pub fn step<AB>(
        &mut self,
        lr: f64,
        model: QaModel<AB>,
        grads: &GradientsParams,
        grad_scale: f64,
    ) -> QaModel<AB>
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        self.step += 1;
        let params = hf_param_names(&model)
            .into_iter()
            .map(|param| (param.id, param))
            .collect();
        let mut mapper = StepMapper::<AB> {
            optimizer: self,
            grads,
            lr,
            grad_scale,
            params,
        };
        model.map(&mut mapper)
    }

    /// Moments as named host tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn export(&self) -> BTreeMap<String, qa_model::weights::HostTensor> {
        let host = |t: &Tensor<B, 1>| {
            let data: Vec<f32> = t
                .to_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32 moments");
            qa_model::weights::HostTensor::new(vec![data.len()], data)
        };
        let mut out = BTreeMap::new();
        for (path, mo) in &self.moments {
            out.insert(format!("m.{path}"), host(&mo.m));
            out.insert(format!("v.{path}"), host(&mo.v));
        }
        out
    }

    /// Restores moments written by [`AdamW::export`].
    pub fn import(
        &mut self,
        step: usize,
        tensors: &BTreeMap<String, qa_model::weights::HostTensor>,
        device: &B::Device,
    ) -> Result<(), crate::CheckpointProblem> {
        self.step = step;
        self.moments.clear();
        let tensor = |t: &qa_model::weights::HostTensor| {
            Tensor::<B, 1>::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
        };
        for (name, m) in tensors {
            if let Some(path) = name.strip_prefix("m.") {
                let v = tensors.get(&format!("v.{path}")).ok_or_else(|| {
                    crate::CheckpointProblem::MissingSecondMoment(path.to_string())
                })?;
                self.moments.insert(
                    path.to_string(),
                    Moments {
                        m: tensor(m),
                        v: tensor(v),
                    },
                );
            }
        }
        Ok(())
    }
}

struct StepMapper<'a, AB: AutodiffBackend> {
    optimizer: &'a mut AdamW<AB::InnerBackend>,
    grads: &'a GradientsParams,
    lr: f64,
    grad_scale: f64,
    /// The model's parameters by id, with their HF names.
    params: HashMap<ParamId, HfParam>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for StepMapper<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.get::<AB::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let param = self
            .params
            .remove(&id)
            .expect("every model parameter has an HF name");
        let cfg = self.optimizer.config;
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let device = grad.device();
        let mut p = tensor.inner().reshape([n]);
        let moments = self
            .optimizer
            .moments
            .remove(&param.name)
            .unwrap_or_else(|| Moments {
                m: Tensor::zeros([n], &device),
                v: Tensor::zeros([n], &device),
            });
        let t = self.optimizer.step as i32;
        let bias1 = 1.0 - cfg.beta1.powi(t);
        let bias2 = 1.0 - cfg.beta2.powi(t);
        let decay =
            (cfg.weight_decay > 0.0 && decays(&param)).then_some(1.0 - self.lr * cfg.weight_decay);
        let (p, m, v) = if qa_model::fused::fuses_adamw::<AB::InnerBackend>() {
            // The same f32 operations in the same order as below, in one pass.
            let step = qa_model::fused::AdamWStep {
                grad_scale: self.grad_scale as f32,
                beta1: cfg.beta1 as f32,
                one_minus_beta1: (1.0 - cfg.beta1) as f32,
                beta2: cfg.beta2 as f32,
                one_minus_beta2: (1.0 - cfg.beta2) as f32,
                decay: decay.map(|d| d as f32),
                sqrt_bias2: bias2.sqrt() as f32,
                epsilon: cfg.epsilon as f32,
                step_size: (self.lr / bias1) as f32,
            };
            let [p, m, v] =
                qa_model::fused::adamw([p, grad.reshape([n]), moments.m, moments.v], step);
            (p, m, v)
        } else {
            let g = grad.reshape([n]).mul_scalar(self.grad_scale);
            let m = moments.m.mul_scalar(cfg.beta1) + g.clone().mul_scalar(1.0 - cfg.beta1);
            let v = moments.v.mul_scalar(cfg.beta2) + (g.clone() * g).mul_scalar(1.0 - cfg.beta2);
            if let Some(decay) = decay {
                p = p.mul_scalar(decay);
            }
            let denom = v
                .clone()
                .sqrt()
                .div_scalar(bias2.sqrt())
                .add_scalar(cfg.epsilon);
            let p = p - (m.clone() / denom).mul_scalar(self.lr / bias1);
            (p, m, v)
        };
        self.optimizer.moments.insert(param.name, Moments { m, v });
        let updated = Tensor::<AB, D>::from_inner(p.reshape(dims)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// The L2 norm of all gradients together (torch `clip_grad_norm_`'s `total_norm`).
pub fn global_grad_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    unscaled_grad_norm(model, grads, 1.0)
}

/// The global norm of `grads / scale`: with loss scaling the gradients are scaled up, and
/// squaring them before unscaling would overflow f32 long before the gradients themselves do.
/// Infinite or NaN gradients give a non-finite norm.
pub fn unscaled_grad_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    model: &M,
    grads: &GradientsParams,
    scale: f64,
) -> f64 {
    struct SumSquares<'a, AB: AutodiffBackend> {
        grads: &'a GradientsParams,
        inv_scale: f64,
        total: Option<Tensor<AB::InnerBackend, 1>>,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for SumSquares<'_, AB> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            if let Some(g) = self.grads.get::<AB::InnerBackend, D>(param.id) {
                let g = if self.inv_scale == 1.0 {
                    g
                } else {
                    g.mul_scalar(self.inv_scale)
                };
                let s = (g.clone() * g).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut visitor = SumSquares::<AB> {
        grads,
        inv_scale: 1.0 / scale,
        total: None,
    };
    model.visit(&mut visitor);
    visitor
        .total
        .map(|t| t.into_scalar().elem::<f64>().sqrt())
        .unwrap_or(0.0)
}

use burn::tensor::ElementConversion;

/// torch's clip coefficient: `max_norm / (norm + 1e-6)`, capped at 1.
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(linear_schedule(0, 10, 100, 1.0), 0.0);
        assert_eq!(linear_schedule(5, 10, 100, 1.0), 0.5);
        assert_eq!(linear_schedule(10, 10, 100, 1.0), 1.0);
        assert_eq!(linear_schedule(55, 10, 100, 1.0), 0.5);
        assert_eq!(linear_schedule(100, 10, 100, 1.0), 0.0);
        assert_eq!(linear_schedule(0, 0, 4, 2.0), 2.0);
        assert_eq!(LrScheduler::Linear.lr(55, 10, 100, 1.0), 0.5);
    }

    #[test]
    fn other_schedules_match_hf_get_scheduler() {
        use LrScheduler::*;
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        // Cosine: warmup, then 0.5·(1 + cos(π·progress)); progress = (step − 10) / 90.
        close(Cosine.lr(5, 10, 100, 2.0), 1.0);
        close(Cosine.lr(10, 10, 100, 2.0), 2.0);
        close(Cosine.lr(55, 10, 100, 2.0), 1.0);
        close(
            Cosine.lr(25, 10, 100, 2.0),
            2.0 * 0.5 * (1.0 + (std::f64::consts::PI / 6.0).cos()),
        );
        close(Cosine.lr(100, 10, 100, 2.0), 0.0);
        close(Constant.lr(0, 10, 100, 2.0), 2.0);
        close(ConstantWithWarmup.lr(2, 10, 100, 2.0), 0.4);
        close(ConstantWithWarmup.lr(99, 10, 100, 2.0), 2.0);
    }

    #[test]
    fn no_decay_groups_match_hf() {
        use qa_model::backend::{default_device, Compute};
        use qa_model::ModelConfig;
        let decay_by_name = |config: &ModelConfig| -> BTreeMap<String, bool> {
            let model = QaModel::<Compute>::skeleton(config, &default_device());
            hf_param_names(&model)
                .iter()
                .map(|param| (param.name.clone(), decays(param)))
                .collect()
        };
        let bert = decay_by_name(&ModelConfig::bert(10, 8, 1, 2, 16));
        for (name, decayed) in [
            ("bert.embeddings.word_embeddings.weight", true),
            ("bert.embeddings.token_type_embeddings.weight", true),
            ("bert.embeddings.LayerNorm.weight", false),
            ("bert.embeddings.LayerNorm.bias", false),
            ("bert.encoder.layer.0.attention.self.query.weight", true),
            ("bert.encoder.layer.0.attention.self.query.bias", false),
            (
                "bert.encoder.layer.0.attention.output.LayerNorm.weight",
                false,
            ),
            ("bert.encoder.layer.0.intermediate.dense.weight", true),
            ("bert.encoder.layer.0.output.LayerNorm.bias", false),
            ("qa_outputs.weight", true),
            ("qa_outputs.bias", false),
        ] {
            assert_eq!(bert[name], decayed, "{name}");
        }
        assert_eq!(bert.values().filter(|&&d| d).count(), 1 + 2 + 6 + 1);
        let distilbert = decay_by_name(&ModelConfig::distilbert(10, 8, 1, 2, 16));
        for (name, decayed) in [
            ("distilbert.embeddings.position_embeddings.weight", true),
            ("distilbert.embeddings.LayerNorm.weight", false),
            (
                "distilbert.transformer.layer.0.attention.q_lin.weight",
                true,
            ),
            (
                "distilbert.transformer.layer.0.attention.out_lin.bias",
                false,
            ),
            ("distilbert.transformer.layer.0.sa_layer_norm.weight", false),
            ("distilbert.transformer.layer.0.ffn.lin1.weight", true),
            (
                "distilbert.transformer.layer.0.output_layer_norm.bias",
                false,
            ),
            ("qa_outputs.weight", true),
        ] {
            assert_eq!(distilbert[name], decayed, "{name}");
        }
        assert_eq!(distilbert.values().filter(|&&d| d).count(), 2 + 6 + 1);
    }

    #[test]
    fn clip_scale_is_torchs() {
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
        assert!((clip_scale(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
    }
}
