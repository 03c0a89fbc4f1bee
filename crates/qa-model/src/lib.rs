//! `qa-model`: BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT and DeBERTa-v2/v3
//! extractive-QA models in Burn, and Hugging Face checkpoints in and out.
//!
//! * [`config`] reads an HF `config.json` (`model_type` bert / distilbert / roberta /
//!   xlm-roberta / electra / albert / deberta-v2) into [`ModelConfig`], through the family's own
//!   serde config.
//! * [`weights`] reads `model.safetensors` (f32/f16/bf16) or `pytorch_model.bin` into host f32.
//! * [`bert`], [`distilbert`], [`roberta`], [`electra`], [`albert`] and [`deberta_v2`] port
//!   transformers' modules one struct per HF module, each declaring its parameters' HF names; a
//!   new family is a new file of the same shape (RoBERTa, ELECTRA and DeBERTa reuse BERT's
//!   layers).
//! * [`model`] is HF's `*ForQuestionAnswering` head over one family's encoder.
//! * [`layers`] holds what the families share: mixed-precision products, attention, skeleton
//!   layers.
//! * [`precision`] is inference's `--precision f32|bf16|int8` and the table of linear-layer
//!   weights prepared for the host's int8/bf16 kernels.
//! * [`hf_params`] is the walk over HF parameter names that loading, saving and the optimizer's
//!   weight-decay groups all use.
//! * [`checkpoint`] loads HF tensors into the model, and saves a fine-tuned model as an HF
//!   directory that `transformers` loads unchanged.
//! * [`backend`] is the one place where the Burn backend is chosen (cargo feature `cpu`/`cuda`).
//! * [`fused`] runs attention, LayerNorm, GELU, linear layers and AdamW as one-pass kernels
//!   with their own backward on the CPU backend, where Burn's composition of them costs more
//!   than the matrix products.
//! * [`cublaslt`] runs the CUDA build's matrix products through cuBLASLt (forward and backward),
//!   with a layout planner that the CPU tests against an interpreter of cuBLASLt's semantics.
//! * [`dropout`] is Burn's dropout with CPU masks drawn in parallel, in the seeded streams of
//!   [`streams`] (which fresh weights are drawn in too); [`infer`] batches windows by length for
//!   inference; [`error`] holds the typed errors, each naming its file.

pub mod albert;
pub mod backend;
pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod cublaslt;
pub mod deberta_v2;
pub mod distilbert;
pub mod dropout;
pub mod electra;
pub mod error;
pub mod fused;
pub mod hf_params;
pub mod infer;
pub mod layers;
pub mod model;
pub mod precision;
pub mod roberta;
pub mod streams;
pub mod weights;

pub use checkpoint::{load_pretrained, save_pretrained, LoadReport};
pub use config::{Architecture, ModelConfig};
pub use error::{check_vocabulary, ConfigError, ModelError, Result};
pub use hf_params::{hf_param_names, HfParam};
pub use model::{QaModel, QaOutput};
pub use precision::InferencePrecision;
