//! The CPU engine's fast path: on the host (NdArray) backend, multi-head attention (per head,
//! in cache), linear layers, LayerNorm, the exact GELU and the attention softmax run as fused
//! kernels with their own backward under autodiff, AdamW as one pass, and parameters and dropout
//! masks are built as owned arrays ([`tensor_from_vec`]).
//!
//! Why: Burn composes each of these from 4–12 ops, and on the CPU every op is a pass over memory
//! into a freshly allocated tensor (its matmul also copies operands that are not contiguous).
//! Those passes, copies and the kernel zeroing the pages of new allocations cost more than the
//! matrix products (`bench/results/cpu-engine-profile-2core.md`). Here each is one parallel pass
//! forward and one backward, saving only what the backward reads; in inference the output
//! overwrites the input when nothing else holds it. Which backend a generic `B` is gets decided
//! by `TypeId` (`host.rs`), so model code stays generic over `B: Backend`.
//!
//! Other backends keep Burn's composition (CUDA's fusion compiles it into kernels). That
//! composition is also what the kernels are tested against.

use burn::module::Param;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A tensor of `values` (row-major) in `shape`, for parameters and dropout masks. On the host
/// backend its storage is an owned array: NdArray otherwise keeps data it is given as "borrowed"
/// bytes, and cloning those (as every `Param::val()` does, and autodiff when it saves an input
/// for the backward) copies the whole tensor.
pub(crate) fn tensor_from_vec<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu")]
    match host::form::<B>() {
        Some(host::Form::Plain) => return host::retype(host::owned::<D>(values, shape)),
        Some(host::Form::Tracked) => {
            let inner = host::owned::<D>(values, shape);
            return host::retype(Tensor::<host::Tracked, D>::from_inner(inner));
        }
        None => {}
    }
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}

/// `x` in `shape` (as `Tensor::reshape`), without copying its elements on the host backend in
/// inference (burn-ndarray 0.20 copies on every reshape; under autodiff Burn's own reshape
/// keeps its backward).
pub(crate) fn reshape<B: Backend, const D1: usize, const D2: usize>(
    x: Tensor<B, D1>,
    shape: [usize; D2],
) -> Tensor<B, D2> {
    #[cfg(feature = "cpu")]
    if host::is_f32(&x) && matches!(host::form::<B>(), Some(host::Form::Plain)) {
        return host::retype(host::reshape(
            host::retype::<_, Tensor<crate::backend::HostCompute, D1>>(x),
            shape,
        ));
    }
    x.reshape(shape)
}

/// x·W + b over the last dimension of `x` (a `burn::nn::Linear` with a bias) when the host
/// backend runs it fused; `Err(x)` gives the input back to compose otherwise.
///
/// # Shapes
///
/// - x: `[rows, d_in]`; weight: `[d_in, d_out]`; bias: `[d_out]`; output: `[rows, d_out]`
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: &Param<Tensor<B, 2>>,
    bias: &Param<Tensor<B, 1>>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    #[cfg(feature = "cpu")]
    if host::is_f32(&x) {
        match host::form::<B>() {
            Some(host::Form::Plain) => {
                return Ok(host::retype(host::linear(
                    host::retype(x),
                    host::retype(weight.val()),
                    host::retype(bias.val()),
                )))
            }
            Some(host::Form::Tracked) => {
                return Ok(host::retype(host::tracked::linear(
                    host::retype(x),
                    host::retype(weight.val()),
                    host::retype(bias.val()),
                )))
            }
            None => {}
        }
    }
    let _ = (weight, bias);
    Err(x)
}

