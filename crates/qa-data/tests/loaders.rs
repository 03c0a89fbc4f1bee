//! Every loader on small hand-written files, including the bad inputs users actually produce.

use std::path::{Path, PathBuf};

use qa_data::{defnlp, load, DataFormat, ExampleId, LoadOptions};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn err_text(path: &Path) -> String {
    load(path, &LoadOptions::default()).unwrap_err().to_string()
}

const SQUAD_V2: &str = r#"{"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [
  {"context": "The Normans were in Normandy, a region in France.",
   "qas": [
     {"id": "q1", "question": "  In what country is Normandy?", "answers": [{"text": "France", "answer_start": 42}], "is_impossible": false},
     {"id": "q2", "question": "Who gave their name to Normandy in the 1000s?", "answers": [], "plausible_answers": [{"text": "Normans", "answer_start": 4}], "is_impossible": true},
     {"id": "q3", "question": "What region?", "answers": [{"text": "Normandy", "answer_start": 0}, {"text": "a region", "answer_start": 30}], "is_impossible": false}
   ]}]}]}"#;

#[test]
fn squad_v2_is_read_with_impossible_questions_and_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "train.json", SQUAD_V2);
    let data = load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Squad));
    assert_eq!(data.report.version.as_deref(), Some("v2.0"));
    let ex = &data.examples;
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[0].id, ExampleId::Text("q1".into()));
    assert_eq!(
        ex[0].question, "In what country is Normandy?",
        "question left-stripped"
    );
    assert_eq!(ex[0].title, "Normans");
    assert_eq!(ex[0].training_answer(), Some((42, 48)));
    assert!(ex[1].is_impossible && ex[1].answers.is_empty());
    // "Normandy" at 0 is wrong: it is at 20.
    assert_eq!(ex[2].answers[0].char_start, Some(20));
    assert_eq!(data.report.repaired, vec!["q3".to_string()]);
    assert_eq!(data.report.impossible, 1);
    assert_eq!(data.report.answers, 3);
}

#[test]
fn hf_json_list_wrapper_and_lines_give_the_same_examples() {
    let dir = tempfile::tempdir().unwrap();
    let rec1 = r#"{"id": "a", "title": "T", "question": "Where?", "context": "In Paris.", "answers": {"text": ["Paris"], "answer_start": [3]}}"#;
    let rec2 = r#"{"id": "b", "question": "Who?", "context": "Nobody knows.", "answers": {"text": [], "answer_start": []}}"#;
    let list = write(dir.path(), "l.json", &format!("[{rec1}, {rec2}]"));
    let wrapped = write(
        dir.path(),
        "w.json",
        &format!("{{\"data\": [{rec1}, {rec2}]}}"),
    );
    let lines = write(dir.path(), "nq.jsonl", &format!("{rec1}\n\n{rec2}\n"));
    let lines_json_ext = write(dir.path(), "nq2.json", &format!("{rec1}\n{rec2}\n"));
    let reference = load(&list, &LoadOptions::default()).unwrap().examples;
    assert_eq!(reference.len(), 2);
    assert_eq!(reference[0].training_answer(), Some((3, 8)));
    assert!(reference[1].is_impossible);
    for path in [&wrapped, &lines, &lines_json_ext] {
        let data = load(path, &LoadOptions::default()).unwrap();
        assert_eq!(
            data.report.format,
            Some(DataFormat::HfJson),
            "{}",
            path.display()
        );
        assert_eq!(data.examples, reference, "{}", path.display());
    }
}

#[test]
fn defnlp_fixture_becomes_one_example_per_question_with_every_occurrence() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/defnlp");
    let data = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Defnlp));
    // g7h8i9's label is nowhere in its text: counted, not silently dropped.
    assert_eq!(data.report.labels_not_found, vec!["g7h8i9".to_string()]);
    // 2 publications × 2 default questions.
    assert_eq!(data.examples.len(), 4);
    let first = &data.examples[0];
    assert_eq!(first.id, ExampleId::Text("a1b2c3_q0".into()));
    assert_eq!(first.question, "Which datasets are used?");
    let found: Vec<(usize, &str)> = first
        .answers
        .iter()
        .map(|a| (a.char_start.unwrap(), a.text.as_str()))
        .collect();
    // Case-insensitive, whole words ("farms" does not count as ARMS), text as written.
    assert_eq!(
        found,
        vec![
            (11, "ARMS"),
            (29, "census of agriculture"),
            (85, "Agricultural Resource Management Survey"),
            (126, "ARMS"),
        ]
    );
    assert_eq!(data.examples[2].answers.len(), 1);
    assert_eq!(
        data.examples[3].question,
        "What dataset is mentioned in this publication?"
    );
}

#[test]
fn defnlp_prediction_examples_use_the_training_question_ids() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/defnlp");
    let loaded = load(&dir, &LoadOptions::default()).unwrap().examples;
    let publication = defnlp::read_publication(&dir.join("train/a1b2c3.json")).unwrap();
    let examples = defnlp::publication_examples(&publication, defnlp::DEFAULT_QUESTIONS);
    assert_eq!(examples.len(), defnlp::DEFAULT_QUESTIONS.len());
    for (predicted, trained) in examples.iter().zip(&loaded) {
        assert_eq!(predicted.id, trained.id);
        assert_eq!(predicted.question, trained.question);
        assert_eq!(predicted.context, trained.context);
        assert!(predicted.answers.is_empty() && !predicted.is_impossible);
    }
    assert_eq!(
        defnlp::question_id("a1b2c3", 1),
        ExampleId::Text("a1b2c3_q1".into())
    );
}

