//! cuBLASLt itself, through cudarc's raw bindings (`libcublasLt.so` is loaded at run time, so
//! building needs no CUDA toolkit): one handle per device, and per planned call shape
//! ([`Call`]) its matmul descriptor, matrix layouts and the heuristic's algorithm, made once and
//! reused, so that a training step asks nothing of cuBLASLt but the products themselves.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;

use super::plan::{Call, Compute, Element, Layout, Op};

/// The workspace each product may use (cuBLASLt's recommendation for Hopper is 32 MiB).
pub(super) const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLASLt call that failed, with the status it returned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cuBLASLt {step} failed: {status:?}")]
pub struct LtError {
    step: &'static str,
    status: sys::cublasStatus_t,
}

fn step(name: &'static str) -> impl Fn(lt::CublasError) -> LtError {
    move |e| LtError {
        step: name,
        status: e.0,
    }
}

fn data_type(element: Element) -> sys::cudaDataType {
    match element {
        Element::F32 => sys::cudaDataType::CUDA_R_32F,
        Element::Bf16 => sys::cudaDataType::CUDA_R_16BF,
        Element::F16 => sys::cudaDataType::CUDA_R_16F,
    }
}

/// `cublasOperation_t` (an int32 attribute; cudarc's cuBLASLt bindings leave the enum to
/// cuBLAS's): `CUBLAS_OP_N` = 0, `CUBLAS_OP_T` = 1.
fn operation(op: Op) -> i32 {
    match op {
        Op::None => 0,
        Op::Transpose => 1,
    }
}

/// Sets one attribute from a plain value.
///
/// # Safety
/// `set` must be a cuBLASLt attribute setter of a live object, and `T` the attribute's type.
unsafe fn set<T>(
    set: impl FnOnce(*const c_void, usize) -> Result<(), lt::CublasError>,
    value: T,
    name: &'static str,
) -> Result<(), LtError> {
    set(
        &value as *const T as *const c_void,
        std::mem::size_of::<T>(),
    )
    .map_err(step(name))
}

/// The alignment in bytes (a power of two, at most 256) of every address A, B and D take in a
/// product's calls: the heuristic may only pick algorithms that accept them.
pub(super) type Alignments = [u32; 3];

/// The descriptors and algorithm of one call shape.
struct Prepared {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

fn layout(layout: &Layout) -> Result<sys::cublasLtMatrixLayout_t, LtError> {
    let made = lt::create_matrix_layout(
        data_type(layout.element),
        layout.rows,
        layout.cols,
        layout.ld,
    )
    .map_err(step("cublasLtMatrixLayoutCreate"))?;
    if layout.batch_count > 1 {
        let attribute = |attr| {
            move |buf, size| unsafe { lt::set_matrix_layout_attribute(made, attr, buf, size) }
        };
        // SAFETY: `made` is live; the attributes are int32 and int64 as documented.
        unsafe {
            set(
                attribute(sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT),
                layout.batch_count,
                "batch count",
            )?;
            set(
                attribute(
                    sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                ),
                layout.batch_stride,
                "batch stride",
            )?;
        }
    }
    Ok(made)
}

impl Prepared {
    fn new(
        handle: sys::cublasLtHandle_t,
        call: &Call,
        alignments: Alignments,
    ) -> Result<Self, LtError> {
        let compute = match call.compute {
            Compute::F32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            Compute::F32FastTf32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        };
        let desc = lt::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F)
            .map_err(step("cublasLtMatmulDescCreate"))?;
        let attribute =
            |attr| move |buf, size| unsafe { lt::set_matmul_desc_attribute(desc, attr, buf, size) };
        use sys::cublasLtMatmulDescAttributes_t as Desc;
        // SAFETY: `desc` is live; each value has its attribute's documented type.
        unsafe {
            set(
                attribute(Desc::CUBLASLT_MATMUL_DESC_TRANSA),
                operation(call.trans_a),
                "transa",
            )?;
            set(
                attribute(Desc::CUBLASLT_MATMUL_DESC_TRANSB),
                operation(call.trans_b),
                "transb",
            )?;
            if call.bias {
                set(
                    attribute(Desc::CUBLASLT_MATMUL_DESC_EPILOGUE),
                    sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
                    "epilogue",
                )?;
                set(
                    attribute(Desc::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE),
                    data_type(call.d.element),
                    "bias type",
                )?;
            }
        }
        let (a, b, d) = (layout(&call.a)?, layout(&call.b)?, layout(&call.d)?);
        let preference =
            lt::create_matmul_pref().map_err(step("cublasLtMatmulPreferenceCreate"))?;
        let preferred = |attr| {
            move |buf, size| unsafe { lt::set_matmul_pref_attribute(preference, attr, buf, size) }
        };
        use sys::cublasLtMatmulPreferenceAttributes_t as Pref;
        // SAFETY: all descriptors are live; the workspace limit is a uint64, alignments uint32.
        let heuristic = unsafe {
            set(
                preferred(Pref::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES),
                WORKSPACE_BYTES as u64,
                "workspace limit",
            )?;
            let [a_align, b_align, d_align] = alignments;
            for (attr, bytes) in [
                (Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, a_align),
                (Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, b_align),
                (Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, d_align),
                (Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, d_align),
            ] {
                set(preferred(attr), bytes, "alignment")?;
            }
            let found = lt::get_matmul_algo_heuristic(handle, desc, a, b, d, d, preference)
                .map_err(step("cublasLtMatmulAlgoGetHeuristic"));
            let _ = lt::destroy_matmul_pref(preference);
            found?
        };
        Ok(Prepared {
            desc,
            a,
            b,
            d,
            algo: heuristic.algo,
        })
    }
}

