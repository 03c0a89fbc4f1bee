//! Building blocks every model family uses: matrix products in the mixed-precision dtype, the
//! attention-mask bias, multi-head scaled dot-product attention, and zero-filled layers for a
//! model's skeleton (the checkpoint loader fills them).

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, softmax};
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

/// The feed-forward activation, as `config.json` names it (`hidden_act`): transformers'
/// `ACT2FN` entries this port computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `"gelu"`: the exact GELU, x·Φ(x) with the error function (HF `GELUActivation`).
    Gelu,
    /// `"gelu_new"` (HF `NewGELUActivation`, ALBERT's default) and `"gelu_pytorch_tanh"`: the
    /// tanh approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    GeluTanh,
}

impl HiddenAct {
    /// The `hidden_act` names this port accepts, for error messages.
    pub const SUPPORTED: &'static str = "\"gelu\", \"gelu_new\" or \"gelu_pytorch_tanh\"";

    /// The activation `config.json` calls `name`, if this port computes it.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(HiddenAct::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(HiddenAct::GeluTanh),
            _ => None,
        }
    }

    /// The name saved in `config.json`.
    pub fn hf_name(self) -> &'static str {
        match self {
            HiddenAct::Gelu => "gelu",
            HiddenAct::GeluTanh => "gelu_new",
        }
    }

    /// Applies the activation element-wise (any shape).
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            HiddenAct::Gelu => gelu(x),
            HiddenAct::GeluTanh => {
                let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
                    .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
                x.mul_scalar(0.5) * (inner.tanh().add_scalar(1.0))
            }
        }
    }
}
