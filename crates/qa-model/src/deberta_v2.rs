//! DeBERTa-v2 and DeBERTa-v3 (`model_type: "deberta-v2"`): its `config.json` and its encoder,
//! one struct per module of transformers' `modeling_deberta_v2.py`, each declaring the HF names
//! of its parameters beside its fields. What sets the family apart is disentangled attention:
//! besides content·content, each score adds content·position (`c2p`) and position·content
//! (`p2c`) terms read from a table of relative-position embeddings, whose rows are picked by the
//! log-bucketed distance between query and key ([`RelativePositions`]).
//!
//! The feed-forward block and the attention's output projection are BERT's
//! ([`BertIntermediate`], [`BertOutput`], [`BertSelfOutput`]). On the CPU engine the attention
//! runs fused, the relative terms added inside each head's task ([`fused::disentangled_attention`]);
//! elsewhere it is Burn's composition (a gather of each score's table row), which the fused
//! kernels' tests hold it equal to.

use burn::module::{Ignored, Module, Param};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;
use std::sync::Arc;

use crate::bert::{BertIntermediate, BertOutput, BertSelfOutput};
use crate::config::{parse_hidden_act, Architecture, ModelConfig};
use crate::dropout::dropout;
use crate::error::{ConfigError, Result};
use crate::fused;
use crate::hf_params::{visit_embedding, HfParams, Init, ParamVisitor};
use crate::layers::{
    attention_mask_bias, dropout_layer, layer_norm, linear, matmul, zero_embedding, zero_linear,
    LayerNorm, Products,
};

/// The encoder's attribute in `DebertaV2ForQuestionAnswering`: the prefix of its tensor names.
pub const PREFIX: &str = "deberta";
pub const QA_CLASS: &str = "DebertaV2ForQuestionAnswering";
pub const MODEL_TYPE: &str = "deberta-v2";

/// transformers' `DebertaV2Config` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/configuration_deberta_v2.py>)
/// as `config.json` spells it, with the keys `modeling_deberta_v2.py` reads through `getattr`.
/// Sizes are required; the other keys default as in HF (note DeBERTa's defaults: LayerNorm
/// ε 1e-7, no token types, absolute positions added to the input, no relative attention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebertaV2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub type_vocab_size: usize,
    #[serde(default = "crate::bert::default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "crate::bert::default_dropout_prob")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "crate::bert::default_dropout_prob")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "crate::bert::default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Whether scores get the relative-position terms (`rel_embeddings` exists).
    #[serde(default)]
    pub relative_attention: bool,
    /// Below 1: `max_position_embeddings`.
    #[serde(default = "unset")]
    pub max_relative_positions: i64,
    /// Above 0: relative distances are log-bucketed into this many rows per direction.
    #[serde(default = "unset")]
    pub position_buckets: i64,
    /// Absent or `null` mean 0.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    /// Whether absolute position embeddings are added to the input (v3: no).
    #[serde(default = "yes")]
    pub position_biased_input: bool,
    /// `["p2c", "c2p"]`, or the older `"p2c|c2p"` string; `null` means none.
    #[serde(default)]
    pub pos_att_type: Option<PosAttType>,
    /// Whether the position projections reuse the content ones (`query_proj`, `key_proj`).
    #[serde(default)]
    pub share_att_key: bool,
    /// `"layer_norm"`: the relative embeddings are normalised before use.
    #[serde(default = "default_norm_rel_ebd")]
    pub norm_rel_ebd: String,
    /// Absent: `hidden_size` (no `embed_proj`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// DeBERTa-v2 xlarge's convolution after the first layer (refused when above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_kernel_size: Option<usize>,
    /// Absent: `hidden_size / num_attention_heads` (any other value is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_head_size: Option<usize>,
}

/// `pos_att_type` as configs spell it: a list, or (older configs) one `|`-joined string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PosAttType {
    List(Vec<String>),
    Joined(String),
}

impl PosAttType {
    /// The entries, trimmed and lowercased as `DebertaV2Config` does with the string form.
    fn entries(&self) -> Vec<String> {
        match self {
            PosAttType::List(list) => list.clone(),
            PosAttType::Joined(joined) => {
                joined.split('|').map(|s| s.trim().to_lowercase()).collect()
            }
        }
    }
}

