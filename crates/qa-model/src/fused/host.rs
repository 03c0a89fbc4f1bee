//! The host (NdArray) backend's side of the fused kernels: moving tensors between a generic
//! `B` and the concrete NdArray types, the inference entry points, and (in [`tracked`]) the same
//! kernels as autodiff ops with their own backward.

use std::any::TypeId;

use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use ndarray::{ArcArray, IxDyn};

use super::attention as heads;
use super::kernels;
use super::linear as dense;
use crate::backend::HostCompute as Plain;

/// The host backend under autodiff, as training uses it.
pub(super) type Tracked = burn::backend::Autodiff<Plain>;

/// Which host backend a generic `B` is.
pub(super) enum Form {
    Plain,
    Tracked,
}

pub(super) fn form<B: 'static>() -> Option<Form> {
    if TypeId::of::<B>() == TypeId::of::<Plain>() {
        Some(Form::Plain)
    } else if TypeId::of::<B>() == TypeId::of::<Tracked>() {
        Some(Form::Tracked)
    } else {
        None
    }
}

pub(super) fn is_f32<B: burn::tensor::backend::Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.dtype() == DType::F32
}

/// Whether `mask_bias` is one row of keys per batch entry, `[batch, 1, 1, keys]`.
pub(super) fn is_key_mask<B: burn::tensor::backend::Backend>(
    scores: &Tensor<B, 4>,
    mask_bias: &Tensor<B, 4>,
) -> bool {
    let [batch, _, _, keys] = scores.dims();
    mask_bias.dims() == [batch, 1, 1, keys]
}

pub(super) use crate::backend::retype;

/// The tensor's elements, row-major, unshared when nothing else holds them (so they can be
/// written in place).
pub(super) fn array(primitive: NdArrayTensor) -> ArcArray<f32, IxDyn> {
    let array = match primitive {
        NdArrayTensor::F32(storage) => storage.into_shared(),
        _ => unreachable!("fused: callers check for f32"),
    };
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned().into_shared()
    }
}

pub(super) fn primitive(array: ArcArray<f32, IxDyn>) -> NdArrayTensor {
    NdArrayTensor::from(array)
}

/// `values` (row-major) in `shape` as an owned array (see [`super::tensor_from_vec`]).
pub(super) fn values_primitive(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    match ArcArray::from_shape_vec(IxDyn(shape), values) {
        Ok(array) => primitive(array),
        Err(e) => unreachable!("fused: values do not fill their shape: {e}"),
    }
}

pub(super) fn owned<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Plain, D> {
    Tensor::from_primitive(TensorPrimitive::Float(values_primitive(values, &shape)))
}

fn unwrap<const D: usize>(x: Tensor<Plain, D>) -> ArcArray<f32, IxDyn> {
    array(x.into_primitive().tensor())
}

fn wrap<const D: usize>(array: ArcArray<f32, IxDyn>) -> Tensor<Plain, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive(array)))
}

/// `x` in `shape`, sharing its elements: burn-ndarray 0.20's reshape copies them (its
/// `to_shape(..).into_shared()` turns even a contiguous view into a new array).
pub(super) fn reshape<const D1: usize, const D2: usize>(
    x: Tensor<Plain, D1>,
    shape: [usize; D2],
) -> Tensor<Plain, D2> {
    let array = unwrap(x);
    let from = array.shape().to_vec();
    match array.into_shape_with_order(IxDyn(&shape)) {
        Ok(array) => wrap(array),
        Err(e) => panic!("reshape {from:?} to {shape:?}: {e}"),
    }
}

/// Row-major `f32` elements of a contiguous array (see [`array`]).
pub(super) fn slice(array: &ArcArray<f32, IxDyn>) -> &[f32] {
    array
        .as_slice()
        .unwrap_or_else(|| unreachable!("fused: arrays are made contiguous"))
}

pub(super) fn slice_mut(array: &mut ArcArray<f32, IxDyn>) -> &mut [f32] {
    array
        .as_slice_mut()
        .unwrap_or_else(|| unreachable!("fused: arrays are made contiguous"))
}

