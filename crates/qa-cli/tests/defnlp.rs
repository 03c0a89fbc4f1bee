//! `qa predict --defnlp-mode match|qa|both` and `--defnlp-windows seed` as a user runs them, on
//! the generated Coleridge fixture (`xtask/src/defnlp_fixture.rs`) and the tiny test model.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(dead_code)] // shared with xtask and the qa-eval tests; each uses part of it
#[path = "../../../xtask/src/defnlp_fixture.rs"]
mod defnlp_fixture;

use defnlp_fixture::{Fixture, Hostile, SEED};

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

fn tiny_model() -> PathBuf {
    qa_testkit::shared_dir().join("golden/tiny-bert-qa")
}

fn written_fixture() -> (Fixture, tempfile::TempDir) {
    let fixture = Fixture::generate(SEED);
    let dir = tempfile::tempdir().unwrap();
    fixture.write(dir.path()).unwrap();
    (fixture, dir)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// The rows of a submission, checking its shape: the header, then `Id,labels` rows whose labels
/// are non-empty, cleaned, distinct and sorted.
fn read_submission(path: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Id,PredictionString"));
    lines
        .map(|line| {
            let (id, joined) = line.split_once(',').expect("two fields");
            let labels: Vec<String> = if joined.is_empty() {
                Vec::new()
            } else {
                joined.split('|').map(str::to_string).collect()
            };
            for label in &labels {
                assert!(!label.is_empty(), "{line}");
                assert_eq!(label, &defnlp_fixture::clean(label), "{line}");
            }
            let sorted: BTreeSet<&String> = labels.iter().collect();
            assert_eq!(
                sorted.into_iter().collect::<Vec<_>>(),
                labels.iter().collect::<Vec<_>>()
            );
            (id.to_string(), labels)
        })
        .collect()
}

/// Only `expected` files in `dir`: an atomic write leaves no temporary file behind.
fn assert_only_files(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, expected);
}

/// `qa predict` on the fixture's test publications with its known names, plus `extra`.
fn predict_defnlp(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "predict".into(),
        "--defnlp-dir".into(),
        p(&dir.join("test")).into(),
        "--out".into(),
        p(out).into(),
        "--defnlp-labels".into(),
        p(&dir.join("train.csv")).into(),
        "--known-datasets".into(),
        p(&dir.join("big_gov_datasets.txt")).into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    qa(&args)
}

