//! ALBERT (`model_type: "albert"`): its `config.json` and its encoder, one struct per module of
//! transformers' `modeling_albert.py`, each declaring the HF names of its parameters beside its
//! fields. ALBERT factorises the embeddings (`embedding_size` columns, mapped up to
//! `hidden_size`) and shares layer parameters: `num_hidden_layers` layers run through
//! `num_hidden_groups` groups of `inner_group_num` layers each.

use burn::module::{Ignored, Module};
use burn::nn::{Dropout, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::BertEmbeddings;
use crate::config::{parse_hidden_act, require_supported, Architecture, ModelConfig};
use crate::dropout::dropout;
use crate::error::{ConfigError, Result};
use crate::hf_params::{HfParams, ParamVisitor};
use crate::layers::{
    attention_mask_bias, dropout_layer, layer_norm, linear, scaled_dot_product_attention,
    zero_linear, HiddenAct, LayerNorm, Products,
};

/// The encoder's attribute in `AlbertForQuestionAnswering`: the prefix of its tensor names.
pub const PREFIX: &str = "albert";
pub const QA_CLASS: &str = "AlbertForQuestionAnswering";
pub const MODEL_TYPE: &str = "albert";

/// transformers' `AlbertConfig` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/configuration_albert.py>)
/// as `config.json` spells it. Sizes are required; the other keys default as in HF (note
/// ALBERT's defaults: tanh GELU, no dropout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlbertConfig {
    pub vocab_size: usize,
    /// Width of the embedding tables, mapped to `hidden_size` by the encoder.
    pub embedding_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    /// Groups of shared layer parameters.
    #[serde(default = "one")]
    pub num_hidden_groups: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Layers in each group.
    #[serde(default = "one")]
    pub inner_group_num: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "crate::bert::default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "crate::bert::default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Absent or `null` mean 0.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default = "crate::bert::default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn one() -> usize {
    1
}
fn default_hidden_act() -> String {
    "gelu_new".into()
}

impl AlbertConfig {
    /// The family-independent view, refusing what this port would compute differently.
    pub fn to_model_config(&self) -> Result<ModelConfig, ConfigError> {
        let hidden_act = parse_hidden_act(&self.hidden_act)?;
        require_supported(
            "position_embedding_type",
            &self.position_embedding_type,
            "absolute",
            "\"absolute\"",
        )?;
        for (key, value) in [
            ("num_hidden_groups", self.num_hidden_groups),
            ("inner_group_num", self.inner_group_num),
        ] {
            if value == 0 {
                return Err(ConfigError::Unsupported {
                    key,
                    value: value.to_string(),
                    supported: "at least 1",
                });
            }
        }
        Ok(ModelConfig {
            architecture: Architecture::Albert,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            embedding_size: self.embedding_size,
            hidden_act,
            num_hidden_groups: self.num_hidden_groups,
            inner_group_num: self.inner_group_num,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            layer_norm_eps: self.layer_norm_eps,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
            // `AlbertForQuestionAnswering` has no dropout before its head.
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
            embedding_size: config.embedding_size,
            hidden_size: config.hidden_size,
            num_hidden_layers: config.num_layers,
            num_hidden_groups: config.num_hidden_groups,
            num_attention_heads: config.num_heads,
            intermediate_size: config.intermediate_size,
            inner_group_num: config.inner_group_num,
            max_position_embeddings: config.max_position_embeddings,
            type_vocab_size: config.type_vocab_size,
            hidden_act: config.hidden_act.hf_name().into(),
            hidden_dropout_prob: config.hidden_dropout,
            attention_probs_dropout_prob: config.attention_dropout,
            initializer_range: config.initializer_range,
            layer_norm_eps: config.layer_norm_eps,
            pad_token_id: Some(config.pad_token_id),
            position_embedding_type: crate::bert::default_position_embedding_type(),
        }
    }
}

/// Ports transformers' models/albert/modeling_albert.py `AlbertAttention` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/modeling_albert.py>)
/// (and `AlbertSdpaAttention`, which computes the same): BERT's self-attention, output
/// projection and LayerNorm in one module.
#[derive(Module, Debug)]
pub struct AlbertAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    /// On the attention probabilities.
    pub attention_dropout: Dropout,
    /// On the projected context.
    pub output_dropout: Dropout,
    pub dense: Linear<B>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub num_attention_heads: usize,
}

impl<B: Backend> AlbertAttention<B> {
    /// Multi-head self-attention, projected, added to the input and normalised.
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
        let context = scaled_dot_product_attention(
            linear(&self.query, hidden_states.clone(), products),
            linear(&self.key, hidden_states.clone(), products),
            linear(&self.value, hidden_states.clone(), products),
            mask_bias,
            self.num_attention_heads,
            &self.attention_dropout,
            products,
        );
        let projected = dropout(&self.output_dropout, linear(&self.dense, context, products));
        self.layer_norm.forward(hidden_states + projected)
    }
}

impl<B: Backend> HfParams<B> for AlbertAttention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("query", &mut self.query)?;
        v.child("key", &mut self.key)?;
        v.child("value", &mut self.value)?;
        v.child("dense", &mut self.dense)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/albert/modeling_albert.py `AlbertLayer` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/modeling_albert.py>).
/// HF builds a `dropout` here that its forward never applies; so none is kept.
#[derive(Module, Debug)]
pub struct AlbertLayer<B: Backend> {
    pub attention: AlbertAttention<B>,
    pub ffn: Linear<B>,
    pub ffn_output: Linear<B>,
    pub full_layer_layer_norm: LayerNorm<B>,
    /// HF's `activation` (`hidden_act`).
    pub activation: Ignored<HiddenAct>,
}