/// Scores → probabilities, in place; `scores` and `mask` already checked to be
/// `[b, h, q, k]` and `[b, 1, 1, k]`.
pub(super) fn softmax_in_place(
    scores: &mut ArcArray<f32, IxDyn>,
    mask: &ArcArray<f32, IxDyn>,
    divisor: f32,
) {
    let shape = scores.shape().to_vec();
    let (keys, rows_per_mask) = (shape[3], shape[1] * shape[2]);
    kernels::softmax_rows(slice_mut(scores), slice(mask), keys, rows_per_mask, divisor);
}

pub(super) fn attention_probs(
    scores: Tensor<Plain, 4>,
    mask_bias: Tensor<Plain, 4>,
    divisor: f32,
) -> Tensor<Plain, 4> {
    let mut scores = unwrap(scores);
    softmax_in_place(&mut scores, &unwrap(mask_bias), divisor);
    wrap(scores)
}

/// DeBERTa's position tables ([`super::PositionTables`]) as host arrays.
#[derive(Debug, Clone)]
struct HostTables {
    pos_key: Option<ArcArray<f32, IxDyn>>,
    pos_query: Option<ArcArray<f32, IxDyn>>,
    rows: std::sync::Arc<[u32]>,
}

impl HostTables {
    fn relative(&self) -> Option<heads::Relative<'_>> {
        let table = self.pos_key.as_ref().or(self.pos_query.as_ref())?;
        Some(heads::Relative {
            pos_key: self.pos_key.as_ref().map(slice),
            pos_query: self.pos_query.as_ref().map(slice),
            rows: &self.rows,
            table_rows: table.shape()[0],
        })
    }
}

/// The attention's inputs over contiguous `[batch, seq, hidden]` projections, the
/// `[batch, 1, 1, seq]` key mask (read as `[batch, seq]`) and DeBERTa's position tables.
fn attention_inputs<'a>(
    [query, key, value]: [&'a ArcArray<f32, IxDyn>; 3],
    key_mask: &'a ArcArray<f32, IxDyn>,
    heads: usize,
    divisor: f32,
    tables: Option<&'a HostTables>,
) -> heads::Inputs<'a> {
    let shape = query.shape();
    heads::Inputs {
        query: slice(query),
        key: slice(key),
        value: slice(value),
        key_mask: slice(key_mask),
        dims: heads::Heads {
            batch: shape[0],
            seq: shape[1],
            heads,
            head_dim: shape[2] / heads,
        },
        divisor,
        relative: tables.and_then(HostTables::relative),
    }
}

pub(super) fn attention(
    [query, key, value]: [Tensor<Plain, 3>; 3],
    mask_bias: Tensor<Plain, 4>,
    heads: usize,
    divisor: f32,
    tables: Option<super::PositionTables<Plain>>,
    products: super::AttentionProducts,
) -> Tensor<Plain, 3> {
    let (query, key, value, mask) = (unwrap(query), unwrap(key), unwrap(value), unwrap(mask_bias));
    let tables = tables.map(|t| HostTables {
        pos_key: t.pos_key.map(unwrap),
        pos_query: t.pos_query.map(unwrap),
        rows: t.rows,
    });
    let inputs = attention_inputs(
        [&query, &key, &value],
        &mask,
        heads,
        divisor,
        tables.as_ref(),
    );
    let out = heads::forward(inputs, None, None, products);
    owned(
        out,
        [inputs.dims.batch, inputs.dims.seq, inputs.dims.hidden()],
    )
}

/// The sizes of x `[rows, d_in]` through weight `[d_in, d_out]`.
fn dense_shape(x: &ArcArray<f32, IxDyn>, weight: &ArcArray<f32, IxDyn>) -> dense::Shape {
    dense::Shape {
        rows: x.shape()[0],
        d_in: x.shape()[1],
        d_out: weight.shape()[1],
    }
}

pub(super) fn linear(
    x: Tensor<Plain, 2>,
    weight: Tensor<Plain, 2>,
    bias: Tensor<Plain, 1>,
) -> Tensor<Plain, 2> {
    let (x, weight, bias) = (unwrap(x), unwrap(weight), unwrap(bias));
    let shape = dense_shape(&x, &weight);
    let y = dense::forward(slice(&x), slice(&weight), slice(&bias), shape);
    owned(y, [shape.rows, shape.d_out])
}

