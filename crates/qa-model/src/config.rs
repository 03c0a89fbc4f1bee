//! HF `config.json` → [`ModelConfig`], the family-independent view of a model's sizes. Each
//! family's file parses its own keys (`bert::BertConfig`, `distilbert::DistilBertConfig`,
//! `roberta::RobertaConfig`, `electra::ElectraConfig`, `albert::AlbertConfig`,
//! `deberta_v2::DebertaV2Config`); anything this
//! port would compute differently is a typed [`ConfigError`].

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::albert::{self, AlbertConfig};
use crate::bert::{self, BertConfig};
use crate::deberta_v2::{self, DebertaV2Config, DisentangledAttention};
use crate::distilbert::{self, DistilBertConfig};
use crate::electra::{self, ElectraConfig};
use crate::error::{ConfigError, ModelError, Result};
use crate::layers::HiddenAct;
use crate::roberta::{self, RobertaConfig};

/// The `model_type`s this crate builds.
pub const MODEL_TYPES: &[&str] = &[
    bert::MODEL_TYPE,
    distilbert::MODEL_TYPE,
    roberta::MODEL_TYPE,
    roberta::XLM_MODEL_TYPE,
    electra::MODEL_TYPE,
    albert::MODEL_TYPE,
    deberta_v2::MODEL_TYPE,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    DistilBert,
    Roberta,
    /// XLM-RoBERTa: RoBERTa's network under its own `model_type` and class names.
    XlmRoberta,
    Electra,
    Albert,
    /// DeBERTa-v2 and -v3 (`model_type: "deberta-v2"`).
    DebertaV2,
}

impl Architecture {
    /// Every family, for tests that walk them all.
    pub const ALL: [Architecture; 7] = [
        Architecture::Bert,
        Architecture::DistilBert,
        Architecture::Roberta,
        Architecture::XlmRoberta,
        Architecture::Electra,
        Architecture::Albert,
        Architecture::DebertaV2,
    ];

    /// Prefix of encoder tensors in an HF `*ForQuestionAnswering` checkpoint.
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::Bert => bert::PREFIX,
            Architecture::DistilBert => distilbert::PREFIX,
            Architecture::Roberta | Architecture::XlmRoberta => roberta::PREFIX,
            Architecture::Electra => electra::PREFIX,
            Architecture::Albert => albert::PREFIX,
            Architecture::DebertaV2 => deberta_v2::PREFIX,
        }
    }

    /// The HF class saved checkpoints name in `architectures`.
    pub fn qa_class(self) -> &'static str {
        match self {
            Architecture::Bert => bert::QA_CLASS,
            Architecture::DistilBert => distilbert::QA_CLASS,
            Architecture::Roberta => roberta::QA_CLASS,
            Architecture::XlmRoberta => roberta::XLM_QA_CLASS,
            Architecture::Electra => electra::QA_CLASS,
            Architecture::Albert => albert::QA_CLASS,
            Architecture::DebertaV2 => deberta_v2::QA_CLASS,
        }
    }

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Bert => bert::MODEL_TYPE,
            Architecture::DistilBert => distilbert::MODEL_TYPE,
            Architecture::Roberta => roberta::MODEL_TYPE,
            Architecture::XlmRoberta => roberta::XLM_MODEL_TYPE,
            Architecture::Electra => electra::MODEL_TYPE,
            Architecture::Albert => albert::MODEL_TYPE,
            Architecture::DebertaV2 => deberta_v2::MODEL_TYPE,
        }
    }

    /// Whether the model reads token type ids. RoBERTa's tokenizers return none
    /// (`model_input_names` is ids and mask), so HF runs it on type 0 everywhere.
    pub fn reads_token_types(self) -> bool {
        !matches!(
            self,
            Architecture::DistilBert | Architecture::Roberta | Architecture::XlmRoberta
        )
    }
}

/// The activation `config.json` names `hidden_act`, if this port computes it.
pub(crate) fn parse_hidden_act(value: &str) -> std::result::Result<HiddenAct, ConfigError> {
    HiddenAct::from_hf(value).ok_or_else(|| ConfigError::Unsupported {
        key: "hidden_act",
        value: value.to_string(),
        supported: HiddenAct::SUPPORTED,
    })
}