fn default_max_position_embeddings() -> usize {
    512
}
fn default_layer_norm_eps() -> f64 {
    1e-7
}
fn unset() -> i64 {
    -1
}
fn yes() -> bool {
    true
}
fn default_norm_rel_ebd() -> String {
    "none".into()
}

/// The relative-position table: how many rows it has and which row each distance reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativePositions {
    /// `max_relative_positions` (below 1 in the config: `max_position_embeddings`).
    pub max_relative_positions: usize,
    /// `position_buckets` when above 0.
    pub position_buckets: Option<usize>,
}

impl RelativePositions {
    /// HF's `att_span` (`pos_ebd_size`): the table has `2·span` rows, distances −span..span.
    pub fn span(&self) -> usize {
        self.position_buckets.unwrap_or(self.max_relative_positions)
    }

    /// The (bucketed) relative position of a query `relative` tokens after its key: HF's
    /// `make_log_bucket_position`, in f32 as PyTorch computes it. Distances under half the
    /// buckets stay exact; longer ones share rows on a log scale up to `max_relative_positions`.
    pub fn bucket(&self, relative: i64) -> i64 {
        let Some(buckets) = self.position_buckets else {
            return relative;
        };
        let mid = (buckets / 2) as i64;
        let abs = if relative < mid && relative > -mid {
            mid - 1
        } else {
            relative.abs()
        };
        if abs <= mid {
            return relative;
        }
        // `torch.tensor((max_position - 1) / mid)`: a Python float rounded to f32.
        let range = ((self.max_relative_positions as f64 - 1.0) / mid as f64) as f32;
        let log =
            ((abs as f32 / mid as f32).ln() / range.ln() * (mid - 1) as f32).ceil() + mid as f32;
        log as i64 * relative.signum()
    }

    /// The row of the table that query `query` reads for key `key` (c2p) and key `key` for
    /// query `query` (p2c): `clamp(bucket(query − key) + span, 0, 2·span − 1)`.
    pub fn row(&self, query: usize, key: usize) -> i64 {
        let span = self.span() as i64;
        (self.bucket(query as i64 - key as i64) + span).clamp(0, 2 * span - 1)
    }
}

/// DeBERTa's settings that the other families do not have ([`ModelConfig::disentangled_attention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisentangledAttention {
    /// `relative_attention`: the relative-position table, when scores use it.
    pub relative: Option<RelativePositions>,
    /// `"c2p"` in `pos_att_type`: content (query) · position (key) scores.
    pub content_to_position: bool,
    /// `"p2c"` in `pos_att_type`: position (query) · content (key) scores.
    pub position_to_content: bool,
    /// `share_att_key`.
    pub share_att_key: bool,
    /// `position_biased_input`: absolute position embeddings are added to the input.
    pub position_biased_input: bool,
    /// `norm_rel_ebd: "layer_norm"`.
    pub normalize_relative_embeddings: bool,
}

impl DisentangledAttention {
    /// microsoft/deberta-v3-base's settings (512 positions in 256 buckets, shared keys).
    pub const DEBERTA_V3: Self = Self {
        relative: Some(RelativePositions {
            max_relative_positions: 512,
            position_buckets: Some(256),
        }),
        content_to_position: true,
        position_to_content: true,
        share_att_key: true,
        position_biased_input: false,
        normalize_relative_embeddings: true,
    };

    /// What the scores are divided by, squared and over the head size: one term per kind of
    /// score (HF counts `c2p` and `p2c` even without `relative_attention`).
    pub fn scale_factor(&self) -> usize {
        1 + usize::from(self.content_to_position) + usize::from(self.position_to_content)
    }

    /// Whether layers hold `pos_key_proj` (`pos_query_proj` for `p2c`) of their own.
    fn separate_projection(&self, kind: bool) -> bool {
        self.relative.is_some() && !self.share_att_key && kind
    }
}

