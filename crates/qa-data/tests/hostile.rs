//! Hostile input for every reader: named cases (empty files, byte-order marks, pipes, ids that
//! collide as text, impossible-with-answers, bad tokenizers, blank requests, ...) and proptest
//! suites feeding arbitrary bytes and mangled JSON/CSV to `load` (each `DataFormat`) and
//! `read_requests`. The rule: never a panic, and every error is one line naming the file (and,
//! for record-level errors, the record id or position).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use qa_data::defnlp::{read_publication, DefnlpOptions};
use qa_data::error::DataError;
use qa_data::load::detect_format_of;
use qa_data::{
    build_features, load, load_tokenizer, read_requests, DataFormat, ExampleId, FeatureConfig,
    LoadOptions, LoadedDataset, Progress,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn with_format(format: Option<DataFormat>) -> LoadOptions {
    LoadOptions {
        format,
        ..Default::default()
    }
}

const BOM: &str = "\u{feff}";

const SQUAD: &str = r#"{"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [
  {"context": "The Normans were in Normandy, a region in France.",
   "qas": [
     {"id": "q1", "question": "In what country is Normandy?", "answers": [{"text": "France", "answer_start": 42}], "is_impossible": false},
     {"id": "q2", "question": "Who?", "answers": [], "is_impossible": true}
   ]}]}]}"#;

const HF_LINES: &str = concat!(
    r#"{"id": "a", "question": "Where?", "context": "In Paris.", "answers": {"text": ["Paris"], "answer_start": [3]}}"#,
    "\n",
    r#"{"id": "b", "question": "Who?", "context": "Nobody knows.", "answers": {"text": [], "answer_start": []}}"#,
    "\n"
);

const REQUESTS: &str = concat!(
    r#"{"id": "r1", "question": "Where?", "context": "In Paris."}"#,
    "\n"
);

const DEFNLP_CSV: &str = "Id,pub_title,dataset_title,dataset_label,cleaned_label\n\
p1,A study,NHANES,National Health and Nutrition Examination Survey,national health\n";

const PUBLICATION: &str = r#"[{"section_title": "Intro", "text": "We use the National Health and Nutrition Examination Survey (NHANES)."}]"#;

/// A DEFNLP folder: `train.csv` (as given) beside `train/p1.json` (as given).
fn defnlp_dir(root: &Path, csv: &str, publication: &[u8]) -> PathBuf {
    let dir = root.join("defnlp");
    std::fs::create_dir_all(dir.join("train")).unwrap();
    write(&dir, "train.csv", csv);
    write(&dir.join("train"), "p1.json", publication);
    dir
}

fn tokenizer() -> &'static tokenizers::Tokenizer {
    static TOKENIZER: OnceLock<tokenizers::Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        load_tokenizer(&qa_testkit::shared_dir().join("models/all-MiniLM-L6-v2")).unwrap()
    })
}

/// Runs `f` and returns what it logged at WARN and above (tracing, captured on this thread).
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }
    let sink = Sink::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(sink.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// Runs `f` on its own thread and fails the test if it has not finished in `secs` (a reader
/// that opens a pipe twice blocks forever on the second open).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the reader did not finish: it waits on the pipe it already read")
}

/// A FIFO at `path` whose other end a thread fills with `text` (once).
fn fifo(path: &Path, text: &str) -> std::thread::JoinHandle<()> {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let (path, text) = (path.to_path_buf(), text.to_string());
    std::thread::spawn(move || {
        let mut end = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // The reader may stop early (an error): a broken pipe is fine here.
        let _ = end.write_all(text.as_bytes());
    })
}

