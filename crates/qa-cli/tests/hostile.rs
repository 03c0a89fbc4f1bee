//! Hostile but realistic use of the `qa` binary: settings that used to panic or silently give
//! wrong results must now stop with a one-line error naming what is wrong, or warn. (The data
//! files' own hostile cases live in `crates/qa-data/tests/hostile.rs`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qa<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qa"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("qa runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Failed with exit code 1 (not a panic's 101), its one-line error saying `needle`.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn tiny_model() -> String {
    qa_testkit::shared_dir()
        .join("golden/tiny-bert-qa")
        .display()
        .to_string()
}

const CONTEXT: &str = "Coronaviruses are enveloped viruses with a positive-sense RNA genome.";

/// A SQuAD file of one paragraph with two answerable questions (or, with `version` "v2.0",
/// one more that is unanswerable).
fn squad_file(dir: &Path, version: &str) -> PathBuf {
    let mut qas = vec![
        serde_json::json!({"id": "q1", "question": "What genome do coronaviruses have?",
            "answers": [{"text": "positive-sense RNA genome", "answer_start": 43}]}),
        serde_json::json!({"id": "q2", "question": "What are coronaviruses?",
            "answers": [{"text": "enveloped viruses", "answer_start": 18}]}),
    ];
    if version == "v2.0" {
        qas.push(
            serde_json::json!({"id": "q3", "question": "Who found them?",
            "answers": [], "is_impossible": true}),
        );
    }
    let file = serde_json::json!({"version": version, "data": [{"title": "t", "paragraphs": [{
        "context": CONTEXT, "qas": qas}]}]});
    let path = dir.join(format!("data-{version}.json"));
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

/// `qa train` on the tiny model and `data` into `out`, with `extra` flags.
fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = [
        "train",
        "--model-name-or-path",
        &tiny_model(),
        "--train-file",
        &data.display().to_string(),
        "--output-dir",
        &out.display().to_string(),
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    qa(&args)
}

#[test]
fn absurd_learning_rates_are_refused_or_stopped_before_a_nan_model_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let out = dir.path().join("out");
    for lr in ["-1", "inf", "NaN", "0"] {
        let o = train(&data, &out, &["--learning-rate", lr, "--max-steps", "1"]);
        assert_fails_with(&o, "learning_rate must be a positive finite number");
    }
    // Finite but absurd: training diverges, and it says so instead of saving NaN weights.
    let o = train(
        &data,
        &out,
        &[
            "--learning-rate",
            "1e30",
            "--max-steps",
            "6",
            "--max-grad-norm",
            "0",
        ],
    );
    assert_fails_with(&o, "training diverged");
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn zero_step_schedules_and_unknown_metrics_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let out = dir.path().join("out");
    for flag in ["--save-steps", "--eval-steps"] {
        let o = train(&data, &out, &[flag, "0"]);
        assert_fails_with(&o, &format!("{flag} must be at least 1"));
    }
    let o = train(&data, &out, &["--metric-for-best-model", "F1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown metric \"F1\""),
        "{}",
        stderr(&o)
    );
    // A metric SQuAD v1.1 evaluation never reports would make load-best silently do nothing.
    let o = train(
        &data,
        &out,
        &[
            "--validation-file",
            &data.display().to_string(),
            "--load-best-model-at-end",
            "--eval-steps",
            "1",
            "--save-steps",
            "1",
            "--metric-for-best-model",
            "best_f1",
        ],
    );
    assert_fails_with(&o, "best_f1 is not reported when evaluating V1 data");
}

#[test]
fn resuming_with_other_batching_or_an_edited_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let out = dir.path().join("out");
    let base = [
        "--max-steps",
        "4",
        "--save-steps",
        "1",
        "--learning-rate",
        "1e-3",
    ];
    let first = train(
        &data,
        &out,
        &[&base[..], &["--per-device-train-batch-size", "1"]].concat(),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    // Same run length, other batch size: the checkpoint would be read at the wrong place.
    let o = train(
        &data,
        &out,
        &[&base[..], &["--per-device-train-batch-size", "2"]].concat(),
    );
    assert_fails_with(&o, "checkpoint-4");
    assert_fails_with(&o, "other windows or batching");
    // A hand-edited trainer state pointing past the end of the run.
    let state_path = out.join("checkpoint-4/trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["global_step"] = 99.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let o = train(
        &data,
        &out,
        &[&base[..], &["--per-device-train-batch-size", "1"]].concat(),
    );
    assert_fails_with(&o, "lies outside this run");
}

#[test]
fn windows_longer_than_the_position_table_are_capped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let out = dir.path().join("out");
    let o = qa(&[
        "eval",
        "--model",
        &tiny_model(),
        "--data",
        &data.display().to_string(),
        "--output-dir",
        &out.display().to_string(),
        "--max-seq-length",
        "100000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--max-seq-length 100000 is longer than this model's 512 positions"),
        "{}",
        stderr(&o)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval_results.json")).unwrap())
            .unwrap();
    assert_eq!(results["eval_examples"], 2);
}

