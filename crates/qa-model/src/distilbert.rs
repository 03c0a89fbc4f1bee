//! DistilBERT (`model_type: "distilbert"`): its `config.json` and its encoder, one struct per
//! module of transformers' `modeling_distilbert.py` (HF's names, `Embeddings`, `FFN`, ...),
//! each declaring the HF names of its parameters beside its fields.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{require_supported, Architecture, ModelConfig};
use crate::dropout::dropout;
use crate::error::{ConfigError, Result};
use crate::hf_params::{visit_embedding, HfParams, Init, ParamVisitor};
use crate::layers::{
    attention_mask_bias, dropout_layer, layer_norm, linear, scaled_dot_product_attention,
    zero_embedding, zero_linear, HiddenAct, LayerNorm, Products,
};

/// The encoder's attribute in `DistilBertForQuestionAnswering`: the prefix of its tensor names.
pub const PREFIX: &str = "distilbert";
pub const QA_CLASS: &str = "DistilBertForQuestionAnswering";
pub const MODEL_TYPE: &str = "distilbert";
/// Hard-coded in HF's DistilBERT (not a config key).
pub const LAYER_NORM_EPS: f64 = 1e-12;

/// transformers' `DistilBertConfig` as `config.json` spells it. Sizes are required; the other
/// keys default as in HF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    #[serde(default = "default_activation")]
    pub activation: String,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default = "default_dropout")]
    pub attention_dropout: f64,
    #[serde(default = "default_dropout")]
    pub qa_dropout: f64,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Absent or `null` mean 0.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
}

fn default_activation() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}

impl DistilBertConfig {
    /// The family-independent view, refusing what this port would compute differently.
    pub fn to_model_config(&self) -> Result<ModelConfig, ConfigError> {
        require_supported(
            "activation",
            &self.activation,
            "gelu",
            "the exact erf \"gelu\"",
        )?;
        Ok(ModelConfig {
            architecture: Architecture::DistilBert,
            vocab_size: self.vocab_size,
            hidden_size: self.dim,
            num_layers: self.n_layers,
            num_heads: self.n_heads,
            intermediate_size: self.hidden_dim,
            embedding_size: self.dim,
            hidden_act: HiddenAct::Gelu,
            num_hidden_groups: 1,
            inner_group_num: 1,
            max_position_embeddings: self.max_position_embeddings,
            // DistilBERT has no token type embeddings.
            type_vocab_size: 0,
            layer_norm_eps: LAYER_NORM_EPS,
            hidden_dropout: self.dropout,
            attention_dropout: self.attention_dropout,
            qa_dropout: self.qa_dropout,
            initializer_range: self.initializer_range,
            pad_token_id: self.pad_token_id.unwrap_or_default(),
            sinusoidal_positions: self.sinusoidal_pos_embds,
            disentangled_attention: None,
            hf: serde_json::Value::Null,
        })
    }

    /// The HF config of a model described only by `config` (built in code, not loaded).
    pub fn from_model_config(config: &ModelConfig) -> Self {
        Self {
            vocab_size: config.vocab_size,
            dim: config.hidden_size,
            n_layers: config.num_layers,
            n_heads: config.num_heads,
            hidden_dim: config.intermediate_size,
            max_position_embeddings: config.max_position_embeddings,
            sinusoidal_pos_embds: config.sinusoidal_positions,
            activation: default_activation(),
            dropout: config.hidden_dropout,
            attention_dropout: config.attention_dropout,
            qa_dropout: config.qa_dropout,
            initializer_range: config.initializer_range,
            pad_token_id: Some(config.pad_token_id),
        }
    }
}

/// Ports transformers' models/distilbert/modeling_distilbert.py `Embeddings` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
    /// The word embeddings' padding row (`nn.Embedding(padding_idx=pad_token_id)`).
    pub pad_token_id: usize,
    /// Whether the position table starts as the fixed sinusoids (a checkpoint stores it as an
    /// ordinary weight either way).
    pub sinusoidal_pos_embds: bool,
}

impl<B: Backend> Embeddings<B> {
    /// Word + position embeddings, normalised.
    ///
    /// # Shapes
    ///
    /// - input_ids: `[batch, seq]`
    /// - output: `[batch, seq, dim]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let seq = input_ids.dims()[1];
        let positions = Tensor::arange(0..seq as i64, &input_ids.device()).reshape([1, seq]);
        let embeddings =
            self.word_embeddings.forward(input_ids) + self.position_embeddings.forward(positions);
        dropout(&self.dropout, self.layer_norm.forward(embeddings))
    }
}

impl<B: Backend> HfParams<B> for Embeddings<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        let padding_row = Init::Normal {
            zero_row: Some(self.pad_token_id),
        };
        let position_init = if self.sinusoidal_pos_embds {
            Init::Sinusoidal
        } else {
            Init::Normal { zero_row: None }
        };
        v.scope("word_embeddings", |v| {
            visit_embedding(v, &mut self.word_embeddings, padding_row)
        })?;
        v.scope("position_embeddings", |v| {
            visit_embedding(v, &mut self.position_embeddings, position_init)
        })?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/distilbert/modeling_distilbert.py `MultiHeadSelfAttention` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>).
#[derive(Module, Debug)]
pub struct MultiHeadSelfAttention<B: Backend> {
    pub q_lin: Linear<B>,
    pub k_lin: Linear<B>,
    pub v_lin: Linear<B>,
    pub out_lin: Linear<B>,
    /// On the attention probabilities.
    pub dropout: Dropout,
    pub n_heads: usize,
}

