//! `qa-train`: what HF `Trainer` + `run_qa.py` give our users, in Burn.
//!
//! * [`config`]: [`TrainConfig`], HF `TrainingArguments`' names and defaults, also the
//!   `qa train` flag set; precision, loss-scaling and evaluate/save schedules.
//! * [`trainer`]: the loop as named steps (set up or resume, train step, update, step end,
//!   finish), evaluation during training, `train_results.json`.
//! * [`step`]: one optimizer step, shared with `qa bench`: [`step::train_step`] (micro-batches,
//!   loss, backward, accumulation) and [`step::Update`] (clipping, loss scaler, AdamW).
//! * [`optim`]: AdamW with no decay on biases and LayerNorm weights (HF's rule, on HF names),
//!   torch-style **global** gradient-norm clipping, and the learning-rate schedules.
//! * [`loss_scaler`]: torch `GradScaler`'s dynamic loss scaling for fp16.
//! * [`loss`]: the QA loss (mean of start and end cross-entropy).
//! * [`data_parallel`]: several peers (devices, machines) training as one over
//!   `burn-collective`: shares of each global batch, gradient sums, sharded evaluation.
//! * [`liveness`]: which peer is gone: a run's first failure, and node 0's connection to each
//!   node, so a dead node is named at once.
//! * [`lock`]: one run per output folder (an OS lock naming its holder).
//! * [`checkpoint`]: `checkpoint-STEP/` folders written atomically, pruning, and exact resume.
//! * [`model_card`]: the `README.md` model card of the final folder, as the HF Trainer writes it.
//! * [`bench`]: synthetic timing workloads for `qa bench`, through the same step and update.
//! * [`error`]: typed errors ([`ConfigError`] for settings refused up front).

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod error;
pub mod liveness;
pub mod lock;
pub mod loss;
pub mod loss_scaler;
pub mod model_card;
pub mod optim;
pub mod step;
pub mod trainer;

pub use config::{IntervalStrategy, LossScaling, Precision, Schedule, TrainConfig};
pub use data_parallel::{train_data_parallel, Nodes, Peer, World};
pub use error::{CheckpointProblem, ConfigError, Result, TrainError};
pub use loss_scaler::LossScaler;
pub use model_card::{CardFacts, Origin};
pub use optim::LrScheduler;
pub use trainer::{train, train_as_peer, EvalSet, TrainJob, TrainOutcome};
