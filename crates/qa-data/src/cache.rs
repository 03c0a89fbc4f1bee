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

/// How long a writer's temporary file goes untouched before it counts as left by a killed run.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A stable 128-bit hash (two 64-bit multiply-rotate lanes over little-endian 8-byte words):
/// the same across runs, builds and machines (unlike `std`'s or aHash's hashers), which is what
/// a key on disk needs, and a word at a time, so a 60 MB data file costs milliseconds.
struct StableHash {
    lanes: [u64; 2],
    /// Bytes not yet making a whole word.
    tail: Vec<u8>,
    length: u64,
}

impl StableHash {
    const SEEDS: [u64; 2] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344];
    const MULTIPLIERS: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];

    fn new() -> Self {
        Self {
            lanes: Self::SEEDS,
            tail: Vec::with_capacity(8),
            length: 0,
        }
    }

    fn word(&mut self, word: u64) {
        for (lane, multiplier) in self.lanes.iter_mut().zip(Self::MULTIPLIERS) {
            *lane = (*lane ^ word).wrapping_mul(multiplier).rotate_left(29);
        }
    }

    fn write(&mut self, mut bytes: &[u8]) {
        self.length += bytes.len() as u64;
        if !self.tail.is_empty() {
            let take = (8 - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() < 8 {
                return;
            }
            let word = u64::from_le_bytes(self.tail[..].try_into().expect("8 bytes"));
            self.tail.clear();
            self.word(word);
        }
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            self.word(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        self.tail.extend_from_slice(words.remainder());
    }

    /// A length-prefixed part, so that parts cannot run into each other.
    fn part(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn finish(mut self) -> u128 {
        let mut last = [0u8; 8];
        last[..self.tail.len()].copy_from_slice(&self.tail);
        let length = self.length;
        self.word(u64::from_le_bytes(last));
        self.word(length);
        // Two more rounds so the last words reach every bit of both lanes.
        for _ in 0..2 {
            let [a, b] = self.lanes;
            self.word(a ^ b.rotate_left(17));
        }
        (u128::from(self.lanes[0]) << 64) | u128::from(self.lanes[1])
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
    let mut hash = StableHash::new();
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
    Ok(format!("{:032x}", hash.finish()))
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

    /// A writer of the windows to cache under `fingerprint`, after removing what killed runs
    /// left.
    pub(crate) fn writer(&self, fingerprint: &str, vocab_size: usize) -> Result<WindowWriter> {
        self.remove_abandoned();
        WindowWriter::create(&self.file(fingerprint), vocab_size)
    }

    /// Removes the temporary files of writers that died ([`window_file::TEMP_PREFIX`]) and
    /// were not touched for [`ABANDONED_AFTER`]: a live writer appends all the time, so its file
    /// is never that old. A file that cannot be removed is left, with a warning.
    fn remove_abandoned(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let (mut removed, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(window_file::TEMP_PREFIX));
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let idle = meta.modified().ok().and_then(|t| t.elapsed().ok());
            if !is_temp || !meta.is_file() || idle.is_none_or(|idle| idle < ABANDONED_AFTER) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed += 1;
                    bytes += meta.len();
                }
                Err(e) => tracing::warn!("{}: cannot remove: {e}", entry.path().display()),
            }
        }
        if removed > 0 {
            tracing::info!(
                "removed {removed} unfinished window files left by killed runs from {} ({:.1} MB)",
                self.dir.display(),
                bytes as f64 / 1e6
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed writer's temporary file goes once it is older than [`ABANDONED_AFTER`]; a live
    /// writer's (recent) one and the published files stay.
    #[test]
    fn unfinished_files_of_killed_runs_are_removed_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str, idle: std::time::Duration| {
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).unwrap();
            file.set_modified(std::time::SystemTime::now() - idle)
                .unwrap();
            path
        };
        let hour = std::time::Duration::from_secs(3600);
        let killed = touch(".windows-killed", ABANDONED_AFTER + hour);
        let writing = touch(".windows-writing", std::time::Duration::ZERO);
        let published = touch("old.windows", ABANDONED_AFTER + hour);
        let cache = WindowCache {
            dir: dir.path().to_path_buf(),
            overwrite: false,
        };
        let writer = cache.writer("fresh", 100).unwrap();
        assert!(!killed.exists());
        assert!(writing.exists() && published.exists());
        drop(writer);
    }

    #[test]
    fn the_hash_depends_on_the_bytes_not_on_how_they_are_written() {
        let bytes: Vec<u8> = (0..100u8).map(|b| b.wrapping_mul(37)).collect();
        let whole = {
            let mut hash = StableHash::new();
            hash.write(&bytes);
            hash.finish()
        };
        for split in [1, 3, 8, 13, 99] {
            let mut hash = StableHash::new();
            for chunk in bytes.chunks(split) {
                hash.write(chunk);
            }
            assert_eq!(hash.finish(), whole, "written {split} bytes at a time");
        }
        let mut changed = bytes.clone();
        changed[57] ^= 1;
        let mut other = StableHash::new();
        other.write(&changed);
        assert_ne!(other.finish(), whole);
        // A trailing zero byte is not the same data.
        let mut longer = StableHash::new();
        longer.write(&[bytes.as_slice(), &[0]].concat());
        assert_ne!(longer.finish(), whole);
        // Pinned: cache keys stay the same from build to build.
        let mut pinned = StableHash::new();
        pinned.part(b"qa windows");
        assert_eq!(
            format!("{:032x}", pinned.finish()),
            "2f393942a6aab21f85c7d19ab1014af6"
        );
    }
}