impl DebertaV2Config {
    /// The family-independent view, refusing what this port would compute differently.
    pub fn to_model_config(&self) -> Result<ModelConfig, ConfigError> {
        let hidden_act = parse_hidden_act(&self.hidden_act)?;
        let refuse = |key: &'static str, value: String, supported: &'static str| {
            Err(ConfigError::Unsupported {
                key,
                value,
                supported,
            })
        };
        if let Some(kernel) = self.conv_kernel_size.filter(|&k| k > 0) {
            return refuse(
                "conv_kernel_size",
                kernel.to_string(),
                "0 (DeBERTa-v2 xlarge's convolution layer is not ported)",
            );
        }
        if let Some(size) = self.attention_head_size {
            if self.num_attention_heads == 0 || size * self.num_attention_heads != self.hidden_size
            {
                return refuse(
                    "attention_head_size",
                    size.to_string(),
                    "hidden_size / num_attention_heads",
                );
            }
        }
        let (mut content_to_position, mut position_to_content) = (false, false);
        for entry in self
            .pos_att_type
            .as_ref()
            .map_or(Vec::new(), |t| t.entries())
        {
            match entry.as_str() {
                "c2p" => content_to_position = true,
                "p2c" => position_to_content = true,
                _ => return refuse("pos_att_type", entry, "\"c2p\" and \"p2c\""),
            }
        }
        let mut normalize_relative_embeddings = false;
        for entry in self
            .norm_rel_ebd
            .split('|')
            .map(|s| s.trim().to_lowercase())
        {
            match entry.as_str() {
                "none" => {}
                "layer_norm" => normalize_relative_embeddings = true,
                _ => return refuse("norm_rel_ebd", entry, "\"none\" or \"layer_norm\""),
            }
        }
        let relative = self.relative_attention.then(|| RelativePositions {
            max_relative_positions: usize::try_from(self.max_relative_positions)
                .ok()
                .filter(|&m| m >= 1)
                .unwrap_or(self.max_position_embeddings),
            position_buckets: usize::try_from(self.position_buckets)
                .ok()
                .filter(|&b| b > 0),
        });
        if let Some(relative) = relative {
            // Log buckets need at least two rows each side and a range past them.
            let bucketed = relative
                .position_buckets
                .is_none_or(|b| b >= 4 && relative.max_relative_positions > b / 2 + 1);
            if relative.span() == 0 || !bucketed {
                return refuse(
                    "position_buckets",
                    self.position_buckets.to_string(),
                    "at least 4 buckets, fewer than twice max_relative_positions",
                );
            }
        }
        Ok(ModelConfig {
            architecture: Architecture::DebertaV2,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            embedding_size: self.embedding_size.unwrap_or(self.hidden_size),
            hidden_act,
            num_hidden_groups: 1,
            inner_group_num: 1,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            layer_norm_eps: self.layer_norm_eps,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
            // `DebertaV2ForQuestionAnswering` has no dropout before its head.
            qa_dropout: 0.0,
            initializer_range: self.initializer_range,
            pad_token_id: self.pad_token_id.unwrap_or_default(),
            sinusoidal_positions: false,
            disentangled_attention: Some(DisentangledAttention {
                relative,
                content_to_position,
                position_to_content,
                share_att_key: self.share_att_key,
                position_biased_input: self.position_biased_input,
                normalize_relative_embeddings,
            }),
            hf: serde_json::Value::Null,
        })
    }

