//! The network. BERT and DistilBERT share one post-LayerNorm encoder; DistilBERT simply has no
//! token-type embeddings and puts a dropout before the QA head. Tensor names live in
//! [`crate::checkpoint`]; this file is only the math, readable top to bottom.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

use crate::config::ModelConfig;
use crate::dropout::dropout;

/// Mixed precision: the dtype that matrix products run in (`None`: the backend's own, f32).
/// Weights stay f32 ("master weights"); inputs and weights are cast for each product and the
/// result cast back, so softmax, LayerNorm, GELU and the loss stay in f32.
pub type MatmulDtype = Option<FloatDType>;

/// `a @ b`, in `dtype` when given (result back in `a`'s dtype).
fn matmul<B: Backend, const D: usize>(
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
fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>, dtype: MatmulDtype) -> Tensor<B, 3> {
    if dtype.is_none() {
        return layer.forward(x);
    }
    let y = matmul(x, layer.weight.val().unsqueeze::<3>(), dtype);
    match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze::<3>(),
        None => y,
    }
}

/// Added to attention scores at padded keys, and written into the start/end logits of padded
/// positions so they never win. Finite and representable in f16/bf16.
pub const MASKED: f32 = -10_000.0;

#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    pub word: Embedding<B>,
    pub position: Embedding<B>,
    pub token_type: Option<Embedding<B>>,
    pub norm: LayerNorm<B>,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub attention_output: Linear<B>,
    pub attention_norm: LayerNorm<B>,
    pub intermediate: Linear<B>,
    pub output: Linear<B>,
    pub output_norm: LayerNorm<B>,
    pub attention_dropout: Dropout,
    pub hidden_dropout: Dropout,
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct QaModel<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub layers: Vec<EncoderLayer<B>>,
    pub qa_dropout: Dropout,
    pub qa_outputs: Linear<B>,
}

/// Start and end logits, `[batch, seq]`; padded positions hold [`MASKED`].
#[derive(Debug, Clone)]
pub struct QaOutput<B: Backend> {
    pub start_logits: Tensor<B, 2>,
    pub end_logits: Tensor<B, 2>,
}

/// One padded batch of windows on a device.
#[derive(Debug, Clone)]
pub struct QaBatch<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> QaBatch<B> {
    pub fn from_padded(batch: &qa_data::features::PaddedBatch, device: &B::Device) -> Self {
        let shape = [batch.batch, batch.seq_len];
        let int =
            |v: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), shape), device);
        Self {
            input_ids: int(&batch.input_ids),
            token_type_ids: int(&batch.token_type_ids),
            attention_mask: int(&batch.attention_mask),
        }
    }
}

fn zeros<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}

/// A `[d_in → d_out]` linear layer with zero parameters (filled by the checkpoint loader).
fn zero_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    Linear {
        weight: zeros([d_in, d_out], device),
        bias: Some(zeros([d_out], device)),
    }
}

fn embedding<B: Backend>(n: usize, d: usize, device: &B::Device) -> Embedding<B> {
    Embedding {
        weight: zeros([n, d], device),
    }
}

fn layer_norm<B: Backend>(config: &ModelConfig, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(config.hidden_size)
        .with_epsilon(config.layer_norm_eps)
        .init(device)
}

