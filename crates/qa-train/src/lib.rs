//! `qa-train`: what HF `Trainer` + `run_qa.py` give our users, in Burn.
//!
//! * [`optim`]: AdamW with no decay on biases and LayerNorm weights, torch-style **global**
//!   gradient-norm clipping, and the linear warmup/decay schedule.
//! * [`trainer`]: the loop (accumulation, dropout on, evaluation, logging, best model).
//! * [`checkpoint`]: `checkpoint-STEP/` folders written atomically, pruning, and exact resume.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod loss;
pub mod optim;
pub mod trainer;

pub use config::{LossScaling, Precision, TrainConfig};
pub use error::{Result, TrainError};
pub use optim::LrScheduler;
pub use trainer::{train, EvalSet, TrainOutcome};