/// x·W + b with W as `prepared` holds it (int8 or bf16, prepared on first use), on the host
/// backend without autodiff (inference only); `Err(x)` gives the input back to compose
/// otherwise. A layer without a bias adds zeros.
///
/// # Shapes
///
/// - x: `[rows, d_in]`; weight: `[d_in, d_out]`; bias: `[d_out]`; output: `[rows, d_out]`
pub(crate) fn prepared_linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: &Param<Tensor<B, 2>>,
    bias: Option<&Param<Tensor<B, 1>>>,
    prepared: &crate::precision::PreparedWeights,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    #[cfg(feature = "cpu")]
    if host::is_f32(&x) && matches!(host::form::<B>(), Some(host::Form::Plain)) {
        if prepared.discovering() {
            // The load's discovery pass: report the input, multiply in f32.
            let x: Tensor<crate::backend::HostCompute, 2> = host::retype(x);
            prepared.observe(weight.id, host::column_max_abs(&x));
            return Err(host::retype(x));
        }
        return Ok(host::retype(host::prepared_linear(
            host::retype(x),
            weight.id,
            || host::retype(weight.val()),
            bias.map(|b| host::retype(b.val())),
            prepared,
        )));
    }
    let _ = (weight, bias, prepared);
    Err(x)
}

/// One AdamW step's scalars, each already in the form the composed update uses (see
/// `qa_train::optim`): products and quotients with these are the same `f32` operations in the
/// same order, so the fused step equals the composed one bit for bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Multiplies the gradient first (loss-scale undo and clipping folded together).
    pub grad_scale: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// 1 − lr · weight decay, or `None` for parameters without decay.
    pub decay: Option<f32>,
    /// √(1 − β₂ᵗ).
    pub sqrt_bias2: f32,
    pub epsilon: f32,
    /// lr / (1 − β₁ᵗ).
    pub step_size: f32,
}

/// Whether `B` is the host backend without autodiff: where inference's int8/bf16 kernels run.
pub fn runs_on_host<B: Backend>() -> bool {
    fuses_adamw::<B>()
}

/// Whether [`adamw`] runs fused on backend `B` (the host backend, without autodiff: optimizers
/// update the inner tensors).
pub fn fuses_adamw<B: Backend>() -> bool {
    #[cfg(feature = "cpu")]
    {
        matches!(host::form::<B>(), Some(host::Form::Plain))
    }
    #[cfg(not(feature = "cpu"))]
    {
        false
    }
}

/// One AdamW step over flat `f32` tensors in one pass, for backends [`fuses_adamw`] accepts
/// (the composed update is a dozen passes, each allocating a tensor the size of the model).
/// Returns the new (parameter, m, v).
///
/// # Shapes
///
/// - param, grad, m, v: `[n]`
pub fn adamw<B: Backend>(
    [param, grad, m, v]: [Tensor<B, 1>; 4],
    step: AdamWStep,
) -> [Tensor<B, 1>; 3] {
    #[cfg(feature = "cpu")]
    if fuses_adamw::<B>() {
        return host::adamw([param, grad, m, v].map(host::retype), step).map(host::retype);
    }
    let _ = (param, grad, m, v, step);
    unreachable!("fused::adamw without fuses_adamw")
}

/// Whether [`attention`] runs fused for these inputs: on the host backend, in `f32`, with a
/// `[batch, 1, 1, seq]` key mask and heads that divide the width.
pub(crate) fn fuses_attention<B: Backend>(
    query: &Tensor<B, 3>,
    mask_bias: &Tensor<B, 4>,
    heads: usize,
) -> bool {
    #[cfg(feature = "cpu")]
    {
        let [batch, seq, hidden] = query.dims();
        host::form::<B>().is_some()
            && host::is_f32(query)
            && heads > 0
            && hidden % heads == 0
            && mask_bias.dims() == [batch, 1, 1, seq]
    }
    #[cfg(not(feature = "cpu"))]
    {
        let _ = (query, mask_bias, heads);
        false
    }
}

/// What the fused attention's two products (q·kᵀ and p·v) compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionProducts {
    /// f32 (training, and inference in f32).
    #[default]
    F32,
    /// bf16 operands with f32 sums, for inference in bf16 or int8: by `vdpbf16ps` where the CPU
    /// has AVX512-BF16, else emulated on the f32 kernels; under autodiff, f32.
    Bf16,
}

