//! Parity with Hugging Face: the windows of `shared/golden/covid_dev_features.jsonl` (made by the
//! Python `tokenizers` + run_qa rules) must come out identical, and COVID-QA train must give
//! exactly the 34,717 windows of the reference run.

use std::collections::BTreeSet;

use qa_data::{build_features, load, FeatureConfig, LoadOptions, Progress};
use qa_testkit::shared_dir;

fn config() -> FeatureConfig {
    FeatureConfig {
        progress: Progress::Hidden,
        ..Default::default()
    }
}

fn minilm_tokenizer() -> tokenizers::Tokenizer {
    qa_data::load_tokenizer(&shared_dir().join("models/all-MiniLM-L6-v2")).expect("tokenizer")
}

#[test]
fn covid_dev_windows_equal_golden_jsonl() {
    let shared = shared_dir();
    let data = load(
        shared.join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let examples = &data.examples[..12];
    let set = build_features(&minilm_tokenizer(), examples, &config()).unwrap();
    let mut ours = Vec::new();
    qa_data::features::write_features_jsonl(&mut ours, &set.features, examples).unwrap();
    let ours: Vec<serde_json::Value> = String::from_utf8(ours)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let golden: Vec<serde_json::Value> =
        std::fs::read_to_string(shared.join("golden/covid_dev_features.jsonl"))
            .expect("golden features")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(golden.len(), 94);
    assert_eq!(ours.len(), golden.len(), "window count");
    for (i, (o, g)) in ours.iter().zip(&golden).enumerate() {
        assert_eq!(
            o, g,
            "window {i} (id {}, window {}) differs",
            g["id"], g["window"]
        );
    }
}

#[test]
fn covid_train_gives_34717_windows_covering_every_context_token() {
    let shared = shared_dir();
    let data = load(
        shared.join("data/covid-qa/train.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(data.examples.len(), 1225);
    let mut tokenizer = minilm_tokenizer();
    let set = build_features(&tokenizer, &data.examples, &config()).unwrap();
    assert_eq!(set.features.len(), 34_717);
    assert!(set.report.skipped.is_empty());

    // The shipped tokenizer.json truncates at 128 tokens: tokenize whole contexts for the check.
    tokenizer.with_truncation(None).unwrap();
    // Every token of every context must be inside some window, and consecutive windows must
    // overlap (stride) — the property tokenizers 0.23.2 breaks.
    let mut by_example: Vec<Vec<&qa_data::Feature>> = vec![Vec::new(); data.examples.len()];
    for f in &set.features {
        by_example[f.example_index].push(f);
    }
    for (ex, windows) in data.examples.iter().zip(&by_example) {
        let alone = tokenizer
            .encode_char_offsets(ex.context.as_ref(), false)
            .unwrap();
        let all: BTreeSet<(usize, usize)> = alone.get_offsets().iter().copied().collect();
        let covered: BTreeSet<(usize, usize)> = windows
            .iter()
            .flat_map(|f| f.offsets.iter().flatten().copied())
            .collect();
        assert_eq!(
            covered, all,
            "example {}: context tokens not covered",
            ex.id
        );
        for pair in windows.windows(2) {
            let prev: BTreeSet<_> = pair[0].offsets.iter().flatten().collect();
            let next: BTreeSet<_> = pair[1].offsets.iter().flatten().collect();
            assert_eq!(
                prev.intersection(&next).count(),
                128,
                "example {} stride",
                ex.id
            );
        }
        // Every token has exactly one max-context window.
        let flagged: usize = windows
            .iter()
            .map(|f| f.max_context.iter().filter(|&&m| m).count())
            .sum();
        assert_eq!(flagged, all.len(), "example {}: max-context flags", ex.id);
    }
}

#[test]
fn covid_misaligned_answers_are_repaired_and_counted() {
    let shared = shared_dir();
    let train = load(
        shared.join("data/covid-qa/train.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let dev = load(
        shared.join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let repaired = train.report.repaired.len() + dev.report.repaired.len();
    assert_eq!(repaired, 234);
    assert!(train.report.unrepairable.is_empty() && dev.report.unrepairable.is_empty());
    // After repair every answer points at its text.
    for ex in train.examples.iter().chain(&dev.examples) {
        for a in &ex.answers {
            let start = a.char_start.expect("located");
            let got: String = ex
                .context
                .chars()
                .skip(start)
                .take(a.text.chars().count())
                .collect();
            assert_eq!(got, a.text, "example {}", ex.id);
        }
    }
}
