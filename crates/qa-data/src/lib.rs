//! `qa-data`: everything between a dataset file on disk and the windows a model sees.
//!
//! * [`load`] detects the format, runs the readers ([`squad`] for SQuAD v1.1/v2.0 JSON,
//!   [`hf_json`] for Hugging Face `datasets` JSON/JSON Lines, `tabular` for the same rows in
//!   Parquet and CSV, [`defnlp`] for DEFNLP/Coleridge publications) and validates their records
//!   into one [`Example`] type, repairing misaligned answers visibly ([`LoadReport`]). `record`
//!   holds what the readers share, including run_qa's column names ([`Columns`]).
//! * [`hub`] finds models and datasets by Hugging Face Hub id in the Hub's cache, downloading
//!   what is missing (or, offline, saying what is).
//! * [`requests`] reads prediction requests (JSON Lines of question + context).
//! * [`tokenizer`] loads a Hugging Face tokenizer (`tokenizer.json`, or `vocab.txt` WordPiece)
//!   and says which id pads ([`pad_token_id`]).
//! * [`features`] cuts examples into run_qa sliding windows ([`Feature`]) with labels, offsets
//!   and max-context flags, in parallel.
//! * [`progress`] draws the progress bars of every long loop in the workspace.
//! * [`subset`] picks a seeded random subset (`--max-samples`).
//! * [`atomic`] writes output files whole or not at all.
//! * [`window_file`] stores windows compactly on disk (ids in the narrowest integer type, the
//!   other per-token fields as runs and deltas), and [`cache`] keeps them there between runs
//!   under a fingerprint of everything they depend on (`--cache-dir`, `--overwrite-cache`);
//!   [`windows`] is how runs read windows by index, from memory or such a file
//!   ([`WindowSource`]).
//! * [`prepare`] does all of it for one file: load, subset, windows (from the cache if there).
//!   [`defnlp_seed`] does it as the seed DEFNLP notebook did (one truncated window per CSV row).
//! * [`align`] checks and repairs `answer_start`; [`example`] is the one example type;
//!   [`error`] the crate's typed errors, each naming the file (and record).

pub mod align;
pub mod atomic;
pub mod cache;
pub mod defnlp;
pub mod defnlp_seed;
pub mod error;
pub mod example;
pub mod features;
pub mod hf_json;
pub mod hub;
pub mod load;
pub mod prepare;
pub mod progress;
mod record;
pub mod requests;
pub mod squad;
pub mod subset;
mod tabular;
pub mod tokenizer;
pub mod window_file;
pub mod windows;

pub use align::{AlignOutcome, AnswerAlignment};
pub use cache::WindowCache;
pub use error::{DataError, Result};
pub use example::{Answer, Example, ExampleId};
pub use features::{
    build_features, Feature, FeatureConfig, FeatureReport, FeatureSet, TrainWindows,
};
pub use load::{load, load_files, DataFormat, LoadOptions, LoadReport, LoadedDataset};
pub use prepare::{prepare, DataSource, PreparedData, Sample};
pub use progress::Progress;
pub use record::Columns;
pub use requests::{read_documents, read_requests, Document};
pub use subset::select_subset;
pub use tokenizer::{load_tokenizer, pad_token_id};
pub use windows::{WindowSource, Windows};