/// softmax(q·kᵀ/√d + mask_bias)·v over `heads` heads, with `probs_dropout` on the probabilities
/// during training, for inputs [`fuses_attention`] accepts (callers compose it otherwise).
///
/// # Shapes
///
/// - query, key, value: `[batch, seq, hidden]`
/// - mask_bias: `[batch, 1, 1, seq]`, constant (no gradient flows into it)
/// - output: `[batch, seq, hidden]`
pub(crate) fn attention<B: Backend>(
    qkv: [Tensor<B, 3>; 3],
    mask_bias: Tensor<B, 4>,
    heads: usize,
    probs_dropout: &burn::nn::Dropout,
    products: AttentionProducts,
) -> Tensor<B, 3> {
    let head_dim = qkv[0].dims()[2] / heads.max(1);
    let divisor = (head_dim as f32).sqrt();
    disentangled_attention(
        qkv,
        mask_bias,
        heads,
        divisor,
        None,
        probs_dropout,
        products,
    )
}

/// DeBERTa's relative-position tables for [`disentangled_attention`] (see
/// `crate::deberta_v2`): score (q, k) adds q·pₖ[row(q, k)] and k·p_q[row(q, k)].
#[derive(Debug, Clone)]
pub(crate) struct PositionTables<B: Backend> {
    /// `[table_rows, hidden]`: the relative embeddings through the key projection (`c2p`).
    pub pos_key: Option<Tensor<B, 2>>,
    /// `[table_rows, hidden]`: the relative embeddings through the query projection (`p2c`).
    pub pos_query: Option<Tensor<B, 2>>,
    /// `[seq · seq]`: the table row each (query, key) reads, row-major by query.
    pub rows: std::sync::Arc<[u32]>,
}

/// softmax((q·kᵀ + relative terms) / divisor + mask_bias)·v: [`attention`] with DeBERTa's
/// position tables added to the scores inside each head's task, and their gradients, for
/// inputs [`fuses_attention`] accepts with f32 tables.
///
/// # Shapes
///
/// - query, key, value: `[batch, seq, hidden]`
/// - mask_bias: `[batch, 1, 1, seq]`, constant
/// - tables: `[table_rows, hidden]` each; rows `seq · seq`
/// - output: `[batch, seq, hidden]`
pub(crate) fn disentangled_attention<B: Backend>(
    [query, key, value]: [Tensor<B, 3>; 3],
    mask_bias: Tensor<B, 4>,
    heads: usize,
    divisor: f32,
    tables: Option<PositionTables<B>>,
    probs_dropout: &burn::nn::Dropout,
    products: AttentionProducts,
) -> Tensor<B, 3> {
    #[cfg(feature = "cpu")]
    {
        let [batch, seq, _] = query.dims();
        let device = query.device();
        match host::form::<B>() {
            Some(host::Form::Plain) => {
                let inputs = [query, key, value].map(host::retype);
                let mask_bias = host::retype(mask_bias);
                let tables = tables.map(host::retype);
                return host::retype(host::attention(
                    inputs, mask_bias, heads, divisor, tables, products,
                ));
            }
            Some(host::Form::Tracked) => {
                let probs = batch * heads * seq * seq;
                let dropout = crate::dropout::host_mask::<B>(probs_dropout, probs, &device);
                let inputs = [query, key, value].map(host::retype);
                return host::retype(host::tracked::attention(
                    inputs,
                    host::retype(mask_bias),
                    heads,
                    divisor,
                    tables.map(host::retype),
                    dropout,
                ));
            }
            None => {}
        }
    }
    let _ = (
        query,
        key,
        value,
        mask_bias,
        heads,
        divisor,
        tables,
        probs_dropout,
        products,
    );
    unreachable!("fused::attention without fuses_attention")
}

/// softmax(scores / divisor + mask_bias) over the last dimension.
///
/// # Shapes
///
/// - scores: `[batch, heads, queries, keys]`
/// - mask_bias: `[batch, 1, 1, keys]`, constant (no gradient flows into it)
/// - output: like `scores`
pub(crate) fn attention_probs<B: Backend>(
    scores: Tensor<B, 4>,
    mask_bias: Tensor<B, 4>,
    divisor: f32,
) -> Tensor<B, 4> {
    #[cfg(feature = "cpu")]
    if host::is_f32(&scores) && host::is_key_mask(&scores, &mask_bias) {
        match host::form::<B>() {
            Some(host::Form::Plain) => {
                return host::retype(host::attention_probs(
                    host::retype(scores),
                    host::retype(mask_bias),
                    divisor,
                ))
            }
            Some(host::Form::Tracked) => {
                return host::retype(host::tracked::attention_probs(
                    host::retype(scores),
                    host::retype(mask_bias),
                    divisor,
                ))
            }
            None => {}
        }
    }
    softmax(scores.div_scalar(divisor) + mask_bias, 3)
}