    /// The HF config of a model described only by `config` (built in code, not loaded).
    pub fn from_model_config(config: &ModelConfig) -> Self {
        let settings = settings(config);
        let relative = settings.relative;
        let pos_att_type = [
            (settings.position_to_content, "p2c"),
            (settings.content_to_position, "c2p"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect();
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
            relative_attention: relative.is_some(),
            max_relative_positions: relative.map_or(-1, |r| r.max_relative_positions as i64),
            position_buckets: relative
                .and_then(|r| r.position_buckets)
                .map_or(-1, |b| b as i64),
            pad_token_id: Some(config.pad_token_id),
            position_biased_input: settings.position_biased_input,
            pos_att_type: Some(PosAttType::List(pos_att_type)),
            share_att_key: settings.share_att_key,
            norm_rel_ebd: if settings.normalize_relative_embeddings {
                "layer_norm".into()
            } else {
                default_norm_rel_ebd()
            },
            embedding_size: Some(config.embedding_size),
            conv_kernel_size: None,
            attention_head_size: None,
        }
    }
}

/// A DeBERTa config's settings (DeBERTa-v3's for a config built without them).
fn settings(config: &ModelConfig) -> DisentangledAttention {
    config
        .disentangled_attention
        .unwrap_or(DisentangledAttention::DEBERTA_V3)
}

/// Parameters of a DeBERTa model, counted from its config ([`ModelConfig::parameter_count`]).
pub(crate) fn parameter_count(config: &ModelConfig) -> u128 {
    let settings = settings(config);
    let [vocab, hidden, embedding, inner, positions, types, layers] = [
        config.vocab_size,
        config.hidden_size,
        config.embedding_size,
        config.intermediate_size,
        config.max_position_embeddings,
        config.type_vocab_size,
        config.num_layers,
    ]
    .map(|n| n as u128);
    let positions = positions * u128::from(settings.position_biased_input);
    let projection = if embedding == hidden {
        0
    } else {
        embedding * hidden
    };
    let embeddings = (vocab + positions + types) * embedding + projection + 2 * hidden;
    let linear = hidden * hidden + hidden;
    let separate = [settings.content_to_position, settings.position_to_content]
        .into_iter()
        .filter(|&kind| settings.separate_projection(kind))
        .count() as u128;
    let layer = (4 + separate) * linear + 2 * hidden * inner + inner + hidden + 4 * hidden;
    let relative = settings.relative.map_or(0, |r| {
        2 * r.span() as u128 * hidden
            + 2 * hidden * u128::from(settings.normalize_relative_embeddings)
    });
    embeddings + layers * layer + relative + 2 * hidden + 2
}

/// Ports transformers' models/deberta_v2/modeling_deberta_v2.py `DebertaV2Embeddings` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>).
/// HF also zeroes padded positions' embeddings; nothing unpadded reads them (every query masks
/// padded keys), so that product is left out.
#[derive(Module, Debug)]
pub struct DebertaV2Embeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    /// Absent when `position_biased_input` is false (DeBERTa-v3).
    pub position_embeddings: Option<Embedding<B>>,
    /// Absent when `type_vocab_size` is 0 (DeBERTa-v3).
    pub token_type_embeddings: Option<Embedding<B>>,
    /// `embedding_size → hidden_size` without bias, when the two differ.
    pub embed_proj: Option<Linear<B>>,
    /// HF's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
    /// The word embeddings' padding row (`nn.Embedding(padding_idx=pad_token_id)`).
    pub pad_token_id: usize,
    /// `max_position_embeddings`, whether or not a table holds them.
    pub max_position_embeddings: usize,
}

impl<B: Backend> DebertaV2Embeddings<B> {
    fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let settings = settings(config);
        let width = config.embedding_size;
        let projection = (width != config.hidden_size).then(|| Linear {
            weight: Param::from_tensor(Tensor::zeros([width, config.hidden_size], device)),
            bias: None,
        });
        Self {
            word_embeddings: zero_embedding(config.vocab_size, width, device),
            position_embeddings: settings
                .position_biased_input
                .then(|| zero_embedding(config.max_position_embeddings, width, device)),
            token_type_embeddings: (config.type_vocab_size > 0)
                .then(|| zero_embedding(config.type_vocab_size, width, device)),
            embed_proj: projection,
            layer_norm: layer_norm(config.hidden_size, config.layer_norm_eps, device),
            dropout: dropout_layer(config.hidden_dropout),
            pad_token_id: config.pad_token_id,
            max_position_embeddings: config.max_position_embeddings,
        }
    }

    /// Word (+ position + token type) embeddings, projected and normalised.
    ///
    /// # Shapes
    ///
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let seq = input_ids.dims()[1];
        let device = input_ids.device();
        let mut embeddings = self.word_embeddings.forward(input_ids);
        if let Some(table) = &self.position_embeddings {
            let positions = Tensor::arange(0..seq as i64, &device).reshape([1, seq]);
            embeddings = embeddings + table.forward(positions);
        }
        if let Some(table) = &self.token_type_embeddings {
            embeddings = embeddings + table.forward(token_type_ids);
        }
        if let Some(projection) = &self.embed_proj {
            embeddings = linear(projection, embeddings, products);
        }
        dropout(&self.dropout, self.layer_norm.forward(embeddings))
    }
}

impl<B: Backend> HfParams<B> for DebertaV2Embeddings<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        let padding_row = Init::Normal {
            zero_row: Some(self.pad_token_id),
        };
        v.scope("word_embeddings", |v| {
            visit_embedding(v, &mut self.word_embeddings, padding_row)
        })?;
        v.child("position_embeddings", &mut self.position_embeddings)?;
        v.child("token_type_embeddings", &mut self.token_type_embeddings)?;
        v.child("embed_proj", &mut self.embed_proj)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// What every layer's attention shares in one forward pass: the relative-position embeddings
