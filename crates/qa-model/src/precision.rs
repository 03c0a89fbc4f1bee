//! Inference precision (`--precision f32|bf16|int8` of `qa eval`, `qa predict`, `qa serve` and
//! `qa bench`): what the linear layers' and the attention's products compute in when a model
//! only answers.
//!
//! - `f32`: the backend's own products (the default; what training uses).
//! - `int8`: dynamic quantization as `torch.ao.quantization.quantize_dynamic` and ONNX Runtime's
//!   `quantize_dynamic` do it, at load time from any f32/f16/bf16 checkpoint: each linear layer's
//!   weight symmetric int8 per output channel, activations asymmetric u8 per row (token) on the
//!   fly, int32 accumulation, dequantization and bias fused into the product
//!   ([`crate::fused::low_precision`]), input channels smoothed (SmoothQuant) by what the load's
//!   discovery pass saw. Products that contract (d_in > d_out: the feed-forward's second
//!   product, the published outlier layer) run in bf16 where the CPU has AVX512-BF16 (or
//!   `QA_LOW_PRECISION_KERNELS=emulated` asks for those kernels' arithmetic), else f32.
//! - `bf16`: each linear layer's product on bf16 operands with f32 accumulation, weights rounded
//!   once at load.
//!
//! In both, the attention's q·kᵀ and p·v run on bf16 operands where the CPU has AVX512-BF16 or
//! `QA_LOW_PRECISION_KERNELS=emulated` asks for it ([`PreparedWeights::attention_products`]);
//! embeddings, LayerNorm, softmax and the QA head stay in f32, as in PyTorch's dynamic
//! quantization of `nn.Linear`.

use std::fmt;
use std::str::FromStr;
#[cfg(feature = "cpu")]
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

#[cfg(feature = "cpu")]
use burn::module::ParamId;

#[cfg(feature = "cpu")]
use crate::fused::low_precision::PreparedWeight;

/// The precision of a model's inference products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InferencePrecision {
    #[default]
    F32,
    Bf16,
    Int8,
}

impl InferencePrecision {
    /// Every precision, in the order `--help` lists them.
    pub const ALL: [InferencePrecision; 3] = [
        InferencePrecision::F32,
        InferencePrecision::Bf16,
        InferencePrecision::Int8,
    ];

    /// The flag value: `f32`, `bf16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            InferencePrecision::F32 => "f32",
            InferencePrecision::Bf16 => "bf16",
            InferencePrecision::Int8 => "int8",
        }
    }
}

impl fmt::Display for InferencePrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--precision` value that is none of [`InferencePrecision::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?} (expected f32, bf16 or int8)")]
pub struct UnknownPrecision(pub String);

impl FromStr for InferencePrecision {
    type Err = UnknownPrecision;
    fn from_str(name: &str) -> Result<Self, UnknownPrecision> {
        InferencePrecision::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownPrecision(name.to_string()))
    }
}

/// The precisions that prepare weights (made only on the host backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "cpu"), allow(dead_code))]
enum LowPrecision {
    Bf16,
    Int8,
}

/// One model's linear-layer weights prepared for the host's int8 or bf16 products, each on the
/// first product that reads it (so at load: [`crate::QaModel::with_precision`] runs one tiny
/// forward pass), keyed by the parameter's id, so ALBERT's shared layers are prepared once and
/// every family is served without code of its own.
pub struct PreparedWeights {
    precision: LowPrecision,
    #[cfg(feature = "cpu")]
    weights: RwLock<HashMap<ParamId, Arc<PreparedWeight>>>,
    /// While the load's discovery pass runs ([`Self::begin_discovery`]): the linear weights it
    /// met (which then run in f32 and are prepared afterwards, one at a time) and the largest
    /// |input| each saw per input channel.
    #[cfg(feature = "cpu")]
    discovered: Mutex<Option<HashMap<ParamId, Vec<f32>>>>,
}

impl fmt::Debug for PreparedWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PreparedWeights({})", self.precision())
    }
}

impl PreparedWeights {
    /// An empty table for `precision` on the host backend (`None` for f32: nothing to prepare).
    #[cfg(feature = "cpu")]
    pub(crate) fn new(precision: InferencePrecision) -> Option<Self> {
        let precision = match precision {
            InferencePrecision::F32 => return None,
            InferencePrecision::Bf16 => LowPrecision::Bf16,
            InferencePrecision::Int8 => LowPrecision::Int8,
        };
        Some(PreparedWeights {
            precision,
            weights: RwLock::new(HashMap::new()),
            discovered: Mutex::new(None),
        })
    }

    pub fn precision(&self) -> InferencePrecision {
        match self.precision {
            LowPrecision::Bf16 => InferencePrecision::Bf16,
            LowPrecision::Int8 => InferencePrecision::Int8,
        }
    }