/// LayerNorm over the last dimension: (x − mean) / √(var + ε) · γ + β, var biased.
///
/// # Shapes
///
/// - x: `[..., width]`; gamma, beta: `[width]`; output: like `x`
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: &Param<Tensor<B, 1>>,
    beta: &Param<Tensor<B, 1>>,
    epsilon: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu")]
    if host::is_f32(&x) {
        match host::form::<B>() {
            Some(host::Form::Plain) => {
                return host::retype(host::layer_norm::<D>(
                    host::retype(x),
                    host::retype(gamma.val()),
                    host::retype(beta.val()),
                    epsilon as f32,
                ))
            }
            Some(host::Form::Tracked) => {
                return host::retype(host::tracked::layer_norm::<D>(
                    host::retype(x),
                    host::retype(gamma.val()),
                    host::retype(beta.val()),
                    epsilon as f32,
                ))
            }
            None => {}
        }
    }
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let normalized = x.sub(mean).div(var.add_scalar(epsilon).sqrt());
    normalized.mul(gamma.val().unsqueeze()) + beta.val().unsqueeze()
}

/// The exact GELU, x·Φ(x) = x/2 · (1 + erf(x/√2)), element-wise (any shape).
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu")]
    if host::is_f32(&x) {
        match host::form::<B>() {
            Some(host::Form::Plain) => return host::retype(host::gelu::<D>(host::retype(x))),
            Some(host::Form::Tracked) => {
                return host::retype(host::tracked::gelu::<D>(host::retype(x)))
            }
            None => {}
        }
    }
    burn::tensor::activation::gelu(x)
}

#[cfg(feature = "cpu")]
pub(crate) mod attention;
#[cfg(all(test, feature = "cpu"))]
mod avx512_emulation;
#[cfg(feature = "cpu")]
pub mod bf16_gemm;
#[cfg(feature = "cpu")]
pub mod int8_gemm;
#[cfg(feature = "cpu")]
pub(crate) mod kernels;
#[cfg(feature = "cpu")]
pub(crate) mod linear;
#[cfg(feature = "cpu")]
pub mod low_precision;
#[cfg(feature = "cpu")]
pub(crate) mod packed_gemm;
#[cfg(feature = "cpu")]
pub(crate) mod product;