/// Refuses a string-valued setting other than the one this port implements.
pub(crate) fn require_supported(
    key: &'static str,
    value: &str,
    implemented: &str,
    supported: &'static str,
) -> std::result::Result<(), ConfigError> {
    if value == implemented {
        return Ok(());
    }
    Err(ConfigError::Unsupported {
        key,
        value: value.to_string(),
        supported,
    })
}

/// The family-independent view of a model that the rest of the workspace reads (and tests
/// adjust, e.g. dropout off); the model is built from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    /// Width of the token embeddings: `hidden_size`, except in ELECTRA and ALBERT, whose
    /// embeddings are projected up to `hidden_size`.
    pub embedding_size: usize,
    /// The feed-forward activation (`hidden_act`; DistilBERT's `activation`).
    pub hidden_act: HiddenAct,
    /// ALBERT: how many groups of layer parameters the `num_layers` layers share; 1 elsewhere.
    pub num_hidden_groups: usize,
    /// ALBERT: layers in each group; 1 elsewhere.
    pub inner_group_num: usize,
    pub max_position_embeddings: usize,
    /// 0 for DistilBERT (no token type embeddings), 1 for RoBERTa.
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    /// Dropout before the QA head (DistilBERT's `qa_dropout`; BERT has none).
    pub qa_dropout: f64,
    pub initializer_range: f64,
    pub pad_token_id: usize,
    /// DistilBERT's fixed sinusoidal position embeddings (used only for fresh initialisation;
    /// a checkpoint stores them as ordinary weights).
    pub sinusoidal_positions: bool,
    /// DeBERTa's relative-position attention and input settings; `None` in other families.
    pub disentangled_attention: Option<DisentangledAttention>,
    /// The original `config.json`, echoed back (with new `architectures`) when saving.
    pub hf: Value,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config_error = |source| ModelError::Config {
            path: path.to_path_buf(),
            source,
        };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| config_error(ConfigError::NotJson(e)))?;
        Self::from_hf(value).map_err(config_error)
    }

    /// Parses an HF config object through its family's config (HF's keys and defaults).
    pub fn from_hf(hf: Value) -> std::result::Result<Self, ConfigError> {
        let model_type =
            hf.get("model_type")
                .and_then(Value::as_str)
                .ok_or(ConfigError::NoModelType {
                    expected: MODEL_TYPES,
                })?;
        let config = match model_type {
            bert::MODEL_TYPE => BertConfig::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config()?,
            distilbert::MODEL_TYPE => DistilBertConfig::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config()?,
            roberta::MODEL_TYPE => RobertaConfig::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config(Architecture::Roberta)?,
            roberta::XLM_MODEL_TYPE => RobertaConfig::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config(Architecture::XlmRoberta)?,
            electra::MODEL_TYPE => ElectraConfig::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config()?,
            albert::MODEL_TYPE => AlbertConfig::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config()?,
            deberta_v2::MODEL_TYPE => DebertaV2Config::deserialize(&hf)
                .map_err(ConfigError::BadKey)?
                .to_model_config()?,
            other => {
                return Err(ConfigError::UnsupportedModelType {
                    found: other.to_string(),
                    expected: MODEL_TYPES,
                })
            }
        };
        if config.num_heads == 0 || config.hidden_size % config.num_heads != 0 {
            return Err(ConfigError::HeadsDoNotDivide {
                hidden_size: config.hidden_size,
                num_heads: config.num_heads,
            });
        }
        Ok(Self { hf, ..config })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The `config.json` to save beside fine-tuned weights: the original keys, overwritten by
    /// this config's values (so a changed setting, such as dropout, is what gets saved), with
    /// `architectures` naming the QA class so `AutoModelForQuestionAnswering` picks it.
    pub fn to_hf_json(&self) -> Value {
        let ours = self.synthesize_hf();
        let mut v = match (&self.hf, ours) {
            (Value::Object(original), Value::Object(ours)) => {
                let mut merged = original.clone();
                merged.extend(ours);
                Value::Object(merged)
            }
            (_, ours) => ours,
        };
        v["architectures"] = Value::from(vec![self.architecture.qa_class()]);
        v
    }

    fn synthesize_hf(&self) -> Value {
        let config = match self.architecture {
            Architecture::Bert => serde_json::to_value(BertConfig::from_model_config(self)),
            Architecture::DistilBert => {
                serde_json::to_value(DistilBertConfig::from_model_config(self))
            }
            Architecture::Roberta | Architecture::XlmRoberta => {
                serde_json::to_value(RobertaConfig::from_model_config(self))
            }
            Architecture::Electra => serde_json::to_value(ElectraConfig::from_model_config(self)),
            Architecture::Albert => serde_json::to_value(AlbertConfig::from_model_config(self)),
            Architecture::DebertaV2 => {
                serde_json::to_value(DebertaV2Config::from_model_config(self))
            }
        };
        let mut config = config.expect("a config struct serializes");
        config["model_type"] = self.architecture.model_type().into();
        config
    }

    /// A small BERT for tests and benchmarks, with every size given explicitly.
    pub fn bert(
        vocab: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        intermediate: usize,
    ) -> Self {
        Self {
            architecture: Architecture::Bert,
            vocab_size: vocab,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            intermediate_size: intermediate,
            embedding_size: hidden,
            hidden_act: HiddenAct::Gelu,
            num_hidden_groups: 1,
            inner_group_num: 1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            qa_dropout: 0.0,
            initializer_range: 0.02,
            pad_token_id: 0,
            sinusoidal_positions: false,
            disentangled_attention: None,
            hf: Value::Null,
        }
    }

    /// A small DistilBERT for tests, with every size given explicitly.
    pub fn distilbert(
        vocab: usize,
        dim: usize,
        layers: usize,
        heads: usize,
        hidden_dim: usize,
    ) -> Self {
        Self {
            architecture: Architecture::DistilBert,
            type_vocab_size: 0,
            qa_dropout: 0.1,
            ..Self::bert(vocab, dim, layers, heads, hidden_dim)
        }
    }

    /// A small model of any family for tests, with HF's family defaults: RoBERTa's one token
    /// type, padding id 1 and 514 positions; ELECTRA's and ALBERT's embeddings half as wide
    /// as the hidden states; ALBERT's tanh GELU, no dropout and one shared layer group;
    /// DeBERTa-v3's relative attention, no token types and LayerNorm ε 1e-7.
    pub fn small(
        architecture: Architecture,
        vocab: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        intermediate: usize,
    ) -> Self {
        let bert = Self::bert(vocab, hidden, layers, heads, intermediate);
        match architecture {
            Architecture::Bert => bert,
            Architecture::DistilBert => {
                Self::distilbert(vocab, hidden, layers, heads, intermediate)
            }
            Architecture::Roberta | Architecture::XlmRoberta => Self {
                architecture,
                type_vocab_size: 1,
                pad_token_id: 1,
                max_position_embeddings: 514,
                layer_norm_eps: 1e-5,
                ..bert
            },
            Architecture::Electra => Self {
                architecture,
                embedding_size: hidden / 2,
                ..bert
            },
            Architecture::Albert => Self {
                architecture,
                embedding_size: hidden / 2,
                hidden_act: HiddenAct::GeluTanh,
                hidden_dropout: 0.0,
                attention_dropout: 0.0,
                ..bert
            },
            Architecture::DebertaV2 => Self {
                architecture,
                type_vocab_size: 0,
                layer_norm_eps: 1e-7,
                disentangled_attention: Some(DisentangledAttention::DEBERTA_V3),
                ..bert
            },
        }
    }
}