/// `/dev/fd/N` of an anonymous pipe that a thread fills with `text`, as `<(…)` gives a program.
fn dev_fd_pipe(text: &str) -> (PathBuf, std::io::PipeReader) {
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let text = text.to_string();
    std::thread::spawn(move || {
        let _ = writer.write_all(text.as_bytes());
    });
    (
        PathBuf::from(format!("/dev/fd/{}", reader.as_raw_fd())),
        reader,
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Empty files

#[test]
fn empty_files_are_named_as_empty_for_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for (name, body) in [
        ("zero.json", ""),
        ("blank.json", " \n\t\r\n "),
        ("zero.jsonl", ""),
        ("blank.jsonl", "\n\n   \n"),
        ("zero.csv", ""),
        ("blank", "  \n"),
        ("bom_only.json", BOM),
        ("bom_space.jsonl", "\u{feff} \n"),
    ] {
        let path = write(dir.path(), name, body);
        for format in [
            None,
            Some(DataFormat::Squad),
            Some(DataFormat::HfJson),
            Some(DataFormat::Defnlp),
        ] {
            let err = load(&path, &with_format(format)).unwrap_err();
            assert!(matches!(err, DataError::EmptyFile { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("{}: the file is empty", path.display())
            );
            cases += 1;
        }
    }
    // A DEFNLP folder with an empty train.csv, an empty publication, an empty request file and
    // an empty tokenizer.json.
    let defnlp = defnlp_dir(dir.path(), "", PUBLICATION.as_bytes());
    let msg = load(&defnlp, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!("{}: the file is empty", defnlp.join("train.csv").display())
    );
    let defnlp2 = dir.path().join("d2");
    std::fs::create_dir_all(defnlp2.join("train")).unwrap();
    write(&defnlp2, "train.csv", DEFNLP_CSV);
    let empty_pub = write(&defnlp2.join("train"), "p1.json", "\n");
    let msg = load(&defnlp2, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(msg, format!("{}: the file is empty", empty_pub.display()));
    let msg = read_publication(&empty_pub).unwrap_err().to_string();
    assert!(msg.ends_with("p1.json: the file is empty"), "{msg}");
    let requests = write(dir.path(), "requests.jsonl", "\n \n");
    let err = read_requests(&requests).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: the file is empty", requests.display())
    );
    let tok_dir = dir.path().join("tok");
    std::fs::create_dir(&tok_dir).unwrap();
    let tok = write(&tok_dir, "tokenizer.json", "");
    let msg = load_tokenizer(&tok_dir).unwrap_err().to_string();
    assert_eq!(msg, format!("{}: the file is empty", tok.display()));
    cases += 5;
    assert_eq!(cases, 37);
}

// ---------------------------------------------------------------------------------------------
// 2. UTF-8 byte-order marks

#[test]
fn a_byte_order_mark_is_skipped_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let squad = write(dir.path(), "squad.json", format!("{BOM}{SQUAD}"));
    let data = load(&squad, &LoadOptions::default()).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Squad));
    assert_eq!(data.examples.len(), 2);
    let squad_forced = load(&squad, &with_format(Some(DataFormat::Squad))).unwrap();
    assert_eq!(squad_forced.examples, data.examples);

    let list = serde_json::to_string(
        &HF_LINES
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let hf = write(dir.path(), "hf.json", format!("{BOM}{list}"));
    let hf_plain = write(dir.path(), "hf_plain.json", &list);
    let reference = load(&hf_plain, &LoadOptions::default()).unwrap().examples;
    assert_eq!(
        load(&hf, &LoadOptions::default()).unwrap().examples,
        reference
    );
    let jsonl = write(dir.path(), "hf.jsonl", format!("{BOM}{HF_LINES}"));
    assert_eq!(
        load(&jsonl, &LoadOptions::default()).unwrap().examples,
        reference
    );
    // No extension: the sniffer looks past the mark too.
    let bare = write(dir.path(), "hf_lines", format!("{BOM}{HF_LINES}"));
    assert_eq!(
        load(&bare, &LoadOptions::default()).unwrap().examples,
        reference
    );

    // DEFNLP: the CSV (as a folder and as a file) and the publication.
    let defnlp = defnlp_dir(
        dir.path(),
        &format!("{BOM}{DEFNLP_CSV}"),
        format!("{BOM}{PUBLICATION}").as_bytes(),
    );
    let data = load(&defnlp, &LoadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 2);
    assert_eq!(data.examples[0].id, ExampleId::Text("p1_q0".into()));
    let data = load(defnlp.join("train.csv"), &LoadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 2);
    let publication = read_publication(&defnlp.join("train/p1.json")).unwrap();
    assert!(publication.text.starts_with("We use"));

    let requests = write(dir.path(), "requests.jsonl", format!("{BOM}{REQUESTS}"));
    let examples = read_requests(&requests).unwrap();
    assert_eq!(examples[0].id, ExampleId::Text("r1".into()));

    // And tokenizer.json.
    let tok_dir = dir.path().join("tok");
    std::fs::create_dir(&tok_dir).unwrap();
    let shared = std::fs::read_to_string(
        qa_testkit::shared_dir().join("models/all-MiniLM-L6-v2/tokenizer.json"),
    )
    .unwrap();
    write(&tok_dir, "tokenizer.json", format!("{BOM}{shared}"));
    let tok = load_tokenizer(&tok_dir).unwrap();
    assert_eq!(tok.token_to_id("[PAD]"), tokenizer().token_to_id("[PAD]"));
}

// ---------------------------------------------------------------------------------------------
// 3. Pipes

#[test]
fn a_fifo_without_format_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("squad_fifo");
    let writer = fifo(&path, SQUAD);
    let data = within(20, move || load(&path, &LoadOptions::default())).unwrap();
    writer.join().unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Squad));
    assert_eq!(data.examples.len(), 2);

    // A DEFNLP CSV through a FIFO, recognised by its header.
    let defnlp = defnlp_dir(dir.path(), DEFNLP_CSV, PUBLICATION.as_bytes());
    let path = dir.path().join("labels_fifo");
    let writer = fifo(&path, DEFNLP_CSV);
    let options = LoadOptions {
        defnlp: DefnlpOptions {
            publications_dir: Some(defnlp.join("train")),
            ..Default::default()
        },
        ..Default::default()
    };
    let data = within(20, move || load(&path, &options)).unwrap();
    writer.join().unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Defnlp));
    assert_eq!(data.examples.len(), 2);

    // Requests through a FIFO.
    let path = dir.path().join("requests_fifo");
    let writer = fifo(&path, REQUESTS);
    let examples = within(20, move || read_requests(&path)).unwrap();
    writer.join().unwrap();
    assert_eq!(examples.len(), 1);
}