#[test]
fn v2_data_scored_as_v1_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v2.0");
    let o = qa(&[
        "eval",
        "--model",
        &tiny_model(),
        "--data",
        &data.display().to_string(),
        "--output-dir",
        &dir.path().join("out").display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("looks like SQuAD v2.0 (1 unanswerable questions)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn blank_questions_get_no_answer_and_files_are_not_model_folders() {
    let o = qa(&[
        "predict",
        "--model",
        &tiny_model(),
        "--question",
        "  ",
        "--context",
        CONTEXT,
    ]);
    assert_fails_with(&o, "question 0: the question is empty");
    let file = qa_testkit::shared_dir().join("golden/tiny-bert-qa/config.json");
    let o = qa(&[
        "predict",
        "--model",
        &file.display().to_string(),
        "--question",
        "What?",
        "--context",
        CONTEXT,
    ]);
    assert_fails_with(&o, "is a file: --model takes a Hugging Face model folder");
}

#[test]
fn unwritable_outputs_say_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    // A folder that cannot exist: its parent is a file.
    let blocked = data.join("out");
    let o = qa(&[
        "eval",
        "--model",
        &tiny_model(),
        "--data",
        &data.display().to_string(),
        "--output-dir",
        &blocked.display().to_string(),
    ]);
    assert_fails_with(&o, "cannot write");
    let o = qa(&[
        "features",
        "--data",
        &data.display().to_string(),
        "--tokenizer",
        &tiny_model(),
        "--out",
        &blocked.join("f.jsonl").display().to_string(),
    ]);
    assert_fails_with(&o, "f.jsonl: cannot write");
}

#[test]
fn score_warns_about_no_answer_probabilities_it_lacks_or_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let predictions = dir.path().join("predictions.json");
    std::fs::write(
        &predictions,
        r#"{"q1": "positive-sense RNA genome", "q2": "", "q3": ""}"#,
    )
    .unwrap();
    let na = dir.path().join("na.json");
    std::fs::write(&na, r#"{"q1": 0.1}"#).unwrap();
    let score = |version: &str| {
        qa(&[
            "score",
            &squad_file(dir.path(), version).display().to_string(),
            &predictions.display().to_string(),
            "--na-prob-file",
            &na.display().to_string(),
        ])
    };
    let o = score("v2.0");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 questions have no no-answer probability (taken as 0)"),
        "{}",
        stderr(&o)
    );
    let o = score("v1.1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-answer probabilities are ignored when scoring SQuAD v1.1"),
        "{}",
        stderr(&o)
    );
}

/// A second `qa train` on a folder a run is writing into is refused at once, naming the holder;
/// an output folder that is a file is refused before any tokenizing.
#[test]
fn a_second_train_on_one_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let out = dir.path().join("out");
    let held = qa_train::lock::OutputLock::acquire(&out).unwrap();
    let o = train(&data, &out, &["--max-steps", "1"]);
    assert_fails_with(&o, "another qa train is writing into this folder");
    assert!(
        stderr(&o).contains(&format!("pid {}", std::process::id())),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("model.safetensors").exists());
    drop(held);
    let o = train(
        &data,
        &dir.path().join("data-v1.1.json"),
        &["--max-steps", "1"],
    );
    assert_fails_with(&o, "the output folder is a file");
    let o = qa(&[
        "eval",
        "--model",
        &tiny_model(),
        "--data",
        &data.display().to_string(),
        "--output-dir",
        &data.display().to_string(),
    ]);
    assert_fails_with(&o, "the output folder is a file");
}

#[test]
fn server_settings_no_window_fits_are_refused_before_listening() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qa"))
        .args([
            "serve",
            "--model",
            &tiny_model(),
            "--port",
            "0",
            "--max-seq-length",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("qa serve --max-seq-length 0 kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_fails_with(&o, "max_length 0 is too small");
}

/// A huge --max-answer-length means "any length": the answers of a window-long limit, never
/// a wrap to none.
#[test]
fn a_huge_max_answer_length_answers_as_a_window_long_one() {
    let answer = |limit: &str| {
        let o = qa(&[
            "predict",
            "--model",
            &tiny_model(),
            "--question",
            "What genome do coronaviruses have?",
            "--context",
            CONTEXT,
            "--max-answer-length",
            limit,
            "--top-k",
            "3",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let huge = answer(&u64::MAX.to_string());
    assert!(huge.contains("\"answer\""), "{huge}");
    assert_eq!(huge, answer("512"));
}

/// An output that names an input (also through a link) is refused before anything is written.
#[test]
fn outputs_that_are_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let original = std::fs::read_to_string(&data).unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let data_arg = data.display().to_string();
    let o = qa(&[
        "features",
        "--data",
        &data_arg,
        "--tokenizer",
        &tiny_model(),
        "--out",
        &link.display().to_string(),
    ]);
    assert_fails_with(&o, "writing it would destroy the input");
    let o = qa(&["score", &data_arg, &data_arg, "--out", &data_arg]);
    assert_fails_with(&o, "writing it would destroy the input");
    let predictions = dir.path().join("eval_predictions.json");
    std::fs::copy(&data, &predictions).unwrap();
    let o = qa(&[
        "eval",
        "--model",
        &tiny_model(),
        "--data",
        &predictions.display().to_string(),
        "--output-dir",
        &dir.path().display().to_string(),
    ]);
    assert_fails_with(&o, "writing it would destroy the input");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), original);
    assert_eq!(std::fs::read_to_string(&predictions).unwrap(), original);
}

#[test]
fn evaluating_during_training_without_a_validation_set_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let data = squad_file(dir.path(), "v1.1");
    let out = dir.path().join("out");
    for flags in [
        &[
            "--load-best-model-at-end",
            "--eval-strategy",
            "epoch",
            "--save-strategy",
            "epoch",
        ][..],
        &["--eval-strategy", "steps", "--eval-steps", "1"][..],
    ] {
        let o = train(&data, &out, flags);
        assert_fails_with(&o, "needs an evaluation set: give --validation-file");
        assert!(!out.join("model.safetensors").exists());
    }
}