/// and, for each (query, key), the row of them it reads.
#[derive(Debug)]
pub struct RelativeTerms<B: Backend> {
    /// `[1, 2·span, hidden]`, normalised when `norm_rel_ebd` says so.
    embeddings: Tensor<B, 3>,
    /// [`RelativePositions::row`]`(q, k)` at `q · seq + k`.
    rows: Arc<[u32]>,
    seq: usize,
    /// The rows as index tensors, for Burn's composition: `(q, k)` at `[0, 0, q, k]`, and
    /// transposed, `(q, k)` at `[0, 0, k, q]` (p2c gathers along the query axis). Made the first
    /// time a layer composes.
    gather_rows: OnceCell<[Tensor<B, 4, Int>; 2]>,
}

impl<B: Backend> RelativeTerms<B> {
    /// The terms of a `seq`-token pass over `embeddings` (`[1, 2·span, hidden]`).
    pub(crate) fn new(embeddings: Tensor<B, 3>, positions: RelativePositions, seq: usize) -> Self {
        Self {
            embeddings,
            rows: (0..seq * seq)
                .map(|i| positions.row(i / seq, i % seq) as u32)
                .collect(),
            seq,
            gather_rows: OnceCell::new(),
        }
    }

    fn gather_rows(&self, device: &B::Device) -> &[Tensor<B, 4, Int>; 2] {
        self.gather_rows.get_or_init(|| {
            let seq = self.seq;
            let index = |at: &dyn Fn(usize, usize) -> usize| {
                let data: Vec<i64> = (0..seq * seq)
                    .map(|i| i64::from(self.rows[at(i / seq, i % seq)]))
                    .collect();
                Tensor::<B, 4, Int>::from_data(TensorData::new(data, [1, 1, seq, seq]), device)
            };
            [index(&|q, k| q * seq + k), index(&|k, q| q * seq + k)]
        })
    }
}

/// The relative-position table through a layer's position projections, `[2·span, hidden]`
/// each: keys for `c2p`, queries for `p2c`.
pub(crate) struct ProjectedTables<B: Backend> {
    pub pos_key: Option<Tensor<B, 2>>,
    pub pos_query: Option<Tensor<B, 2>>,
}

/// Ports transformers' models/deberta_v2/modeling_deberta_v2.py `DisentangledSelfAttention` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>).
#[derive(Module, Debug)]
pub struct DisentangledSelfAttention<B: Backend> {
    pub query_proj: Linear<B>,
    pub key_proj: Linear<B>,
    pub value_proj: Linear<B>,
    /// Keys of the position table for `c2p`, unless `share_att_key` (then `key_proj`).
    pub pos_key_proj: Option<Linear<B>>,
    /// Queries of the position table for `p2c`, unless `share_att_key` (then `query_proj`).
    pub pos_query_proj: Option<Linear<B>>,
    /// On the attention probabilities.
    pub dropout: Dropout,
    /// On the relative embeddings (`hidden_dropout_prob`).
    pub pos_dropout: Dropout,
    pub num_attention_heads: usize,
    pub settings: Ignored<DisentangledAttention>,
}

