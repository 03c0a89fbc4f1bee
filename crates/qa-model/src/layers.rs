//! Building blocks every model family uses: matrix products in the mixed-precision dtype, the
//! attention-mask bias, multi-head scaled dot-product attention, LayerNorm, the feed-forward
//! activations, and zero-filled layers for a model's skeleton (the checkpoint loader fills them).

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use crate::cublaslt;
use crate::dropout::dropout;
use crate::fused;
use crate::model::MASKED;
use crate::precision::PreparedWeights;

/// Mixed precision: the dtype that matrix products run in (`None`: the backend's own, f32).
/// Weights stay f32 ("master weights"); inputs and weights are cast for each product and the
/// result cast back, so softmax, LayerNorm, GELU and the loss stay in f32.
pub type MatmulDtype = Option<FloatDType>;

/// How one forward pass computes its products: what every family's `forward` passes down to
/// [`linear`] and [`scaled_dot_product_attention`], the one place where products happen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Products<'a> {
    /// The dtype Burn's own products are cast to (training's mixed precision).
    pub dtype: MatmulDtype,
    /// Linear layers' weights prepared for the host's int8 or bf16 kernels (inference with
    /// `--precision`; see [`crate::precision`]).
    pub prepared: Option<&'a PreparedWeights>,
}

impl From<MatmulDtype> for Products<'_> {
    fn from(dtype: MatmulDtype) -> Self {
        Products {
            dtype,
            prepared: None,
        }
    }
}

impl Products<'_> {
    /// What the fused attention's products compute in: bf16 where the prepared precision asks
    /// for it (see [`PreparedWeights::attention_products`]), else f32.
    pub fn attention(&self) -> fused::AttentionProducts {
        self.prepared
            .map_or(fused::AttentionProducts::F32, |p| p.attention_products())
    }

    /// The same products without prepared weights: the layers that stay in f32 (the QA head).
    pub fn in_f32_weights(self) -> Self {
        Products {
            prepared: None,
            ..self
        }
    }
}

/// `a @ b`, in `dtype` when given (result back in `a`'s dtype): through cuBLASLt on the CUDA
/// backend ([`cublaslt::matmul`]), else Burn's matmul.
pub(crate) fn matmul<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    dtype: MatmulDtype,
) -> Tensor<B, D> {
    let back = FloatDType::from(a.dtype());
    let (a, b) = match cublaslt::matmul(a, b, None, dtype, back) {
        Ok(product) => return product,
        Err((a, b, _)) => (a, b),
    };
    match dtype {
        None => a.matmul(b),
        Some(half) => a.cast(half).matmul(b.cast(half)).cast(back),
    }
}

/// A linear layer on `[batch, seq, d_in]`, its product as `products` says: with prepared
/// int8/bf16 weights when given, else in `products.dtype`.
///
/// Batch and sequence are flattened into one `[batch·seq, d_in] × [d_in, d_out]` product: one
/// large matrix product parallelises inside itself (batch 1 included), where Burn's broadcast
/// form runs one product per batch entry and, in the backward, sums per-entry weight gradients.
pub(crate) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    products: Products<'_>,
) -> Tensor<B, 3> {
    let [batch, seq, d_in] = x.dims();
    let x = fused::reshape(x, [batch * seq, d_in]);
    let dtype = products.dtype;
    let fused = match (products.prepared, &layer.bias, dtype) {
        (Some(prepared), bias, _) => {
            fused::prepared_linear(x, &layer.weight, bias.as_ref(), prepared)
        }
        (None, Some(bias), None) => fused::linear(x, &layer.weight, bias),
        _ => Err(x),
    };
    // On the CUDA backend: one cuBLASLt product with the bias in its epilogue, in f32 out.
    let fused = fused.or_else(|x| match cublaslt::engine() {
        cublaslt::Engine::CuBlasLt => {
            let back = FloatDType::from(x.dtype());
            let bias = layer.bias.as_ref().map(|b| b.val());
            cublaslt::matmul(x, layer.weight.val(), bias, dtype, back).map_err(|(x, _, _)| x)
        }
        cublaslt::Engine::Burn => Err(x),
    });
    let y = fused.unwrap_or_else(|x| {
        let y = matmul(x, layer.weight.val(), dtype);
        match &layer.bias {
            Some(bias) => y + bias.val().unsqueeze::<2>(),
            None => y,
        }
    });
    let d_out = y.dims()[1];
    fused::reshape(y, [batch, seq, d_out])
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
    products: Products<'_>,
) -> Tensor<B, 3> {
    let dtype = products.dtype;
    if dtype.is_none() && fused::fuses_attention(&query, &mask_bias, heads) {
        let attention_products = products.attention();
        return fused::attention(
            [query, key, value],
            mask_bias,
            heads,
            probs_dropout,
            attention_products,
        );
    }
    let [batch, seq, hidden] = query.dims();
    let head_dim = hidden / heads;
    let split = |t: Tensor<B, 3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let scores = matmul(split(query), split(key).transpose(), dtype);
    let probs = fused::attention_probs(scores, mask_bias, (head_dim as f32).sqrt());
    let probs = dropout(probs_dropout, probs);
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

/// HF's `nn.LayerNorm(width, eps=layer_norm_eps)` over the last dimension. Burn's `LayerNorm`
/// keeps its epsilon private; this one exposes it, so the host backend can run the whole norm
/// as one fused pass ([`fused::layer_norm`]).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// HF's `weight` (γ), `[width]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// HF's `bias` (β), `[width]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Added to the variance (`layer_norm_eps`).
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// # Shapes
    ///
    /// - x: `[..., width]`; output: like `x`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        fused::layer_norm(x, &self.gamma, &self.beta, self.epsilon)
    }
}

/// A LayerNorm of `width` as initialised before loading: γ = 1, β = 0.
pub(crate) fn layer_norm<B: Backend>(
    width: usize,
    epsilon: f64,
    device: &B::Device,
) -> LayerNorm<B> {
    LayerNorm {
        gamma: Param::from_tensor(Tensor::ones([width], device)),
        beta: Param::from_tensor(Tensor::zeros([width], device)),
        epsilon,
    }
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
            HiddenAct::Gelu => fused::gelu(x),
            HiddenAct::GeluTanh => {
                let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
                    .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
                x.mul_scalar(0.5) * (inner.tanh().add_scalar(1.0))
            }
        }
    }
}