#[cfg(feature = "cpu")]
mod host;

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor, TensorData};

    use super::*;
    use crate::backend::HostCompute;
    use crate::layers::Products;

    type Fused = burn::backend::Autodiff<HostCompute>;
    /// Burn's composition in f64: a backend the kernels do not take over.
    type Composed = burn::backend::Autodiff<burn::backend::NdArray<f64, i64>>;

    fn random(shape: &[usize], seed: u64) -> Vec<f32> {
        let device = Default::default();
        HostCompute::seed(&device, seed);
        let n = shape.iter().product::<usize>();
        Tensor::<HostCompute, 1>::random([n], Distribution::Normal(0.0, 2.0), &device)
            .into_data()
            .into_vec::<f32>()
            .expect("f32")
    }

    fn tensor<B: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), shape).convert::<B::FloatElem>(),
            &Default::default(),
        )
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32")
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let worst = got
            .iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
            .fold(0f32, f32::max);
        assert!(worst <= tolerance, "{what}: worst error {worst:e}");
    }

    /// Runs `op` on `inputs` on backend `B` (inputs tracked), weighting the output by `weights`
    /// so every output element gets its own upstream gradient; returns the output and each
    /// input's gradient.
    fn run<B: burn::tensor::backend::AutodiffBackend, const D: usize, const N: usize>(
        inputs: [&[f32]; N],
        weights: &[f32],
        op: impl Fn(Vec<Tensor<B, 1>>) -> Tensor<B, D>,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let leaves: Vec<Tensor<B, 1>> = inputs
            .iter()
            .map(|v| tensor::<B, 1>(v, [v.len()]).require_grad())
            .collect();
        let out = op(leaves.clone());
        let shape = out.dims();
        let loss = (out.clone() * tensor::<B, D>(weights, shape)).sum();
        let grads = loss.backward();
        let grads = leaves
            .iter()
            .map(|leaf| values(leaf.grad(&grads).expect("input gradient")))
            .collect();
        (values(out), grads)
    }

    /// Runs `fused` and `composed` on the same inputs (see [`run`]) and asserts that their
    /// outputs and every input's gradient (named by `names`) agree within `tolerance`; returns
    /// (fused, composed) outputs.
    fn assert_agree<const D: usize, const N: usize>(
        what: &str,
        (inputs, names): ([&[f32]; N], [&str; N]),
        weights: &[f32],
        tolerance: f32,
        fused: impl Fn(Vec<Tensor<Fused, 1>>) -> Tensor<Fused, D>,
        composed: impl Fn(Vec<Tensor<Composed, 1>>) -> Tensor<Composed, D>,
    ) -> (Vec<f32>, Vec<f32>) {
        let (got, got_grads) = run::<Fused, D, N>(inputs, weights, fused);
        let (want, want_grads) = run::<Composed, D, N>(inputs, weights, composed);
        assert_close(what, &got, &want, tolerance);
        for ((name, g), w) in names.iter().zip(&got_grads).zip(&want_grads) {
            assert_close(&format!("{name} ({what})"), g, w, tolerance);
        }
        (got, want)
    }

    #[test]
    fn attention_softmax_and_its_backward_equal_burns_composition() {
        let [b, h, q, k] = [2, 3, 5, 7];
        let scores = random(&[b, h, q, k], 1);
        let mut mask = vec![0f32; b * k];
        mask[k - 2..k].fill(crate::model::MASKED);
        mask[2 * k - 1] = crate::model::MASKED;
        let weights = random(&[b, h, q, k], 2);
        let divisor = 8f32.sqrt();
        fn op<B: Backend>(
            x: Vec<Tensor<B, 1>>,
            mask: &[f32],
            shape: [usize; 4],
            d: f32,
        ) -> Tensor<B, 4> {
            let [b, _, _, k] = shape;
            let mask = tensor::<B, 4>(mask, [b, 1, 1, k]);
            attention_probs(x[0].clone().reshape(shape), mask, d)
        }
        let shape = [b, h, q, k];
        let (got, want) = assert_agree(
            "probs",
            ([&scores], ["d scores"]),
            &weights,
            1e-6,
            |x| op(x, &mask, shape, divisor),
            |x| op(x, &mask, shape, divisor),
        );
        // Masked keys get nothing; rows sum to one.
        assert!(
            got[k - 1] < 1e-30
                && got
                    .chunks(k)
                    .all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5)
        );
        let plain = values(op::<HostCompute>(
            vec![tensor(&scores, [scores.len()])],
            &mask,
            shape,
            divisor,
        ));
        assert_close("probs in inference", &plain, &want, 1e-6);
    }

    #[test]
    fn fused_attention_and_its_backward_equal_burns_composition_with_and_without_dropout() {
        let [batch, seq, heads, head_dim] = [2, 9, 3, 4];
        let hidden = heads * head_dim;
        let [q, k, v] = [11, 12, 13].map(|seed| random(&[batch, seq, hidden], seed));
        let weights = random(&[batch, seq, hidden], 14);
        // The second entry's last three keys are padding.
        let mut mask = vec![0f32; batch * seq];
        mask[2 * seq - 3..].fill(crate::model::MASKED);
        fn op<B: Backend>(
            x: Vec<Tensor<B, 1>>,
            mask: &[f32],
            dims: [usize; 4],
            p: f64,
        ) -> Tensor<B, 3> {
            let [batch, seq, heads, head_dim] = dims;
            let shape = [batch, seq, heads * head_dim];
            let dropout = burn::nn::DropoutConfig::new(p).init();
            crate::dropout::seed_host_masks(5);
            crate::layers::scaled_dot_product_attention(
                x[0].clone().reshape(shape),
                x[1].clone().reshape(shape),
                x[2].clone().reshape(shape),
                tensor::<B, 4>(mask, [batch, 1, 1, seq]),
                heads,
                &dropout,
                Products::default(),
            )
        }
        let dims = [batch, seq, heads, head_dim];
        assert!(fuses_attention(
            &tensor::<Fused, 3>(&q, [batch, seq, hidden]),
            &tensor::<Fused, 4>(&mask, [batch, 1, 1, seq]),
            heads
        ));
        let mut outputs = Vec::new();
        for p in [0.0, 0.3] {
            let (got, _) = assert_agree(
                &format!("output, dropout {p}"),
                ([&q, &k, &v], ["d query", "d key", "d value"]),
                &weights,
                1e-5,
                |x| op(x, &mask, dims, p),
                |x| op(x, &mask, dims, p),
            );
            outputs.push(got);
        }
        assert!(
            outputs[0]
                .iter()
                .zip(&outputs[1])
                .any(|(a, b)| (a - b).abs() > 1e-3),
            "dropout changed nothing"
        );
        let plain = op::<HostCompute>(
            [&q, &k, &v].map(|x| tensor(x, [x.len()])).to_vec(),
            &mask,
            dims,
            0.3,
        );
        let (want, _) = run::<Composed, 3, 3>([&q, &k, &v], &weights, |x| op(x, &mask, dims, 0.0));
        assert_close(
            "output in inference (no dropout)",
            &values(plain),
            &want,
            1e-5,
        );
    }

    /// DeBERTa's attention (relative terms added inside each head's task, their gradients into
    /// both position tables) equals the deberta_v2 module's composition of gathers, with both
    /// terms and with `c2p` alone, with and without dropout, and in inference.
    #[test]
    fn fused_disentangled_attention_and_its_backward_equal_burns_composition() {
        use crate::deberta_v2::{
            DebertaV2Model, DisentangledAttention, ProjectedTables, RelativePositions,
            RelativeTerms,
        };
        let [batch, seq, heads, head_dim] = [2, 9, 3, 4];
        let hidden = heads * head_dim;
        // 6 buckets over 8 positions: distances from 3 on share log-spaced rows, clamped at 6.
        let positions = RelativePositions {
            max_relative_positions: 8,
            position_buckets: Some(6),
        };
        let table_rows = 2 * positions.span();
        let [q, k, v] = [31, 32, 33].map(|seed| random(&[batch, seq, hidden], seed));
        let [pos_key, pos_query] = [34, 35].map(|seed| random(&[table_rows, hidden], seed));
        let weights = random(&[batch, seq, hidden], 36);
        let mut mask = vec![0f32; batch * seq];
        mask[2 * seq - 3..].fill(crate::model::MASKED);
        #[derive(Clone, Copy)]
        struct Case {
            dims: [usize; 4],
            positions: RelativePositions,
            position_to_content: bool,
            dropout: f64,
        }
        fn op<B: Backend>(x: Vec<Tensor<B, 1>>, mask: &[f32], case: Case) -> Tensor<B, 3> {
            let [batch, seq, heads, head_dim] = case.dims;
            let hidden = heads * head_dim;
            let mut config =
                crate::ModelConfig::small(crate::Architecture::DebertaV2, 10, hidden, 1, heads, 8);
            config.attention_dropout = case.dropout;
            config.disentangled_attention = Some(DisentangledAttention {
                relative: Some(case.positions),
                position_to_content: case.position_to_content,
                share_att_key: false,
                ..DisentangledAttention::DEBERTA_V3
            });
            let device = Default::default();
            let model = DebertaV2Model::<B>::skeleton(&config, &device);
            let attention = &model.encoder.layer[0].attention.self_attention;
            let table_rows = 2 * case.positions.span();
            let unused = Tensor::zeros([1, table_rows, hidden], &device);
            let relative = RelativeTerms::new(unused, case.positions, seq);
            let tables = ProjectedTables {
                pos_key: Some(x[3].clone().reshape([table_rows, hidden])),
                pos_query: x.get(4).map(|t| t.clone().reshape([table_rows, hidden])),
            };
            let shape = [batch, seq, hidden];
            crate::dropout::seed_host_masks(7);
            attention.attend(
                [0, 1, 2].map(|i| x[i].clone().reshape(shape)),
                tensor::<B, 4>(mask, [batch, 1, 1, seq]),
                Some((&relative, tables)),
                Products::default(),
            )
        }
        let dims = [batch, seq, heads, head_dim];
        for dropout in [0.0, 0.3] {
            let case = Case {
                dims,
                positions,
                position_to_content: true,
                dropout,
            };
            assert_agree(
                &format!("c2p and p2c, dropout {dropout}"),
                (
                    [&q, &k, &v, &pos_key, &pos_query],
                    ["d query", "d key", "d value", "d pos_key", "d pos_query"],
                ),
                &weights,
                1e-5,
                |x| op(x, &mask, case),
                |x| op(x, &mask, case),
            );
        }
        let c2p = Case {
            dims,
            positions,
            position_to_content: false,
            dropout: 0.0,
        };
        let (with_c2p, _) = assert_agree(
            "c2p alone",
            (
                [&q, &k, &v, &pos_key],
                ["d query", "d key", "d value", "d pos_key"],
            ),
            &weights,
            1e-5,
            |x| op(x, &mask, c2p),
            |x| op(x, &mask, c2p),
        );
        // Inference (no autodiff) takes the same fused path.
        let both = Case {
            position_to_content: true,
            ..c2p
        };
        let leaves = [&q, &k, &v, &pos_key, &pos_query]
            .map(|x| tensor::<HostCompute, 1>(x, [x.len()]))
            .to_vec();
        let plain = values(op::<HostCompute>(leaves, &mask, both));
        let (want, _) = run::<Composed, 3, 5>([&q, &k, &v, &pos_key, &pos_query], &weights, |x| {
            op(x, &mask, both)
        });
        assert_close("inference", &plain, &want, 1e-5);
        // The relative terms move the output.
        assert!(plain
            .iter()
            .zip(&with_c2p)
            .any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn fused_linear_and_its_backward_equal_burns_composition() {
        let (rows, d_in, d_out) = (7, 5, 6);
        let x = random(&[rows, d_in], 21);
        let weight = random(&[d_in, d_out], 22);
        let bias = random(&[d_out], 23);
        let weights = random(&[rows, d_out], 24);
        fn op<B: Backend>(x: Vec<Tensor<B, 1>>, [rows, d_in, d_out]: [usize; 3]) -> Tensor<B, 2> {
            // `Param::initialized` keeps the reshaped weight on the leaf's graph (`from_tensor`
            // would make a new leaf of it).
            use burn::module::{Param, ParamId};
            let layer = burn::nn::Linear {
                weight: Param::initialized(ParamId::new(), x[1].clone().reshape([d_in, d_out])),
                bias: Some(Param::initialized(ParamId::new(), x[2].clone())),
            };
            let x3 = x[0].clone().reshape([1, rows, d_in]);
            crate::layers::linear(&layer, x3, Products::default()).reshape([rows, d_out])
        }
        let dims = [rows, d_in, d_out];
        let (_, want) = assert_agree(
            "y",
            ([&x, &weight, &bias], ["d x", "d weight", "d bias"]),
            &weights,
            1e-5,
            |x| op(x, dims),
            |x| op(x, dims),
        );
        let plain = op::<HostCompute>(
            vec![
                tensor(&x, [x.len()]),
                tensor(&weight, [weight.len()]),
                tensor(&bias, [d_out]),
            ],
            dims,
        );
        assert_close("y in inference", &values(plain), &want, 1e-5);
        // The fused path ran: it hands the input back only when it does not apply.
        let layer_weight =
            burn::module::Param::from_tensor(tensor::<HostCompute, 2>(&weight, [d_in, d_out]));
        let layer_bias = burn::module::Param::from_tensor(tensor::<HostCompute, 1>(&bias, [d_out]));
        assert!(linear(
            tensor::<HostCompute, 2>(&x, [rows, d_in]),
            &layer_weight,
            &layer_bias
        )
        .is_ok());
    }

    #[test]
    fn fused_adamw_equals_the_composed_update_bit_for_bit() {
        let n = 40_000;
        let [p, g, m] = [31, 32, 33].map(|seed| random(&[n], seed));
        let v: Vec<f32> = random(&[n], 34).iter().map(|x| x * x).collect();
        let (lr, beta1, beta2, eps, wd, scale, t) = (3e-4, 0.9, 0.999, 1e-8, 0.01, 0.5, 3);
        let (bias1, bias2) = (1.0 - f64::powi(beta1, t), 1.0 - f64::powi(beta2, t));
        let t1 = |x: &[f32]| tensor::<HostCompute, 1>(x, [n]);
        for decay in [None, Some(1.0 - lr * wd)] {
            // As `qa_train::optim` composes it.
            let grad = t1(&g).mul_scalar(scale);
            let m_want = t1(&m).mul_scalar(beta1) + grad.clone().mul_scalar(1.0 - beta1);
            let v_want = t1(&v).mul_scalar(beta2) + (grad.clone() * grad).mul_scalar(1.0 - beta2);
            let p_start = match decay {
                Some(d) => t1(&p).mul_scalar(d),
                None => t1(&p),
            };
            let denom = v_want
                .clone()
                .sqrt()
                .div_scalar(bias2.sqrt())
                .add_scalar(eps);
            let p_want = p_start - (m_want.clone() / denom).mul_scalar(lr / bias1);
            let step = AdamWStep {
                grad_scale: scale as f32,
                beta1: beta1 as f32,
                one_minus_beta1: (1.0 - beta1) as f32,
                beta2: beta2 as f32,
                one_minus_beta2: (1.0 - beta2) as f32,
                decay: decay.map(|d| d as f32),
                sqrt_bias2: bias2.sqrt() as f32,
                epsilon: eps as f32,
                step_size: (lr / bias1) as f32,
            };
            assert!(fuses_adamw::<HostCompute>());
            let [p_got, m_got, v_got] = adamw([t1(&p), t1(&g), t1(&m), t1(&v)], step);
            assert_eq!(values(p_got), values(p_want), "parameters, decay {decay:?}");
            assert_eq!(values(m_got), values(m_want), "first moments");
            assert_eq!(values(v_got), values(v_want), "second moments");
        }
    }

    #[test]
    fn layer_norm_and_its_backward_equal_burns_composition() {
        let (rows, width) = (6, 33);
        let x = random(&[rows, width], 3);
        let gamma = random(&[width], 4);
        let beta = random(&[width], 5);
        let weights = random(&[rows, width], 6);
        fn op<B: Backend>(x: Vec<Tensor<B, 1>>, rows: usize, width: usize) -> Tensor<B, 3> {
            let norm = crate::layers::LayerNorm {
                gamma: burn::module::Param::from_tensor(x[1].clone()),
                beta: burn::module::Param::from_tensor(x[2].clone()),
                epsilon: 1e-12,
            };
            norm.forward(x[0].clone().reshape([2, rows / 2, width]))
        }
        let (_, want) = assert_agree(
            "y",
            ([&x, &gamma, &beta], ["d x", "d gamma", "d beta"]),
            &weights,
            1e-5,
            |x| op(x, rows, width),
            |x| op(x, rows, width),
        );
        let plain = op::<HostCompute>(
            vec![
                tensor(&x, [x.len()]),
                tensor(&gamma, [width]),
                tensor(&beta, [width]),
            ],
            rows,
            width,
        );
        assert_close("y in inference", &values(plain), &want, 1e-5);
    }

    #[test]
    fn gelu_and_its_exact_derivative_equal_the_erf_formula() {
        let x = random(&[4, 129], 7);
        let weights = random(&[4, 129], 8);
        // Against x/2 · (1 + erf(x/√2)) differentiated by autodiff through erf (exact), in f64.
        let (_, want) = assert_agree(
            "gelu",
            ([&x], ["d x"]),
            &weights,
            1e-6,
            |x| gelu(x[0].clone().reshape([4, 129])),
            |x| {
                let x = x[0].clone().reshape([4, 129]);
                let erf = x.clone().div_scalar(std::f64::consts::SQRT_2).erf();
                x.mul_scalar(0.5) * erf.add_scalar(1.0)
            },
        );
        let plain = gelu(tensor::<HostCompute, 2>(&x, [4, 129]));
        assert_close("gelu in inference", &values(plain), &want, 1e-6);
    }
}