/// One device's cuBLASLt handle and the call shapes prepared on it.
struct Device {
    handle: sys::cublasLtHandle_t,
    prepared: HashMap<(Call, Alignments), Prepared>,
}

// SAFETY: cuBLASLt handles and descriptors may be used from any thread; access is serialised
// by `DEVICES`' mutex.
unsafe impl Send for Device {}

static DEVICES: Mutex<Option<HashMap<usize, Device>>> = Mutex::new(None);

/// Device pointers of one call's operands (A is our `rhs`, B our `lhs`, D our `out`).
pub(super) struct Pointers {
    pub a: u64,
    pub b: u64,
    pub d: u64,
    pub bias: Option<u64>,
    pub workspace: u64,
}

/// Queues `call` on `stream` of device `device` (its CUDA context must be current).
///
/// # Safety
/// The pointers must address live device memory of the sizes `call` reads and writes, and
/// stay allocated until the stream has run the product.
pub(super) unsafe fn matmul(
    device: usize,
    call: &Call,
    alignments: Alignments,
    pointers: &Pointers,
    stream: *mut c_void,
) -> Result<(), LtError> {
    let mut devices = DEVICES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let devices = devices.get_or_insert_with(HashMap::new);
    let device = match devices.entry(device) {
        std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Device {
            handle: lt::create_handle().map_err(step("cublasLtCreate"))?,
            prepared: HashMap::new(),
        }),
    };
    let handle = device.handle;
    let prepared = match device.prepared.entry((*call, alignments)) {
        std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::hash_map::Entry::Vacant(entry) => {
            entry.insert(Prepared::new(handle, call, alignments)?)
        }
    };
    if let Some(bias) = pointers.bias {
        // The bias pointer belongs to the descriptor: set for this call, under the lock.
        set(
            |buf, size| {
                lt::set_matmul_desc_attribute(
                    prepared.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    buf,
                    size,
                )
            },
            bias as *const c_void,
            "bias pointer",
        )?;
    }
    let (alpha, beta) = (1f32, 0f32);
    lt::matmul(
        handle,
        prepared.desc,
        &alpha as *const f32 as *const c_void,
        &beta as *const f32 as *const c_void,
        pointers.a as *const c_void,
        prepared.a,
        pointers.b as *const c_void,
        prepared.b,
        pointers.d as *const c_void,
        prepared.d,
        pointers.d as *mut c_void,
        prepared.d,
        &prepared.algo,
        pointers.workspace as *mut c_void,
        WORKSPACE_BYTES,
        stream as sys::cudaStream_t,
    )
    .map_err(step("cublasLtMatmul"))
}
