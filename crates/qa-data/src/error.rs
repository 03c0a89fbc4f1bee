//! One error type for the crate; every variant names the file, and the example id where
//! one is involved, so a user can go straight to the bad record.

use std::path::PathBuf;

pub type Result<T, E = DataError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON{}: {source}", line_hint(*.line))]
    Json {
        path: PathBuf,
        line: Option<usize>,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: malformed CSV: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    #[error("{path}: example {id}: {what}")]
    Example {
        path: PathBuf,
        id: String,
        what: String,
    },
    #[error("{path}: example #{position} (no id): missing field \"id\"")]
    MissingId { path: PathBuf, position: usize },
    #[error("{path}: example #{position}: id is blank")]
    BlankId { path: PathBuf, position: usize },
    #[error("{path}: example #{position}: id must be a string or an integer, found {found}")]
    InvalidId {
        path: PathBuf,
        position: usize,
        /// The id as the file wrote it (JSON).
        found: String,
    },
    /// Two records whose ids have the same text form (`7` and `"7"` included): a predictions
    /// file, keyed by that text, could not tell them apart.
    #[error(
        "{path}: duplicate example id {id}: example #{first} (id {first_as}) and example \
         #{second} (id {second_as}) have the same id text, which keys predictions"
    )]
    DuplicateId {
        path: PathBuf,
        /// The id's text form.
        id: String,
        first: usize,
        second: usize,
        /// Each record's id as the file wrote it (JSON: `7` or `"7"`).
        first_as: String,
        second_as: String,
    },
    /// A file of 0 bytes, or of whitespace (and a byte-order mark) only.
    #[error("{path}: the file is empty")]
    EmptyFile { path: PathBuf },
    /// A data file that reads fine but holds no examples: SQuAD or HF JSON with an empty
    /// `data` list, a CSV of a header only, a Parquet file of 0 rows, a DEFNLP labels file
    /// without rows. Training or scoring on nothing is never what was meant.
    #[error("{path}: the file holds no examples")]
    NoExamples { path: PathBuf },
    /// A CSV header naming a column the loader reads twice (`question,context,question`):
    /// which one is meant cannot be told. `first` and `second` are 1-based field numbers.
    #[error(
        "{path}: column {column:?} appears twice in the CSV header (fields {first} and \
         {second}); rename or drop one"
    )]
    DuplicateColumn {
        path: PathBuf,
        column: String,
        first: usize,
        second: usize,
    },
    /// A CSV header without the question, context or answers column; `delimiter` is set when
    /// the header line splits into those columns on another delimiter (`;`, tab, `|`).
    #[error("{path}: {}", missing_columns(.missing, .header, *.delimiter))]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        /// The header's column names as read (comma-separated).
        header: Vec<String>,
        delimiter: Option<char>,
    },
    /// A Parquet `binary` column the loader reads (strings as Spark writes them) holding bytes
    /// that are not UTF-8 text. `row` is 0-based, as example positions are.
    #[error(
        "{path}: row #{row}: binary column {column:?} is not UTF-8 text (invalid byte at \
         offset {at})"
    )]
    BinaryNotUtf8 {
        path: PathBuf,
        column: String,
        row: usize,
        at: usize,
    },
    /// A folder of data shards holding files of several formats (`a.parquet` beside `b.csv`).
    #[error(
        "{path}: this folder holds data files of several formats ({extensions}); shards of one \
         dataset share one format: pass one file, or a folder of one format's shards"
    )]
    MixedShards { path: PathBuf, extensions: String },
    /// A folder of data shards whose file names say several splits (`train-*.parquet` beside
    /// `validation-*.parquet`): loading them as one dataset would mix the splits.
    #[error(
        "{path}: this folder holds the files of several splits ({splits}); pass one split's \
         file, or a folder holding one split's shards"
    )]
    SeveralSplits { path: PathBuf, splits: String },
    #[error("{path}: line {line} is not valid UTF-8 text")]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{path}: line {line}: field {field:?} is blank")]
    BlankLineField {
        path: PathBuf,
        line: usize,
        field: &'static str,
    },
    /// JSON, but not what `tokenizers` saves (`{}`, a `config.json`, ...).
    #[error("{path}: not a Hugging Face tokenizer file ({why})")]
    NotATokenizer { path: PathBuf, why: String },
    #[error(
        "{path}: no tokenizer found (expected tokenizer.json, or vocab.txt for a BERT \
         WordPiece tokenizer)"
    )]
    NoTokenizer { path: PathBuf },
    /// A slow tokenizer's SentencePiece model (DeBERTa's `spm.model`, ALBERT's `spiece.model`,
    /// XLM-R's `sentencepiece.bpe.model`) without the `tokenizer.json` transformers converts it to.
    #[error(
        "{path}: only a SentencePiece model ({model_file}) and no tokenizer.json: convert it \
         once with transformers (`AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` \
         writes tokenizer.json)"
    )]
    SentencePieceOnly { path: PathBuf, model_file: String },
    #[error("{path}: cannot read line {line}: {source}")]
    ReadLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: missing string field {field:?}")]
    MissingLineField {
        path: PathBuf,
        line: usize,
        field: &'static str,
    },
    #[error("{path}: line {line}: unknown field \"{field}\" (a document line holds \"id\"? and \"text\")")]
    UnknownLineField {
        path: PathBuf,
        line: usize,
        field: String,
    },
    /// Two request lines with the same id text (a line without an id is known by its 0-based
    /// line number): their answers could not be told apart.
    #[error(
        "{path}: lines {first} and {second} both have id {id} (a line without \"id\" is known by \
         its 0-based line number): give each line its own id"
    )]
    DuplicateLineId {
        path: PathBuf,
        id: String,
        first: usize,
        second: usize,
    },
    #[error("{path}: line {line}: id must be a string or an integer, found {found}")]
    InvalidLineId {
        path: PathBuf,
        line: usize,
        /// The id as the line wrote it (JSON).
        found: String,
    },
    #[error("tokenizer {path}: {what}")]
    Tokenizer { path: PathBuf, what: String },
    #[error("invalid feature settings: {0}")]
    Config(String),
}

fn line_hint(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// [`DataError::MissingColumns`]' message: the columns missing, then either the delimiter the
/// header looks split by or the columns it has.
fn missing_columns(missing: &[String], header: &[String], delimiter: Option<char>) -> String {
    let quoted: Vec<String> = missing.iter().map(|c| format!("{c:?}")).collect();
    let what = format!(
        "the CSV header has no {} column{}",
        quoted.join(", "),
        if missing.len() == 1 { "" } else { "s" }
    );
    match delimiter {
        Some(d) => format!(
            "{what}: the file looks {}-delimited, but the CSV reader expects commas (save it \
             comma-separated, e.g. pandas `to_csv` without `sep`)",
            match d {
                '\t' => "tab".to_string(),
                other => format!("'{other}'"),
            }
        ),
        None => {
            let mut shown = header
                .iter()
                .map(|h| format!("{h:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            if shown.chars().count() > 120 {
                shown = shown.chars().take(120).collect::<String>() + "…";
            }
            format!(
                "{what} (it has {shown}); name the columns with --question-column-name, \
                 --context-column-name and --answer-column-name"
            )
        }
    }
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            what: what.into(),
        }
    }
    pub(crate) fn example(
        path: impl Into<PathBuf>,
        id: impl Into<String>,
        what: impl Into<String>,
    ) -> Self {
        Self::Example {
            path: path.into(),
            id: id.into(),
            what: what.into(),
        }
    }
}
