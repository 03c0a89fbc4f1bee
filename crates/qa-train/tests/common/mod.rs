//! What the training suites share: the tiny golden BERT's folder, the first COVID-QA dev
//! questions cut into 64-token windows, and reading back what a run wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qa_data::{
    build_features, load, load_tokenizer, Example, Feature, FeatureConfig, LoadOptions, Progress,
};
use qa_model::weights::{HostTensor, WeightFile};
use qa_model::ModelConfig;
use qa_testkit::shared_dir;

/// The tiny golden BERT QA model's folder.
pub fn tiny_model_dir() -> PathBuf {
    shared_dir().join("golden/tiny-bert-qa")
}

/// Tests that compare weights or run a collective hold this lock (Burn's CPU backend has one
/// process-wide RNG, and a process one collective server per backend).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the tiny model trains with its configured dropout or none (for exact comparisons).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dropout {
    // Only training.rs trains with dropout; each suite compiles this module on its own.
    #[allow(dead_code)]
    AsConfigured,
    Off,
}

/// The tiny golden BERT's config (with `dropout`) and its weights.
pub fn tiny_model(dropout: Dropout) -> (ModelConfig, WeightFile) {
    let dir = tiny_model_dir();
    let mut config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    if dropout == Dropout::Off {
        config.hidden_dropout = 0.0;
        config.attention_dropout = 0.0;
    }
    (
        config,
        WeightFile::read(&dir.join("model.safetensors")).unwrap(),
    )
}

/// The first `questions` COVID-QA dev questions, and their windows (max_length 64, stride 16)
/// split into those holding their answer and the others.
pub fn covid_windows(questions: usize) -> (Vec<Example>, Vec<Feature>, Vec<Feature>) {
    let data = load(
        shared_dir().join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let examples: Vec<Example> = data.examples.into_iter().take(questions).collect();
    let cut = FeatureConfig {
        max_length: 64,
        stride: 16,
        progress: Progress::Hidden,
        ..Default::default()
    };
    let tokenizer = load_tokenizer(&tiny_model_dir()).unwrap();
    let set = build_features(&tokenizer, &examples, &cut).unwrap();
    let (with, without) = set.features.into_iter().partition(|f| f.start_position > 0);
    (examples, with, without)
}

/// The largest element-wise difference between two sets of named tensors (same names).
pub fn max_diff(a: &BTreeMap<String, HostTensor>, b: &BTreeMap<String, HostTensor>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, t)| t.data.iter().zip(&b[k].data).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

/// Every entry of a run's `train_log.jsonl`.
pub fn read_log(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