#[test]
fn process_substitution_dev_fd_without_format_is_read_once() {
    let (path, _reader) = dev_fd_pipe(HF_LINES);
    let data = within(20, move || load(&path, &LoadOptions::default())).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::HfJson));
    assert_eq!(data.examples.len(), 2);
    assert_eq!(data.examples[0].training_answer(), Some((3, 8)));

    let (path, _reader) = dev_fd_pipe(SQUAD);
    let data = within(20, move || load(&path, &LoadOptions::default())).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Squad));
    assert_eq!(data.examples.len(), 2);

    // The sniffer on text alone agrees with the extension-less pipe.
    assert_eq!(
        detect_format_of(Path::new("/dev/fd/63"), DEFNLP_CSV).unwrap(),
        DataFormat::Defnlp
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Ids that collide as text

#[test]
fn ids_7_and_quoted_7_collide_and_both_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "ids.jsonl",
        concat!(
            r#"{"id": 7, "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
            "\n",
            r#"{"id": "x", "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
            "\n",
            r#"{"id": "7", "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
        ),
    );
    let err = load(&path, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::DuplicateId { id, first: 0, second: 2, first_as, second_as, .. }
                if id == "7" && first_as == "7" && second_as == "\"7\""
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ids.jsonl") && msg.contains("#0 (id 7)") && msg.contains("#2 (id \"7\")"),
        "{msg}"
    );
    let squad = write(
        dir.path(),
        "ids.json",
        r#"{"data": [{"paragraphs": [{"context": "c", "qas": [
            {"id": "12", "question": "q", "answers": []},
            {"id": 12, "question": "q", "answers": []}]}]}]}"#,
    );
    let msg = load(&squad, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ids.json") && msg.contains("#0 (id \"12\")") && msg.contains("#1 (id 12)"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. is_impossible with answers: answerable, as the official v2.0 script scores it

#[test]
fn impossible_with_answers_is_answerable_counted_and_warned() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "v2.json",
        r#"{"version": "v2.0", "data": [{"title": "T", "paragraphs": [
          {"context": "The Normans were in Normandy, a region in France.",
           "qas": [
             {"id": "odd", "question": "In what country?", "answers": [{"text": "France", "answer_start": 42}], "is_impossible": true},
             {"id": "none", "question": "Who?", "answers": [], "is_impossible": true},
             {"id": "fine", "question": "Where?", "answers": [{"text": "Normandy", "answer_start": 20}], "is_impossible": false}
           ]}]}]}"#,
    );
    let (data, warnings) = warnings_of(|| load(&path, &LoadOptions::default()).unwrap());
    let odd = &data.examples[0];
    assert!(!odd.is_impossible && odd.training_answer() == Some((42, 48)));
    assert!(data.examples[1].is_impossible);
    assert_eq!(data.report.impossible_with_answers, vec!["odd".to_string()]);
    assert_eq!(data.report.impossible, 1);
    assert!(
        data.report
            .summary()
            .contains("1 questions flagged is_impossible but with answers, loaded as answerable"),
        "{}",
        data.report.summary()
    );
    assert!(
        warnings.contains("v2.json") && warnings.contains("odd"),
        "{warnings}"
    );
    // Features label the answer, not [CLS].
    let set = build_features(
        tokenizer(),
        &data.examples[..1],
        &FeatureConfig {
            progress: Progress::Hidden,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(set.features[0].start_position > 0);

    // HF JSON too (its flag is optional; a non-boolean flag is an error, not ignored).
    let hf = write(
        dir.path(),
        "odd.jsonl",
        r#"{"id": "h", "question": "Where?", "context": "In Paris.", "answers": {"text": ["Paris"], "answer_start": [3]}, "is_impossible": true}"#,
    );
    let data = load(&hf, &LoadOptions::default()).unwrap();
    assert!(!data.examples[0].is_impossible);
    assert_eq!(data.report.impossible_with_answers, vec!["h".to_string()]);
    let bad_flag = write(
        dir.path(),
        "flag.jsonl",
        r#"{"id": "f", "question": "Where?", "context": "In Paris.", "answers": {"text": [], "answer_start": []}, "is_impossible": "yes"}"#,
    );
    let msg = load(&bad_flag, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("flag.jsonl") && msg.contains("example f") && msg.contains("is_impossible"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. SQuAD v2 detection

#[test]
fn looks_like_v2_from_the_version_or_an_unanswerable_question() {
    let dir = tempfile::tempdir().unwrap();
    let squad = |version: &str, answers: &str| {
        format!(
            r#"{{{version} "data": [{{"paragraphs": [{{"context": "In Paris.", "qas": [
                {{"id": "a", "question": "Where?", "answers": {answers}}}]}}]}}]}}"#
        )
    };
    let answered = r#"[{"text": "Paris", "answer_start": 3}]"#;
    for (name, text, expected) in [
        ("v2.json", squad(r#""version": "v2.0","#, answered), true),
        ("v20.json", squad(r#""version": "2.0","#, answered), true),
        ("v11.json", squad(r#""version": "1.1","#, answered), false),
        ("none.json", squad("", answered), false),
        ("unanswered.json", squad("", "[]"), true),
    ] {
        let path = write(dir.path(), name, text);
        let report = load(&path, &LoadOptions::default()).unwrap().report;
        assert_eq!(report.looks_like_v2(), expected, "{name}");
    }
    let hf = write(dir.path(), "hf.jsonl", HF_LINES);
    assert!(load(&hf, &LoadOptions::default())
        .unwrap()
        .report
        .looks_like_v2());
    let defnlp = defnlp_dir(dir.path(), DEFNLP_CSV, PUBLICATION.as_bytes());
    assert!(!load(&defnlp, &LoadOptions::default())
        .unwrap()
        .report
        .looks_like_v2());
}

// ---------------------------------------------------------------------------------------------
// 7. Tokenizer files that are not tokenizers

#[test]
fn json_that_is_no_tokenizer_and_folders_without_one_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(
        qa_testkit::shared_dir().join("models/all-MiniLM-L6-v2/config.json"),
    )
    .unwrap();
    for (case, body) in [
        ("empty_object", "{}".to_string()),
        ("config", config),
        ("list", "[1, 2]".to_string()),
        ("bad_model", r#"{"model": 5}"#.to_string()),
    ] {
        let folder = dir.path().join(case);
        std::fs::create_dir(&folder).unwrap();
        let file = write(&folder, "tokenizer.json", body);
        for path in [&folder, &file] {
            let err = load_tokenizer(path).unwrap_err();
            assert!(matches!(err, DataError::NotATokenizer { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "{}: not a Hugging Face tokenizer file",
                    file.display()
                )) && !msg.contains('\n'),
                "{msg}"
            );
        }
    }
    let folder = dir.path().join("broken");
    std::fs::create_dir(&folder).unwrap();
    write(&folder, "tokenizer.json", "{\"model\": ");
    let msg = load_tokenizer(&folder).unwrap_err().to_string();
    assert!(
        msg.contains("broken/tokenizer.json") && msg.contains("malformed JSON"),
        "{msg}"
    );
    let empty = dir.path().join("no_tokenizer");
    std::fs::create_dir(&empty).unwrap();
    let err = load_tokenizer(&empty).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no tokenizer found (expected tokenizer.json, or vocab.txt for a BERT WordPiece \
             tokenizer)",
            empty.display()
        )
    );
    let missing = dir.path().join("nowhere/tokenizer.json");
    assert!(matches!(
        load_tokenizer(&missing).unwrap_err(),
        DataError::NoTokenizer { path } if path == missing
    ));
}

// ---------------------------------------------------------------------------------------------
// 8. Examples that get no window: the warning names the data file

#[test]
fn no_window_warnings_name_the_data_file() {
    let data_file = PathBuf::from("/data/covid/dev.json");
    let example = qa_data::Example {
        id: ExampleId::Text("long-q".into()),
        title: String::new(),
        question: "why ".repeat(40),
        context: "some context".into(),
        answers: Vec::new(),
        is_impossible: true,
    };
    let config = FeatureConfig {
        max_length: 32,
        stride: 8,
        progress: Progress::Hidden,
        source: Some(data_file.clone()),
        ..Default::default()
    };
    let (set, warnings) =
        warnings_of(|| build_features(tokenizer(), std::slice::from_ref(&example), &config));
    let set = set.unwrap();
    assert_eq!(set.report.skipped[0].0, "long-q");
    assert!(
        warnings.contains("/data/covid/dev.json: example long-q: no windows"),
        "{warnings}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Blank requests, and the other reader-level hostile cases

#[test]
fn blank_questions_and_contexts_in_requests_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (body, line, field) in [
        (
            r#"{"question": "   ", "context": "c"}"#.to_string(),
            1,
            "question",
        ),
        (
            format!("{REQUESTS}\n{}", r#"{"question": "q", "context": "\n\t"}"#),
            3,
            "context",
        ),
        (
            r#"{"question": "", "context": ""}"#.to_string(),
            1,
            "question",
        ),
    ] {
        let path = write(dir.path(), "requests.jsonl", body);
        let err = read_requests(&path).unwrap_err();
        assert!(
            matches!(&err, DataError::BlankLineField { line: l, field: f, .. } if *l == line && *f == field),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("{}: line {line}: field {field:?} is blank", path.display())
        );
    }
}

#[test]
fn other_hostile_records_are_named_errors_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Not UTF-8: the line is named.
    let mut bytes = HF_LINES.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"id\": \"\xff\xfe\"}\n");
    let path = write(dir.path(), "latin1.jsonl", &bytes);
    let err = load(&path, &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: line 3 is not valid UTF-8 text", path.display())
    );
    let path = write(dir.path(), "latin1_requests.jsonl", &bytes);
    assert!(matches!(
        read_requests(&path).unwrap_err(),
        DataError::NotUtf8 { line: 3, .. }
    ));
    // A huge answer_start (it overflowed the aligner's arithmetic) is repaired like any other.
    let path = write(
        dir.path(),
        "huge.jsonl",
        r#"{"id": "h", "question": "Where?", "context": "In Paris.", "answers": {"text": ["Paris", "Rome"], "answer_start": [18446744073709551615, 18446744073709551615]}}"#,
    );
    for alignment in [
        qa_data::AnswerAlignment::Repair,
        qa_data::AnswerAlignment::AsGiven,
    ] {
        let data = load(
            &path,
            &LoadOptions {
                alignment,
                ..Default::default()
            },
        )
        .unwrap();
        let expected = match alignment {
            qa_data::AnswerAlignment::Repair => Some(3),
            qa_data::AnswerAlignment::AsGiven => None,
        };
        assert_eq!(data.examples[0].answers[0].char_start, expected);
        assert_eq!(data.examples[0].answers[1].char_start, None);
    }
    // A blank answer marks no span: no label (counted). Given directly to `build_features`
    // (an `Example` is public), a zero-length answer at a token boundary labels [CLS], never a
    // window whose start is after its end.
    let path = write(
        dir.path(),
        "blank_answer.jsonl",
        r#"{"id": "b", "question": "Where?", "context": "In Paris.", "answers": {"text": [""], "answer_start": [3]}}"#,
    );
    let data = load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(data.examples[0].answers[0].char_start, None);
    assert_eq!(data.report.unrepairable, vec!["b".to_string()]);
    let mut direct = data.examples[0].clone();
    direct.context = "Paris.".into();
    direct.answers[0].char_start = Some(5);
    let set = build_features(
        tokenizer(),
        &[direct, data.examples[0].clone()],
        &FeatureConfig {
            progress: Progress::Hidden,
            ..Default::default()
        },
    )
    .unwrap();
    for f in &set.features {
        assert_eq!((f.start_position, f.end_position), (0, 0));
    }
    // Negative and fractional starts are named errors.
    let path = write(
        dir.path(),
        "neg.jsonl",
        r#"{"id": "n", "question": "q", "context": "c", "answers": {"text": ["c"], "answer_start": [-1]}}"#,
    );
    let msg = load(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("neg.jsonl") && msg.contains("example n") && msg.contains("answer_start"),
        "{msg}"
    );
    // A blank id names nothing: refused, with the record's position.
    let path = write(
        dir.path(),
        "blank_id.jsonl",
        r#"{"id": " ", "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
    );
    assert_eq!(
        load(&path, &LoadOptions::default())
            .unwrap_err()
            .to_string(),
        format!("{}: example #0: id is blank", path.display())
    );
    // A DEFNLP publication id that is a path, not a file name.
    let defnlp = defnlp_dir(
        dir.path(),
        "Id,pub_title,dataset_title,dataset_label\n/etc/passwd,t,d,l\n",
        PUBLICATION.as_bytes(),
    );
    let msg = load(&defnlp, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train.csv") && msg.contains("\"/etc/passwd\"") && msg.contains("file name"),
        "{msg}"
    );
    // Deep nesting is a JSON error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let path = write(dir.path(), "deep.json", &deep);
    let msg = load(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("deep.json") && msg.contains("recursion limit"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Tabular data as other tools write it: binary strings, empty files, folders of shards

/// One row of a Parquet file whose strings are `binary` columns (no UTF-8 annotation), as Spark
/// writes them: id, question, context, answers (text, start), and a `blob` column the loader
/// does not read.
struct BinaryRow<'a> {
    id: &'a [u8],
    question: &'a [u8],
    context: &'a [u8],
    answers: Vec<(&'a [u8], i32)>,
    blob: &'a [u8],
}

/// Writes `rows` to a Parquet file at `path` with every string column `binary` (Spark's
/// nullable three-level lists inside an `answers` struct); no rows writes the schema alone.
fn write_binary_parquet(path: &Path, rows: &[BinaryRow]) {
    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    const SCHEMA: &str = "message spark_schema {
        OPTIONAL BYTE_ARRAY id;
        OPTIONAL BYTE_ARRAY question;
        OPTIONAL BYTE_ARRAY context;
        OPTIONAL group answers {
            OPTIONAL group text (LIST) { REPEATED group list { OPTIONAL BYTE_ARRAY element; } }
            OPTIONAL group answer_start (LIST) { REPEATED group list { OPTIONAL INT32 element; } }
        }
        OPTIONAL BYTE_ARRAY blob;
    }";
    let schema = Arc::new(parquet::schema::parser::parse_message_type(SCHEMA).unwrap());
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    if !rows.is_empty() {
        let bytes = |b: &[u8]| ByteArray::from(b.to_vec());
        let flat = |column: usize| -> Vec<ByteArray> {
            rows.iter()
                .map(|r| bytes([r.id, r.question, r.context, r.blob][column]))
                .collect()
        };
        // Answers: a present element is at definition level 4; an empty list stops at 2.
        let (mut defs, mut reps) = (Vec::new(), Vec::new());
        for row in rows {
            if row.answers.is_empty() {
                defs.push(2);
                reps.push(0);
            }
            for i in 0..row.answers.len() {
                defs.push(4);
                reps.push(i16::from(i > 0));
            }
        }
        let texts: Vec<ByteArray> = rows
            .iter()
            .flat_map(|r| r.answers.iter().map(|(t, _)| bytes(t)))
            .collect();
        let starts: Vec<i32> = rows
            .iter()
            .flat_map(|r| r.answers.iter().map(|(_, s)| *s))
            .collect();
        let present = vec![1i16; rows.len()];
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            match index {
                3 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&texts, Some(&defs), Some(&reps)),
                4 => column
                    .typed::<Int32Type>()
                    .write_batch(&starts, Some(&defs), Some(&reps)),
                _ => {
                    let values = flat(index.min(3));
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&present), None)
                }
            }
            .unwrap();
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

/// Two answerable-or-not rows with non-ASCII text, ids `{prefix}0` and `{prefix}1`.
fn binary_rows(ids: &[&'static str; 2]) -> Vec<BinaryRow<'static>> {
    vec![
        BinaryRow {
            id: ids[0].as_bytes(),
            question: "Où est le café ?".as_bytes(),
            context: "Le café est à Paris, près du fleuve.".as_bytes(),
            answers: vec![(b"Paris", 14), (b"fleuve", 29)],
            blob: b"\xff\x00\xfe",
        },
        BinaryRow {
            id: ids[1].as_bytes(),
            question: b"Who?",
            context: b"Nobody knows.",
            answers: vec![],
            blob: b"",
        },
    ]
}

/// The examples of [`binary_rows`] as JSON Lines (string columns), for comparison.
fn binary_rows_as_jsonl(ids: &[&str; 2]) -> String {
    format!(
        "{}\n{}\n",
        json!({"id": ids[0], "question": "Où est le café ?",
               "context": "Le café est à Paris, près du fleuve.",
               "answers": {"text": ["Paris", "fleuve"], "answer_start": [14, 29]}}),
        json!({"id": ids[1], "question": "Who?", "context": "Nobody knows.",
               "answers": {"text": [], "answer_start": []}}),
    )
}

#[test]
fn binary_parquet_strings_are_read_as_text_with_one_warning_per_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spark.parquet");
    write_binary_parquet(&path, &binary_rows(&["s0", "s1"]));
    let reference = write(
        dir.path(),
        "same.jsonl",
        binary_rows_as_jsonl(&["s0", "s1"]),
    );
    let reference = load(&reference, &LoadOptions::default()).unwrap();
    let (data, warnings) = warnings_of(|| load(&path, &LoadOptions::default()));
    let data = data.unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Parquet));
    assert_eq!(data.examples, reference.examples);
    assert_eq!(data.examples[0].question, "Où est le café ?");
    assert_eq!(data.examples[0].training_answer(), Some((14, 19)));
    assert!(data.report.repaired.is_empty() && data.report.unrepairable.is_empty());
    // One warning per binary column read (the unread `blob`, not UTF-8, is left alone).
    let lines: Vec<&str> = warnings.lines().collect();
    assert_eq!(lines.len(), 4, "{warnings}");
    for (line, column) in lines
        .iter()
        .zip(["answers.text", "context", "id", "question"])
    {
        assert!(
            line.ends_with(&format!(
                "{}: Parquet column \"{column}\" is stored as binary, not string; read as \
                 UTF-8 text",
                path.display()
            )),
            "{line}"
        );
    }
}

#[test]
fn binary_parquet_strings_that_are_not_utf8_name_the_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.parquet");
    let mut rows = binary_rows(&["s0", "s1"]);
    rows[1].context = b"Caf\xe9 ferm\xe9.";
    write_binary_parquet(&path, &rows);
    let err = load(&path, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, DataError::BinaryNotUtf8 { row: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: row #1: binary column \"context\" is not UTF-8 text (invalid byte at offset 3)",
            path.display()
        )
    );
    // Inside the answers struct, the column is named by its path.
    let mut rows = binary_rows(&["s0", "s1"]);
    rows[0].answers[1].0 = b"\xc3(";
    write_binary_parquet(&path, &rows);
    assert_eq!(
        load(&path, &LoadOptions::default())
            .unwrap_err()
            .to_string(),
        format!(
            "{}: row #0: binary column \"answers.text\" is not UTF-8 text (invalid byte at \
             offset 0)",
            path.display()
        )
    );
}

#[test]
fn files_without_examples_are_named_not_loaded_empty() {
    let dir = tempfile::tempdir().unwrap();
    let no_rows = dir.path().join("no_rows.parquet");
    write_binary_parquet(&no_rows, &[]);
    let header_only = write(dir.path(), "header.csv", "id,question,context,answers\n");
    let squad = write(
        dir.path(),
        "squad.json",
        r#"{"version": "1.1", "data": []}"#,
    );
    let no_paragraphs = write(
        dir.path(),
        "no_qas.json",
        r#"{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": []}]}]}"#,
    );
    let hf_list = write(dir.path(), "hf.json", "[]");
    let hf_data = write(dir.path(), "hf_data.json", r#"{"data": []}"#);
    for path in [
        &no_rows,
        &header_only,
        &squad,
        &no_paragraphs,
        &hf_list,
        &hf_data,
    ] {
        let err = load(path, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, DataError::NoExamples { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("{}: the file holds no examples", path.display())
        );
    }
    // A DEFNLP labels file of a header alone names the CSV (folder and file alike).
    let defnlp = defnlp_dir(
        dir.path(),
        "Id,pub_title,dataset_title,dataset_label,cleaned_label\n",
        PUBLICATION.as_bytes(),
    );
    let csv = defnlp.join("train.csv");
    for path in [&defnlp, &csv] {
        assert_eq!(
            load(path, &LoadOptions::default()).unwrap_err().to_string(),
            format!("{}: the file holds no examples", csv.display())
        );
    }
    // Rows that are all skipped are not this error: each is warned about and counted.
    let skipped = write(
        dir.path(),
        "skipped.jsonl",
        r#"{"id": "e", "question": " ", "context": "c", "answers": {"text": [], "answer_start": []}}"#,
    );
    let data = load(&skipped, &LoadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 0);
    assert_eq!(
        data.report.skipped,
        vec![("e".to_string(), "empty question".to_string())]
    );
}

#[test]
fn a_folder_of_shards_loads_as_one_dataset_in_file_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    // Written out of order, with Spark's litter beside them.
    write_binary_parquet(
        &shards.join("part-00001.parquet"),
        &binary_rows(&["b2", "b3"]),
    );
    write_binary_parquet(
        &shards.join("part-00000.parquet"),
        &binary_rows(&["b0", "b1"]),
    );
    write(&shards, "_SUCCESS", "");
    write(&shards, ".part-00000.parquet.crc", "junk");
    let data = load(&shards, &LoadOptions::default()).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Parquet));
    assert_eq!(data.report.path, shards);
    let ids: Vec<String> = data.examples.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["b0", "b1", "b2", "b3"]);
    assert_eq!(
        qa_data::load::detect_format(&shards).unwrap(),
        DataFormat::Parquet
    );
    // JSON Lines shards too; an id in two shards is a duplicate naming the folder.
    let lines = dir.path().join("lines");
    std::fs::create_dir(&lines).unwrap();
    write(&lines, "b.jsonl", binary_rows_as_jsonl(&["x2", "x1"]));
    write(&lines, "a.jsonl", binary_rows_as_jsonl(&["x0", "x1"]));
    let err = load(&lines, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::DuplicateId { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "{}: duplicate example id x1: example #1 (id \"x1\") and example #3",
            lines.display()
        )),
        "{err}"
    );
    // Shards of two formats, or of two splits, are refused.
    write(&shards, "extra.csv", "id,question,context,answers\n");
    assert_eq!(
        load(&shards, &LoadOptions::default())
            .unwrap_err()
            .to_string(),
        format!(
            "{}: this folder holds data files of several formats (.csv, .parquet); shards of \
             one dataset share one format: pass one file, or a folder of one format's shards",
            shards.display()
        )
    );
    let hub = dir.path().join("data");
    std::fs::create_dir(&hub).unwrap();
    for name in [
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ] {
        write_binary_parquet(&hub.join(name), &binary_rows(&["h0", "h1"]));
    }
    let err = load(&hub, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::SeveralSplits { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: this folder holds the files of several splits (train, validation); pass one \
             split's file, or a folder holding one split's shards",
            hub.display()
        )
    );
    // A DEFNLP folder (train.csv beside train/) is still DEFNLP, with its CSV beside shards.
    let defnlp = defnlp_dir(dir.path(), DEFNLP_CSV, PUBLICATION.as_bytes());
    write_binary_parquet(&defnlp.join("x.parquet"), &binary_rows(&["d0", "d1"]));
    let data = load(&defnlp, &LoadOptions::default()).unwrap();
    assert_eq!(data.report.format, Some(DataFormat::Defnlp));
    assert_eq!(data.examples.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Fuzz: the checks every outcome must pass

/// An error must be one line naming one of `files`; record-level errors name the record.
fn check_error(err: &DataError, files: &[&Path]) {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    assert!(
        files.iter().any(|f| msg.contains(&f.display().to_string())),
        "error names none of {files:?}: {msg}"
    );
    match err {
        DataError::Example { id, .. } => {
            assert!(!id.trim().is_empty(), "record not named: {msg}")
        }
        DataError::MissingId { position, .. }
        | DataError::InvalidId { position, .. }
        | DataError::BlankId { position, .. } => {
            assert!(msg.contains(&format!("#{position}")), "{msg}")
        }
        DataError::DuplicateId { first, second, .. } => assert!(
            msg.contains(&format!("#{first} ")) && msg.contains(&format!("#{second} ")),
            "{msg}"
        ),
        DataError::Config(_) => panic!("a data file gave a settings error: {msg}"),
        _ => {}
    }
}

/// What a successful load promises, then windows cut from it without a panic.
fn check_dataset(data: &LoadedDataset) {
    let mut ids = std::collections::HashSet::new();
    for ex in &data.examples {
        assert!(ids.insert(ex.id.to_string()), "id {} twice", ex.id);
        assert!(!ex.id.to_string().trim().is_empty());
        assert!(!ex.question.trim().is_empty() && !ex.context.trim().is_empty());
        assert!(
            !ex.is_impossible || ex.answers.is_empty(),
            "{}: flagged impossible with answers",
            ex.id
        );
        let chars = ex.context.chars().count();
        for answer in &ex.answers {
            if let (Some(start), Some(end)) = (answer.char_start, answer.char_end()) {
                assert!(
                    start <= end && end <= chars,
                    "{}: answer out of range",
                    ex.id
                );
            }
        }
    }
    let report = &data.report;
    assert_eq!(report.examples, data.examples.len());
    assert_eq!(
        report.impossible,
        data.examples.iter().filter(|e| e.is_impossible).count()
    );
    assert_eq!(
        report.answers,
        data.examples.iter().map(|e| e.answers.len()).sum::<usize>()
    );
    let _ = report.summary();
    let _ = report.looks_like_v2();
    let config = FeatureConfig {
        max_length: 32,
        stride: 8,
        progress: Progress::Hidden,
        ..Default::default()
    };
    let set = build_features(tokenizer(), &data.examples, &config).unwrap();
    for f in &set.features {
        assert!(f.start_position <= f.end_position && f.end_position < f.len());
    }
}

fn check_load(path: &Path, format: Option<DataFormat>, files: &[&Path]) {
    match load(path, &with_format(format)) {
        Ok(data) => check_dataset(&data),
        Err(err) => check_error(&err, files),
    }
}

const FORMATS: [Option<DataFormat>; 4] = [
    None,
    Some(DataFormat::Squad),
    Some(DataFormat::HfJson),
    Some(DataFormat::Defnlp),
];

// ---------------------------------------------------------------------------------------------
// Fuzz: strategies
//
// Documents are generated plausible (every field present, values from pools that hold the
// hostile-but-well-typed ones: blank text, huge offsets, `7` beside `"7"`, impossible flags
// with answers, any Unicode), then take 0–2 mutations at random places (a value replaced by
// any JSON value, or removed), then perhaps damage to their bytes. One bad spot per document
// keeps most documents loadable, so the checks on what loads run too.

const CONTEXTS: [&str; 4] = [
    "The Normans were in Normandy, a region in France.",
    "café — naïve résumé 北京 in Paris.",
    "In Paris.",
    "   ",
];

const ANSWER_TEXTS: [&str; 6] = ["France", "Normandy", "résumé", "Paris", "paris", ""];

/// Question and context text: mostly ordinary, sometimes blank, odd or any Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(CONTEXTS.to_vec()).prop_map(str::to_string),
        2 => "[a-zA-Z ?]{1,20}",
        1 => Just(String::new()),
        1 => Just("line\nbreak\u{0}\u{2028}".to_string()),
        1 => Just(BOM.to_string()),
        1 => any::<String>(),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..6).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(3.5)),
        text().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "question",
            "context",
            "answers",
            "text",
            "answer_start",
            "is_impossible",
            "data",
            "paragraphs",
            "qas",
            "version",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,6}",
    ]
}

