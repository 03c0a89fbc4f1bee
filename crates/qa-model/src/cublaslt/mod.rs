//! The GPU engine: on the CUDA backend, every linear layer and attention's batched products run
//! through cuBLASLt (bf16/fp16 inputs with f32 accumulation, f32 exact or on TF32 when asked,
//! the linear bias fused into the product's epilogue), forward and backward.
//!
//! Why: Burn 0.20.1's own GEMM kernels reach ~100 TFLOP/s bf16 on an H100 where cuBLAS reaches
//! ~790, no Burn release has a cuBLAS path, and newer ones cannot be built offline (ARCHITECTURE.md).
//!
//! * [`plan`] maps a product of row-major or strided tensors onto cuBLASLt's column-major
//!   parameters; plain Rust, tested on the CPU against a CPU interpreter of cuBLASLt's
//!   semantics (`interpreter.rs`).
//! * `library.rs` (CUDA builds) holds the cuBLASLt handle and, per call shape, the descriptors
//!   and the heuristic's algorithm.
//! * `ops.rs` (CUDA builds) is the operation on each layer of the backend: CubeCL (queued on
//!   CubeCL's own stream, no host synchronisation), Fusion (a custom operation) and Autodiff
//!   (its own backward through the same operation).
//!
//! cuBLASLt's GELU epilogue is the tanh approximation; the families use the exact erf GELU, so
//! GELU stays in Fusion's element-wise kernels. `QA_GPU_PRODUCTS=burn` runs Burn's own
//! products instead (to compare, or where cuBLASLt is missing).

pub mod plan;

#[cfg(test)]
mod interpreter;
#[cfg(feature = "cuda")]
mod library;
#[cfg(feature = "cuda")]
mod ops;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

/// Whether f32 products may run on TF32 tensor cores (inputs rounded to 10 mantissa bits).
/// Off by default: f32 then equals PyTorch's f32 to rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tf32 {
    #[default]
    Off,
    On,
}

static TF32: AtomicBool = AtomicBool::new(false);

/// `--tf32` asked of a build without the GPU engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("--tf32 needs the CUDA build of qa (cargo build --release --features cuda): the CPU products are exact f32")]
pub struct Tf32Unavailable;

/// Sets [`Tf32`] for the products of this process from now on; TF32 on a CPU build is an
/// error (it has no TF32 to turn on).
pub fn set_tf32(tf32: Tf32) -> Result<(), Tf32Unavailable> {
    if tf32 == Tf32::On && !cfg!(feature = "cuda") {
        return Err(Tf32Unavailable);
    }
    TF32.store(tf32 == Tf32::On, Ordering::Relaxed);
    Ok(())
}

/// The accumulation f32 products ask for, as [`set_tf32`] left it.
pub fn compute() -> plan::Compute {
    match TF32.load(Ordering::Relaxed) {
        true => plan::Compute::F32FastTf32,
        false => plan::Compute::F32,
    }
}

/// Which engine runs the CUDA build's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// cuBLASLt (the default where `libcublasLt` loads).
    CuBlasLt,
    /// Burn's own GEMM kernels (`QA_GPU_PRODUCTS=burn`; every CPU build).
    Burn,
}

/// The variable that picks [`Engine::Burn`] over cuBLASLt.
pub const ENGINE_VARIABLE: &str = "QA_GPU_PRODUCTS";

/// The engine of this process: cuBLASLt unless `QA_GPU_PRODUCTS=burn` or the library does not
/// load (then a warning, once).
pub fn engine() -> Engine {
    #[cfg(feature = "cuda")]
    {
        static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
        *ENGINE.get_or_init(|| {
            match std::env::var(ENGINE_VARIABLE).as_deref() {
                Ok("burn") => return Engine::Burn,
                Ok("cublaslt") | Err(_) => {}
                Ok(other) => tracing::warn!(
                    "{ENGINE_VARIABLE}={other:?} is neither cublaslt nor burn: using cublaslt"
                ),
            }
            // SAFETY: only tries to open the shared library.
            if unsafe { cudarc::cublaslt::sys::is_culib_present() } {
                Engine::CuBlasLt
            } else {
                tracing::warn!(
                    "libcublasLt was not found (LD_LIBRARY_PATH): products run on Burn's kernels"
                );
                Engine::Burn
            }
        })
    }
    #[cfg(not(feature = "cuda"))]
    Engine::Burn
}