impl ModelConfig {
    /// How many parameters the model holds, counted from the config alone (embeddings, the
    /// layers — ALBERT's shared groups once — and the QA head), so that an absurd config is
    /// refused before anything is allocated. Never overflows: a config's sizes are `usize`s.
    pub fn parameter_count(&self) -> u128 {
        if self.architecture == Architecture::DebertaV2 {
            return deberta_v2::parameter_count(self);
        }
        let [vocab, hidden, embedding, inner, positions, types] = [
            self.vocab_size,
            self.hidden_size,
            self.embedding_size,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ]
        .map(|n| n as u128);
        let projection = if embedding == hidden {
            0
        } else {
            embedding * hidden + hidden
        };
        let embeddings = (vocab + positions + types) * embedding + 2 * embedding + projection;
        // Q, K, V and the output (weights and biases), the feed-forward pair, two LayerNorms.
        let layer =
            4 * (hidden * hidden + hidden) + 2 * hidden * inner + inner + hidden + 4 * hidden;
        let layers = match self.architecture {
            Architecture::Albert => (self.num_hidden_groups * self.inner_group_num) as u128,
            _ => self.num_layers as u128,
        };
        embeddings + layers * layer + 2 * hidden + 2
    }

    /// The longest window the position table can hold (families whose positions start after
    /// a padding offset, as RoBERTa's, subtract it here).
    pub fn max_window_length(&self) -> usize {
        match self.architecture {
            // Positions run from `padding_idx + 1` (HF `create_position_ids_from_input_ids`).
            Architecture::Roberta | Architecture::XlmRoberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id + 1),
            _ => self.max_position_embeddings,
        }
    }

    /// `requested` tokens per window, capped at [`Self::max_window_length`] with a warning, as
    /// run_qa caps `max_seq_length` at the model's maximum (a longer window would index past
    /// the position table).
    pub fn cap_window_length(&self, requested: usize) -> usize {
        let max = self.max_window_length();
        if requested > max {
            tracing::warn!(
                "--max-seq-length {requested} is longer than this model's {max} positions: \
                 using {max}"
            );
        }
        requested.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsupported_configs_are_typed_errors() {
        let e = ModelConfig::from_hf(serde_json::json!({"model_type": "deberta"})).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnsupportedModelType { found, .. } if found == "deberta"),
            "{e}"
        );
        assert!(e.to_string().contains("deberta") && e.to_string().contains("xlm-roberta"));
        let e = ModelConfig::from_hf(serde_json::json!({"hidden_size": 8})).unwrap_err();
        assert!(matches!(e, ConfigError::NoModelType { .. }), "{e}");

        let mut bert = ModelConfig::bert(10, 8, 1, 2, 16).to_hf_json();
        bert["position_embedding_type"] = "relative_key".into();
        let e = ModelConfig::from_hf(bert.clone()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Unsupported { key: "position_embedding_type", value, .. } if value == "relative_key"),
            "{e}"
        );
        assert!(e.to_string().contains("relative_key"));
        bert["position_embedding_type"] = "absolute".into();
        bert["hidden_act"] = "gelu_new".into();
        let tanh = ModelConfig::from_hf(bert.clone()).unwrap();
        assert_eq!(tanh.hidden_act, HiddenAct::GeluTanh);
        bert["hidden_act"] = "relu".into();
        let e = ModelConfig::from_hf(bert.clone()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Unsupported { key: "hidden_act", value, .. } if value == "relu"),
            "{e}"
        );
        assert!(e.to_string().contains("relu"));
        bert["hidden_act"] = "gelu".into();
        bert["is_decoder"] = true.into();
        let e = ModelConfig::from_hf(bert.clone()).unwrap_err();
        assert!(matches!(e, ConfigError::Decoder), "{e}");
        bert["is_decoder"] = false.into();
        bert["num_attention_heads"] = 3.into();
        let e = ModelConfig::from_hf(bert.clone()).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::HeadsDoNotDivide {
                    hidden_size: 8,
                    num_heads: 3
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("divisible"));
        // Sizes are required and must be integers; the message names the key.
        bert.as_object_mut().unwrap().remove("hidden_size");
        let e = ModelConfig::from_hf(bert).unwrap_err();
        assert!(matches!(e, ConfigError::BadKey(_)), "{e}");
        assert!(e.to_string().contains("hidden_size"), "{e}");

        let mut distil = ModelConfig::distilbert(10, 8, 1, 2, 16).to_hf_json();
        distil["activation"] = "relu".into();
        let e = ModelConfig::from_hf(distil).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Unsupported {
                    key: "activation",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn absent_keys_take_hfs_defaults() {
        let bert = ModelConfig::from_hf(serde_json::json!({
            "model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
            "type_vocab_size": 2, "pad_token_id": null,
        }))
        .unwrap();
        assert_eq!(
            (bert.hidden_dropout, bert.attention_dropout, bert.qa_dropout),
            (0.1, 0.1, 0.0)
        );
        assert_eq!((bert.layer_norm_eps, bert.initializer_range), (1e-12, 0.02));
        assert_eq!(bert.pad_token_id, 0);
        let distil = ModelConfig::from_hf(serde_json::json!({
            "model_type": "distilbert", "vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2,
            "hidden_dim": 16, "max_position_embeddings": 32, "pad_token_id": 3,
        }))
        .unwrap();
        assert_eq!(
            (
                distil.hidden_dropout,
                distil.attention_dropout,
                distil.qa_dropout
            ),
            (0.1, 0.1, 0.1)
        );
        assert_eq!((distil.type_vocab_size, distil.pad_token_id), (0, 3));
        assert!(!distil.sinusoidal_positions);
    }

    #[test]
    fn hf_round_trip_keeps_sizes() {
        for c in Architecture::ALL.map(|a| ModelConfig::small(a, 30, 16, 2, 4, 32)) {
            let json = c.to_hf_json();
            let back = ModelConfig::from_hf(json.clone()).unwrap();
            assert_eq!(
                back,
                ModelConfig {
                    hf: json,
                    ..c.clone()
                }
            );
            assert_eq!(
                back.to_hf_json()["architectures"][0],
                c.architecture.qa_class()
            );
            assert_eq!(back.hf["model_type"], c.architecture.model_type());
        }
        // A loaded config is echoed, not rebuilt: keys this crate ignores survive.
        let mut hf = ModelConfig::bert(30, 16, 2, 4, 32).to_hf_json();
        hf["use_cache"] = true.into();
        let saved = ModelConfig::from_hf(hf).unwrap().to_hf_json();
        assert_eq!(saved["use_cache"], true);
    }

    #[test]
    fn new_families_read_hfs_keys_and_defaults() {
        let roberta = ModelConfig::from_hf(serde_json::json!({
            "model_type": "xlm-roberta", "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 514, "type_vocab_size": 1,
        }))
        .unwrap();
        assert_eq!(roberta.architecture, Architecture::XlmRoberta);
        // `RobertaConfig` pads with 1; positions start after it.
        assert_eq!(
            (roberta.pad_token_id, roberta.max_window_length()),
            (1, 512)
        );
        assert_eq!(roberta.architecture.prefix(), "roberta");
        assert_eq!(
            roberta.architecture.qa_class(),
            "XLMRobertaForQuestionAnswering"
        );

        let electra = ModelConfig::from_hf(serde_json::json!({
            "model_type": "electra", "vocab_size": 10, "embedding_size": 4, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 32, "type_vocab_size": 2,
        }))
        .unwrap();
        assert_eq!((electra.embedding_size, electra.hidden_size), (4, 8));
        assert_eq!(
            (electra.hidden_act, electra.hidden_dropout),
            (HiddenAct::Gelu, 0.1)
        );

        let mut albert = serde_json::json!({
            "model_type": "albert", "vocab_size": 10, "embedding_size": 4, "hidden_size": 8,
            "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 32, "type_vocab_size": 2,
        });
        let parsed = ModelConfig::from_hf(albert.clone()).unwrap();
        // ALBERT's own defaults: tanh GELU, no dropout, one group of one layer.
        assert_eq!(parsed.hidden_act, HiddenAct::GeluTanh);
        assert_eq!(
            (parsed.hidden_dropout, parsed.attention_dropout),
            (0.0, 0.0)
        );
        assert_eq!((parsed.num_hidden_groups, parsed.inner_group_num), (1, 1));
        albert["num_hidden_groups"] = 0.into();
        let e = ModelConfig::from_hf(albert.clone()).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Unsupported {
                    key: "num_hidden_groups",
                    ..
                }
            ),
            "{e}"
        );
        albert["num_hidden_groups"] = 2.into();
        albert["hidden_act"] = "silu".into();
        let e = ModelConfig::from_hf(albert).unwrap_err();
        assert!(e.to_string().contains("gelu_new"), "{e}");
    }
}