#[test]
fn gold_labels_are_answers_or_unanswerable_flags_set_by_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bare = write(
        dir.path(),
        "bare.json",
        r#"{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "u", "question": "q?", "answers": []}]}]}]}"#,
    );
    let data = load(&bare, &LoadOptions::default()).unwrap();
    assert_eq!(data.report.without_answers, vec!["u".to_string()]);
    assert!(!data.report.has_gold_labels(&data.examples));

    let squad = write(dir.path(), "v2.json", SQUAD_V2);
    let data = load(&squad, &LoadOptions::default()).unwrap();
    assert!(data.report.has_gold_labels(&data.examples));
    // The v2 unanswerable question alone still counts: the file flagged it.
    assert!(data.report.has_gold_labels(&data.examples[1..2]));
}

#[test]
fn malformed_json_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.json",
        "{\"version\": \"1.1\",\n \"data\": [ {\"paragraphs\": [}\n]}",
    );
    let msg = err_text(&path);
    assert!(msg.contains("bad.json") && msg.contains("line 2"), "{msg}");
    let lines = write(dir.path(), "bad.jsonl", "{\"id\": \"a\"}\n{oops\n");
    let msg = err_text(&lines);
    assert!(msg.contains("bad.jsonl") && msg.contains("line 2"), "{msg}");
}

#[test]
fn missing_fields_and_wrong_types_name_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let no_question = write(
        dir.path(),
        "nq.json",
        r#"[{"id": "x7", "context": "c", "answers": {"text": [], "answer_start": []}}]"#,
    );
    let msg = err_text(&no_question);
    assert!(
        msg.contains("nq.json") && msg.contains("x7") && msg.contains("question"),
        "{msg}"
    );
    let bad_start = write(
        dir.path(),
        "bs.json",
        r#"{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "q9", "question": "q?", "answers": [{"text": "b", "answer_start": "1"}]}]}]}]}"#,
    );
    let msg = err_text(&bad_start);
    assert!(msg.contains("q9") && msg.contains("answer_start"), "{msg}");
    let uneven = write(
        dir.path(),
        "un.json",
        r#"[{"id": "u1", "question": "q", "context": "c", "answers": {"text": ["c"], "answer_start": []}}]"#,
    );
    assert!(err_text(&uneven).contains("u1"));
    let no_id = write(
        dir.path(),
        "ni.json",
        r#"[{"question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}]"#,
    );
    let msg = err_text(&no_id);
    assert!(msg.contains("#0") && msg.contains("id"), "{msg}");
    let float_id = write(
        dir.path(),
        "fi.jsonl",
        concat!(
            r#"{"id": "fine", "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
            "\n",
            r#"{"id": 1.5, "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
        ),
    );
    let msg = err_text(&float_id);
    assert!(
        msg.contains("fi.jsonl") && msg.contains("#1") && msg.contains("1.5"),
        "{msg}"
    );
}

#[test]
fn duplicate_ids_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let rec = r#"{"id": 5, "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#;
    let path = write(dir.path(), "dup.jsonl", &format!("{rec}\n{rec}\n"));
    let msg = err_text(&path);
    assert!(
        msg.contains("dup.jsonl") && msg.contains("duplicate") && msg.contains('5'),
        "{msg}"
    );
}

#[test]
fn empty_questions_and_contexts_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "e.jsonl",
        concat!(
            r#"{"id": "ok", "question": "q?", "context": "ctx", "answers": {"text": ["ctx"], "answer_start": [0]}}"#,
            "\n",
            r#"{"id": "nq", "question": "   ", "context": "ctx", "answers": {"text": [], "answer_start": []}}"#,
            "\n",
            r#"{"id": "nc", "question": "q?", "context": "", "answers": {"text": [], "answer_start": []}}"#,
        ),
    );
    let data = load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 1);
    assert_eq!(
        data.report.skipped,
        vec![
            ("nq".to_string(), "empty question".to_string()),
            ("nc".to_string(), "empty context".to_string())
        ]
    );
}

#[test]
fn out_of_range_and_absent_answers_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "r.json",
        r#"[{"id": "far", "question": "q", "context": "alpha beta", "answers": {"text": ["beta"], "answer_start": [999]}},
            {"id": "gone", "question": "q", "context": "alpha beta", "answers": {"text": ["gamma"], "answer_start": [0]}}]"#,
    );
    let data = load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(data.examples[0].answers[0].char_start, Some(6));
    assert_eq!(data.report.repaired, vec!["far".to_string()]);
    assert_eq!(data.report.unrepairable, vec!["gone".to_string()]);
    assert_eq!(data.examples[1].training_answer(), None);
    assert!(data.report.summary().contains("1 answers unrepairable"));
}

#[test]
fn unknown_content_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "notes.txt", "hello");
    assert!(err_text(&path).contains("--format"));
    let missing = dir.path().join("nope.json");
    assert!(err_text(&missing).contains("nope.json"));
}