impl<B: Backend> QaModel<B> {
    /// The model's shape with placeholder parameters; [`crate::checkpoint`] fills them from a
    /// checkpoint or a seeded initialisation.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let dropout_layer = |p: f64| DropoutConfig::new(p).init();
        let embeddings = Embeddings {
            word: embedding(config.vocab_size, h, device),
            position: embedding(config.max_position_embeddings, h, device),
            token_type: (config.type_vocab_size > 0)
                .then(|| embedding(config.type_vocab_size, h, device)),
            norm: layer_norm(config, device),
            dropout: dropout_layer(config.hidden_dropout),
        };
        let layers = (0..config.num_layers)
            .map(|_| EncoderLayer {
                query: zero_linear(h, h, device),
                key: zero_linear(h, h, device),
                value: zero_linear(h, h, device),
                attention_output: zero_linear(h, h, device),
                attention_norm: layer_norm(config, device),
                intermediate: zero_linear(h, config.intermediate_size, device),
                output: zero_linear(config.intermediate_size, h, device),
                output_norm: layer_norm(config, device),
                attention_dropout: dropout_layer(config.attention_dropout),
                hidden_dropout: dropout_layer(config.hidden_dropout),
                num_heads: config.num_heads,
            })
            .collect();
        Self {
            embeddings,
            layers,
            qa_dropout: dropout_layer(config.qa_dropout),
            qa_outputs: zero_linear(h, 2, device),
        }
    }

    /// Last hidden states `[batch, seq, hidden]` (what HF `BertModel` returns first).
    pub fn encode(&self, batch: &QaBatch<B>) -> Tensor<B, 3> {
        self.encode_with(batch, None)
    }

    /// [`Self::encode`] with matrix products in `dtype` (mixed precision).
    pub fn encode_with(&self, batch: &QaBatch<B>, dtype: MatmulDtype) -> Tensor<B, 3> {
        let [b, s] = batch.input_ids.dims();
        let device = batch.input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..s as i64, &device).reshape([1, s]);
        let mut x = self.embeddings.word.forward(batch.input_ids.clone())
            + self.embeddings.position.forward(positions);
        if let Some(token_type) = &self.embeddings.token_type {
            x = x + token_type.forward(batch.token_type_ids.clone());
        }
        let mut x = dropout(&self.embeddings.dropout, self.embeddings.norm.forward(x));
        // 0 where attended, MASKED at padded keys; broadcast over heads and queries.
        let mask_bias = batch
            .attention_mask
            .clone()
            .equal_elem(0)
            .float()
            .mul_scalar(MASKED)
            .reshape([b, 1, 1, s]);
        for layer in &self.layers {
            x = layer.forward(x, mask_bias.clone(), dtype);
        }
        x
    }

    pub fn forward(&self, batch: &QaBatch<B>) -> QaOutput<B> {
        self.forward_with(batch, None)
    }

    /// [`Self::forward`] with matrix products in `dtype` (mixed precision).
    pub fn forward_with(&self, batch: &QaBatch<B>, dtype: MatmulDtype) -> QaOutput<B> {
        let hidden = self.encode_with(batch, dtype);
        let [b, s, _] = hidden.dims();
        let logits = linear(&self.qa_outputs, dropout(&self.qa_dropout, hidden), dtype);
        let padded = batch.attention_mask.clone().equal_elem(0);
        let pick = |i: usize| {
            logits
                .clone()
                .narrow(2, i, 1)
                .reshape([b, s])
                .mask_fill(padded.clone(), MASKED)
        };
        QaOutput {
            start_logits: pick(0),
            end_logits: pick(1),
        }
    }
}

impl<B: Backend> EncoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        dtype: MatmulDtype,
    ) -> Tensor<B, 3> {
        let [b, s, h] = x.dims();
        let heads = self.num_heads;
        let d = h / heads;
        let split = |t: Tensor<B, 3>| t.reshape([b, s, heads, d]).swap_dims(1, 2);
        let q = split(linear(&self.query, x.clone(), dtype));
        let k = split(linear(&self.key, x.clone(), dtype));
        let v = split(linear(&self.value, x.clone(), dtype));
        let scores = matmul(q, k.transpose(), dtype).div_scalar((d as f64).sqrt()) + mask_bias;
        let probs = dropout(&self.attention_dropout, softmax(scores, 3));
        let context = matmul(probs, v, dtype).swap_dims(1, 2).reshape([b, s, h]);
        let attended = self.attention_norm.forward(
            dropout(
                &self.hidden_dropout,
                linear(&self.attention_output, context, dtype),
            ) + x,
        );
        let inner = gelu(linear(&self.intermediate, attended.clone(), dtype));
        self.output_norm
            .forward(dropout(&self.hidden_dropout, linear(&self.output, inner, dtype)) + attended)
    }
}