impl<B: Backend> DisentangledSelfAttention<B> {
    /// Multi-head attention whose scores add the relative-position terms:
    /// (q·k + q·pₖ[row(q,k)] + k·p_q[row(q,k)]) / √(head size · scale factor).
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
        relative: Option<&RelativeTerms<B>>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let query = linear(&self.query_proj, hidden_states.clone(), products);
        let key = linear(&self.key_proj, hidden_states.clone(), products);
        let value = linear(&self.value_proj, hidden_states, products);
        let tables = relative.map(|relative| self.project_tables(relative, products));
        self.attend(
            [query, key, value],
            mask_bias,
            relative.zip(tables),
            products,
        )
    }

    /// The attention of projected queries, keys and values with the layer's position tables:
    /// fused on the CPU engine, else composed.
    pub(crate) fn attend(
        &self,
        [query, key, value]: [Tensor<B, 3>; 3],
        mask_bias: Tensor<B, 4>,
        relative: Option<(&RelativeTerms<B>, ProjectedTables<B>)>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let heads = self.num_attention_heads;
        let hidden = query.dims()[2];
        let divisor = ((hidden / heads * self.settings.scale_factor()) as f32).sqrt();
        if products.dtype.is_none() && fused::fuses_attention(&query, &mask_bias, heads) {
            let tables = relative.and_then(|(relative, tables)| {
                let any = tables.pos_key.is_some() || tables.pos_query.is_some();
                any.then(|| fused::PositionTables {
                    pos_key: tables.pos_key,
                    pos_query: tables.pos_query,
                    rows: relative.rows.clone(),
                })
            });
            return fused::disentangled_attention(
                [query, key, value],
                mask_bias,
                heads,
                divisor,
                tables,
                &self.dropout,
                products.attention(),
            );
        }
        self.composed([query, key, value], mask_bias, relative, divisor, products)
    }

    /// The layer's position projections of the (dropped-out) relative embeddings.
    fn project_tables(
        &self,
        relative: &RelativeTerms<B>,
        products: Products<'_>,
    ) -> ProjectedTables<B> {
        let settings = &self.settings.0;
        let table = dropout(&self.pos_dropout, relative.embeddings.clone());
        let [_, rows, hidden] = table.dims();
        let project = |projection: &Linear<B>| {
            linear(projection, table.clone(), products).reshape([rows, hidden])
        };
        ProjectedTables {
            pos_key: settings
                .content_to_position
                .then(|| project(self.pos_key_proj.as_ref().unwrap_or(&self.key_proj))),
            pos_query: settings
                .position_to_content
                .then(|| project(self.pos_query_proj.as_ref().unwrap_or(&self.query_proj))),
        }
    }

    /// Burn's composition of the attention: all heads' scores, each relative term a product
    /// with every table row followed by a gather of each score's row.
    fn composed(
        &self,
        [query, key, value]: [Tensor<B, 3>; 3],
        mask_bias: Tensor<B, 4>,
        relative: Option<(&RelativeTerms<B>, ProjectedTables<B>)>,
        divisor: f32,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let [batch, seq, hidden] = query.dims();
        let heads = self.num_attention_heads;
        let head_dim = hidden / heads;
        let dtype = products.dtype;
        let split = |t: Tensor<B, 3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let (query, key) = (split(query), split(key));
        let mut scores = matmul(query.clone(), key.clone().swap_dims(2, 3), dtype);
        if let Some((relative, tables)) = relative {
            let [rows, rows_transposed] = relative.gather_rows(&scores.device()).clone();
            let index = |rows: Tensor<B, 4, Int>| rows.expand([batch, heads, seq, seq]);
            // `[table_rows, hidden]` → per head, for every batch entry, transposed.
            let per_head = |table: Tensor<B, 2>| {
                let table_rows = table.dims()[0];
                table
                    .reshape([1, table_rows, heads, head_dim])
                    .swap_dims(1, 2)
                    .expand([batch, heads, table_rows, head_dim])
                    .swap_dims(2, 3)
            };
            if let Some(pos_key) = tables.pos_key {
                // q · pₖ for every row, then each key's row.
                let by_row = matmul(query, per_head(pos_key), dtype);
                scores = scores + by_row.gather(3, index(rows));
            }
            if let Some(pos_query) = tables.pos_query {
                // k · p_q for every row, then each query's row, as `[.., key, query]`.
                let by_row = matmul(key, per_head(pos_query), dtype);
                scores = scores + by_row.gather(3, index(rows_transposed)).swap_dims(2, 3);
            }
        }
        let probs = fused::attention_probs(scores, mask_bias, divisor);
        let probs = dropout(&self.dropout, probs);
        matmul(probs, split(value), dtype)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden])
    }
}

impl<B: Backend> HfParams<B> for DisentangledSelfAttention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("query_proj", &mut self.query_proj)?;
        v.child("key_proj", &mut self.key_proj)?;
        v.child("value_proj", &mut self.value_proj)?;
        v.child("pos_key_proj", &mut self.pos_key_proj)?;
        v.child("pos_query_proj", &mut self.pos_query_proj)
    }
}

/// Ports transformers' models/deberta_v2/modeling_deberta_v2.py `DebertaV2Attention` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>);
/// its `DebertaV2SelfOutput` is BERT's [`BertSelfOutput`].
#[derive(Module, Debug)]
pub struct DebertaV2Attention<B: Backend> {
    /// HF's `self` (a Rust keyword).
    pub self_attention: DisentangledSelfAttention<B>,
    pub output: BertSelfOutput<B>,
}

