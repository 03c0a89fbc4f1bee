//! The Burn backend, chosen here and nowhere else: `--features cuda` selects CUDA, otherwise the
//! CPU (NdArray) backend. Every other crate names these aliases instead of a concrete backend.

#[cfg(feature = "cuda")]
mod chosen {
    pub type Compute = burn::backend::Cuda<f32, i32>;
    pub const NAME: &str = "cuda";
    /// Batches are padded to multiples of 64 tokens: a handful of shapes (6 at 384), so the
    /// kernels CubeCL compiles and autotunes, and cuBLASLt's plans, are made once each.
    pub const SEQ_BUCKET: usize = 64;
}

/// The CPU backend: what CPU builds compute with, and what [`crate::fused`] has kernels for.
#[cfg(feature = "cpu")]
pub type HostCompute = burn::backend::NdArray<f32, i64>;

#[cfg(not(feature = "cuda"))]
mod chosen {
    pub type Compute = super::HostCompute;
    pub const NAME: &str = "cpu (ndarray)";
    /// The CPU compiles nothing per shape: batches pad to their longest window only.
    pub const SEQ_BUCKET: usize = 1;
}

/// Backend for inference (f32 compute).
pub type Compute = chosen::Compute;
/// Backend for training (autodiff over [`Compute`]).
pub type Train = burn::backend::Autodiff<Compute>;
/// Human name of the compiled-in backend, for logs and reports.
pub const BACKEND_NAME: &str = chosen::NAME;
/// The multiple of tokens batches are padded to (`qa_data::features::pad_batch_in_buckets`).
pub const SEQ_BUCKET: usize = chosen::SEQ_BUCKET;

pub type Device = <Compute as burn::tensor::backend::Backend>::Device;

/// The default device of the compiled-in backend (GPU 0 for CUDA).
pub fn default_device() -> Device {
    Device::default()
}

/// A `--device` this binary cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("bad CUDA device index in {0:?} (expected cuda:N)")]
    BadIndex(String),
    #[error("device {0:?} is not available: this binary was built with the CUDA backend (use cuda or cuda:N)")]
    NotInCudaBuild(String),
    #[error(
        "device {0:?} needs a build with the CUDA backend: cargo build --release --features cuda"
    )]
    NeedsCudaBuild(String),
    #[error("unknown device {0:?} (expected cpu, cuda or cuda:N)")]
    Unknown(String),
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N` against the compiled-in backend.
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    let spec = spec.trim();
    #[cfg(feature = "cuda")]
    {
        if spec == "cuda" || spec == "auto" {
            return Ok(Device::default());
        }
        if let Some(n) = spec.strip_prefix("cuda:") {
            let index: usize = n
                .parse()
                .map_err(|_| DeviceError::BadIndex(spec.to_string()))?;
            return Ok(burn::backend::cuda::CudaDevice::new(index));
        }
        Err(DeviceError::NotInCudaBuild(spec.to_string()))
    }
    #[cfg(not(feature = "cuda"))]
    {
        match spec {
            "cpu" | "auto" => Ok(Device::default()),
            _ if spec.starts_with("cuda") => Err(DeviceError::NeedsCudaBuild(spec.to_string())),
            _ => Err(DeviceError::Unknown(spec.to_string())),
        }
    }
}

/// Whether `B` draws random tensors on the host, element by element (NdArray, also under
/// autodiff): [`crate::dropout`] then draws its masks itself.
pub fn draws_random_on_host<B: burn::tensor::backend::Backend>() -> bool {
    #[cfg(feature = "cpu")]
    {
        std::any::TypeId::of::<B::Device>()
            == std::any::TypeId::of::<burn::backend::ndarray::NdArrayDevice>()
    }
    #[cfg(not(feature = "cpu"))]
    {
        false
    }
}

/// `value` as `U`, which the caller has established it is (by comparing `TypeId`s of backends:
/// how the engines beside Burn, [`crate::fused`] and [`crate::cublaslt`], find their backend
/// inside model code generic over `B`).
pub(crate) fn retype<T: 'static, U: 'static>(value: T) -> U {
    match (Box::new(value) as Box<dyn std::any::Any>).downcast::<U>() {
        Ok(value) => *value,
        Err(_) => unreachable!("retype between different types"),
    }
}