impl<B: Backend> MultiHeadSelfAttention<B> {
    /// Multi-head attention of every position over the unmasked ones, projected back.
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, dim]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, dim]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let context = scaled_dot_product_attention(
            linear(&self.q_lin, hidden_states.clone(), products),
            linear(&self.k_lin, hidden_states.clone(), products),
            linear(&self.v_lin, hidden_states, products),
            mask_bias,
            self.n_heads,
            &self.dropout,
            products,
        );
        linear(&self.out_lin, context, products)
    }
}

impl<B: Backend> HfParams<B> for MultiHeadSelfAttention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("q_lin", &mut self.q_lin)?;
        v.child("k_lin", &mut self.k_lin)?;
        v.child("v_lin", &mut self.v_lin)?;
        v.child("out_lin", &mut self.out_lin)
    }
}

/// Ports transformers' models/distilbert/modeling_distilbert.py `FFN` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>).
#[derive(Module, Debug)]
pub struct FFN<B: Backend> {
    pub lin1: Linear<B>,
    pub lin2: Linear<B>,
    pub dropout: Dropout,
}

impl<B: Backend> FFN<B> {
    /// Expansion, exact (erf) GELU, contraction.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq, dim]`
    /// - output: `[batch, seq, dim]`
    pub fn forward(&self, input: Tensor<B, 3>, products: Products<'_>) -> Tensor<B, 3> {
        let expanded = gelu(linear(&self.lin1, input, products));
        dropout(&self.dropout, linear(&self.lin2, expanded, products))
    }
}

impl<B: Backend> HfParams<B> for FFN<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("lin1", &mut self.lin1)?;
        v.child("lin2", &mut self.lin2)
    }
}

/// Ports transformers' models/distilbert/modeling_distilbert.py `TransformerBlock` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>).
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    pub attention: MultiHeadSelfAttention<B>,
    pub sa_layer_norm: LayerNorm<B>,
    pub ffn: FFN<B>,
    pub output_layer_norm: LayerNorm<B>,
}

impl<B: Backend> TransformerBlock<B> {
    /// Attention then feed-forward, each added to its input and normalised (no dropout on the
    /// attention output: HF's DistilBERT has none there).
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, dim]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let attended = self.attention.forward(x.clone(), mask_bias, products);
        let sa_output = self.sa_layer_norm.forward(attended + x);
        let ffn_output = self.ffn.forward(sa_output.clone(), products);
        self.output_layer_norm.forward(ffn_output + sa_output)
    }
}

impl<B: Backend> HfParams<B> for TransformerBlock<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("attention", &mut self.attention)?;
        v.child("sa_layer_norm", &mut self.sa_layer_norm)?;
        v.child("ffn", &mut self.ffn)?;
        v.child("output_layer_norm", &mut self.output_layer_norm)
    }
}

/// Ports transformers' models/distilbert/modeling_distilbert.py `Transformer` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    pub layer: Vec<TransformerBlock<B>>,
}

impl<B: Backend> Transformer<B> {
    /// The blocks in turn.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, dim]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        self.layer
            .iter()
            .fold(x, |x, layer| layer.forward(x, mask_bias.clone(), products))
    }
}

impl<B: Backend> HfParams<B> for Transformer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("layer", &mut self.layer)
    }
}

/// Ports transformers' models/distilbert/modeling_distilbert.py `DistilBertModel` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>).
#[derive(Module, Debug)]
pub struct DistilBertModel<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub transformer: Transformer<B>,
}

impl<B: Backend> DistilBertModel<B> {
    /// The model's shape with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let dim = config.hidden_size;
        let norm = || layer_norm(dim, config.layer_norm_eps, device);
        let embeddings = Embeddings {
            word_embeddings: zero_embedding(config.vocab_size, dim, device),
            position_embeddings: zero_embedding(config.max_position_embeddings, dim, device),
            layer_norm: norm(),
            dropout: dropout_layer(config.hidden_dropout),
            pad_token_id: config.pad_token_id,
            sinusoidal_pos_embds: config.sinusoidal_positions,
        };
        let layer = (0..config.num_layers)
            .map(|_| TransformerBlock {
                attention: MultiHeadSelfAttention {
                    q_lin: zero_linear(dim, dim, device),
                    k_lin: zero_linear(dim, dim, device),
                    v_lin: zero_linear(dim, dim, device),
                    out_lin: zero_linear(dim, dim, device),
                    dropout: dropout_layer(config.attention_dropout),
                    n_heads: config.num_heads,
                },
                sa_layer_norm: norm(),
                ffn: FFN {
                    lin1: zero_linear(dim, config.intermediate_size, device),
                    lin2: zero_linear(config.intermediate_size, dim, device),
                    dropout: dropout_layer(config.hidden_dropout),
                },
                output_layer_norm: norm(),
            })
            .collect();
        Self {
            embeddings,
            transformer: Transformer { layer },
        }
    }

    /// The last hidden states (what HF's `DistilBertModel` returns first).
    ///
    /// # Shapes
    ///
    /// - input_ids, attention_mask: `[batch, seq]`
    /// - output: `[batch, seq, dim]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let embedded = self.embeddings.forward(input_ids);
        self.transformer
            .forward(embedded, attention_mask_bias(attention_mask), products)
    }
}

impl<B: Backend> HfParams<B> for DistilBertModel<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("embeddings", &mut self.embeddings)?;
        v.child("transformer", &mut self.transformer)
    }
}
