//! RoBERTa (`model_type: "roberta"`) and XLM-RoBERTa (`"xlm-roberta"`, the same network under
//! other names): their `config.json` and their encoder. transformers' `modeling_roberta.py`
//! copies BERT's attention, feed-forward and encoder modules line for line, so only the
//! embeddings are new here; the layers are [`crate::bert`]'s.

use burn::module::Module;
use burn::nn::{Dropout, Embedding};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::BertEncoder;
use crate::config::{parse_hidden_act, require_supported, Architecture, ModelConfig};
use crate::dropout::dropout;
use crate::error::{ConfigError, Result};
use crate::hf_params::{visit_embedding, HfParams, Init, ParamVisitor};
use crate::layers::{
    attention_mask_bias, dropout_layer, layer_norm, zero_embedding, LayerNorm, Products,
};

/// The encoder's attribute in `RobertaForQuestionAnswering` and
/// `XLMRobertaForQuestionAnswering`: the prefix of their tensor names.
pub const PREFIX: &str = "roberta";
pub const QA_CLASS: &str = "RobertaForQuestionAnswering";
pub const MODEL_TYPE: &str = "roberta";
pub const XLM_QA_CLASS: &str = "XLMRobertaForQuestionAnswering";
pub const XLM_MODEL_TYPE: &str = "xlm-roberta";

/// transformers' `RobertaConfig` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/roberta/configuration_roberta.py>)
/// and `XLMRobertaConfig` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/xlm_roberta/configuration_xlm_roberta.py>),
/// which have the same keys, as `config.json` spells them. Sizes are required; the other keys
/// default as in HF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobertaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Released checkpoints have 514: positions start at `pad_token_id + 1`.
    pub max_position_embeddings: usize,
    /// Released checkpoints have 1.
    pub type_vocab_size: usize,
    #[serde(default = "crate::bert::default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "crate::bert::default_dropout_prob")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "crate::bert::default_dropout_prob")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "crate::bert::default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "crate::bert::default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// The padding row of the word and position tables, and where positions start from.
    /// Absent or `null` mean HF's default, 1.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default = "crate::bert::default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub is_decoder: bool,
}

/// `RobertaConfig.pad_token_id`'s default.
const DEFAULT_PAD_TOKEN_ID: usize = 1;

impl RobertaConfig {
    /// The family-independent view (`architecture` tells RoBERTa from XLM-RoBERTa), refusing
    /// what this port would compute differently.
    pub fn to_model_config(&self, architecture: Architecture) -> Result<ModelConfig, ConfigError> {
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
            architecture,
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
            // `RobertaForQuestionAnswering` has no dropout before its head.
            qa_dropout: 0.0,
            initializer_range: self.initializer_range,
            pad_token_id: self.pad_token_id.unwrap_or(DEFAULT_PAD_TOKEN_ID),
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
            position_embedding_type: crate::bert::default_position_embedding_type(),
            is_decoder: false,
        }
    }
}

/// Ports transformers' models/roberta/modeling_roberta.py `RobertaEmbeddings` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/roberta/modeling_roberta.py>)
/// (XLM-RoBERTa's `XLMRobertaEmbeddings` is a copy): BERT's embeddings, except that positions
/// count from `padding_idx + 1` over the non-padding tokens and padding sits at `padding_idx`
/// (`create_position_ids_from_input_ids`), and that the token types are always 0.
#[derive(Module, Debug)]
pub struct RobertaEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    /// Padding row `padding_idx`, like the word table.
    pub position_embeddings: Embedding<B>,
    /// One row in released checkpoints.
    pub token_type_embeddings: Embedding<B>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
    /// `config.pad_token_id`: the padding row of both tables, and the position offset.
    pub padding_idx: usize,
}

impl<B: Backend> RobertaEmbeddings<B> {
    /// Zero tables, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let hidden = config.hidden_size;
        Self {
            word_embeddings: zero_embedding(config.vocab_size, hidden, device),
            position_embeddings: zero_embedding(config.max_position_embeddings, hidden, device),
            token_type_embeddings: zero_embedding(config.type_vocab_size, hidden, device),
            layer_norm: layer_norm(hidden, config.layer_norm_eps, device),
            dropout: dropout_layer(config.hidden_dropout),
            padding_idx: config.pad_token_id,
        }
    }

    /// HF `create_position_ids_from_input_ids`: `padding_idx + 1, padding_idx + 2, …` over the
    /// tokens that are not `padding_idx`, and `padding_idx` at padded positions.
    ///
    /// # Shapes
    ///
    /// - input_ids: `[batch, seq]`
    /// - output: `[batch, seq]`
    pub fn position_ids(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
        let mask = input_ids.not_equal_elem(self.padding_idx as i64).int();
        (mask.clone().cumsum(1) * mask).add_scalar(self.padding_idx as i64)
    }

    /// Word + type-0 + position embeddings, normalised. HF's RoBERTa tokenizers return no
    /// token type ids, so `RobertaForQuestionAnswering` runs on its zero buffer: none are taken.
    ///
    /// # Shapes
    ///
    /// - input_ids: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let positions = self.position_ids(input_ids.clone());
        let token_types = input_ids.zeros_like();
        let embeddings = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_types)
            + self.position_embeddings.forward(positions);
        dropout(&self.dropout, self.layer_norm.forward(embeddings))
    }
}

impl<B: Backend> HfParams<B> for RobertaEmbeddings<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        // Both tables are `nn.Embedding(padding_idx=pad_token_id)`.
        let padding_row = Init::Normal {
            zero_row: Some(self.padding_idx),
        };
        v.scope("word_embeddings", |v| {
            visit_embedding(v, &mut self.word_embeddings, padding_row)
        })?;
        v.scope("position_embeddings", |v| {
            visit_embedding(v, &mut self.position_embeddings, padding_row)
        })?;
        v.child("token_type_embeddings", &mut self.token_type_embeddings)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/roberta/modeling_roberta.py `RobertaModel` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/roberta/modeling_roberta.py>)
/// and models/xlm_roberta/modeling_xlm_roberta.py `XLMRobertaModel` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>)
/// as their `*ForQuestionAnswering` build them: without the pooler. `RobertaEncoder` is a copy
/// of `BertEncoder`, which is what runs here.
#[derive(Module, Debug)]
pub struct RobertaModel<B: Backend> {
    pub embeddings: RobertaEmbeddings<B>,
    pub encoder: BertEncoder<B>,
}

impl<B: Backend> RobertaModel<B> {
    /// The model's shape with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        Self {
            embeddings: RobertaEmbeddings::skeleton(config, device),
            encoder: BertEncoder::skeleton(config, device),
        }
    }

    /// The last hidden states (what HF's `RobertaModel` returns first).
    ///
    /// # Shapes
    ///
    /// - input_ids, attention_mask: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let embedded = self.embeddings.forward(input_ids);
        self.encoder
            .forward(embedded, attention_mask_bias(attention_mask), products)
    }
}

impl<B: Backend> HfParams<B> for RobertaModel<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("embeddings", &mut self.embeddings)?;
        v.child("encoder", &mut self.encoder)
    }
}