#[test]
fn match_mode_needs_no_model_and_finds_exactly_the_planted_known_names() {
    let (fixture, dir) = written_fixture();
    let out_dir = tempfile::tempdir().unwrap();
    let sub = out_dir.path().join("match.csv");
    let o = predict_defnlp(dir.path(), &sub, &["--defnlp-mode", "match"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_only_files(out_dir.path(), &["match.csv"]);
    let rows = read_submission(&sub);
    let train_ids = fixture.train_ids();
    let expected: Vec<(String, Vec<String>)> = fixture
        .test
        .iter()
        .map(|pubn| {
            let labels = fixture.expected_matches(pubn, &train_ids);
            (pubn.id.clone(), labels.into_iter().collect())
        })
        .collect();
    assert_eq!(rows, expected);
    // Each broken file is named in a warning and kept, with no labels.
    for broken in fixture.test.iter().filter(|pubn| pubn.hostile.unreadable()) {
        assert!(
            stderr(&o).contains(&format!("{}.json", broken.id)),
            "{:?} not named: {}",
            broken.hostile,
            stderr(&o)
        );
    }
    assert!(stderr(&o).contains("publication kept with no labels"));

    // Scored as the competition scores it.
    let o = qa(&[
        "score",
        "--defnlp",
        p(&dir.path().join("test_gold.csv")),
        p(&sub),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let score: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&score["tp"], &score["fp"], &score["fn"]),
        (&79.into(), &0.into(), &16.into())
    );
}

#[test]
fn modes_say_what_they_lack() {
    let (_fixture, dir) = written_fixture();
    let out = dir.path().join("sub.csv");
    let test = dir.path().join("test");
    let fails_with = |o: Output, needle: &str| {
        assert!(!o.status.success(), "succeeded");
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
    };
    for mode in ["qa", "both"] {
        fails_with(
            predict_defnlp(dir.path(), &out, &["--defnlp-mode", mode]),
            &format!("--defnlp-mode {mode} needs --model"),
        );
    }
    // Both is the default.
    fails_with(
        predict_defnlp(dir.path(), &out, &[]),
        "--defnlp-mode both needs --model",
    );
    fails_with(
        qa(&[
            "predict",
            "--defnlp-dir",
            p(&test),
            "--out",
            p(&out),
            "--defnlp-mode",
            "match",
        ]),
        "--defnlp-mode match needs known dataset names",
    );
    fails_with(
        qa(&["predict", "--question", "q?", "--context", "c."]),
        "--model is required",
    );
    assert!(!out.exists());
}

#[test]
fn qa_and_both_modes_run_with_a_model_and_keep_every_matched_name() {
    let (fixture, dir) = written_fixture();
    let out_dir = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let train_ids = fixture.train_ids();
    let ids: Vec<String> = fixture.test.iter().map(|pubn| pubn.id.clone()).collect();
    let findings = out_dir.path().join("findings.jsonl");
    let mut submitted = std::collections::BTreeMap::new();
    for mode in ["qa", "both"] {
        let sub = out_dir.path().join(format!("{mode}.csv"));
        let mut flags = vec![
            "--defnlp-mode",
            mode,
            "--model",
            p(&model),
            "--max-seq-length",
            "128",
            "--doc-stride",
            "32",
        ];
        if mode == "both" {
            flags.extend(["--defnlp-findings", p(&findings)]);
        }
        let o = predict_defnlp(dir.path(), &sub, &flags);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let rows = read_submission(&sub);
        assert_eq!(
            rows.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            ids
        );
        for ((_, labels), spec) in rows.iter().zip(&fixture.test) {
            if spec.hostile != Hostile::None {
                assert!(
                    labels.is_empty(),
                    "{mode}: {:?} got {labels:?}",
                    spec.hostile
                );
            }
            if mode == "both" {
                // Matched (known) names always survive the merge.
                let labels: BTreeSet<&String> = labels.iter().collect();
                for name in fixture.expected_matches(spec, &train_ids) {
                    assert!(labels.contains(&name), "{name} missing from {labels:?}");
                }
            }
        }
        submitted.insert(mode, rows);
    }
    assert_only_files(out_dir.path(), &["both.csv", "findings.jsonl", "qa.csv"]);

    // The findings are the merge's input: per publication, exactly the names matching finds
    // and exactly the answers `qa` mode submits.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&findings)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len());
    for ((line, spec), (_, qa_labels)) in lines.iter().zip(&fixture.test).zip(&submitted["qa"]) {
        assert_eq!(line["Id"], spec.id.as_str());
        let matched: BTreeSet<String> = line["matched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        assert_eq!(matched, fixture.expected_matches(spec, &train_ids));
        let answers: BTreeSet<&str> = line["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        assert_eq!(answers, qa_labels.iter().map(String::as_str).collect());
    }

    // Tuning on them finds a rule at least as good as the default one on the same publications
    // (the default is on the grid), and says which.
    let gold = dir.path().join("test_gold.csv");
    let score_of = |args: &[&str]| -> serde_json::Value {
        let o = qa(args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let default_rule = score_of(&[
        "score",
        "--defnlp",
        p(&gold),
        p(&out_dir.path().join("both.csv")),
    ]);
    let tuned = score_of(&["score", "--defnlp", "--tune-merge", p(&gold), p(&findings)]);
    eprintln!("default rule {default_rule}; tuned {tuned}");
    let min_probability = tuned["rule"]["min_probability"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&min_probability));
    assert!((1..=20).contains(&tuned["rule"]["max_words"].as_u64().unwrap()));
    assert!(
        tuned["score"]["fbeta"].as_f64().unwrap() >= default_rule["fbeta"].as_f64().unwrap(),
        "tuned {tuned} < default {default_rule}"
    );
}

/// A publication's text as the reader joins it.
fn text_of(sections: &[(String, String)]) -> String {
    sections
        .iter()
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn seed_windows_are_one_truncated_window_per_row_and_question() {
    let (fixture, dir) = written_fixture();
    let out = dir.path().join("seed.jsonl");
    let o = qa(&[
        "features",
        "--data",
        p(&dir.path().join("train.csv")),
        "--tokenizer",
        p(&tiny_model()),
        "--defnlp-windows",
        "seed",
        "--max-seq-length",
        "256",
        "--doc-stride",
        "64",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The expected windows, row by row of train.csv.
    let mut expected = Vec::new();
    for pubn in &fixture.train {
        let text = text_of(&pubn.sections);
        for cited in &pubn.cited {
            let start = text
                .find(&cited.dataset_title)
                .map(|b| text[..b].chars().count());
            expected.push((pubn.id.clone(), cited.dataset_title.clone(), start));
        }
    }
    assert_eq!(lines.len(), expected.len() * 2);
    let (mut inside, mut outside, mut absent) = (0, 0, 0);
    for (row, (id, title, start)) in expected.iter().enumerate() {
        for q in 0..2 {
            let line = &lines[row * 2 + q];
            assert_eq!(line["id"], format!("{id}_r{row}_q{q}"));
            assert_eq!(line["window"], 0);
            let ids = line["input_ids"].as_array().unwrap();
            assert!(ids.len() <= 256);
            let offsets = line["offsets"].as_array().unwrap();
            let last_end = offsets.iter().filter_map(|o| o[1].as_u64()).max().unwrap() as usize;
            let (s, e) = (
                line["start_position"].as_u64().unwrap() as usize,
                line["end_position"].as_u64().unwrap() as usize,
            );
            let len = title.chars().count();
            match start {
                Some(c) if c + len <= last_end => {
                    assert_eq!(offsets[s][0].as_u64(), Some(*c as u64), "{id} {title}");
                    assert_eq!(
                        offsets[e][1].as_u64(),
                        Some((c + len) as u64),
                        "{id} {title}"
                    );
                    inside += 1;
                }
                Some(_) => {
                    assert_eq!((s, e), (0, 0));
                    // Cut off: the window is full.
                    assert_eq!(ids.len(), 256);
                    outside += 1;
                }
                None => {
                    assert_eq!((s, e), (0, 0));
                    absent += 1;
                }
            }
        }
    }
    // All three cases occur in the fixture.
    assert!(
        inside > 0 && outside > 0 && absent > 0,
        "{inside} {outside} {absent}"
    );

    // The sliding windows cover the whole text instead: more windows, fewer examples.
    let sliding = dir.path().join("sliding.jsonl");
    let o = qa(&[
        "features",
        "--data",
        p(&dir.path().join("train.csv")),
        "--tokenizer",
        p(&tiny_model()),
        "--max-seq-length",
        "256",
        "--doc-stride",
        "64",
        "--out",
        p(&sliding),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sliding_lines = std::fs::read_to_string(&sliding).unwrap().lines().count();
    assert!(sliding_lines > fixture.train.len() * 2);
    assert_ne!(sliding_lines, lines.len());
}

#[test]
fn train_takes_the_seed_windows() {
    let (_fixture, dir) = written_fixture();
    let out = dir.path().join("model");
    let o = Command::new(env!("CARGO_BIN_EXE_qa"))
        .args([
            "train",
            "--model-name-or-path",
            p(&tiny_model()),
            "--train-file",
            p(&dir.path().join("train.csv")),
            "--format",
            "defnlp",
            "--defnlp-windows",
            "seed",
            "--max-seq-length",
            "256",
            "--max-train-samples",
            "8",
            "--max-steps",
            "1",
            "--output-dir",
            p(&out),
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("8 seed windows from 8 examples"),
        "{}",
        stderr(&o)
    );
    assert!(out.join("config.json").is_file());
}