impl<B: Backend> HfParams<B> for DebertaV2Attention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("self", &mut self.self_attention)?;
        v.child("output", &mut self.output)
    }
}

/// Ports transformers' models/deberta_v2/modeling_deberta_v2.py `DebertaV2Layer` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>);
/// `DebertaV2Intermediate` and `DebertaV2Output` are BERT's.
#[derive(Module, Debug)]
pub struct DebertaV2Layer<B: Backend> {
    pub attention: DebertaV2Attention<B>,
    pub intermediate: BertIntermediate<B>,
    pub output: BertOutput<B>,
}

impl<B: Backend> DebertaV2Layer<B> {
    /// One transformer block: disentangled attention, then the feed-forward network.
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
        relative: Option<&RelativeTerms<B>>,
        products: Products<'_>,
    ) -> Tensor<B, 3> {
        let context = self.attention.self_attention.forward(
            hidden_states.clone(),
            mask_bias,
            relative,
            products,
        );
        let attended = self
            .attention
            .output
            .forward(context, hidden_states, products);
        let expanded = self.intermediate.forward(attended.clone(), products);
        self.output.forward(expanded, attended, products)
    }
}

impl<B: Backend> HfParams<B> for DebertaV2Layer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("attention", &mut self.attention)?;
        v.child("intermediate", &mut self.intermediate)?;
        v.child("output", &mut self.output)
    }
}

/// Ports transformers' models/deberta_v2/modeling_deberta_v2.py `DebertaV2Encoder` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>):
/// the layers, and the relative-position table they all read.
#[derive(Module, Debug)]
pub struct DebertaV2Encoder<B: Backend> {
    pub layer: Vec<DebertaV2Layer<B>>,
    /// `[2·span, hidden]`, when `relative_attention`.
    pub rel_embeddings: Option<Embedding<B>>,
    /// HF's `LayerNorm` over `rel_embeddings` (`norm_rel_ebd: "layer_norm"`).
    pub layer_norm: Option<LayerNorm<B>>,
    pub relative: Ignored<Option<RelativePositions>>,
}

impl<B: Backend> DebertaV2Encoder<B> {
    fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        let settings = settings(config);
        let hidden = config.hidden_size;
        let norm = || layer_norm(hidden, config.layer_norm_eps, device);
        let separate = |kind| {
            settings
                .separate_projection(kind)
                .then(|| zero_linear(hidden, hidden, device))
        };
        let layer = (0..config.num_layers)
            .map(|_| DebertaV2Layer {
                attention: DebertaV2Attention {
                    self_attention: DisentangledSelfAttention {
                        query_proj: zero_linear(hidden, hidden, device),
                        key_proj: zero_linear(hidden, hidden, device),
                        value_proj: zero_linear(hidden, hidden, device),
                        pos_key_proj: separate(settings.content_to_position),
                        pos_query_proj: separate(settings.position_to_content),
                        dropout: dropout_layer(config.attention_dropout),
                        pos_dropout: dropout_layer(config.hidden_dropout),
                        num_attention_heads: config.num_heads,
                        settings: Ignored(settings),
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
        let relative = settings.relative;
        Self {
            layer,
            rel_embeddings: relative.map(|r| zero_embedding(2 * r.span(), hidden, device)),
            layer_norm: (relative.is_some() && settings.normalize_relative_embeddings).then(norm),
            relative: Ignored(relative),
        }
    }

    /// The relative embeddings and rows of a `seq`-token pass (HF's `get_rel_embedding` and
    /// `build_relative_position`), computed once for all layers.
    fn relative_terms(&self, seq: usize) -> Option<RelativeTerms<B>> {
        let (positions, table) = (self.relative.0?, self.rel_embeddings.as_ref()?);
        let mut embeddings = table.weight.val();
        if let Some(norm) = &self.layer_norm {
            embeddings = norm.forward(embeddings);
        }
        Some(RelativeTerms::new(
            embeddings.unsqueeze::<3>(),
            positions,
            seq,
        ))
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
        let seq = hidden_states.dims()[1];
        let relative = self.relative_terms(seq);
        self.layer.iter().fold(hidden_states, |x, layer| {
            layer.forward(x, mask_bias.clone(), relative.as_ref(), products)
        })
    }
}

impl<B: Backend> HfParams<B> for DebertaV2Encoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("layer", &mut self.layer)?;
        v.child("rel_embeddings", &mut self.rel_embeddings)?;
        v.child("LayerNorm", &mut self.layer_norm)
    }
}

/// Ports transformers' models/deberta_v2/modeling_deberta_v2.py `DebertaV2Model` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>)
/// as `DebertaV2ForQuestionAnswering` builds it.
#[derive(Module, Debug)]
pub struct DebertaV2Model<B: Backend> {
    pub embeddings: DebertaV2Embeddings<B>,
    pub encoder: DebertaV2Encoder<B>,
}

impl<B: Backend> DebertaV2Model<B> {
    /// The model's shape with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        Self {
            embeddings: DebertaV2Embeddings::skeleton(config, device),
            encoder: DebertaV2Encoder::skeleton(config, device),
        }
    }

    /// The last hidden states (what HF's `DebertaV2Model` returns first).
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
        let embedded = self.embeddings.forward(input_ids, token_type_ids, products);
        self.encoder
            .forward(embedded, attention_mask_bias(attention_mask), products)
    }
}

