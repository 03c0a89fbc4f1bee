//! `qa-data`: everything between a dataset file on disk and the windows a model sees.
//!
//! * [`load`] reads SQuAD v1.1/v2.0 JSON, Hugging Face `datasets` JSON/JSON Lines and
//!   DEFNLP/Coleridge publications into one [`Example`] type, validating as it goes and
//!   repairing misaligned answers visibly ([`LoadReport`]).
//! * [`tokenizer`] loads a Hugging Face tokenizer (`tokenizer.json`, or `vocab.txt` WordPiece).
//! * [`features`] cuts examples into run_qa sliding windows ([`Feature`]) with labels, offsets
//!   and max-context flags, in parallel.

pub mod align;
pub mod defnlp;
pub mod error;
pub mod example;
pub mod features;
pub mod hf_json;
pub mod load;
pub mod squad;
pub mod subset;
pub mod tokenizer;

pub use align::{AlignOutcome, AnswerAlignment};
pub use error::{DataError, Result};
pub use example::{Answer, Example, ExampleId};
pub use features::{build_features, Feature, FeatureConfig, FeatureReport, FeatureSet};
pub use load::{load, DataFormat, LoadOptions, LoadReport, LoadedDataset};
pub use subset::select_subset;
pub use tokenizer::load_tokenizer;

/// The `shared/` folder of reference files beside the repository (models, data, golden outputs),
/// or `$QA_SHARED_DIR`. Tests read it; the product never needs it.
pub fn shared_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("QA_SHARED_DIR") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}
