//! BERT (`model_type: "bert"`, also MiniLM and other BERT-shaped checkpoints): its
//! `config.json` and its encoder, one struct per module of transformers' `modeling_bert.py`,
//! each declaring the HF names of its parameters beside its fields.

use burn::module::{Ignored, Module};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{parse_hidden_act, require_supported, Architecture, ModelConfig};
use crate::dropout::dropout;
use crate::error::{ConfigError, Result};
use crate::hf_params::{visit_embedding, HfParams, Init, ParamVisitor};
use crate::layers::{
    attention_mask_bias, dropout_layer, layer_norm, linear, scaled_dot_product_attention,
    zero_embedding, zero_linear, HiddenAct, LayerNorm, Products,
};

/// The encoder's attribute in `BertForQuestionAnswering`: the prefix of its tensor names.
pub const PREFIX: &str = "bert";
pub const QA_CLASS: &str = "BertForQuestionAnswering";
pub const MODEL_TYPE: &str = "bert";

/// transformers' `BertConfig` as `config.json` spells it. Sizes are required; the other keys
/// default as in HF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout_prob")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout_prob")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Absent or `null` mean 0.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub is_decoder: bool,
}

/// HF's defaults for the keys every BERT-shaped config has (RoBERTa's and ELECTRA's too).
pub(crate) fn default_hidden_act() -> String {
    "gelu".into()
}
pub(crate) fn default_dropout_prob() -> f64 {
    0.1
}
pub(crate) fn default_initializer_range() -> f64 {
    0.02
}
pub(crate) fn default_layer_norm_eps() -> f64 {
    1e-12
}
pub(crate) fn default_position_embedding_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// The family-independent view, refusing what this port would compute differently.
    pub fn to_model_config(&self) -> Result<ModelConfig, ConfigError> {
        let hidden_act = parse_hidden_act(&self.hidden_act)?;
        require_supported(
            "position_embedding_type",
            &self.position_embedding_type,
            "absolute",
            "\"absolute\"",
        )?;
        if self.is_decoder {
            return Err(ConfigError::Decoder);
        }
        Ok(ModelConfig {
            architecture: Architecture::Bert,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            embedding_size: self.hidden_size,
            hidden_act,
            num_hidden_groups: 1,
            inner_group_num: 1,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            layer_norm_eps: self.layer_norm_eps,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
            // `BertForQuestionAnswering` has no dropout before its head.
            qa_dropout: 0.0,
            initializer_range: self.initializer_range,
            pad_token_id: self.pad_token_id.unwrap_or_default(),
            sinusoidal_positions: false,
            disentangled_attention: None,
            hf: serde_json::Value::Null,
        })
    }

    /// The HF config of a model described only by `config` (built in code, not loaded).
    pub fn from_model_config(config: &ModelConfig) -> Self {
        Self {
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            num_hidden_layers: config.num_layers,
            num_attention_heads: config.num_heads,
            intermediate_size: config.intermediate_size,
            max_position_embeddings: config.max_position_embeddings,
            type_vocab_size: config.type_vocab_size,
            hidden_act: config.hidden_act.hf_name().into(),
            hidden_dropout_prob: config.hidden_dropout,
            attention_probs_dropout_prob: config.attention_dropout,
            initializer_range: config.initializer_range,
            layer_norm_eps: config.layer_norm_eps,
            pad_token_id: Some(config.pad_token_id),
            position_embedding_type: default_position_embedding_type(),
            is_decoder: false,
        }
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertEmbeddings` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>)
/// with absolute positions. ELECTRA's `ElectraEmbeddings` and ALBERT's `AlbertEmbeddings` are
/// copies of it whose tables are `embedding_size` wide, so those families use it too.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    pub token_type_embeddings: Embedding<B>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
    /// The word embeddings' padding row (`nn.Embedding(padding_idx=pad_token_id)`).
    pub pad_token_id: usize,
}

impl<B: Backend> BertEmbeddings<B> {
    /// Zero tables `config.embedding_size` wide (`hidden_size` in BERT itself).
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let width = config.embedding_size;
        Self {
            word_embeddings: zero_embedding(config.vocab_size, width, device),
            position_embeddings: zero_embedding(config.max_position_embeddings, width, device),
            token_type_embeddings: zero_embedding(config.type_vocab_size, width, device),
            layer_norm: layer_norm(width, config.layer_norm_eps, device),
            dropout: dropout_layer(config.hidden_dropout),
            pad_token_id: config.pad_token_id,
        }
    }

    /// Word + token type + position embeddings, normalised.
    ///
    /// # Shapes
    ///
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - output: `[batch, seq, embedding_size]` (`hidden` in BERT)
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let seq = input_ids.dims()[1];
        let positions = Tensor::arange(0..seq as i64, &input_ids.device()).reshape([1, seq]);
        let embeddings = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + self.position_embeddings.forward(positions);
        dropout(&self.dropout, self.layer_norm.forward(embeddings))
    }
}

impl<B: Backend> HfParams<B> for BertEmbeddings<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        let padding_row = Init::Normal {
            zero_row: Some(self.pad_token_id),
        };
        v.scope("word_embeddings", |v| {
            visit_embedding(v, &mut self.word_embeddings, padding_row)
        })?;
        v.child("position_embeddings", &mut self.position_embeddings)?;
        v.child("token_type_embeddings", &mut self.token_type_embeddings)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertSelfAttention` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    /// On the attention probabilities.
    pub dropout: Dropout,
    pub num_attention_heads: usize,
}