impl<B: Backend> AlbertLayer<B> {
    /// Attention, then the feed-forward network added to its output and normalised.
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
        let expanded = self
            .activation
            .forward(linear(&self.ffn, attended.clone(), products));
        let ffn_output = linear(&self.ffn_output, expanded, products);
        self.full_layer_layer_norm.forward(ffn_output + attended)
    }
}

impl<B: Backend> HfParams<B> for AlbertLayer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("full_layer_layer_norm", &mut self.full_layer_layer_norm)?;
        v.child("attention", &mut self.attention)?;
        v.child("ffn", &mut self.ffn)?;
        v.child("ffn_output", &mut self.ffn_output)
    }
}

/// Ports transformers' models/albert/modeling_albert.py `AlbertLayerGroup` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/modeling_albert.py>).
#[derive(Module, Debug)]
pub struct AlbertLayerGroup<B: Backend> {
    /// `inner_group_num` layers.
    pub albert_layers: Vec<AlbertLayer<B>>,
}

impl<B: Backend> AlbertLayerGroup<B> {
    /// The group's layers in turn.
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
        self.albert_layers.iter().fold(hidden_states, |x, layer| {
            layer.forward(x, mask_bias.clone(), products)
        })
    }
}

impl<B: Backend> HfParams<B> for AlbertLayerGroup<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("albert_layers", &mut self.albert_layers)
    }
}

/// Ports transformers' models/albert/modeling_albert.py `AlbertTransformer` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/modeling_albert.py>):
/// the embeddings mapped to `hidden_size`, then `num_hidden_layers` passes, pass `i` through
/// group `⌊i / (num_hidden_layers / num_hidden_groups)⌋` (so consecutive passes share a group's
/// parameters).
#[derive(Module, Debug)]
pub struct AlbertTransformer<B: Backend> {
    pub embedding_hidden_mapping_in: Linear<B>,
    /// `num_hidden_groups` groups.
    pub albert_layer_groups: Vec<AlbertLayerGroup<B>>,
    pub num_hidden_layers: usize,
}

impl<B: Backend> AlbertTransformer<B> {
    /// The group that pass `layer` runs through, as HF computes it (in floating point).
    pub fn group_of(&self, layer: usize) -> usize {
        let per_group = self.num_hidden_layers as f64 / self.albert_layer_groups.len() as f64;
        (layer as f64 / per_group) as usize
    }

    /// # Shapes
    ///
    /// - hidden_states: `[batch, seq, embedding_size]`
    /// - mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        mask_bias: Tensor<B, 4>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let mapped = linear(&self.embedding_hidden_mapping_in, hidden_states, products);
        (0..self.num_hidden_layers).fold(mapped, |x, layer| {
            self.albert_layer_groups[self.group_of(layer)].forward(x, mask_bias.clone(), products)
        })
    }
}

impl<B: Backend> HfParams<B> for AlbertTransformer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child(
            "embedding_hidden_mapping_in",
            &mut self.embedding_hidden_mapping_in,
        )?;
        v.child("albert_layer_groups", &mut self.albert_layer_groups)
    }
}

/// Ports transformers' models/albert/modeling_albert.py `AlbertModel` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/modeling_albert.py>)
/// as `AlbertForQuestionAnswering` builds it: without the pooler. `AlbertEmbeddings` is BERT's
/// embeddings with `embedding_size`-wide tables, so [`BertEmbeddings`] runs it.
#[derive(Module, Debug)]
pub struct AlbertModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub encoder: AlbertTransformer<B>,
}

impl<B: Backend> AlbertModel<B> {
    /// The model's shape with zero parameters, for the checkpoint loader to fill: each shared
    /// layer exists once.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let hidden = config.hidden_size;
        let norm = || layer_norm(hidden, config.layer_norm_eps, device);
        let layer = || AlbertLayer {
            attention: AlbertAttention {
                query: zero_linear(hidden, hidden, device),
                key: zero_linear(hidden, hidden, device),
                value: zero_linear(hidden, hidden, device),
                attention_dropout: dropout_layer(config.attention_dropout),
                output_dropout: dropout_layer(config.hidden_dropout),
                dense: zero_linear(hidden, hidden, device),
                layer_norm: norm(),
                num_attention_heads: config.num_heads,
            },
            ffn: zero_linear(hidden, config.intermediate_size, device),
            ffn_output: zero_linear(config.intermediate_size, hidden, device),
            full_layer_layer_norm: norm(),
            activation: Ignored(config.hidden_act),
        };
        let albert_layer_groups = (0..config.num_hidden_groups)
            .map(|_| AlbertLayerGroup {
                albert_layers: (0..config.inner_group_num).map(|_| layer()).collect(),
            })
            .collect();
        Self {
            embeddings: BertEmbeddings::skeleton(config, device),
            encoder: AlbertTransformer {
                embedding_hidden_mapping_in: zero_linear(config.embedding_size, hidden, device),
                albert_layer_groups,
                num_hidden_layers: config.num_layers,
            },
        }
    }

    /// The last hidden states (what HF's `AlbertModel` returns first).
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

impl<B: Backend> HfParams<B> for AlbertModel<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("embeddings", &mut self.embeddings)?;
        v.child("encoder", &mut self.encoder)
    }
}
