//! ELECTRA (`model_type: "electra"`, the discriminator that QA checkpoints fine-tune): its
//! `config.json` and its encoder. transformers' `modeling_electra.py` copies BERT's modules
//! (`ElectraEmbeddings` is `BertEmbeddings` with `embedding_size`-wide tables, `ElectraLayer` is
//! `BertLayer`), so the one new module is the projection from `embedding_size` up to
//! `hidden_size`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::{BertEmbeddings, BertEncoder};
use crate::config::{parse_hidden_act, require_supported, Architecture, ModelConfig};
use crate::error::{ConfigError, Result};
use crate::hf_params::{HfParams, ParamVisitor};
use crate::layers::{attention_mask_bias, linear, zero_linear, Products};

/// The encoder's attribute in `ElectraForQuestionAnswering`: the prefix of its tensor names.
pub const PREFIX: &str = "electra";
pub const QA_CLASS: &str = "ElectraForQuestionAnswering";
pub const MODEL_TYPE: &str = "electra";

/// transformers' `ElectraConfig` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/electra/configuration_electra.py>)
/// as `config.json` spells it. Sizes are required; the other keys default as in HF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectraConfig {
    pub vocab_size: usize,
    /// Width of the embedding tables; projected to `hidden_size` when the two differ.
    pub embedding_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
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
    /// Absent or `null` mean 0.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default = "crate::bert::default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub is_decoder: bool,
}

impl ElectraConfig {
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
            architecture: Architecture::Electra,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            embedding_size: self.embedding_size,
            hidden_act,
            num_hidden_groups: 1,
            inner_group_num: 1,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            layer_norm_eps: self.layer_norm_eps,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
            // `ElectraForQuestionAnswering` has no dropout before its head.
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

/// Ports transformers' models/electra/modeling_electra.py `ElectraModel` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/electra/modeling_electra.py>):
/// embeddings (`ElectraEmbeddings`, BERT's with `embedding_size` columns), the projection
/// `embeddings_project` when `embedding_size` ≠ `hidden_size`, and the encoder
/// (`ElectraEncoder`, a copy of BERT's).
#[derive(Module, Debug)]
pub struct ElectraModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    /// `Linear(embedding_size → hidden_size)`; HF creates it only when the two differ.
    pub embeddings_project: Option<Linear<B>>,
    pub encoder: BertEncoder<B>,
}

impl<B: Backend> ElectraModel<B> {
    /// The model's shape with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let embeddings_project = (config.embedding_size != config.hidden_size)
            .then(|| zero_linear(config.embedding_size, config.hidden_size, device));
        Self {
            embeddings: BertEmbeddings::skeleton(config, device),
            embeddings_project,
            encoder: BertEncoder::skeleton(config, device),
        }
    }

    /// The last hidden states (what HF's `ElectraModel` returns first).
    ///
    /// # Shapes
    ///
    /// - input_ids, token_type_ids, attention_mask: `[batch, seq]`
    /// - output: `[batch, seq, hidden]` (embeddings `[batch, seq, embedding_size]` before the
    ///   projection)
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let mut embedded = self.embeddings.forward(input_ids, token_type_ids);
        if let Some(project) = &self.embeddings_project {
            embedded = linear(project, embedded, products);
        }
        self.encoder
            .forward(embedded, attention_mask_bias(attention_mask), products)
    }
}

impl<B: Backend> HfParams<B> for ElectraModel<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("embeddings", &mut self.embeddings)?;
        v.child("embeddings_project", &mut self.embeddings_project)?;
        v.child("encoder", &mut self.encoder)
    }
}
