//! Building blocks every model family uses: matrix products in the mixed-precision dtype, the
//! attention-mask bias, multi-head scaled dot-product attention, and zero-filled layers for a
//! model's skeleton (the checkpoint loader fills them).

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use crate::dropout::dropout;
use crate::model::MASKED;

/// Mixed precision: the dtype that matrix products run in (`None`: the backend's own, f32).
/// Weights stay f32 ("master weights"); inputs and weights are cast for each product and the
/// result cast back, so softmax, LayerNorm, GELU and the loss stay in f32.
pub type MatmulDtype = Option<FloatDType>;

/// `a @ b`, in `dtype` when given (result back in `a`'s dtype).
pub(crate) fn matmul<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    dtype: MatmulDtype,
) -> Tensor<B, D> {
    match dtype {
        None => a.matmul(b),
        Some(half) => {
            let back = FloatDType::from(a.dtype());
            a.cast(half).matmul(b.cast(half)).cast(back)
        }
    }
}

/// A linear layer on `[batch, seq, d_in]`, its product in `dtype` when given.
pub(crate) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    dtype: MatmulDtype,
) -> Tensor<B, 3> {
    if dtype.is_none() {
        return layer.forward(x);
    }
    let y = matmul(x, layer.weight.val().unsqueeze::<3>(), dtype);
    match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze::<3>(),
        None => y,
    }
}

/// What attention adds to its scores: 0 at attended keys, [`MASKED`] at padded ones.
///
/// # Shapes
///
/// - attention_mask: `[batch, seq]` (1 attended, 0 padded)
/// - output: `[batch, 1, 1, seq]`, broadcast over heads and queries
pub(crate) fn attention_mask_bias<B: Backend>(attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 4> {
    let [batch, seq] = attention_mask.dims();
    attention_mask
        .equal_elem(0)
        .float()
        .mul_scalar(MASKED)
        .reshape([batch, 1, 1, seq])
}

/// softmax(q·kᵀ/√d + mask) · v over `heads` heads, with dropout on the attention probabilities
/// (transformers' `eager_attention_forward`). `query`, `key`, `value` are already projected.
///
/// # Shapes
///
/// - query, key, value: `[batch, seq, hidden]`
/// - mask_bias: `[batch, 1, 1, seq]`
/// - output: `[batch, seq, hidden]` (heads merged back)
pub(crate) fn scaled_dot_product_attention<B: Backend>(
    query: Tensor<B, 3>,
    key: Tensor<B, 3>,
    value: Tensor<B, 3>,
    mask_bias: Tensor<B, 4>,
    heads: usize,
    probs_dropout: &Dropout,
    dtype: MatmulDtype,
) -> Tensor<B, 3> {
    let [batch, seq, hidden] = query.dims();
    let head_dim = hidden / heads;
    let split = |t: Tensor<B, 3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let scores = matmul(split(query), split(key).transpose(), dtype)
        .div_scalar((head_dim as f64).sqrt())
        + mask_bias;
    let probs = dropout(probs_dropout, softmax(scores, 3));
    matmul(probs, split(value), dtype)
        .swap_dims(1, 2)
        .reshape([batch, seq, hidden])
}

fn zeros<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}

/// A `[d_in → d_out]` linear layer with zero parameters.
pub(crate) fn zero_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    Linear {
        weight: zeros([d_in, d_out], device),
        bias: Some(zeros([d_out], device)),
    }
}

/// An `[entries, dim]` embedding table of zeros.
pub(crate) fn zero_embedding<B: Backend>(
    entries: usize,
    dim: usize,
    device: &B::Device,
) -> Embedding<B> {
    Embedding {
        weight: zeros([entries, dim], device),
    }
}

pub(crate) fn layer_norm<B: Backend>(dim: usize, epsilon: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(dim).with_epsilon(epsilon).init(device)
}

pub(crate) fn dropout_layer(prob: f64) -> Dropout {
    DropoutConfig::new(prob).init()
}