impl<B: Backend> HfParams<B> for DebertaV2Model<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        v.child("embeddings", &mut self.embeddings)?;
        v.child("encoder", &mut self.encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_distances_keep_their_own_rows_and_long_ones_share_log_buckets() {
        let positions = RelativePositions {
            max_relative_positions: 512,
            position_buckets: Some(256),
        };
        for relative in -128..=128 {
            assert_eq!(positions.bucket(relative), relative);
        }
        // Beyond half the buckets: ⌈log(|r|/128) / log(511/128) · 127⌉ + 128, signed.
        assert_eq!(positions.bucket(129), 129);
        assert_eq!(positions.bucket(-383), -229);
        assert_eq!(positions.bucket(511), 255);
        assert_eq!(positions.bucket(1000), 317);
        assert_eq!(positions.row(0, 0), 256);
        assert_eq!(positions.row(0, 600), 0);
        assert_eq!(positions.row(600, 0), 511);
        let unbucketed = RelativePositions {
            max_relative_positions: 64,
            position_buckets: None,
        };
        assert_eq!(unbucketed.row(100, 0), 127);
        assert_eq!(unbucketed.row(3, 5), 62);
    }

    fn config(extra: serde_json::Value) -> std::result::Result<ModelConfig, ConfigError> {
        let mut hf = serde_json::json!({
            "model_type": MODEL_TYPE, "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        });
        for (key, value) in extra.as_object().unwrap() {
            hf[key] = value.clone();
        }
        ModelConfig::from_hf(hf)
    }

    #[test]
    fn configs_spell_pos_att_type_both_ways_and_refuse_what_is_not_ported() {
        let list = config(serde_json::json!({"pos_att_type": ["p2c", "c2p"]})).unwrap();
        let joined = config(serde_json::json!({"pos_att_type": "C2P | p2c"})).unwrap();
        assert_eq!(list.disentangled_attention, joined.disentangled_attention);
        assert_eq!(list.disentangled_attention.unwrap().scale_factor(), 3);
        let plain = config(serde_json::json!({})).unwrap();
        let settings = plain.disentangled_attention.unwrap();
        assert!(settings.relative.is_none() && settings.position_biased_input);
        assert_eq!((plain.layer_norm_eps, plain.type_vocab_size), (1e-7, 0));
        let relative = config(serde_json::json!({"relative_attention": true})).unwrap();
        assert_eq!(
            relative.disentangled_attention.unwrap().relative,
            Some(RelativePositions {
                max_relative_positions: 512,
                position_buckets: None
            })
        );
        for (extra, key) in [
            (
                serde_json::json!({"pos_att_type": "p2p|c2p"}),
                "pos_att_type",
            ),
            (
                serde_json::json!({"conv_kernel_size": 3}),
                "conv_kernel_size",
            ),
            (
                serde_json::json!({"attention_head_size": 3}),
                "attention_head_size",
            ),
            (
                serde_json::json!({"norm_rel_ebd": "batch_norm"}),
                "norm_rel_ebd",
            ),
            (
                serde_json::json!({"relative_attention": true, "position_buckets": 2}),
                "position_buckets",
            ),
        ] {
            let e = config(extra).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Unsupported { key: k, .. } if *k == key),
                "{e}"
            );
        }
        // A convolution of size 0 is no convolution.
        config(serde_json::json!({"conv_kernel_size": 0})).unwrap();
    }
}
