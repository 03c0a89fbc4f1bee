//! The windows of every tokenizer kind equal Hugging Face's: byte-level BPE (RoBERTa, with
//! trimmed offsets and `<s> q </s></s> c </s>` pairs), Unigram + Metaspace (XLM-RoBERTa;
//! ALBERT, lowercased without accents; DeBERTa-v3, converted by transformers from a trained
//! SentencePiece model: Strip + its Precompiled charsmap) and WordPiece (ELECTRA), on English, German, Chinese,
//! Russian and Arabic examples with long contexts cut into overlapping windows. The goldens
//! are run_qa's `prepare_validation_features` windows with its training labels, written by
//! `crates/qa-model/tests/fixtures/families/make_golden.py`.

use std::path::PathBuf;

use qa_data::features::write_features_jsonl;
use qa_data::{
    build_features, load, load_tokenizer, pad_token_id, FeatureConfig, LoadOptions, Progress,
};

const FAMILIES: [&str; 5] = ["roberta", "xlm-roberta", "electra", "albert", "deberta-v2"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qa-model/tests/fixtures/families")
}

fn settings() -> serde_json::Value {
    let path = fixtures().join("settings.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn window_config() -> FeatureConfig {
    let settings = settings();
    let size = |key: &str| settings[key].as_u64().unwrap() as usize;
    FeatureConfig {
        max_length: size("max_length"),
        stride: size("doc_stride"),
        progress: Progress::Hidden,
        ..Default::default()
    }
}

fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn windows_of_every_tokenizer_kind_equal_hugging_faces() {
    let data = load(fixtures().join("examples.json"), &LoadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 12);
    for family in FAMILIES {
        let dir = fixtures().join(family);
        let tokenizer = load_tokenizer(&dir).unwrap();
        let set = build_features(&tokenizer, &data.examples, &window_config()).unwrap();
        assert!(
            set.report.skipped.is_empty(),
            "{family}: {:?}",
            set.report.skipped
        );
        let mut ours = Vec::new();
        write_features_jsonl(&mut ours, &set.features, &data.examples).unwrap();
        let ours = jsonl(&String::from_utf8(ours).unwrap());
        let golden = jsonl(&std::fs::read_to_string(dir.join("windows.jsonl")).unwrap());
        assert_eq!(ours.len(), golden.len(), "{family}: window count");
        for (o, g) in ours.iter().zip(&golden) {
            assert_eq!(
                o, g,
                "{family}: window {} of {} differs",
                g["window"], g["id"]
            );
        }
        // Several examples span more than one window, and most windows hold their answer.
        assert!(golden.iter().any(|w| w["window"] == 2), "{family}");
        assert!(set.report.windows_with_answer >= 12, "{family}");
        eprintln!(
            "{family}: {} windows identical to Hugging Face's",
            golden.len()
        );
    }
}

#[test]
fn pad_ids_come_from_each_tokenizer() {
    // RoBERTa and XLM-R pad with `<pad>` = 1, ELECTRA with `[PAD]` = 0, ALBERT with `<pad>` = 0,
    // DeBERTa-v3 with `[PAD]` = 0.
    for (family, pad) in [
        ("roberta", 1),
        ("xlm-roberta", 1),
        ("electra", 0),
        ("albert", 0),
        ("deberta-v2", 0),
    ] {
        let tokenizer = load_tokenizer(&fixtures().join(family)).unwrap();
        assert_eq!(pad_token_id(&tokenizer), pad, "{family}");
    }
}

#[test]
fn padded_windows_use_the_tokenizers_pad_id_on_the_right() {
    let data = load(fixtures().join("examples.json"), &LoadOptions::default()).unwrap();
    let tokenizer = load_tokenizer(&fixtures().join("roberta")).unwrap();
    let config = FeatureConfig {
        padding: qa_data::features::Padding::MaxLength,
        ..window_config()
    };
    let set = build_features(&tokenizer, &data.examples[..2], &config).unwrap();
    for f in &set.features {
        assert_eq!(f.len(), config.max_length);
        let n = f.attention_mask.iter().filter(|&&m| m == 1).count();
        assert!(f.attention_mask[..n].iter().all(|&m| m == 1));
        assert!(
            f.input_ids[n..].iter().all(|&id| id == 1),
            "RoBERTa pads with <pad> = 1"
        );
        // `<s> q </s></s> c </s>`: the context follows two separators.
        assert_eq!(f.input_ids[0], 0);
        assert_eq!(f.input_ids[n - 1], 2);
    }
}

#[test]
fn left_padding_tokenizers_are_refused_clearly() {
    let data = load(fixtures().join("examples.json"), &LoadOptions::default()).unwrap();
    let mut tokenizer = load_tokenizer(&fixtures().join("roberta")).unwrap();
    tokenizer.with_padding(Some(tokenizers::PaddingParams {
        direction: tokenizers::PaddingDirection::Left,
        ..Default::default()
    }));
    let err = build_features(&tokenizer, &data.examples, &window_config()).unwrap_err();
    assert!(
        matches!(&err, qa_data::DataError::Config(why) if why.contains("left")),
        "{err}"
    );
}

/// A folder with only a slow tokenizer's SentencePiece model (as microsoft/deberta-v3-base
/// ships) is refused with the conversion that writes `tokenizer.json`.
#[test]
fn sentencepiece_only_folders_are_refused_with_the_conversion() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "spm.model", "tokenizer_config.json"] {
        std::fs::copy(
            fixtures().join("deberta-v2").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    let err = load_tokenizer(dir.path()).unwrap_err();
    assert!(
        matches!(&err, qa_data::DataError::SentencePieceOnly { model_file, .. } if model_file == "spm.model"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("spm.model") && message.contains("save_pretrained"),
        "{message}"
    );
}