    /// What the attention's q·kᵀ and p·v compute in: bf16 (in int8 inference too, as the
    /// issue's "attention products may use bf16" allows) where the CPU has AVX512-BF16 or
    /// `QA_LOW_PRECISION_KERNELS=emulated` asks for its arithmetic, else f32 (an emulation
    /// would be slower than f32).
    pub fn attention_products(&self) -> crate::fused::AttentionProducts {
        #[cfg(feature = "cpu")]
        {
            use crate::fused::low_precision::{kernels, LowPrecisionKernels};
            if crate::fused::bf16_gemm::available() || kernels() == LowPrecisionKernels::Emulated {
                return crate::fused::AttentionProducts::Bf16;
            }
        }
        crate::fused::AttentionProducts::F32
    }

    /// How many weights are prepared.
    pub fn len(&self) -> usize {
        #[cfg(feature = "cpu")]
        {
            self.weights.read().map_or(0, |w| w.len())
        }
        #[cfg(not(feature = "cpu"))]
        {
            0
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether parameter `id` is prepared here (and so no longer read in f32).
    pub fn contains(&self, id: burn::module::ParamId) -> bool {
        #[cfg(feature = "cpu")]
        {
            self.weights
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&id)
        }
        #[cfg(not(feature = "cpu"))]
        {
            let _ = id;
            false
        }
    }

    /// Starts the discovery pass: until [`Self::end_discovery`], linear layers multiply in f32
    /// and report their weight and input ([`Self::observe`]) instead of preparing the weight.
    /// The model then prepares each weight and releases its f32 values before the next (its
    /// peak memory stays that of the f32 model), and int8 smooths each layer's input channels
    /// by what the pass saw ([`crate::fused::low_precision::smoothing`]).
    #[cfg(feature = "cpu")]
    pub(crate) fn begin_discovery(&self) {
        *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
    }

    /// Ends the discovery pass; returns each linear weight it met with the largest |input| per
    /// input channel.
    #[cfg(feature = "cpu")]
    pub(crate) fn end_discovery(&self) -> HashMap<ParamId, Vec<f32>> {
        let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        discovered.take().unwrap_or_default()
    }

    /// Whether the discovery pass is running.
    #[cfg(feature = "cpu")]
    pub(crate) fn discovering(&self) -> bool {
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// During the discovery pass, records that weight `id` multiplied inputs whose largest
    /// |value| per input channel is `input_max`.
    #[cfg(feature = "cpu")]
    pub(crate) fn observe(&self, id: ParamId, input_max: Vec<f32>) {
        let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = discovered.as_mut() {
            let seen = seen.entry(id).or_insert_with(|| vec![0.0; input_max.len()]);
            for (s, m) in seen.iter_mut().zip(input_max) {
                *s = s.max(m);
            }
        }
    }

    /// Prepares parameter `id` from its row-major `[d_in, d_out]` values, unless it already is;
    /// `input_max` is what [`Self::end_discovery`] returned for it.
    #[cfg(feature = "cpu")]
    pub(crate) fn prepare(
        &self,
        id: ParamId,
        values: Vec<f32>,
        d_in: usize,
        d_out: usize,
        input_max: &[f32],
    ) {
        let _ = self.get_or_prepare_seen(id, || (values, d_in, d_out), Some(input_max));
    }

    /// The weight of parameter `id`, prepared from `weight()` (its row-major values, d_in and
    /// d_out) the first time it is asked for.
    #[cfg(feature = "cpu")]
    pub(crate) fn get_or_prepare(
        &self,
        id: ParamId,
        weight: impl FnOnce() -> (Vec<f32>, usize, usize),
    ) -> Arc<PreparedWeight> {
        self.get_or_prepare_seen(id, weight, None)
    }

    /// [`Self::get_or_prepare`], with the inputs' per-channel maxima when the discovery pass
    /// saw them (int8 then smooths the layer's input channels).
    #[cfg(feature = "cpu")]
    fn get_or_prepare_seen(
        &self,
        id: ParamId,
        weight: impl FnOnce() -> (Vec<f32>, usize, usize),
        input_max: Option<&[f32]>,
    ) -> Arc<PreparedWeight> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map itself is whole.
        if let Some(found) = self
            .weights
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return found.clone();
        }
        let (values, d_in, d_out) = weight();
        let prepared = Arc::new(match self.precision {
            // The products that contract (d_in > d_out: the feed-forward's second product, fed
            // by GELU's long-tailed outputs) stay out of int8: in int8 they moved MiniLM's
            // COVID-QA answers most (bench/results/precision-cpu-2core.md).
            LowPrecision::Int8 if d_in > d_out => {
                PreparedWeight::int8_contracting(values, d_in, d_out)
            }
            LowPrecision::Int8 => PreparedWeight::int8(&values, d_in, d_out, input_max),
            LowPrecision::Bf16 => PreparedWeight::bf16(&values, d_in, d_out),
        });
        self.weights
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_insert(prepared)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for precision in InferencePrecision::ALL {
            assert_eq!(precision.name().parse(), Ok(precision));
        }
        assert_eq!(
            "fp16".parse::<InferencePrecision>(),
            Err(UnknownPrecision("fp16".into()))
        );
    }
}
