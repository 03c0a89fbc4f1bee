//! `qa-model`: BERT and DistilBERT extractive-QA models in Burn, and Hugging Face checkpoints in
//! and out.
//!
//! * [`config`] reads an HF `config.json` (`model_type` bert / distilbert) into [`ModelConfig`].
//! * [`weights`] reads `model.safetensors` (f32/f16/bf16) or `pytorch_model.bin` into host f32.
//! * [`model`] is the network: one post-LayerNorm encoder serves both architectures (DistilBERT
//!   is BERT without token types and with other tensor names).
//! * [`checkpoint`] maps HF tensor names onto the model, and saves a fine-tuned model as an HF
//!   directory that `transformers` loads unchanged.
//! * [`backend`] is the one place where the Burn backend is chosen (cargo feature `cpu`/`cuda`).

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod dropout;
pub mod error;
pub mod infer;
pub mod model;
pub mod weights;

pub use checkpoint::{load_pretrained, save_pretrained, LoadReport};
pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use model::{QaModel, QaOutput};