/// Any JSON value, nested at most 4 deep.
fn anything() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Ids: mostly distinct, sometimes `7` beside `"7"`, sometimes odd text.
fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => "[a-z]{6}".prop_map(Value::String),
        1 => (0i64..3).prop_map(Value::from),
        1 => (0i64..3).prop_map(|n| Value::String(n.to_string())),
        1 => text().prop_map(Value::String),
    ]
}

fn start() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0u64..60).prop_map(Value::from),
        1 => Just(json!(u64::MAX)),
        1 => Just(json!(i64::MAX)),
    ]
}

fn answer_pairs() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(
        (
            prop_oneof![
                4 => prop::sample::select(ANSWER_TEXTS.to_vec()).prop_map(str::to_string),
                1 => text(),
            ],
            start(),
        ),
        0..3,
    )
}

/// A SQuAD list of `{text, answer_start}`.
fn answer_list(pairs: Vec<(String, Value)>) -> Value {
    Value::Array(
        pairs
            .into_iter()
            .map(|(t, s)| json!({"text": t, "answer_start": s}))
            .collect(),
    )
}

/// The `datasets` layout: `{"text": [...], "answer_start": [...]}`.
fn answer_lists(pairs: Vec<(String, Value)>) -> Value {
    let (texts, starts): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    json!({"text": texts, "answer_start": starts})
}

