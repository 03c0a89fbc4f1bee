//! The windows cache, as `datasets` caches `.map`: the windows of a data file are written once
//! as a [`crate::window_file`] under a fingerprint of everything they depend on — the data
//! files' bytes, the tokenizer (its whole serialized form), every windowing setting, which
//! examples were kept, the load options and the file format's version — and the next run with
//! the same fingerprint reads them back instead of tokenizing again. Any change gives another
//! fingerprint, so a stale file is never read; `--overwrite-cache` (run_qa's flag) cuts them
//! again regardless. Files are published whole (see [`crate::window_file::WindowWriter`]), so
//! one left by a killed run is never used.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};
use crate::features::{FeatureConfig, FeatureReport, Padding};
use crate::load::LoadOptions;
use crate::prepare::{Cut, Sample};
use crate::window_file::{self, WindowFile, WindowMeta, WindowWriter};

/// Where cached windows live and whether to reuse them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCache {
    pub dir: PathBuf,
    /// Cut the windows again even when the cache has them (and replace the cached file).
    pub overwrite: bool,
}

impl WindowCache {
    /// The folder beside the Hugging Face cache: `$HF_HOME/qa-windows`.
    pub fn default_dir() -> PathBuf {
        crate::hub::HubSettings::from_env()
            .hf_home
            .join("qa-windows")
    }
}

/// 128-bit FNV-1a: stable across runs, builds and machines (unlike `std`'s or aHash's hashers),
/// which is what a key on disk needs.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u128::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// A length-prefixed part, so that parts cannot run into each other.
    fn part(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// The windowing settings a cached file depends on (not progress bars or message paths).
#[derive(Serialize)]
struct WindowKey {
    max_length: usize,
    stride: usize,
    max_question_tokens: Option<usize>,
    padding: Padding,
    label_any_answer: bool,
    word_ids: bool,
    max_samples: Option<usize>,
    shuffle_seed: Option<u64>,
    cut: &'static str,
}

/// Every file of `path` (itself, or the files under a folder, in name order).
fn files_of(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| DataError::io(path, e))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| DataError::io(path, e))?;
        entries.sort();
        for entry in entries {
            files_of(&entry, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// The fingerprint of the windows cut from `sources` with these settings: hex, 32 digits.
pub(crate) fn fingerprint(
    sources: &[PathBuf],
    tokenizer: &Tokenizer,
    config: &FeatureConfig,
    sample: Sample,
    options: &LoadOptions,
    cut: Cut,
) -> Result<String> {
    let mut hash = Fnv128(Fnv128::OFFSET);
    hash.part(&window_file::FORMAT_VERSION.to_le_bytes());
    let mut files = Vec::new();
    for source in sources {
        files_of(source, &mut files)?;
    }
    let mut buffer = vec![0u8; 1 << 20];
    for file in &files {
        // The names of a folder's files matter (DEFNLP reads ids from them); contents always.
        hash.part(file.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        let mut reader = std::fs::File::open(file).map_err(|e| DataError::io(file, e))?;
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(|e| DataError::io(file, e))?;
            if n == 0 {
                break;
            }
            hash.write(&buffer[..n]);
        }
        hash.part(b"end of file");
    }
    let tokenizer_json = tokenizer
        .to_string(false)
        .map_err(|e| DataError::Config(format!("cannot fingerprint the tokenizer: {e}")))?;
    hash.part(tokenizer_json.as_bytes());
    let key = WindowKey {
        max_length: config.max_length,
        stride: config.stride,
        max_question_tokens: config.max_question_tokens,
        padding: config.padding,
        label_any_answer: config.label_any_answer,
        word_ids: config.word_ids,
        max_samples: sample.max_samples,
        shuffle_seed: sample.shuffle_seed,
        cut: match cut {
            Cut::Sliding => "sliding",
            Cut::Seed => "seed",
        },
    };
    hash.part(&serde_json::to_vec(&key).expect("the window key serializes"));
    hash.part(format!("{options:?}").as_bytes());
    Ok(format!("{:032x}", hash.0))
}

impl WindowCache {
    fn file(&self, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{fingerprint}.windows"))
    }

    /// The window file cached under `fingerprint`, unless [`Self::overwrite`] or there is none
    /// (a file that is not whole, or made under another fingerprint, is cut again).
    pub(crate) fn read(&self, fingerprint: &str) -> Option<WindowFile> {
        if self.overwrite {
            return None;
        }
        let path = self.file(fingerprint);
        if !path.exists() {
            return None;
        }
        let opened = WindowFile::open(&path).and_then(|file| {
            if file.meta.fingerprint == fingerprint {
                Ok(file)
            } else {
                Err(DataError::Config(format!(
                    "{}: made under another fingerprint",
                    path.display()
                )))
            }
        });
        match opened {
            Ok(file) => {
                tracing::info!(
                    "reusing {} cached windows from {} ({:.1} MB; --overwrite-cache cuts them \
                     again)",
                    file.len(),
                    path.display(),
                    file.size as f64 / 1e6
                );
                Some(file)
            }
            Err(e) => {
                tracing::warn!("{e}: cutting the windows again");
                None
            }
        }
    }

    /// A writer of the windows to cache under `fingerprint`.
    pub(crate) fn writer(&self, fingerprint: &str, vocab_size: usize) -> Result<WindowWriter> {
        WindowWriter::create(&self.file(fingerprint), vocab_size)
    }

    /// Publishes what `writer` holds and opens it.
    pub(crate) fn publish(
        &self,
        fingerprint: &str,
        writer: WindowWriter,
        report: &FeatureReport,
    ) -> Result<WindowFile> {
        let meta = WindowMeta {
            fingerprint: fingerprint.to_string(),
            windows_hash: 0,
            examples: report.examples,
            windows_with_answer: report.windows_with_answer,
            skipped: report.skipped.clone(),
        };
        let size = writer.finish(&meta)?;
        let path = self.file(fingerprint);
        tracing::info!(
            "cached {} windows at {} ({:.1} MB)",
            report.windows,
            path.display(),
            size as f64 / 1e6
        );
        WindowFile::open(&path)
    }
}
