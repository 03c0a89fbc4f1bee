//! One optimizer step in two parts, shared by the trainer and `qa bench`: [`train_step`] (the
//! micro-batches: forward, loss, backward, gradient accumulation) and [`Update`] (global-norm
//! clipping, loss scaling, AdamW).

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use qa_data::features::PaddedBatch;
use qa_model::model::{MatmulDtype, QaBatch};
use qa_model::QaModel;

use crate::loss::qa_loss;
use crate::loss_scaler::{LossScaler, ScaledStep};
use crate::optim::{clip_scale, unscaled_grad_norm, AdamW};

/// The accumulated gradients of one optimizer step.
pub struct StepGradients {
    pub grads: GradientsParams,
    /// The step's loss: the mean over its micro-batches, unscaled.
    pub loss: f64,
    /// Windows the step read.
    pub windows: usize,
}

/// One micro-batch of a step: this peer's windows of it, and which part of the whole
/// micro-batch (all peers' windows together) they are.
pub struct MicroBatch {
    pub windows: PaddedBatch,
    /// This peer's windows over the micro-batch's windows on all peers: 1 on one device. The
    /// peer's mean loss is weighted by it, so that the peers' gradients *summed* are those of
    /// the whole micro-batch, even when the last one splits unevenly.
    pub share: f64,
}

impl MicroBatch {
    /// A micro-batch read whole by one device.
    pub fn whole(windows: PaddedBatch) -> Self {
        Self {
            windows,
            share: 1.0,
        }
    }
}

/// Forward and backward over one optimizer step's `micro_batches`, accumulating their
/// gradients. Each micro-batch's loss is divided by `micro_batch_count`, the step's micro-batches
/// on all peers (as HF does, so accumulation equals one big batch; a peer may hold none of the
/// last ones), weighted by its share, and multiplied by `loss_scale`. Dropout masks are seeded
/// with `dropout_seed`, `dropout_seed + 1`, ... per micro-batch, so a resumed run draws the same.
///
/// # Shapes
/// Every micro-batch is `[batch, seq]` windows with one start and one end label each.
pub fn train_step<B: AutodiffBackend>(
    model: &QaModel<B>,
    micro_batches: &[MicroBatch],
    micro_batch_count: usize,
    matmul_dtype: MatmulDtype,
    loss_scale: f64,
    dropout_seed: u64,
    device: &B::Device,
) -> StepGradients {
    let mut accumulator = GradientsAccumulator::<QaModel<B>>::new();
    let mut loss_sum = 0.0;
    let mut windows = 0;
    for (i, micro_batch) in micro_batches.iter().enumerate() {
        let padded = &micro_batch.windows;
        let seed = dropout_seed.wrapping_add(i as u64);
        B::seed(device, seed);
        qa_model::dropout::seed_host_masks(seed);
        let labels = |v: &[i64]| {
            Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
        };
        let out = model.forward_with(&QaBatch::from_padded(padded, device), matmul_dtype);
        let loss = qa_loss(
            &out,
            labels(&padded.start_positions),
            labels(&padded.end_positions),
        )
        .div_scalar(micro_batch_count as f64);
        // On one device the share is 1, and the loss is left bit for bit as it was.
        let loss = if micro_batch.share == 1.0 {
            loss
        } else {
            loss.mul_scalar(micro_batch.share)
        };
        loss_sum += loss.clone().into_scalar().elem::<f64>();
        let scaled = if loss_scale == 1.0 {
            loss
        } else {
            loss.mul_scalar(loss_scale)
        };
        accumulator.accumulate(model, GradientsParams::from_grads(scaled.backward(), model));
        windows += padded.batch;
    }
    StepGradients {
        grads: accumulator.grads(),
        loss: loss_sum,
        windows,
    }
}

/// The update half of a step: clipping, loss scaling and the optimizer, with their state.
pub struct Update<B: Backend> {
    pub optimizer: AdamW<B>,
    /// Dynamic loss scaling (fp16); `None` trains unscaled.
    pub scaler: Option<LossScaler>,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateReport {
    /// The global norm of the true (unscaled) gradients, before clipping.
    pub grad_norm: f64,
    pub outcome: UpdateOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Applied,
    /// Loss scaling: the gradients overflowed, the step was skipped and the scale backed off.
    Skipped,
    /// No loss scaling and non-finite gradients: nothing was applied; training has diverged.
    NonFinite,
}

impl<B: Backend> Update<B> {
    /// The factor the loss is multiplied by before backward.
    pub fn loss_scale(&self) -> f64 {
        self.scaler.map_or(1.0, |s| s.scale)
    }

    /// Applies `grads` (computed with [`Self::loss_scale`]) to `model` at learning rate `lr`.
    pub fn apply<AB>(
        &mut self,
        model: QaModel<AB>,
        grads: &GradientsParams,
        lr: f64,
    ) -> (QaModel<AB>, UpdateReport)
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let scale = self.loss_scale();
        // The norm of the true gradients; unscaling is folded into the update's factor.
        let grad_norm = unscaled_grad_norm(&model, grads, scale);
        let verdict = match &mut self.scaler {
            Some(scaler) => scaler.update(grad_norm),
            None => ScaledStep::Apply,
        };
        let outcome = match verdict {
            ScaledStep::Skip => UpdateOutcome::Skipped,
            ScaledStep::Apply if !grad_norm.is_finite() => UpdateOutcome::NonFinite,
            ScaledStep::Apply => UpdateOutcome::Applied,
        };
        let model = if outcome == UpdateOutcome::Applied {
            let factor = clip_scale(grad_norm, self.max_grad_norm) / scale;
            self.optimizer.step(lr, model, grads, factor)
        } else {
            model
        };
        (model, UpdateReport { grad_norm, outcome })
    }
}
