//! torch `GradScaler`'s dynamic loss scaling for fp16: multiply the loss by a scale so small
//! gradients do not flush to zero; skip a step whose gradients overflowed and back the scale
//! off; grow it again after `growth_interval` good steps in a row.

use serde::{Deserialize, Serialize};

use crate::config::LossScaling;

/// The scaler's state, saved in every checkpoint so a resumed run scales as the original.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub settings: LossScaling,
    /// The factor the loss is multiplied by now.
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped because their gradients overflowed.
    pub skipped_steps: usize,
}

/// What to do with a step's gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaledStep {
    Apply,
    /// The gradients overflowed: leave the weights and the optimizer as they are.
    Skip,
}

impl LossScaler {
    pub fn new(settings: LossScaling) -> Self {
        Self {
            settings,
            scale: settings.init_scale,
            good_steps: 0,
            skipped_steps: 0,
        }
    }

    /// Updates the scale after a step whose unscaled gradient norm is `grad_norm`, and says
    /// whether the step may be applied.
    pub fn update(&mut self, grad_norm: f64) -> ScaledStep {
        if !grad_norm.is_finite() {
            self.skipped_steps += 1;
            self.scale *= self.settings.backoff_factor;
            self.good_steps = 0;
            return ScaledStep::Skip;
        }
        self.good_steps += 1;
        if self.good_steps == self.settings.growth_interval {
            self.scale *= self.settings.growth_factor;
            self.good_steps = 0;
        }
        ScaledStep::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_overflow_and_grows_after_good_steps() {
        let mut scaler = LossScaler::new(LossScaling {
            init_scale: 8.0,
            growth_interval: 2,
            ..Default::default()
        });
        assert_eq!(scaler.update(f64::INFINITY), ScaledStep::Skip);
        assert_eq!((scaler.scale, scaler.skipped_steps), (4.0, 1));
        assert_eq!(scaler.update(1.0), ScaledStep::Apply);
        assert_eq!(scaler.scale, 4.0);
        assert_eq!(scaler.update(1.0), ScaledStep::Apply);
        assert_eq!((scaler.scale, scaler.good_steps), (8.0, 0));
        assert_eq!(scaler.update(f64::NAN), ScaledStep::Skip);
        assert_eq!((scaler.scale, scaler.skipped_steps), (4.0, 2));
    }
}
