//! Parquet and CSV files as `datasets` writes them (`fixtures/hub/make_fixtures.py`) load into
//! exactly the examples of the same rows as a SQuAD JSON file; renamed columns, shards and bad
//! files are handled as run_qa users expect.

use std::path::{Path, PathBuf};

use qa_data::{load, load_files, Columns, DataFormat, Example, LoadOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hub")
        .join(name)
}

fn examples(path: &Path, options: &LoadOptions) -> Vec<Example> {
    load(path, options).unwrap().examples
}

#[test]
fn parquet_and_csv_rows_equal_the_squad_json() {
    let reference = examples(&fixture("squad.json"), &LoadOptions::default());
    assert_eq!(reference.len(), 8);
    assert_eq!(reference[0].answers.len(), 2);
    for (file, format) in [
        ("rows.parquet", DataFormat::Parquet),
        ("rows.zstd.parquet", DataFormat::Parquet),
        ("rows.csv", DataFormat::Csv),
    ] {
        let loaded = load(fixture(file), &LoadOptions::default()).unwrap();
        assert_eq!(loaded.report.format, Some(format), "{file}");
        assert_eq!(loaded.examples, reference, "{file}");
        assert!(loaded.report.repaired.is_empty() && loaded.report.unrepairable.is_empty());
    }
}

#[test]
fn renamed_columns_are_read_with_run_qa_column_names() {
    let reference = examples(&fixture("squad.json"), &LoadOptions::default());
    let err = load(fixture("renamed.parquet"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("renamed.parquet") && err.contains("cv-1") && err.contains("\"answers\""),
        "{err}"
    );
    let options = LoadOptions {
        columns: Columns {
            question: "query".into(),
            context: "passage".into(),
            answers: "spans".into(),
        },
        ..Default::default()
    };
    assert_eq!(examples(&fixture("renamed.parquet"), &options), reference);
}

#[test]
fn a_parquet_file_is_told_by_its_bytes_and_shards_load_as_one_split() {
    let dir = tempfile::tempdir().unwrap();
    // No extension: the magic bytes say Parquet.
    let bare = dir.path().join("rows");
    std::fs::copy(fixture("rows.parquet"), &bare).unwrap();
    let reference = examples(&fixture("squad.json"), &LoadOptions::default());
    assert_eq!(examples(&bare, &LoadOptions::default()), reference);

    // Two shards of one split load as one dataset; the same shard twice repeats every id.
    let name = Path::new("org/squad-like (validation)");
    let split = load_files(
        &[fixture("rows.parquet"), fixture("rows.csv")],
        name,
        &LoadOptions::default(),
    );
    let err = split.unwrap_err().to_string();
    assert!(
        err.contains("duplicate example id cv-1") && err.contains("org/squad-like"),
        "{err}"
    );
}

#[test]
fn bad_tabular_files_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("cut.parquet");
    let bytes = std::fs::read(fixture("rows.parquet")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&truncated, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.parquet") && err.contains("not a readable Parquet file"),
        "{err}"
    );

    // Damaged anywhere (truncated, or bytes flipped), a Parquet file is an error, never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        assert!(
            load(&truncated, &LoadOptions::default()).is_err(),
            "cut at {cut}"
        );
    }
    for at in (4..bytes.len() - 4).step_by(13) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x5a;
        std::fs::write(&truncated, &flipped).unwrap();
        // Ok (a flip inside a string) or an error; the test fails only on a panic.
        let _ = load(&truncated, &LoadOptions::default());
    }

    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "id,question,context,answers\nq1,Who?,Ann ran.,\"{'text': ['Ann'], 'answer_start': [0]}\"\n\
         q2,Who?,Bob ran.,\"{'text': ['Bob'\"\n",
    )
    .unwrap();
    let err = load(&csv, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("bad.csv") && err.contains("example q2") && err.contains("answers"),
        "{err}"
    );

    // A DEFNLP train.csv is still told by its header.
    let defnlp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/defnlp/train.csv");
    assert_eq!(
        qa_data::load::detect_format(&defnlp).unwrap(),
        DataFormat::Defnlp
    );
}

