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
