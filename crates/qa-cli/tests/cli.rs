//! The `qa` binary as a user runs it: outputs, exit codes and error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qa<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qa"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("qa runs")
}

fn shared(rel: &str) -> String {
    qa_testkit::shared_dir().join(rel).display().to_string()
}

/// The command failed, and its error output says `needle`.
fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "succeeded: {}", stderr(o));
    assert!(stderr(o).contains(needle), "{}", stderr(o));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn features_command_reproduces_the_golden_windows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.jsonl");
    let o = qa(&[
        "features",
        "--data",
        &shared("data/covid-qa/dev.json"),
        "--tokenizer",
        &shared("models/all-MiniLM-L6-v2"),
        "--max-samples",
        "12",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = std::fs::read_to_string(&out).unwrap();
    let golden = std::fs::read_to_string(shared("golden/covid_dev_features.jsonl")).unwrap();
    let parse = |s: &str| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(parse(&ours), parse(&golden));
    assert!(
        stderr(&o).contains("94 windows from 12 examples"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("6 answers repaired"), "{}", stderr(&o));
}

#[test]
fn score_v1_on_covid_dev_with_gold_and_partial_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let data = shared("data/covid-qa/dev.json");
    let gold = qa_eval::Gold::from_squad_file(Path::new(&data)).unwrap();
    // First answer for the first 31 questions (a fifth of 155), nothing for the rest.
    let preds: serde_json::Map<String, serde_json::Value> = gold
        .questions
        .iter()
        .take(31)
        .map(|q| (q.id.clone(), q.answers[0].clone().into()))
        .collect();
    let pred_path = dir.path().join("p.json");
    std::fs::write(&pred_path, serde_json::to_string(&preds).unwrap()).unwrap();
    let out_path = dir.path().join("eval.json");
    let o = qa(&[
        "score",
        &data,
        pred_path.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((result["exact_match"].as_f64().unwrap() - 20.0).abs() < 1e-9);
    assert!((result["f1"].as_f64().unwrap() - 20.0).abs() < 1e-9);
    assert!(stderr(&o).contains("124 questions have no prediction"));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_path).unwrap()).unwrap();
    assert_eq!(written, result);
}

#[test]
fn score_defnlp_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let fixture: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../qa-data/tests/fixtures/defnlp/train.csv");
    let sub = dir.path().join("submission.csv");
    // a1b2c3: 2 gold labels, both found + 1 wrong; d4e5f6: exact; g7h8i9: missing row.
    std::fs::write(
        &sub,
        "Id,PredictionString\na1b2c3,arms|census of agriculture|wrong thing\nd4e5f6,ECLS-K\n",
    )
    .unwrap();
    let o = qa(&[
        "score",
        "--defnlp",
        fixture.to_str().unwrap(),
        sub.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // tp 3, fp 1, fn 1 → F0.5 = 1.25·3 / (1.25·3 + 0.25·1 + 1)
    assert_eq!(
        (r["tp"].as_u64(), r["fp"].as_u64(), r["fn"].as_u64()),
        (Some(3), Some(1), Some(1))
    );
    let expected = 3.75 / (3.75 + 0.25 + 1.0);
    assert!((r["fbeta"].as_f64().unwrap() - expected).abs() < 1e-12);
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure_code() {
    let dir = tempfile::tempdir().unwrap();
    let o = qa(&["score", "/nonexistent/dev.json", "/nonexistent/p.json"]);
    assert_fails_with(&o, "/nonexistent/dev.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"data\": [").unwrap();
    let o = qa(&[
        "features",
        "--data",
        bad.to_str().unwrap(),
        "--tokenizer",
        "x",
        "--out",
        "y",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("error: ") && stderr(&o).contains("bad.json"),
        "{}",
        stderr(&o)
    );
    let o = qa(&[
        "features",
        "--data",
        &shared("data/covid-qa/dev.json"),
        "--tokenizer",
        "/nonexistent/model",
        "--out",
        "y",
    ]);
    assert!(stderr(&o).contains("/nonexistent/model"), "{}", stderr(&o));
}

#[test]
fn train_eval_predict_round_trip_with_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let model = shared("golden/tiny-bert-qa");
    let dev = shared("data/covid-qa/dev.json");
    let o = qa(&[
        "train",
        "--model-name-or-path",
        &model,
        "--train-file",
        &dev,
        "--validation-file",
        &dev,
        "--output-dir",
        out.to_str().unwrap(),
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
        "--max-train-samples",
        "2",
        "--max-eval-samples",
        "2",
        "--max-steps",
        "2",
        "--per-device-train-batch-size",
        "4",
        "--save-steps",
        "1",
        "--save-total-limit",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "train_results.json",
        "eval_results.json",
        "train_log.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // save_total_limit 1 keeps only the newest checkpoint.
    assert!(out.join("checkpoint-2").is_dir() && !out.join("checkpoint-1").exists());

    let eval_dir = dir.path().join("eval");
    let o = qa(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        &dev,
        "--output-dir",
        eval_dir.to_str().unwrap(),
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
        "--max-eval-samples",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let results: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        results["eval_f1"].is_number()
            && results["eval_windows_per_second"].as_f64().unwrap() > 0.0
    );
    let preds: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(eval_dir.join("eval_predictions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(preds.len(), 3);
    // `qa score` on those predictions agrees with what `qa eval` reported... for those 3
    // questions: over all 155 it is the same sum divided by 155.
    let o = qa(&[
        "score",
        &dev,
        eval_dir.join("eval_predictions.json").to_str().unwrap(),
    ]);
    let scored: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f1_3 = results["eval_f1"].as_f64().unwrap();
    assert!((scored["f1"].as_f64().unwrap() - f1_3 * 3.0 / 155.0).abs() < 1e-9);

    let context = "The virus was first identified in Wuhan in December 2019.";
    let o = qa(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--question",
        "Where?",
        "--context",
        context,
        "--json",
        "--top-k",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answers.len(), 3);
    for a in &answers {
        let (s, e) = (
            a["start"].as_u64().unwrap() as usize,
            a["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&context[s..e], a["answer"].as_str().unwrap());
        let score = a["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
    }
    assert!(answers[0]["score"].as_f64() >= answers[1]["score"].as_f64());

    // DEFNLP inference over the fixture publications, then its score.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qa-data/tests/fixtures/defnlp");
    let sub = dir.path().join("submission.csv");
    let o = qa(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--defnlp-dir",
        fixture.join("train").to_str().unwrap(),
        "--out",
        sub.to_str().unwrap(),
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(&sub).unwrap();
    let ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(csv.lines().next(), Some("Id,PredictionString"));
    assert_eq!(ids, ["a1b2c3", "d4e5f6", "g7h8i9"]);
    let o = qa(&[
        "score",
        "--defnlp",
        fixture.join("train.csv").to_str().unwrap(),
        sub.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn cuda_device_on_a_cpu_build_and_missing_model_say_what_to_do() {
    let dev = shared("data/covid-qa/dev.json");
    let o = qa(&[
        "eval",
        "--model",
        "/nonexistent/m",
        "--data",
        &dev,
        "--output-dir",
        "/tmp/x",
    ]);
    assert_fails_with(&o, "or give a Hub id (org/name)");
    if !cfg!(feature = "cuda") {
        let o = qa(&[
            "eval",
            "--model",
            &shared("golden/tiny-bert-qa"),
            "--data",
            &dev,
            "--output-dir",
            "/tmp/x",
            "--device",
            "cuda",
        ]);
        assert_fails_with(&o, "--features cuda");
        // TF32 exists on the GPU only: asked of a CPU build, it is refused before any work.
        let out = tempfile::tempdir().unwrap();
        let o = train_tiny(out.path(), &["--tf32"]);
        assert_fails_with(&o, "--tf32 needs the CUDA build of qa");
        assert!(!out.path().join("train_results.json").exists());
    }
}

/// `qa train` of the tiny golden model on 2 COVID-QA questions (windows of 64), plus `extra`.
fn train_tiny(out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = [
        "train",
        "--model-name-or-path",
        &shared("golden/tiny-bert-qa"),
        "--train-file",
        &shared("data/covid-qa/dev.json"),
        "--max-train-samples",
        "2",
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
        "--per-device-train-batch-size",
        "2",
        "--learning-rate",
        "0.001",
        "--logging-steps",
        "1",
        "--overwrite-output-dir",
        "--output-dir",
        &out.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    qa(&args)
}

#[test]
fn train_schedule_flags_are_checked_like_run_qa() {
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| train_tiny(&dir.path().join("out"), extra);
    let o = base(&["--eval-strategy", "steps"]);
    assert_fails_with(&o, "--eval-strategy steps needs --eval-steps");
    let o = base(&["--save-strategy", "epoch", "--save-steps", "5"]);
    assert_fails_with(&o, "--save-steps only goes with");
    let o = base(&["--eval-strategy", "sometimes"]);
    assert_fails_with(&o, "possible values");
}

/// `qa predict` against answers of the Hugging Face question-answering pipeline (made by
/// `fixtures/pipeline/make_golden.py`) with the same model: texts, char spans and order must be
/// equal, scores within 1e-4 relative. Returns how many answers were compared.
fn assert_predict_gives_the_pipeline_answers(golden_file: &str, model: &str) -> usize {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join(golden_file)).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = golden["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let mut compared = 0;
    for case in golden["cases"].as_array().unwrap() {
        let s = &case["settings"];
        let mut args = vec![
            "predict".to_string(),
            "--model".into(),
            model.to_string(),
            "--input".into(),
            input.display().to_string(),
            "--top-k".into(),
            s["top_k"].to_string(),
        ];
        if s["handle_impossible_answer"] == true {
            args.push("--handle-impossible-answer".into());
        }
        if let Some(n) = s.get("max_answer_len") {
            args.extend(["--max-answer-length".into(), n.to_string()]);
        }
        if s["align_to_words"] == false {
            args.push("--no-align-to-words".into());
        }
        if let Some(window) = golden
            .get("window")
            .filter(|w| !w.as_object().unwrap().is_empty())
        {
            args.extend(["--max-seq-length".into(), window["max_seq_len"].to_string()]);
            args.extend(["--doc-stride".into(), window["doc_stride"].to_string()]);
        }
        let o = qa(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let ours: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let expected = case["answers"].as_array().unwrap();
        assert_eq!(ours.len(), expected.len());
        for (q, (ours, hf)) in ours.iter().zip(expected).enumerate() {
            let (ours, hf) = (ours["answers"].as_array().unwrap(), hf.as_array().unwrap());
            assert_eq!(ours.len(), hf.len(), "{golden_file} {s} question {q}");
            for (a, b) in ours.iter().zip(hf) {
                for key in ["answer", "start", "end"] {
                    assert_eq!(
                        a[key], b[key],
                        "{golden_file} {s} question {q}: ours {a} vs pipeline {b}"
                    );
                }
                let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs(),
                    "{golden_file} {s} question {q}: {x} vs {y}"
                );
                compared += 1;
            }
        }
    }
    compared
}

#[test]
fn predict_gives_the_hf_pipeline_answers() {
    let compared =
        assert_predict_gives_the_pipeline_answers("golden.json", &shared("golden/tiny-bert-qa"));
    assert_eq!(compared, 8 * (1 + 5 + 3 + 3));
}

/// The same for every other model family, with their own tokenizers (byte-level BPE for
/// RoBERTa, Unigram for XLM-R, ALBERT and DeBERTa-v3, WordPiece for ELECTRA) and multilingual texts:
/// the fixtures of `crates/qa-model/tests/fixtures/families`.
#[test]
fn predict_gives_the_hf_pipeline_answers_for_every_family() {
    let families =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../qa-model/tests/fixtures/families");
    // Answer counts per family as the pipeline gave them (top_k 1, 5, 3 and 3 over 8 inputs;
    // short contexts have fewer distinct spans).
    for (family, answers) in [
        ("roberta", 8 + 40 + 24 + 24),
        ("xlm-roberta", 8 + 36 + 23 + 24),
        ("electra", 8 + 40 + 24 + 24),
        ("albert", 8 + 36 + 23 + 24),
        ("deberta-v2", 8 + 36 + 23 + 24),
    ] {
        let model = families.join(family).display().to_string();
        let compared = assert_predict_gives_the_pipeline_answers(&format!("{family}.json"), &model);
        assert_eq!(compared, answers, "{family}");
    }
}

#[test]
fn train_follows_the_chosen_lr_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let train = |extra: &[&str]| train_tiny(&out, extra);
    let o = train(&[
        "--lr-scheduler-type",
        "cosine",
        "--warmup-steps",
        "1",
        "--max-steps",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lrs: Vec<f64> = std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|e| e["learning_rate"].as_f64())
        .collect();
    // Step 0 warms up from 0; then 0.5·(1 + cos(π·p)) with p = 0, 1/2.
    let expected = [0.0, 1e-3, 0.5e-3];
    assert_eq!(lrs.len(), 3, "{lrs:?}");
    for (got, want) in lrs.iter().zip(expected) {
        assert!((got - want).abs() < 1e-12, "{lrs:?}");
    }
    let o = train(&["--adam-beta1", "1.5", "--max-steps", "1"]);
    assert_fails_with(&o, "beta1");
    let o = train(&["--lr-scheduler-type", "cosinus"]);
    assert_fails_with(&o, "linear, cosine, constant or constant_with_warmup");
}

#[test]
fn eval_on_a_file_without_answers_writes_predictions_only() {
    let qas = serde_json::json!([
        {"id": "q1", "question": "What genome do coronaviruses have?", "answers": []},
        {"id": "q2", "question": "Are they enveloped?", "answers": []}]);
    let (_dir, out, o) = eval_on_one_paragraph("1.1", qas, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no gold answers, so no scores"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("eval_results.json").exists());
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("predict_results.json")).unwrap())
            .unwrap();
    assert_eq!(results["predict_examples"], 2);
    assert!(results.get("predict_f1").is_none() && results.get("eval_f1").is_none());
    let predictions: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(out.join("predict_predictions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(predictions.keys().collect::<Vec<_>>(), ["q1", "q2"]);
    for answer in predictions.values() {
        assert!(CONTEXT.contains(answer.as_str().unwrap()));
    }
}

const CONTEXT: &str = "Coronaviruses are enveloped viruses with a positive-sense RNA genome.";

/// `qa eval` with the tiny model on a SQuAD file of one paragraph ([`CONTEXT`]) and `qas`.
fn eval_on_one_paragraph(
    version: &str,
    qas: serde_json::Value,
    extra: &[&str],
) -> (tempfile::TempDir, std::path::PathBuf, Output) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    let file = serde_json::json!({"version": version, "data": [{"title": "t", "paragraphs": [{
        "context": CONTEXT, "qas": qas}]}]});
    std::fs::write(&data, file.to_string()).unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "eval".to_string(),
        "--model".into(),
        shared("golden/tiny-bert-qa"),
        "--data".into(),
        data.to_str().unwrap().into(),
        "--output-dir".into(),
        out.to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let o = qa(&args);
    (dir, out, o)
}

#[test]
fn eval_on_a_v2_file_of_only_unanswerable_questions_scores_it() {
    // Explicit `is_impossible` is a gold label (the answer is "no answer"), unlike a question
    // that merely lacks answers: this file is scored, not treated as a test set.
    let qas = serde_json::json!([
        {"id": "q1", "question": "Who won the 1990 cup?", "answers": [], "is_impossible": true},
        {"id": "q2", "question": "What colour is the sky?", "answers": [], "is_impossible": true}]);
    let (_dir, out, o) = eval_on_one_paragraph("v2.0", qas, &["--version-2-with-negative"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("predict_results.json").exists());
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap()
    };
    let (results, predictions) = (read("eval_results.json"), read("eval_predictions.json"));
    // Official v2 rule: an unanswerable question scores 100 exactly when the prediction is "".
    let nulls = predictions
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p.as_str() == Some(""))
        .count();
    let expected = 100.0 * nulls as f64 / 2.0;
    assert_eq!(results["eval_total"], 2, "{results}");
    assert_eq!(results["eval_NoAns_total"], 2, "{results}");
    assert_eq!(results["eval_exact"].as_f64(), Some(expected), "{results}");
    assert_eq!(results["eval_f1"].as_f64(), Some(expected), "{results}");
}

#[test]
fn train_refuses_a_validation_file_without_gold_answers() {
    let dir = tempfile::tempdir().unwrap();
    let test_set = dir.path().join("test.json");
    let file = serde_json::json!({"version": "1.1", "data": [{"title": "t", "paragraphs": [{
        "context": CONTEXT,
        "qas": [{"id": "q1", "question": "What genome?", "answers": []}]}]}]});
    std::fs::write(&test_set, file.to_string()).unwrap();
    let out = dir.path().join("out");
    let o = train_tiny(
        &out,
        &[
            "--validation-file",
            test_set.to_str().unwrap(),
            "--max-steps",
            "1",
        ],
    );
    assert_fails_with(&o, "test.json: no gold answers, so it cannot be evaluated");
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn eval_compares_precisions_against_its_own_f32_scores() {
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "eval".to_string(),
        "--model".into(),
        shared("golden/tiny-bert-qa"),
        "--data".into(),
        shared("data/covid-qa/dev.json"),
        "--max-eval-samples".into(),
        "12".into(),
    ];
    let plain = dir.path().join("plain");
    let o = qa(&[
        &common[..],
        &["--output-dir".into(), plain.display().to_string()],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("eval_results.json")).unwrap())
            .unwrap();
    let compared = dir.path().join("compared");
    let o = qa(&[
        &common[..],
        &[
            "--output-dir".into(),
            compared.display().to_string(),
            "--compare-precision".into(),
            "bf16".into(),
            "--compare-precision".into(),
            "int8".into(),
        ],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(compared.join("precision_comparison.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f32", "bf16", "int8"]);
    // The f32 row is the plain evaluation's own scores, with nothing to differ from.
    assert_eq!(rows[0]["exact_match"], results["eval_exact_match"]);
    assert_eq!(rows[0]["f1"], results["eval_f1"]);
    assert_eq!(rows[0]["top1_identical"], 1.0);
    assert_eq!(rows[0]["max_logit_error"], 0.0);
    assert_eq!(rows[0]["mean_logit_error"], 0.0);
    assert_eq!(rows[0]["window_best_identical"], 1.0);
    for row in &rows[1..] {
        let error = row["max_logit_error"].as_f64().unwrap();
        assert!(error > 0.0 && error < 1.0, "{row}");
        let mean = row["mean_logit_error"].as_f64().unwrap();
        assert!(mean > 0.0 && mean <= error, "{row}");
        let windows = row["window_best_identical"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&windows), "{row}");
        let share = row["top1_identical"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{row}");
        let change = row["f1"].as_f64().unwrap() - rows[0]["f1"].as_f64().unwrap();
        assert!(
            (row["f1_change"].as_f64().unwrap() - change).abs() < 1e-9,
            "{row}"
        );
    }
    assert!(compared.join("precision_comparison.md").is_file());
}

#[test]
fn predict_in_int8_answers_in_the_same_shape_and_bad_precisions_are_refused() {
    let answer = |precision: &str| {
        let o = qa(&[
            "predict",
            "--model",
            &shared("golden/tiny-bert-qa"),
            "--question",
            "What causes COVID-19?",
            "--context",
            "COVID-19 is caused by the coronavirus SARS-CoV-2, first identified in Wuhan.",
            "--top-k",
            "3",
            "--json",
            "--precision",
            precision,
        ]);
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (f32, int8) = (answer("f32"), answer("int8"));
    let (f32, int8) = (f32.as_array().unwrap(), int8.as_array().unwrap());
    assert_eq!(f32.len(), 3);
    assert_eq!(int8.len(), 3);
    for (a, b) in f32.iter().zip(int8) {
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(a), keys(b));
    }
    assert_ne!(f32, int8, "int8 scores equal f32's");
    let o = qa(&[
        "predict",
        "--model",
        &shared("golden/tiny-bert-qa"),
        "--question",
        "q",
        "--context",
        "c",
        "--precision",
        "fp16",
    ]);
    assert_fails_with(
        &o,
        "unknown precision \"fp16\" (expected f32, bf16 or int8)",
    );
}

/// `qa predict` with the window flags answers as the HF pipeline does with the same task
/// parameters (the server's golden file: `qa-serve/tests/fixtures/hf_parameters`).
#[test]
fn predict_window_flags_give_the_hf_pipeline_answers() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../qa-serve/tests/fixtures/hf_parameters/golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let inputs = golden["inputs"].as_array().unwrap();
    let case = &golden["cases"][0];
    assert_eq!(
        case["settings"],
        serde_json::json!({"max_seq_len": 128, "doc_stride": 32})
    );
    let cuts = golden["question_cuts"]["cases"].as_array().unwrap();
    let runs = inputs
        .iter()
        .zip(case["answers"].as_array().unwrap())
        .map(|(input, want)| (input, want, None))
        .chain(cuts.iter().map(|c| {
            let input = &inputs[c["input"].as_u64().unwrap() as usize];
            (
                input,
                &c["answers"],
                Some(c["max_question_len"].to_string()),
            )
        }));
    for (input, want, max_question_len) in runs {
        let mut args = vec![
            "predict".to_string(),
            "--model".into(),
            shared("golden/tiny-bert-qa"),
            "--question".into(),
            input["question"].as_str().unwrap().into(),
            "--context".into(),
            input["context"].as_str().unwrap().into(),
            "--max-seq-length".into(),
            "128".into(),
            "--doc-stride".into(),
            "32".into(),
            "--json".into(),
        ];
        if let Some(n) = &max_question_len {
            args.extend(["--max-question-len".into(), n.clone()]);
        }
        let o = qa(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let ours: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let (ours, want) = (&ours, &want[0]);
        for key in ["answer", "start", "end"] {
            assert_eq!(
                ours[key], want[key],
                "{max_question_len:?}: {ours} vs {want}"
            );
        }
    }
}

/// `--question --documents`: one ranking over the file's documents, each answer naming its
/// document and lying at its offsets there.
#[test]
fn predict_over_documents_ranks_answers_from_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docs.jsonl");
    let texts = [
        "The report was written by Dr. Ada Byron and reviewed by the ethics board in March.",
        "Influenza spreads mainly through droplets made when people cough, sneeze or talk.",
        "COVID-19 is caused by the coronavirus SARS-CoV-2, first identified in Wuhan in 2019.",
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("doc-{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let o = qa(&[
        "predict",
        "--model",
        &shared("golden/tiny-bert-qa"),
        "--question",
        "Who wrote the report?",
        "--documents",
        file.to_str().unwrap(),
        "--top-k",
        "6",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answers.len(), 6);
    let mut documents = std::collections::HashSet::new();
    let mut previous = f64::INFINITY;
    for a in &answers {
        let index = a["document"]["index"].as_u64().unwrap() as usize;
        assert_eq!(a["document"]["id"], format!("doc-{index}"));
        let (start, end) = (a["start"].as_u64().unwrap(), a["end"].as_u64().unwrap());
        let text: String = texts[index]
            .chars()
            .skip(start as usize)
            .take((end - start) as usize)
            .collect();
        assert_eq!(a["answer"], text, "{a}");
        let score = a["score"].as_f64().unwrap();
        assert!(score <= previous && score > 0.0, "{answers:?}");
        previous = score;
        documents.insert(index);
    }
    assert!(documents.len() > 1, "{answers:?}");

    std::fs::write(&file, "{\"id\": \"a\", \"txt\": \"oops\"}\n").unwrap();
    let o = qa(&[
        "predict",
        "--model",
        &shared("golden/tiny-bert-qa"),
        "--question",
        "Who?",
        "--documents",
        file.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "line 1: unknown field \"txt\"");
}

/// `qa eval --write-null-threshold` leaves the official best_f1_thresh in the model folder;
/// `qa predict` then answers "" by it (saying so), and the flag overrides it.
#[test]
fn the_null_threshold_written_by_eval_is_used_by_predict() {
    let model = tempfile::tempdir().unwrap();
    let source = qa_testkit::shared_dir().join("golden/tiny-bert-qa");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            std::fs::copy(&path, model.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    let qas = serde_json::json!([
        {"id": "q1", "question": "Who won the 1990 cup?", "answers": [], "is_impossible": true},
        {"id": "q2", "question": "What genome?", "answers": [
            {"text": "positive-sense RNA",
             "answer_start": CONTEXT.find("positive-sense RNA").unwrap()}]}]);
    let file = serde_json::json!({"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
        "context": CONTEXT, "qas": qas}]}]});
    std::fs::write(&data, file.to_string()).unwrap();
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            model.path().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output-dir",
            dir.path().to_str().unwrap(),
        ];
        args.extend(extra);
        qa(&args)
    };
    assert_fails_with(
        &eval(&["--write-null-threshold"]),
        "--version-2-with-negative",
    );
    let o = eval(&["--version-2-with-negative", "--write-null-threshold"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let results: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.path().join("null_threshold.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        written["null_score_diff_threshold"].as_f64().unwrap() as f32,
        results["eval_best_f1_thresh"].as_f64().unwrap() as f32
    );

    let predict = |threshold_file: f32, flag: Option<&str>| {
        std::fs::write(
            model.path().join("null_threshold.json"),
            serde_json::json!({"null_score_diff_threshold": threshold_file}).to_string(),
        )
        .unwrap();
        let mut args = vec![
            "predict",
            "--model",
            model.path().to_str().unwrap(),
            "--question",
            "What genome?",
            "--context",
            CONTEXT,
            "--json",
        ];
        if let Some(flag) = flag {
            args.extend(["--null-score-diff-threshold", flag]);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_qa"))
            .args(&args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let answer: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (answer["answer"].as_str().unwrap().to_string(), stderr(&o))
    };
    let (answer, log) = predict(-1.0e6, None);
    assert_eq!(answer, "");
    assert!(log.contains("no-answer threshold -1000000"), "{log}");
    assert!(!predict(1.0e6, None).0.is_empty());
    assert!(!predict(-1.0e6, Some("1e6")).0.is_empty());
}
