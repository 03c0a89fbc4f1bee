//! The cuBLASLt product as an operation of each layer of the CUDA backend:
//! - on `CubeBackend<CudaRuntime>` ([`cube_matmul`]): plan the call from the tensors' shapes
//!   and strides, allocate the output through CubeCL, and queue cuBLASLt on the stream that
//!   owns the output (the vendored cubecl-cuda exposes it), with no host synchronisation;
//! - under Fusion ([`fused_matmul`]): a custom operation, so that fusion's streams order it
//!   with the element-wise kernels around it (as burn-vision's custom operations do);
//! - under Autodiff ([`tracked_matmul`]): its own backward, whose two products (dX = dY·Wᵀ,
//!   dW = Xᵀ·dY, transposes as views) are the same operation, never Burn's matmul.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::NodeId;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use cubecl_cuda::CudaRuntime;

use super::library::{self, Pointers, WORKSPACE_BYTES};
use super::plan::{
    alignment, output_dims, plan, Compute, Element, Operand, PlanError, Product, Strided,
};

/// The CUDA backend's layers: CubeCL, Fusion over it (inference), Autodiff over that (training).
pub(super) type Cube = CubeBackend<CudaRuntime, f32, i32, u8>;
pub(super) type Fused = Fusion<Cube>;
pub(super) type Tracked = burn_autodiff::Autodiff<Fused>;

type CubePrimitive = CubeTensor<CudaRuntime>;
type FusedPrimitive = <Fused as Backend>::FloatTensorPrimitive;
type TrackedPrimitive = <Tracked as Backend>::FloatTensorPrimitive;

/// What one product computes besides its operands: the output's type and the accumulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Precision {
    pub output: DType,
    pub compute: Compute,
}

pub(super) fn element(dtype: DType) -> Option<Element> {
    match dtype {
        DType::F32 => Some(Element::F32),
        DType::BF16 => Some(Element::Bf16),
        DType::F16 => Some(Element::F16),
        _ => None,
    }
}

/// The planner's description of `lhs · rhs` as these tensors lie in memory.
fn product(lhs: &CubePrimitive, rhs: &CubePrimitive, precision: Precision, bias: bool) -> Product {
    fn strided(t: &CubePrimitive) -> Strided<'_> {
        Strided {
            dims: &t.shape.dims,
            strides: &t.strides,
        }
    }
    Product::of_tensors(
        strided(lhs),
        strided(rhs),
        element(lhs.dtype).expect("Taken::of admits cuBLASLt's input types only"),
        element(precision.output).expect("Taken::of admits cuBLASLt's output types only"),
        precision.compute,
        bias,
    )
}