/// The largest |value| of each column of a `[rows, width]` tensor.
pub(super) fn column_max_abs(x: &Tensor<Plain, 2>) -> Vec<f32> {
    let [_, width] = x.dims();
    let array = array(x.clone().into_primitive().tensor());
    super::low_precision::column_max_abs(slice(&array), width)
}

/// x·W + b through the weight `prepared` holds for parameter `id` (prepared from `weight()` on
/// first use).
pub(super) fn prepared_linear(
    x: Tensor<Plain, 2>,
    id: burn::module::ParamId,
    weight: impl FnOnce() -> Tensor<Plain, 2>,
    bias: Option<Tensor<Plain, 1>>,
    prepared: &crate::precision::PreparedWeights,
) -> Tensor<Plain, 2> {
    let layer = prepared.get_or_prepare(id, || {
        let weight = unwrap(weight());
        let (d_in, d_out) = (weight.shape()[0], weight.shape()[1]);
        (slice(&weight).to_vec(), d_in, d_out)
    });
    let [rows, d_in] = x.dims();
    let d_out = layer.d_out();
    assert_eq!(
        d_in,
        layer.d_in(),
        "prepared_linear: input width of parameter {id}"
    );
    let x = unwrap(x);
    let bias = match bias {
        Some(bias) => slice(&unwrap(bias)).to_vec(),
        None => vec![0.0; d_out],
    };
    let shape = dense::Shape { rows, d_in, d_out };
    owned(layer.forward(slice(&x), &bias, shape), [rows, d_out])
}

pub(super) fn adamw(
    [param, grad, m, v]: [Tensor<Plain, 1>; 4],
    step: super::AdamWStep,
) -> [Tensor<Plain, 1>; 3] {
    let (mut param, grad, mut m, mut v) = (unwrap(param), unwrap(grad), unwrap(m), unwrap(v));
    kernels::adamw(
        slice_mut(&mut param),
        slice(&grad),
        slice_mut(&mut m),
        slice_mut(&mut v),
        step,
    );
    [wrap(param), wrap(m), wrap(v)]
}

pub(super) fn layer_norm<const D: usize>(
    x: Tensor<Plain, D>,
    gamma: Tensor<Plain, 1>,
    beta: Tensor<Plain, 1>,
    epsilon: f32,
) -> Tensor<Plain, D> {
    let mut x = unwrap(x);
    let (gamma, beta) = (unwrap(gamma), unwrap(beta));
    let norm = kernels::NormParams {
        gamma: slice(&gamma),
        beta: slice(&beta),
        epsilon,
    };
    kernels::layer_norm_rows(slice_mut(&mut x), norm, None);
    wrap(x)
}

pub(super) fn gelu<const D: usize>(x: Tensor<Plain, D>) -> Tensor<Plain, D> {
    let mut x = unwrap(x);
    kernels::gelu(slice_mut(&mut x));
    wrap(x)
}

/// The same kernels as autodiff ops of the host backend, each with its backward.
pub(super) mod tracked {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_autodiff::checkpoint::base::Checkpointer;
    use burn_autodiff::checkpoint::strategy::NoCheckpointing;
    use burn_autodiff::grads::Gradients;
    use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn_ndarray::NdArrayTensor;
    use ndarray::{ArcArray, IxDyn};

    use super::{
        array, dense, heads, kernels, primitive, slice, slice_mut, values_primitive, HostTables,
        Plain, Tracked,
    };

    type TrackedPrimitive = <Tracked as Backend>::FloatTensorPrimitive;

    fn unwrap<const D: usize>(x: Tensor<Tracked, D>) -> TrackedPrimitive {
        x.into_primitive().tensor()
    }

    fn wrap<const D: usize>(x: TrackedPrimitive) -> Tensor<Tracked, D> {
        Tensor::from_primitive(TensorPrimitive::Float(x))
    }

    #[derive(Debug)]
    struct SoftmaxBackward;

    /// What the softmax backward reads: its own output and the divisor.
    #[derive(Debug, Clone)]
    struct SoftmaxSaved {
        probs: NdArrayTensor,
        divisor: f32,
    }

