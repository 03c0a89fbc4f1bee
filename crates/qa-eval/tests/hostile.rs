//! Hostile `qa score` inputs: arbitrary bytes and mangled JSON/CSV as the gold data file, the
//! predictions, the no-answer probabilities and Coleridge CSVs. The rule: never a panic, and
//! every error names the file it is about.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use qa_eval::score::{score_defnlp_files, score_squad_files};
use serde_json::{json, Value};

const GOLD: &str = r#"{"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
  "context": "The Normans were in Normandy, a region in France.",
  "qas": [{"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 42}]},
          {"id": "q2", "question": "Who?", "answers": [], "is_impossible": true}]}]}]}"#;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Any JSON value, a few levels deep: what a confused user's file might hold instead.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9 ]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("(q1|q2|data|qas|answers|text|id|[a-z]{1,4})", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The error (if any) names `path`; a result is fine too (valid but odd input scores).
fn names_the_file<T>(result: qa_eval::Result<T>, path: &Path) -> Result<(), TestCaseError> {
    if let Err(err) = result {
        let text = err.to_string();
        prop_assert!(
            text.contains(&path.display().to_string()),
            "error does not name {}: {text}",
            path.display()
        );
        prop_assert!(!text.contains('\n'), "not one line: {text}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_predictions_and_na_probs_never_panic(predictions in any_json(), na in any_json()) {
        let dir = tempfile::tempdir().unwrap();
        let gold = write(dir.path(), "gold.json", GOLD.as_bytes());
        let preds = write(dir.path(), "preds.json", predictions.to_string().as_bytes());
        let na_path = write(dir.path(), "na.json", na.to_string().as_bytes());
        let result = score_squad_files(&gold, &preds, Some(&na_path), 1.0, None);
        if let Err(err) = &result {
            let text = err.to_string();
            prop_assert!(text.contains("preds.json") || text.contains("na.json"), "{text}");
        }
    }

    #[test]
    fn arbitrary_gold_files_never_panic(gold in any_json()) {
        let dir = tempfile::tempdir().unwrap();
        let gold_path = write(dir.path(), "gold.json", gold.to_string().as_bytes());
        let preds = write(dir.path(), "preds.json", br#"{"q1": "France"}"#);
        names_the_file(score_squad_files(&gold_path, &preds, None, 1.0, None), &gold_path)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "junk.json", &bytes);
        let gold = write(dir.path(), "gold.json", GOLD.as_bytes());
        let preds = write(dir.path(), "preds.json", br#"{"q1": "France"}"#);
        names_the_file(score_squad_files(&junk, &preds, None, 1.0, None), &junk)?;
        names_the_file(score_squad_files(&gold, &junk, None, 1.0, None), &junk)?;
        names_the_file(score_squad_files(&gold, &preds, Some(&junk), 1.0, None), &junk)?;
        let csv = write(dir.path(), "junk.csv", &bytes);
        let good_csv = write(dir.path(), "gold.csv", b"Id,PredictionString\np1,nhanes\n");
        names_the_file(score_defnlp_files(&csv, &good_csv), &csv)?;
        names_the_file(score_defnlp_files(&good_csv, &csv), &csv)?;
    }
}

#[test]
fn named_hostile_score_inputs_get_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let gold = write(dir.path(), "gold.json", GOLD.as_bytes());
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.json", b"", "empty.json"),
        ("list.json", b"[1, 2]", "expected a JSON object"),
        (
            "number-answer.json",
            br#"{"q1": 7}"#,
            "value for id q1 has the wrong type",
        ),
        ("truncated.json", br#"{"q1": "Fra"#, "malformed JSON"),
    ];
    for (name, bytes, expected) in cases {
        let preds = write(dir.path(), name, bytes);
        let err = score_squad_files(&gold, &preds, None, 1.0, None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(name) && text.contains(expected),
            "{name}: {text}"
        );
    }
    // Predictions that are all well-formed score as the official script does.
    let preds = write(dir.path(), "good.json", br#"{"q1": "France", "q2": ""}"#);
    let result = score_squad_files(&gold, &preds, None, 1.0, None).unwrap();
    assert_eq!(result["exact"], json!(100.0));
}