fn flag() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(false)), 1 => Just(Some(true))]
}

fn hf_record() -> impl Strategy<Value = Value> {
    (
        id(),
        text(),
        text(),
        answer_pairs(),
        any::<bool>(),
        flag(),
        text(),
    )
        .prop_map(|(id, question, context, pairs, lists, flag, title)| {
            let mut record = json!({
                "id": id,
                "title": title,
                "question": question,
                "context": context,
                "answers": if lists { answer_lists(pairs) } else { answer_list(pairs) },
            });
            if let Some(flag) = flag {
                record["is_impossible"] = json!(flag);
            }
            record
        })
}

fn squad_doc() -> impl Strategy<Value = Value> {
    let qa = (id(), text(), answer_pairs(), flag()).prop_map(|(id, question, pairs, flag)| {
        let mut qa = json!({"id": id, "question": question, "answers": answer_list(pairs)});
        if let Some(flag) = flag {
            qa["is_impossible"] = json!(flag);
        }
        qa
    });
    let paragraph = (text(), prop::collection::vec(qa, 1..4))
        .prop_map(|(context, qas)| json!({"context": context, "qas": qas}));
    let article = (text(), prop::collection::vec(paragraph, 1..3))
        .prop_map(|(title, paragraphs)| json!({"title": title, "paragraphs": paragraphs}));
    (
        prop::sample::select(vec![json!("v2.0"), json!("1.1"), json!(2), Value::Null]),
        prop::collection::vec(article, 1..3),
    )
        .prop_map(|(version, data)| json!({"version": version, "data": data}))
}