/// `lhs · rhs (+ bias)` through cuBLASLt on the CubeCL backend.
///
/// # Shapes
///
/// - lhs: `[batch…, m, k]`; rhs: `[batch…, k, n]` (batch dimensions equal or 1); bias: `[n]`
///   in the output's type; output: `[batch…, m, n]`, contiguous
pub(super) fn cube_matmul(
    mut lhs: CubePrimitive,
    mut rhs: CubePrimitive,
    bias: Option<CubePrimitive>,
    precision: Precision,
) -> CubePrimitive {
    let planned = loop {
        match plan(&product(&lhs, &rhs, precision, bias.is_some())) {
            Ok(planned) => break planned,
            Err(PlanError::NeedsContiguous(Operand::Lhs)) => {
                lhs = burn_cubecl::kernel::into_contiguous(lhs)
            }
            Err(PlanError::NeedsContiguous(Operand::Rhs)) => {
                rhs = burn_cubecl::kernel::into_contiguous(rhs)
            }
            Err(error) => panic!(
                "cuBLASLt product of {:?} and {:?}: {error}",
                lhs.shape, rhs.shape
            ),
        }
    };
    let bias = bias.map(burn_cubecl::kernel::into_contiguous);
    let out_shape = Shape::from(output_dims(&lhs.shape.dims, &rhs.shape.dims));
    let client = lhs.client.clone();
    let out = burn_cubecl::ops::numeric::empty_device_dtype(
        client.clone(),
        lhs.device.clone(),
        out_shape,
        precision.output,
    );
    if out.shape.num_elements() == 0 {
        return out;
    }
    let workspace = client.empty(WORKSPACE_BYTES);
    // Each resource keeps its memory bound until the product is queued. The output's is taken
    // last: its stream is the one this thread's CubeCL work runs on.
    let lhs_memory = client.get_resource(lhs.handle.clone().binding());
    let rhs_memory = client.get_resource(rhs.handle.clone().binding());
    let bias_memory = bias
        .as_ref()
        .map(|b| client.get_resource(b.handle.clone().binding()));
    let workspace_memory = client.get_resource(workspace.binding());
    let out_memory = client.get_resource(out.handle.clone().binding());
    let stream = out_memory.resource().stream;
    let (in_bytes, out_bytes) = (lhs.dtype.size() as u64, precision.output.size() as u64);
    let address = |base: u64, offset: usize, bytes: u64| base + offset as u64 * bytes;
    let lhs_base = lhs_memory.resource().ptr;
    let rhs_base = rhs_memory.resource().ptr;
    let out_base = out_memory.resource().ptr;
    let offsets = &planned.offsets;
    let alignments = [
        alignment(offsets.iter().map(|o| address(rhs_base, o.rhs, in_bytes))),
        alignment(offsets.iter().map(|o| address(lhs_base, o.lhs, in_bytes))),
        alignment(offsets.iter().map(|o| address(out_base, o.out, out_bytes))),
    ];
    for at in offsets {
        let pointers = Pointers {
            a: address(rhs_base, at.rhs, in_bytes),
            b: address(lhs_base, at.lhs, in_bytes),
            d: address(out_base, at.out, out_bytes),
            bias: bias_memory.as_ref().map(|b| b.resource().ptr),
            workspace: workspace_memory.resource().ptr,
        };
        // SAFETY: the pointers address the bound resources above, whose sizes the plan was
        // made from; they stay bound until after the call is queued, and later CubeCL work
        // on the same stream runs after it.
        let queued = unsafe {
            library::matmul(
                lhs.device.index,
                &planned.call,
                alignments,
                &pointers,
                stream as *mut std::ffi::c_void,
            )
        };
        if let Err(error) = queued {
            panic!(
                "{error} for {:?} · {:?} ({:?}); QA_GPU_PRODUCTS=burn runs Burn's own products",
                lhs.shape, rhs.shape, planned.call
            );
        }
    }
    out
}

/// The custom operation Fusion runs in its stream order.
#[derive(Debug)]
struct FusedProduct {
    desc: CustomOpIr,
    precision: Precision,
}

type FusedRuntime = <Cube as FusionBackend>::FusionRuntime;

impl Operation<FusedRuntime> for FusedProduct {
    fn execute(
        &self,
        handles: &mut HandleContainer<<FusedRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let lhs = handles.get_float_tensor::<Cube>(&inputs[0]);
        let rhs = handles.get_float_tensor::<Cube>(&inputs[1]);
        let bias = inputs.get(2).map(|b| handles.get_float_tensor::<Cube>(b));
        let out = cube_matmul(lhs, rhs, bias, self.precision);
        handles.register_float_tensor::<Cube>(&self.desc.outputs[0].id, out);
    }
}

/// [`cube_matmul`] under Fusion.
pub(super) fn fused_matmul(
    lhs: FusedPrimitive,
    rhs: FusedPrimitive,
    bias: Option<FusedPrimitive>,
    precision: Precision,
) -> FusedPrimitive {
    let client = lhs.client.clone();
    let inputs: Vec<FusedPrimitive> = [lhs, rhs].into_iter().chain(bias).collect();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let shape = output_dims(&inputs[0].shape.dims, &inputs[1].shape.dims);
    let out = TensorIr::uninit(
        client.create_empty_handle(),
        Shape::from(shape),
        precision.output,
    );
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("cublaslt_matmul", &inputs, &[out]);
    let mut outputs = client.register(
        streams,
        OperationIr::Custom(desc.clone()),
        FusedProduct { desc, precision },
    );
    outputs.remove(0)
}

/// What the backward reads: each operand the other's gradient needs, and the precision.
#[derive(Debug, Clone)]
struct ProductSaved {
    lhs: Option<FusedPrimitive>,
    rhs: Option<FusedPrimitive>,
    inputs: DType,
    compute: Compute,
}

