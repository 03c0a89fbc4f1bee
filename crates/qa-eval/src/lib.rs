//! `qa-eval`: from logits to answers, and from answers to the official scores.
//!
//! * [`decode`] turns per-window start/end logits into one answer per example, as HF
//!   `utils_qa.postprocess_qa_predictions` does (n-best, max answer length, SQuAD v2 null score).
//! * [`pipeline`] gives the answers of the HF `question-answering` pipeline instead (per-window
//!   probabilities, whole words, merged duplicates): what `qa predict` prints.
//! * [`squad`] is the official SQuAD v1.1 and v2.0 evaluation, rule for rule.
//! * [`coleridge`] is the Coleridge "Show US the Data" (DEFNLP) Jaccard F0.5 score.

pub mod coleridge;
pub mod decode;
pub mod error;
pub mod normalize;
pub mod pipeline;
pub mod squad;

pub use decode::{decode, DecodeConfig, Decoded, NBestEntry};
pub use error::{EvalError, Result};
pub use normalize::{exact_match, f1_score, normalize_answer};
pub use pipeline::{pipeline_answers, PipelineAnswer, PipelineConfig};
pub use squad::{evaluate_v1, evaluate_v2, Gold, SquadVersion};
