//! HF `config.json` → [`ModelConfig`], with a clear error for anything we would build wrongly.

use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    DistilBert,
}

impl Architecture {
    /// Prefix of encoder tensors in an HF `*ForQuestionAnswering` checkpoint.
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::DistilBert => "distilbert",
        }
    }
    pub fn qa_class(self) -> &'static str {
        match self {
            Architecture::Bert => "BertForQuestionAnswering",
            Architecture::DistilBert => "DistilBertForQuestionAnswering",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// 0 for DistilBERT (no token type embeddings).
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
    /// The original `config.json`, echoed back (with new `architectures`) when saving.
    pub hf: Value,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            what: format!("malformed JSON: {e}"),
        })?;
        Self::from_hf(value).map_err(|what| ModelError::Config {
            path: path.to_path_buf(),
            what,
        })
    }

    /// Parses an HF config object; the error string names the offending key.
    pub fn from_hf(hf: Value) -> std::result::Result<Self, String> {
        let model_type = hf
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("no \"model_type\" (expected \"bert\" or \"distilbert\")")?;
        let int = |key: &str| -> std::result::Result<usize, String> {
            hf.get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| format!("missing or non-integer {key:?}"))
        };
        let float_or = |key: &str, default: f64| -> std::result::Result<f64, String> {
            match hf.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| format!("{key:?} must be a number")),
            }
        };
        let check_activation = |key: &str| -> std::result::Result<(), String> {
            match hf.get(key).and_then(Value::as_str).unwrap_or("gelu") {
                "gelu" => Ok(()),
                other => Err(format!(
                    "{key:?} = {other:?} is not supported (only the exact erf \"gelu\")"
                )),
            }
        };
        let config = match model_type {
            "bert" => {
                check_activation("hidden_act")?;
                match hf.get("position_embedding_type").and_then(Value::as_str) {
                    None | Some("absolute") => {}
                    Some(other) => {
                        return Err(format!(
                            "position_embedding_type {other:?} is not supported (only \"absolute\")"
                        ))
                    }
                }
                if hf.get("is_decoder").and_then(Value::as_bool) == Some(true) {
                    return Err("decoder BERT configs are not supported".into());
                }
                Self {
                    architecture: Architecture::Bert,
                    vocab_size: int("vocab_size")?,
                    hidden_size: int("hidden_size")?,
                    num_layers: int("num_hidden_layers")?,
                    num_heads: int("num_attention_heads")?,
                    intermediate_size: int("intermediate_size")?,
                    max_position_embeddings: int("max_position_embeddings")?,
                    type_vocab_size: int("type_vocab_size")?,
                    layer_norm_eps: float_or("layer_norm_eps", 1e-12)?,
                    hidden_dropout: float_or("hidden_dropout_prob", 0.1)?,
                    attention_dropout: float_or("attention_probs_dropout_prob", 0.1)?,
                    qa_dropout: 0.0,
                    initializer_range: float_or("initializer_range", 0.02)?,
                    pad_token_id: int("pad_token_id").unwrap_or(0),
                    sinusoidal_positions: false,
                    hf: Value::Null,
                }
            }
            "distilbert" => {
                check_activation("activation")?;
                Self {
                    architecture: Architecture::DistilBert,
                    vocab_size: int("vocab_size")?,
                    hidden_size: int("dim")?,
                    num_layers: int("n_layers")?,
                    num_heads: int("n_heads")?,
                    intermediate_size: int("hidden_dim")?,
                    max_position_embeddings: int("max_position_embeddings")?,
                    type_vocab_size: 0,
                    // Hard-coded in HF's DistilBERT.
                    layer_norm_eps: 1e-12,
                    hidden_dropout: float_or("dropout", 0.1)?,
                    attention_dropout: float_or("attention_dropout", 0.1)?,
                    qa_dropout: float_or("qa_dropout", 0.1)?,
                    initializer_range: float_or("initializer_range", 0.02)?,
                    pad_token_id: int("pad_token_id").unwrap_or(0),
                    sinusoidal_positions: hf
                        .get("sinusoidal_pos_embds")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    hf: Value::Null,
                }
            }
            other => {
                return Err(format!(
                    "model_type {other:?} is not supported (expected \"bert\" or \"distilbert\")"
                ))
            }
        };
        if config.num_heads == 0 || config.hidden_size % config.num_heads != 0 {
            return Err(format!(
                "hidden size {} is not divisible by {} attention heads",
                config.hidden_size, config.num_heads
            ));
        }
        Ok(Self { hf, ..config })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The `config.json` to save beside fine-tuned weights: the original keys, with
    /// `architectures` naming the QA class so `AutoModelForQuestionAnswering` picks it.
    pub fn to_hf_json(&self) -> Value {
        let mut v = match &self.hf {
            Value::Object(_) => self.hf.clone(),
            _ => self.synthesize_hf(),
        };
        v["architectures"] = Value::from(vec![self.architecture.qa_class()]);
        v
    }

    fn synthesize_hf(&self) -> Value {
        match self.architecture {
            Architecture::Bert => serde_json::json!({
                "model_type": "bert",
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": "gelu",
                "hidden_dropout_prob": self.hidden_dropout,
                "attention_probs_dropout_prob": self.attention_dropout,
                "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size,
                "initializer_range": self.initializer_range,
                "layer_norm_eps": self.layer_norm_eps,
                "pad_token_id": self.pad_token_id,
                "position_embedding_type": "absolute",
            }),
            Architecture::DistilBert => serde_json::json!({
                "model_type": "distilbert",
                "vocab_size": self.vocab_size,
                "dim": self.hidden_size,
                "n_layers": self.num_layers,
                "n_heads": self.num_heads,
                "hidden_dim": self.intermediate_size,
                "activation": "gelu",
                "dropout": self.hidden_dropout,
                "attention_dropout": self.attention_dropout,
                "qa_dropout": self.qa_dropout,
                "max_position_embeddings": self.max_position_embeddings,
                "initializer_range": self.initializer_range,
                "pad_token_id": self.pad_token_id,
                "sinusoidal_pos_embds": self.sinusoidal_positions,
            }),
        }
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
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            qa_dropout: 0.0,
            initializer_range: 0.02,
            pad_token_id: 0,
            sinusoidal_positions: false,
            hf: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsupported_configs_are_errors() {
        let e = ModelConfig::from_hf(serde_json::json!({"model_type": "roberta"})).unwrap_err();
        assert!(e.contains("roberta"));
        let mut bert = ModelConfig::bert(10, 8, 1, 2, 16).to_hf_json();
        bert["position_embedding_type"] = "relative_key".into();
        assert!(ModelConfig::from_hf(bert.clone())
            .unwrap_err()
            .contains("relative_key"));
        bert["position_embedding_type"] = "absolute".into();
        bert["hidden_act"] = "relu".into();
        assert!(ModelConfig::from_hf(bert.clone())
            .unwrap_err()
            .contains("relu"));
        bert["hidden_act"] = "gelu".into();
        bert["num_attention_heads"] = 3.into();
        assert!(ModelConfig::from_hf(bert)
            .unwrap_err()
            .contains("divisible"));
    }

    #[test]
    fn hf_round_trip_keeps_sizes() {
        let c = ModelConfig::bert(30, 16, 2, 4, 32);
        let back = ModelConfig::from_hf(c.to_hf_json()).unwrap();
        assert_eq!(back.hidden_size, 16);
        assert_eq!(back.num_heads, 4);
        assert_eq!(
            back.to_hf_json()["architectures"][0],
            "BertForQuestionAnswering"
        );
    }
}