/// A CSV data file in `dir` with `text`.
fn csv_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const CSV_ROW: &str =
    "q1,Who ran?,\"Ann ran, then; rested.\",\"{'text': ['Ann'], 'answer_start': [0]}\"\n";

#[test]
fn a_column_read_twice_in_a_csv_header_is_refused_and_others_keep_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let twice = csv_file(
        dir.path(),
        "twice.csv",
        &format!(
            "id,question,context,answers,question\n{}",
            CSV_ROW.replace('\n', ",Why?\n")
        ),
    );
    let err = load(&twice, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, qa_data::DataError::DuplicateColumn { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: column \"question\" appears twice in the CSV header (fields 2 and 5); rename \
             or drop one",
            twice.display()
        )
    );
    // `id` is read too.
    let ids = csv_file(
        dir.path(),
        "ids.csv",
        &format!(
            "id,question,context,answers,id\n{}",
            CSV_ROW.replace('\n', ",q2\n")
        ),
    );
    assert!(load(&ids, &LoadOptions::default())
        .unwrap_err()
        .to_string()
        .contains("column \"id\" appears twice in the CSV header (fields 1 and 5)"));
    // A repeated column the loader does not read: loaded, the read columns untouched.
    let note = csv_file(
        dir.path(),
        "note.csv",
        &format!(
            "note,id,question,context,answers,note\n{}",
            CSV_ROW
                .replace("q1,", "first,q1,")
                .replace('\n', ",second\n")
        ),
    );
    let plain = csv_file(
        dir.path(),
        "plain.csv",
        &format!("id,question,context,answers\n{CSV_ROW}"),
    );
    let want = examples(&plain, &LoadOptions::default());
    assert_eq!(want.len(), 1);
    assert_eq!(&*want[0].context, "Ann ran, then; rested.");
    assert_eq!(examples(&note, &LoadOptions::default()), want);
}

#[test]
fn a_semicolon_or_tab_delimited_csv_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let expects_commas = "the CSV reader expects commas (save it comma-separated, e.g. pandas \
                          `to_csv` without `sep`)";
    for (name, delimiter, said) in [
        ("semi.csv", ";", "';'-delimited"),
        ("tabs.csv", "\t", "tab-delimited"),
        ("pipes.csv", "|", "'|'-delimited"),
    ] {
        let header = ["id", "question", "context", "answers"].join(delimiter);
        let row = [
            "q1",
            "Who?",
            "Ann ran.",
            "{'text': ['Ann'], 'answer_start': [0]}",
        ]
        .join(delimiter);
        let path = csv_file(dir.path(), name, &format!("{header}\n{row}\n"));
        let err = load(&path, &LoadOptions::default()).unwrap_err();
        assert!(
            matches!(err, qa_data::DataError::MissingColumns { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the CSV header has no \"question\", \"context\", \"answers\" columns: the \
                 file looks {said}, but {expects_commas}",
                path.display()
            )
        );
    }
    // Comma-separated but a column misnamed: no delimiter hint, the header and the flags.
    let renamed = csv_file(
        dir.path(),
        "renamed.csv",
        &format!("id,question,passage,answers\n{CSV_ROW}"),
    );
    assert_eq!(
        load(&renamed, &LoadOptions::default())
            .unwrap_err()
            .to_string(),
        format!(
            "{}: the CSV header has no \"context\" column (it has \"id\", \"question\", \
             \"passage\", \"answers\"); name the columns with --question-column-name, \
             --context-column-name and --answer-column-name",
            renamed.display()
        )
    );
    // Commas and semicolons inside quoted fields are text, not delimiters.
    let quoted = csv_file(
        dir.path(),
        "quoted.csv",
        &format!("id,question,context,answers\n{CSV_ROW}"),
    );
    let loaded = examples(&quoted, &LoadOptions::default());
    assert_eq!(&*loaded[0].context, "Ann ran, then; rested.");
    assert_eq!(loaded[0].answers[0].text, "Ann");
}
