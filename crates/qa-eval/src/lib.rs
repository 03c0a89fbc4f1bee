//! `qa-eval`: from logits to answers, and from answers to the official scores.
//!
//! * [`decode`] turns per-window start/end logits into one answer per example, as HF
//!   `utils_qa.postprocess_qa_predictions` does (n-best, max answer length, SQuAD v2 null score).
//! * [`pipeline`] gives the answers of the HF `question-answering` pipeline instead (per-window
//!   probabilities, whole words, merged duplicates): what `qa predict` prints.
//! * [`squad`] is the official SQuAD v1.1 and v2.0 evaluation, rule for rule; [`normalize`]
//!   is its answer normalisation, exact match and token F1.
//! * [`metrics`] assembles the metrics of one evaluation ([`Metric`] names them), for `qa eval`
//!   and the trainer alike.
//! * [`coleridge`] is the Coleridge "Show US the Data" (DEFNLP) Jaccard F0.5 score;
//!   [`defnlp`] finds dataset labels in publications and writes submissions: by string
//!   matching ([`defnlp_match`]), with a QA model, or both merged ([`defnlp_merge`]).
//! * [`predictor`] loads a fine-tuned model folder once and answers examples with it (logits,
//!   pipeline answers, per-window decoding): what `qa predict` and `qa eval` run.
//! * [`reader`] answers one question over many documents, ranked across them by the logit rule.
//! * [`threshold`] reads and writes the model folder's no-answer threshold (`qa eval` picks it;
//!   `qa predict` and `qa serve` use it).
//! * [`evaluate`] is `qa eval`'s run: predict a prepared file, decode, write, score.
//! * [`precision`] compares answers in bf16/int8 with f32's (`qa eval --compare-precision`).
//! * [`score`] scores prediction files against data files (`qa score`).
//! * [`error`]: typed errors naming the file involved.

pub mod coleridge;
pub mod decode;
pub mod defnlp;
pub mod defnlp_match;
pub mod defnlp_merge;
pub mod error;
pub mod evaluate;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod precision;
pub mod predictor;
pub mod reader;
pub mod score;
pub mod squad;
pub mod threshold;

pub use decode::{decode, DecodeConfig, Decoded, NBestEntry};
pub use error::{EvalError, Result};
pub use metrics::{squad_metrics, Metric, Metrics, UnknownMetric};
pub use normalize::{exact_match, f1_score, normalize_answer};
pub use pipeline::{pipeline_answers, PipelineAnswer, PipelineConfig};
pub use predictor::{Predictor, WindowScores};
pub use reader::{document_answers, Document, DocumentAnswer};
pub use squad::{evaluate_v1, evaluate_v2, Gold, SquadVersion};