/// dX = dY·Wᵀ and dW = Xᵀ·dY through [`fused_matmul`], in the operands' type (as Burn's
/// matmul gives them), for the parents that are tracked.
fn register_operand_grads(
    saved: ProductSaved,
    grad: &FusedPrimitive,
    [lhs_node, rhs_node]: [Option<NodeId>; 2],
    grads: &mut Gradients,
) {
    let ProductSaved {
        lhs,
        rhs,
        inputs,
        compute,
    } = saved;
    let precision = Precision {
        output: inputs,
        compute,
    };
    let grad = match grad.dtype == inputs {
        true => grad.clone(),
        false => Fused::float_cast(grad.clone(), inputs.into()),
    };
    if let (Some(node), Some(rhs)) = (lhs_node, rhs) {
        let rhs_t = Fused::float_transpose(rhs);
        grads.register::<Fused>(node, fused_matmul(grad.clone(), rhs_t, None, precision));
    }
    if let (Some(node), Some(lhs)) = (rhs_node, lhs) {
        let lhs_t = Fused::float_transpose(lhs);
        grads.register::<Fused>(node, fused_matmul(lhs_t, grad, None, precision));
    }
}

/// The backward of [`tracked_matmul`] without a bias: parents `[lhs, rhs]`.
#[derive(Debug)]
struct ProductBackward;

impl Backward<Fused, 2> for ProductBackward {
    type State = ProductSaved;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Fused>(&ops.node);
        let parents = ops.parents.map(|parent| parent.map(|node| node.id));
        register_operand_grads(ops.state, &grad, parents, grads);
    }
}

/// The backward of [`tracked_matmul`] with a bias: parents `[lhs, rhs, bias]`; the bias's
/// gradient is dY summed over every row.
#[derive(Debug)]
struct BiasedProductBackward;

impl Backward<Fused, 3> for BiasedProductBackward {
    type State = ProductSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Fused>(&ops.node);
        let [lhs_node, rhs_node, bias_node] = ops.parents;
        let ids = [lhs_node, rhs_node].map(|parent| parent.map(|node| node.id));
        register_operand_grads(ops.state, &grad, ids, grads);
        if let Some(node) = bias_node {
            let dims = grad.shape.dims.clone();
            let n = dims[dims.len() - 1];
            let rows = grad.shape.num_elements() / n.max(1);
            let flat = Fused::float_reshape(grad, Shape::new([rows, n]));
            let summed = Fused::float_sum_dim(flat, 0);
            grads.register::<Fused>(node.id, Fused::float_reshape(summed, Shape::new([n])));
        }
    }
}

/// [`cube_matmul`] under Autodiff. Broadcast batch dimensions are not supported here (their
/// gradients would need a sum): callers check [`same_batch`] first.
pub(super) fn tracked_matmul(
    lhs: TrackedPrimitive,
    rhs: TrackedPrimitive,
    bias: Option<TrackedPrimitive>,
    precision: Precision,
) -> TrackedPrimitive {
    let saved = |lhs_p: &FusedPrimitive, rhs_p: &FusedPrimitive| ProductSaved {
        lhs: rhs.is_tracked().then(|| lhs_p.clone()),
        rhs: lhs.is_tracked().then(|| rhs_p.clone()),
        inputs: lhs_p.dtype,
        compute: precision.compute,
    };
    let (lhs_p, rhs_p) = (lhs.primitive.clone(), rhs.primitive.clone());
    match bias {
        None => match ProductBackward
            .prepare::<NoCheckpointing>([lhs.node.clone(), rhs.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = saved(&lhs_p, &rhs_p);
                prep.finish(state, fused_matmul(lhs_p, rhs_p, None, precision))
            }
            OpsKind::UnTracked(prep) => prep.finish(fused_matmul(lhs_p, rhs_p, None, precision)),
        },
        Some(bias) => match BiasedProductBackward
            .prepare::<NoCheckpointing>([lhs.node.clone(), rhs.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = saved(&lhs_p, &rhs_p);
                prep.finish(
                    state,
                    fused_matmul(lhs_p, rhs_p, Some(bias.primitive), precision),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(fused_matmul(lhs_p, rhs_p, Some(bias.primitive), precision))
            }
        },
    }
}

/// Whether two operands of the same rank have equal batch dimensions (no broadcast).
pub(super) fn same_batch(lhs: &[usize], rhs: &[usize]) -> bool {
    lhs.len() == rhs.len() && lhs[..lhs.len() - 2] == rhs[..rhs.len() - 2]
}