/// What `Err` gives back when the engine does not take a product: the operands, unchanged.
pub(crate) type Declined<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<Tensor<B, 1>>);

/// `lhs · rhs (+ bias)` through cuBLASLt when `B` is the CUDA backend (with or without
/// autodiff) and the engine is cuBLASLt, the operands cast to `inputs` first when given; the
/// output is in `output`, the bias (if any) must be too. `Err` hands the operands back.
///
/// # Shapes
///
/// - lhs: `[batch…, m, k]`; rhs: `[batch…, k, n]`; bias: `[n]`; output: `[batch…, m, n]`
pub(crate) fn matmul<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
    bias: Option<Tensor<B, 1>>,
    inputs: Option<FloatDType>,
    output: FloatDType,
) -> Result<Tensor<B, D>, Declined<B, D>> {
    #[cfg(feature = "cuda")]
    if engine() == Engine::CuBlasLt && D >= 2 {
        if let Some(taken) = cuda::Taken::of(&lhs, &rhs, bias.as_ref(), inputs, output) {
            return Ok(taken.run(lhs, rhs, bias, inputs));
        }
    }
    let _ = (inputs, output);
    Err((lhs, rhs, bias))
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::any::TypeId;

    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};

    use super::ops::{self, Fused, Precision, Tracked};
    use crate::backend::retype;

    fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
        t.into_primitive().tensor()
    }

    fn tensor<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(p))
    }

    /// Which layer of the CUDA backend `B` is.
    enum Layer {
        Fused,
        Tracked,
    }

    /// A product the engine takes: on which layer, in which precision.
    pub(super) struct Taken {
        layer: Layer,
        precision: Precision,
    }

    impl Taken {
        /// Whether the engine takes `lhs · rhs (+ bias)`: `B` is the CUDA backend, the types
        /// are ones cuBLASLt multiplies (and the bias is in the output's), and under autodiff
        /// no batch dimension is broadcast (its gradient would need a sum).
        pub(super) fn of<B: Backend, const D: usize>(
            lhs: &Tensor<B, D>,
            rhs: &Tensor<B, D>,
            bias: Option<&Tensor<B, 1>>,
            inputs: Option<FloatDType>,
            output: FloatDType,
        ) -> Option<Self> {
            let output = DType::from(output);
            let layer = if TypeId::of::<B>() == TypeId::of::<Fused>() {
                Layer::Fused
            } else if TypeId::of::<B>() == TypeId::of::<Tracked>()
                && ops::same_batch(&lhs.dims(), &rhs.dims())
            {
                Layer::Tracked
            } else {
                return None;
            };
            let operands = match inputs {
                Some(dtype) => DType::from(dtype),
                None if lhs.dtype() == rhs.dtype() => lhs.dtype(),
                None => return None,
            };
            let types_fit = [lhs.dtype(), rhs.dtype(), operands, output]
                .into_iter()
                .all(|dtype| ops::element(dtype).is_some())
                && bias.is_none_or(|b| b.dtype() == output);
            types_fit.then(|| Taken {
                layer,
                precision: Precision {
                    output,
                    compute: super::compute(),
                },
            })
        }

        pub(super) fn run<B: Backend, const D: usize>(
            self,
            lhs: Tensor<B, D>,
            rhs: Tensor<B, D>,
            bias: Option<Tensor<B, 1>>,
            inputs: Option<FloatDType>,
        ) -> Tensor<B, D> {
            let (lhs, rhs) = match inputs {
                Some(dtype) => (lhs.cast(dtype), rhs.cast(dtype)),
                None => (lhs, rhs),
            };
            let (lhs, rhs) = (primitive(lhs), primitive(rhs));
            let bias = bias.map(primitive);
            let out = match self.layer {
                Layer::Fused => retype(ops::fused_matmul(
                    retype(lhs),
                    retype(rhs),
                    bias.map(retype),
                    self.precision,
                )),
                Layer::Tracked => retype(ops::tracked_matmul(
                    retype(lhs),
                    retype(rhs),
                    bias.map(retype),
                    self.precision,
                )),
            };
            tensor::<B, D>(out)
        }
    }
}