/// One change at one place of a document: a value replaced, or removed.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        2 => (any::<prop::sample::Index>(), anything()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
    ];
    prop::collection::vec(one, 0..3)
}

/// JSON pointers to every value of a document, the root included.
fn pointers(value: &Value, here: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{here}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(item, format!("{here}/{k}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

fn mutated(mut doc: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let (at, replacement) = match m {
            Mutation::Replace(at, v) => (at, Some(v)),
            Mutation::Remove(at) => (at, None),
        };
        let pointer = &all[at.index(all.len())];
        match (replacement, pointer.rsplit_once('/')) {
            (Some(v), _) => *doc.pointer_mut(pointer).unwrap() = v.clone(),
            (None, None) => doc = Value::Null,
            (None, Some((parent, last))) => match doc.pointer_mut(parent).unwrap() {
                Value::Object(map) => {
                    map.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(last.parse::<usize>().unwrap());
                }
                _ => unreachable!("a parent is a container"),
            },
        }
    }
    doc
}

/// How a document reaches the disk: as is, with a mark, cut short, or with one byte changed.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Bom,
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => Just(Damage::Bom),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
    ]
}

fn damaged(text: &str, damage: &Damage) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    match damage {
        Damage::None => {}
        Damage::Bom => bytes.splice(0..0, BOM.bytes()).for_each(drop),
        Damage::Truncate(at) if !bytes.is_empty() => bytes.truncate(at.index(bytes.len())),
        Damage::Flip(at, b) if !bytes.is_empty() => {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        _ => {}
    }
    bytes
}