impl<B: Backend> BertSelfAttention<B> {
    /// Multi-head attention of every position over the unmasked ones.
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, hidden]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, hidden]` (the heads' contexts, concatenated)
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        scaled_dot_product_attention(
            linear(&self.query, hidden_states.clone(), products),
            linear(&self.key, hidden_states.clone(), products),
            linear(&self.value, hidden_states, products),
            mask_bias,
            self.num_attention_heads,
            &self.dropout,
            products,
        )
    }
}

impl<B: Backend> HfParams<B> for BertSelfAttention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("query", &mut self.query)?;
        v.child("key", &mut self.key)?;
        v.child("value", &mut self.value)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertSelfOutput` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertSelfOutput<B: Backend> {
    pub dense: Linear<B>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> BertSelfOutput<B> {
    /// Projection of the attention context, added to the attention's input and normalised.
    ///
    /// # Shapes
    ///
    /// - hidden_states, input_tensor: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        input_tensor: Tensor<B, 3>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let projected = dropout(&self.dropout, linear(&self.dense, hidden_states, products));
        self.layer_norm.forward(projected + input_tensor)
    }
}

impl<B: Backend> HfParams<B> for BertSelfOutput<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("dense", &mut self.dense)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertAttention` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// HF's `self` (a Rust keyword).
    pub self_attention: BertSelfAttention<B>,
    pub output: BertSelfOutput<B>,
}

impl<B: Backend> BertAttention<B> {
    /// Self-attention, then its projection added to the input and normalised.
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, hidden]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let context = self
            .self_attention
            .forward(hidden_states.clone(), mask_bias, products);
        self.output.forward(context, hidden_states, products)
    }
}

impl<B: Backend> HfParams<B> for BertAttention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("self", &mut self.self_attention)?;
        v.child("output", &mut self.output)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertIntermediate` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    pub dense: Linear<B>,
    /// HF's `intermediate_act_fn` (`hidden_act`).
    pub activation: Ignored<HiddenAct>,
}

impl<B: Backend> BertIntermediate<B> {
    /// The feed-forward expansion, through the activation (BERT's exact erf GELU by default).
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, hidden]`
    /// - output: `[batch, seq, intermediate]`
    pub fn forward(&self, hidden_states: Tensor<B, 3>, products: Products<'_>) -> Tensor<B, 3> {
        self.activation
            .forward(linear(&self.dense, hidden_states, products))
    }
}

impl<B: Backend> HfParams<B> for BertIntermediate<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("dense", &mut self.dense)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertOutput` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertOutput<B: Backend> {
    pub dense: Linear<B>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> BertOutput<B> {
    /// The feed-forward contraction, added to the block's input and normalised.
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, intermediate]`
    /// - input_tensor: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        input_tensor: Tensor<B, 3>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let projected = dropout(&self.dropout, linear(&self.dense, hidden_states, products));
        self.layer_norm.forward(projected + input_tensor)
    }
}

impl<B: Backend> HfParams<B> for BertOutput<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("dense", &mut self.dense)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertLayer` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub attention: BertAttention<B>,
    pub intermediate: BertIntermediate<B>,
    pub output: BertOutput<B>,
}

impl<B: Backend> BertLayer<B> {
    /// One transformer block: attention, then the feed-forward network.
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, hidden]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let attended = self.attention.forward(hidden_states, mask_bias, products);
        let expanded = self.intermediate.forward(attended.clone(), products);
        self.output.forward(expanded, attended, products)
    }
}

impl<B: Backend> HfParams<B> for BertLayer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("attention", &mut self.attention)?;
        v.child("intermediate", &mut self.intermediate)?;
        v.child("output", &mut self.output)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertEncoder` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>).
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    pub layer: Vec<BertLayer<B>>,
}

impl<B: Backend> BertEncoder<B> {
    /// `config.num_layers` layers with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let hidden = config.hidden_size;
        let norm = || layer_norm(hidden, config.layer_norm_eps, device);
        let layer = (0..config.num_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: zero_linear(hidden, hidden, device),
                        key: zero_linear(hidden, hidden, device),
                        value: zero_linear(hidden, hidden, device),
                        dropout: dropout_layer(config.attention_dropout),
                        num_attention_heads: config.num_heads,
                    },
                    output: BertSelfOutput {
                        dense: zero_linear(hidden, hidden, device),
                        layer_norm: norm(),
                        dropout: dropout_layer(config.hidden_dropout),
                    },
                },
                intermediate: BertIntermediate {
                    dense: zero_linear(hidden, config.intermediate_size, device),
                    activation: Ignored(config.hidden_act),
                },
                output: BertOutput {
                    dense: zero_linear(config.intermediate_size, hidden, device),
                    layer_norm: norm(),
                    dropout: dropout_layer(config.hidden_dropout),
                },
            })
            .collect();
        Self { layer }
    }

    /// The layers in turn.
    ///
    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, hidden]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        self.layer.iter().fold(hidden_states, |x, layer| {
            layer.forward(x, mask_bias.clone(), products)
        })
    }
}

impl<B: Backend> HfParams<B> for BertEncoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("layer", &mut self.layer)
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertModel` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>)
/// as `BertForQuestionAnswering` builds it: without the pooler.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub encoder: BertEncoder<B>,
}

impl<B: Backend> BertModel<B> {
    /// The model's shape with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        Self {
            embeddings: BertEmbeddings::skeleton(config, device),
            encoder: BertEncoder::skeleton(config, device),
        }
    }

    /// The last hidden states (what HF's `BertModel` returns first).
    ///
    /// # Shapes
    ///
    /// - input_ids, token_type_ids, attention_mask: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let embedded = self.embeddings.forward(input_ids, token_type_ids);
        self.encoder
            .forward(embedded, attention_mask_bias(attention_mask), products)
    }
}

impl<B: Backend> HfParams<B> for BertModel<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("embeddings", &mut self.embeddings)?;
        v.child("encoder", &mut self.encoder)
    }
}