    impl Backward<Plain, 1> for SoftmaxBackward {
        type State = SoftmaxSaved;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let SoftmaxSaved { probs, divisor } = ops.state;
            unary::<Plain, _>(ops.parents, ops.node, grads, |grad| {
                let mut grad = array(grad);
                let probs = array(probs);
                let keys = *grad.shape().last().unwrap_or(&1);
                kernels::softmax_rows_backward(slice_mut(&mut grad), slice(&probs), keys, divisor);
                primitive(grad)
            });
        }
    }

    pub(in super::super) fn attention_probs(
        scores: Tensor<Tracked, 4>,
        mask_bias: Tensor<Tracked, 4>,
        divisor: f32,
    ) -> Tensor<Tracked, 4> {
        let scores = unwrap(scores);
        let node = scores.node.clone();
        let mut probs = array(scores.primitive);
        super::softmax_in_place(&mut probs, &array(unwrap(mask_bias).primitive), divisor);
        let probs = primitive(probs);
        let out = match SoftmaxBackward
            .prepare::<NoCheckpointing>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = SoftmaxSaved {
                    probs: probs.clone(),
                    divisor,
                };
                prep.finish(saved, probs)
            }
            OpsKind::UnTracked(prep) => prep.finish(probs),
        };
        wrap(out)
    }

    #[derive(Debug)]
    struct LayerNormBackward;

    /// What the LayerNorm backward reads: x̂, each row's 1/√(var + ε), and γ.
    #[derive(Debug, Clone)]
    struct LayerNormSaved {
        xhat: NdArrayTensor,
        rstd: std::sync::Arc<Vec<f32>>,
        gamma: NdArrayTensor,
    }

    impl Backward<Plain, 3> for LayerNormBackward {
        type State = LayerNormSaved;

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let LayerNormSaved { xhat, rstd, gamma } = ops.state;
            let mut grad = array(grads.consume::<Plain>(&ops.node));
            let (xhat, gamma) = (array(xhat), array(gamma));
            let (d_gamma, d_beta) = kernels::layer_norm_rows_backward(
                slice_mut(&mut grad),
                slice(&xhat),
                &rstd,
                slice(&gamma),
            );
            let vector = |v: Vec<f32>| {
                let width = v.len();
                values_primitive(v, &[width])
            };
            let [x_node, gamma_node, beta_node] = ops.parents;
            if let Some(node) = x_node {
                grads.register::<Plain>(node.id, primitive(grad));
            }
            if let Some(node) = gamma_node {
                grads.register::<Plain>(node.id, vector(d_gamma));
            }
            if let Some(node) = beta_node {
                grads.register::<Plain>(node.id, vector(d_beta));
            }
        }
    }

    pub(in super::super) fn layer_norm<const D: usize>(
        x: Tensor<Tracked, D>,
        gamma: Tensor<Tracked, 1>,
        beta: Tensor<Tracked, 1>,
        epsilon: f32,
    ) -> Tensor<Tracked, D> {
        let (x, gamma, beta) = (unwrap(x), unwrap(gamma), unwrap(beta));
        let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
        let gamma_values = gamma.primitive;
        let (gamma_array, beta_array) = (array(gamma_values.clone()), array(beta.primitive));
        let mut y = array(x.primitive);
        let rows = y.len() / gamma_array.len().max(1);
        let norm = kernels::NormParams {
            gamma: slice(&gamma_array),
            beta: slice(&beta_array),
            epsilon,
        };
        let out = match LayerNormBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let mut xhat = ArcArray::<f32, IxDyn>::zeros(y.raw_dim());
                let mut rstd = vec![0f32; rows];
                kernels::layer_norm_rows(
                    slice_mut(&mut y),
                    norm,
                    Some((slice_mut(&mut xhat), &mut rstd)),
                );
                let saved = LayerNormSaved {
                    xhat: primitive(xhat),
                    rstd: std::sync::Arc::new(rstd),
                    gamma: gamma_values,
                };
                prep.finish(saved, primitive(y))
            }
            OpsKind::UnTracked(prep) => {
                kernels::layer_norm_rows(slice_mut(&mut y), norm, None);
                prep.finish(primitive(y))
            }
        };
        wrap(out)
    }

    #[derive(Debug)]
    struct LinearBackward;

    /// What the linear backward reads: its input and weight.
    #[derive(Debug, Clone)]
    struct LinearSaved {
        x: NdArrayTensor,
        weight: NdArrayTensor,
    }

    impl Backward<Plain, 3> for LinearBackward {
        type State = LinearSaved;

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let grad = array(grads.consume::<Plain>(&ops.node));
            let (x, weight) = (array(ops.state.x), array(ops.state.weight));
            let shape = super::dense_shape(&x, &weight);
            let [x_node, weight_node, bias_node] = ops.parents;
            let register =
                |grads: &mut Gradients, node: burn_autodiff::NodeId, values, dims: &[usize]| {
                    grads.register::<Plain>(node, values_primitive(values, dims));
                };
            if let Some(node) = x_node {
                let d_x = dense::input_grad(slice(&grad), slice(&weight), shape);
                register(grads, node.id, d_x, &[shape.rows, shape.d_in]);
            }
            if let Some(node) = weight_node {
                let d_weight = dense::weight_grad(slice(&grad), slice(&x), shape);
                register(grads, node.id, d_weight, &[shape.d_in, shape.d_out]);
            }
            if let Some(node) = bias_node {
                register(
                    grads,
                    node.id,
                    dense::bias_grad(slice(&grad), shape),
                    &[shape.d_out],
                );
            }
        }
    }

    pub(in super::super) fn linear(
        x: Tensor<Tracked, 2>,
        weight: Tensor<Tracked, 2>,
        bias: Tensor<Tracked, 1>,
    ) -> Tensor<Tracked, 2> {
        let (x, weight, bias) = (unwrap(x), unwrap(weight), unwrap(bias));
        let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        let (x_values, weight_values) =
            (array(x.primitive.clone()), array(weight.primitive.clone()));
        let shape = super::dense_shape(&x_values, &weight_values);
        let y = dense::forward(
            slice(&x_values),
            slice(&weight_values),
            slice(&array(bias.primitive)),
            shape,
        );
        let y = values_primitive(y, &[shape.rows, shape.d_out]);
        let out = match LinearBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = LinearSaved {
                    x: x.primitive,
                    weight: weight.primitive,
                };
                prep.finish(saved, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        wrap(out)
    }

    #[derive(Debug)]
    struct AttentionBackward;

    /// What the attention backward reads: the inputs, the probabilities before dropout and the
    /// dropout mask.
    #[derive(Debug, Clone)]
    struct AttentionSaved {
        query: NdArrayTensor,
        key: NdArrayTensor,
        value: NdArrayTensor,
        key_mask: NdArrayTensor,
        probs: std::sync::Arc<Vec<f32>>,
        dropout: Option<std::sync::Arc<Vec<f32>>>,
        heads: usize,
        divisor: f32,
        /// DeBERTa's position tables (primitives) and rows.
        pos_key: Option<NdArrayTensor>,
        pos_query: Option<NdArrayTensor>,
        rows: Option<std::sync::Arc<[u32]>>,
    }

    /// Parents: query, key, value, then the position tables (placeholders without gradient
    /// where absent).
    impl Backward<Plain, 5> for AttentionBackward {
        type State = AttentionSaved;

        fn backward(
            self,
            ops: Ops<Self::State, 5>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let saved = ops.state;
            let grad_out = array(grads.consume::<Plain>(&ops.node));
            let (query, key, value) = (array(saved.query), array(saved.key), array(saved.value));
            let key_mask = array(saved.key_mask);
            let tables = saved.rows.map(|rows| HostTables {
                pos_key: saved.pos_key.map(array),
                pos_query: saved.pos_query.map(array),
                rows,
            });
            let inputs = super::attention_inputs(
                [&query, &key, &value],
                &key_mask,
                saved.heads,
                saved.divisor,
                tables.as_ref(),
            );
            let dims = inputs.dims;
            let table_rows = inputs.relative.map_or(0, |r| r.table_rows);
            let d = heads::backward(
                inputs,
                slice(&grad_out),
                &saved.probs,
                saved.dropout.as_deref().map(Vec::as_slice),
            );
            let shape = [dims.batch, dims.seq, dims.hidden()];
            let table_shape = [table_rows, dims.hidden()];
            let [q, k, v, pk, pq] = ops.parents;
            for (node, grad) in [q, k, v].into_iter().zip([d.query, d.key, d.value]) {
                if let Some(node) = node {
                    grads.register::<Plain>(node.id, values_primitive(grad, &shape));
                }
            }
            for (node, grad) in [pk, pq].into_iter().zip([d.pos_key, d.pos_query]) {
                if let (Some(node), Some(grad)) = (node, grad) {
                    grads.register::<Plain>(node.id, values_primitive(grad, &table_shape));
                }
            }
        }
    }

    pub(in super::super) fn attention(
        [query, key, value]: [Tensor<Tracked, 3>; 3],
        mask_bias: Tensor<Tracked, 4>,
        heads: usize,
        divisor: f32,
        tables: Option<crate::fused::PositionTables<Tracked>>,
        dropout: Option<Vec<f32>>,
    ) -> Tensor<Tracked, 3> {
        let (query, key, value) = (unwrap(query), unwrap(key), unwrap(value));
        // An absent table is a fresh constant: it has no gradient to receive.
        let placeholder = || unwrap(Tensor::<Tracked, 2>::zeros([1, 1], &Default::default()));
        let (pos_key, pos_query, rows) = match tables {
            Some(t) => (t.pos_key.map(unwrap), t.pos_query.map(unwrap), Some(t.rows)),
            None => (None, None, None),
        };
        let node_of = |table: &Option<TrackedPrimitive>| {
            table
                .as_ref()
                .map_or_else(|| placeholder().node, |t| t.node.clone())
        };
        let nodes = [
            query.node.clone(),
            key.node.clone(),
            value.node.clone(),
            node_of(&pos_key),
            node_of(&pos_query),
        ];
        let key_mask = unwrap(mask_bias).primitive;
        let (q, k, v, m) = (
            array(query.primitive.clone()),
            array(key.primitive.clone()),
            array(value.primitive.clone()),
            array(key_mask.clone()),
        );
        let pos_key = pos_key.map(|t| t.primitive);
        let pos_query = pos_query.map(|t| t.primitive);
        let tables = rows.clone().map(|rows| HostTables {
            pos_key: pos_key.clone().map(array),
            pos_query: pos_query.clone().map(array),
            rows,
        });
        let inputs = super::attention_inputs([&q, &k, &v], &m, heads, divisor, tables.as_ref());
        let dims = inputs.dims;
        let shape = [dims.batch, dims.seq, dims.hidden()];
        let out = match AttentionBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let mut probs = vec![0f32; dims.probs_len()];
                let out = heads::forward(
                    inputs,
                    dropout.as_deref(),
                    Some(&mut probs),
                    crate::fused::AttentionProducts::F32,
                );
                let saved = AttentionSaved {
                    query: query.primitive,
                    key: key.primitive,
                    value: value.primitive,
                    key_mask,
                    probs: std::sync::Arc::new(probs),
                    dropout: dropout.map(std::sync::Arc::new),
                    heads,
                    divisor,
                    pos_key,
                    pos_query,
                    rows,
                };
                prep.finish(saved, values_primitive(out, &shape))
            }
            OpsKind::UnTracked(prep) => {
                let out = heads::forward(
                    inputs,
                    dropout.as_deref(),
                    None,
                    crate::fused::AttentionProducts::F32,
                );
                prep.finish(values_primitive(out, &shape))
            }
        };
        wrap(out)
    }

    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Plain, 1> for GeluBackward {
        /// The input x.
        type State = NdArrayTensor;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let x = ops.state;
            unary::<Plain, _>(ops.parents, ops.node, grads, |grad| {
                let mut grad = array(grad);
                kernels::gelu_backward(slice_mut(&mut grad), slice(&array(x)));
                primitive(grad)
            });
        }
    }

    pub(in super::super) fn gelu<const D: usize>(x: Tensor<Tracked, D>) -> Tensor<Tracked, D> {
        let x = unwrap(x);
        let node = x.node.clone();
        let input = x.primitive;
        let out = match GeluBackward
            .prepare::<NoCheckpointing>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = array(input.clone());
                let mut y = ArcArray::<f32, IxDyn>::zeros(x.raw_dim());
                kernels::gelu_into(slice(&x), slice_mut(&mut y));
                prep.finish(input, primitive(y))
            }
            OpsKind::UnTracked(prep) => {
                let mut y = array(input);
                kernels::gelu(slice_mut(&mut y));
                prep.finish(primitive(y))
            }
        };
        wrap(out)
    }
}