/// 64 cases per property, from a fixed seed so that CI is repeatable (`PROPTEST_RNG_SEED=n`
/// explores other inputs; `PROPTEST_CASES=n` more of them).
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            64
        },
        rng_seed: match default.rng_seed {
            proptest::test_runner::RngSeed::Random => proptest::test_runner::RngSeed::Fixed(2024),
            chosen => chosen,
        },
        // Failures are reported with their input; no regression files in the source tree.
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz: the properties

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes under every name, through every format.
    #[test]
    fn loaders_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512),
                                       bom in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut body = if bom { BOM.as_bytes().to_vec() } else { Vec::new() };
        body.extend_from_slice(&bytes);
        for name in ["data.json", "data.jsonl", "data.csv", "data"] {
            let path = write(dir.path(), name, &body);
            for format in FORMATS {
                check_load(&path, format, &[&path]);
            }
        }
        let path = write(dir.path(), "requests.jsonl", &body);
        if let Err(err) = read_requests(&path) {
            check_error(&err, &[&path]);
        }
    }

    /// SQuAD documents with a few values replaced or removed, then perhaps damaged bytes.
    #[test]
    fn squad_shaped_documents(doc in squad_doc(), mutations in mutations(), damage in damage(),
                              pretty in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let doc = mutated(doc, &mutations);
        let text = if pretty { serde_json::to_string_pretty(&doc) } else { serde_json::to_string(&doc) }.unwrap();
        let path = write(dir.path(), "squad.json", damaged(&text, &damage));
        for format in FORMATS {
            check_load(&path, format, &[&path]);
        }
    }

    /// Hugging Face records as a list, a `{"data": [...]}` wrapper or JSON Lines (perhaps with
    /// a junk line), mutated and damaged.
    #[test]
    fn hf_shaped_documents(records in prop::collection::vec(hf_record(), 1..5),
                           mutations in mutations(), layout in 0..3u8,
                           junk in prop::option::weighted(0.2, any::<String>()),
                           damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let (name, text) = match layout {
            0 => ("hf.json", mutated(Value::Array(records), &mutations).to_string()),
            1 => ("hf.json", mutated(json!({"data": records}), &mutations).to_string()),
            _ => {
                let records = match mutated(Value::Array(records), &mutations) {
                    Value::Array(records) => records,
                    other => vec![other],
                };
                let mut lines: Vec<String> = records.iter().map(Value::to_string).collect();
                lines.extend(junk);
                ("hf.jsonl", lines.join("\n"))
            }
        };
        let path = write(dir.path(), name, damaged(&text, &damage));
        for format in FORMATS {
            check_load(&path, format, &[&path]);
        }
    }

    /// DEFNLP: random label rows (ids that are paths, blank, odd) and a mutated publication.
    #[test]
    fn defnlp_shaped_folders(rows in prop::collection::vec(
                                 (prop_oneof![4 => Just("p1".to_string()), 2 => Just("p2".to_string()), 1 => text()],
                                  prop_oneof![3 => Just("NHANES".to_string()), 1 => text()],
                                  prop_oneof![3 => Just("National Health and Nutrition Examination Survey".to_string()), 1 => text()]),
                                 0..4),
                             header_ok in prop::bool::weighted(0.9),
                             mutations in mutations(),
                             damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(if header_ok {
            ["Id", "pub_title", "dataset_title", "dataset_label"]
        } else {
            ["Id", "title", "dataset", "label"]
        }).unwrap();
        for (id, title, label) in &rows {
            csv.write_record([id.as_str(), "t", title.as_str(), label.as_str()]).unwrap();
        }
        let csv = String::from_utf8(csv.into_inner().unwrap()).unwrap();
        let publication = mutated(serde_json::from_str(PUBLICATION).unwrap(), &mutations);
        let root = defnlp_dir(dir.path(), &csv, &damaged(&publication.to_string(), &damage));
        write(&root.join("train"), "p2.json", PUBLICATION);
        let csv_path = root.join("train.csv");
        let pub_path = root.join("train/p1.json");
        let files: [&Path; 2] = [&csv_path, &pub_path];
        check_load(&root, None, &files);
        for format in FORMATS {
            check_load(&csv_path, format, &files);
        }
    }

    /// Requests: lines of records (blank fields, odd ids), mutated, plus junk and damage.
    #[test]
    fn request_files(records in prop::collection::vec(
                         (prop::option::of(id()), text(), text())
                             .prop_map(|(id, q, c)| json!({"id": id, "question": q, "context": c})),
                         1..5),
                     mutations in mutations(),
                     junk in prop::option::weighted(0.2, any::<String>()),
                     damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let records = match mutated(Value::Array(records), &mutations) {
            Value::Array(records) => records,
            other => vec![other],
        };
        let mut lines: Vec<String> = records.iter().map(Value::to_string).collect();
        lines.extend(junk);
        let path = write(dir.path(), "requests.jsonl", damaged(&lines.join("\n"), &damage));
        match read_requests(&path) {
            Ok(examples) => {
                for ex in &examples {
                    prop_assert!(!ex.question.trim().is_empty() && !ex.context.trim().is_empty());
                }
            }
            Err(err) => {
                check_error(&err, &[&path]);
                if let DataError::Json { line, .. } = &err {
                    prop_assert!(line.is_some(), "{}", err);
                }
            }
        }
    }

    /// Nesting deeper than any parser's stack: an error naming the file.
    #[test]
    fn deep_nesting(depth in 1usize..3000, object_nest in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let (open, close) = if object_nest { ("{\"a\":", "}") } else { ("[", "]") };
        let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        for name in ["deep.json", "deep.jsonl"] {
            let path = write(dir.path(), name, &text);
            for format in FORMATS {
                check_load(&path, format, &[&path]);
            }
        }
    }
}
