//! `qa eval`'s path on the RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT and DeBERTa-v3 fixtures of
//! `crates/qa-model/tests/fixtures/families` (see its `make_golden.py`): the predictor loads
//! each model folder with its own tokenizer, cuts the windows, runs the model and decodes, and
//! every top-1 answer equals the one run_qa's `postprocess_qa_predictions` gave on PyTorch's
//! logits (English, German, Chinese, Russian and Arabic, long contexts over several windows).

use std::collections::BTreeMap;
use std::path::PathBuf;

use qa_data::{load, FeatureConfig, LoadOptions, Progress};
use qa_eval::{decode, DecodeConfig, Predictor};
use qa_model::backend::{default_device, Compute};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qa-model/tests/fixtures/families")
}

fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn top1_answers_equal_run_qa_on_pytorch_logits_for_every_family() {
    let settings = read_json(fixtures().join("settings.json"));
    let size = |key: &str| settings[key].as_u64().unwrap() as usize;
    let data = load(fixtures().join("examples.json"), &LoadOptions::default()).unwrap();
    let decode_config = DecodeConfig {
        n_best_size: size("n_best_size"),
        max_answer_length: size("max_answer_length"),
        ..Default::default()
    };
    for family in ["roberta", "xlm-roberta", "electra", "albert", "deberta-v2"] {
        let dir = fixtures().join(family);
        let windows = FeatureConfig {
            max_length: size("max_length"),
            stride: size("doc_stride"),
            progress: Progress::Hidden,
            ..Default::default()
        };
        let predictor = Predictor::<Compute>::load(&dir, windows, 8, &default_device()).unwrap();
        assert!(predictor.has_qa_head, "{family}");
        let scores = predictor.logits(&data.examples, Progress::Hidden).unwrap();
        let decoded = decode(
            &data.examples,
            &scores.features,
            &scores.logits,
            &decode_config,
        )
        .unwrap();
        let ours: BTreeMap<String, String> = decoded
            .examples
            .iter()
            .map(|e| (e.id.clone(), e.text.clone()))
            .collect();
        let golden: BTreeMap<String, String> =
            serde_json::from_value(read_json(dir.join("answers.json"))).unwrap();
        assert_eq!(ours, golden, "{family}");
        eprintln!("{family}: {} answers equal run_qa's", golden.len());
    }
}
