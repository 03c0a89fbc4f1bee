//! Windows on disk, compact: what `qa train` and `qa eval` cache between runs (see
//! [`crate::cache`]). A [`Feature`] holds every per-token field at full width (~18 KB for a
//! 384-token window); here each window is a blob of token ids in the narrowest integer type the
//! vocabulary allows, then its per-token fields as runs and deltas in LEB128 varints: token
//! types and the attention mask (a few runs each), offsets only where present (context tokens;
//! each start a delta from the previous end, then the length), the max-context marks as runs,
//! and the word ids when kept. Decoding gives back the exact [`Feature`].
//!
//! Layout (little-endian): a fixed header (magic, format version, id width, window count, where
//! the table and the metadata start), the blobs, a table of one fixed-size entry per window
//! (blob position and length, example index, window number, length, labels), and the metadata
//! (JSON: the report of the run that cut the windows). Writers fill a temporary file beside the
//! target and rename it into place when done ([`WindowWriter::finish`]), so a killed run never
//! leaves a file that reads as complete.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::features::{Feature, FeatureReport};
use crate::windows::Fnv1a;

/// Bumped whenever the layout or the encoding changes: files of another version are not read.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"QAWINDOW";
/// How a file being written is named (beside its target) until it is published whole.
pub const TEMP_PREFIX: &str = ".windows-";
/// magic, version, id width, 3 spare bytes, window count, table offset, metadata offset and
/// length.
const HEADER_LEN: usize = 8 + 4 + 1 + 3 + 8 + 8 + 8 + 8;
/// Blob offset (u64), blob length, example index, window number, tokens, start, end (u32 each).
const ENTRY_LEN: usize = 8 + 6 * 4;

/// The narrowest little-endian integer every token id of a file fits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdWidth {
    U16,
    U32,
}

impl IdWidth {
    /// The width for a vocabulary of `vocab_size` ids.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= usize::from(u16::MAX) + 1 {
            Self::U16
        } else {
            Self::U32
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }

    fn code(self) -> u8 {
        self.bytes() as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            2 => Some(Self::U16),
            4 => Some(Self::U32),
            _ => None,
        }
    }
}

/// What a window file says about itself besides its windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowMeta {
    /// The cache key the windows were cut under ([`crate::cache`]); empty outside the cache.
    pub fingerprint: String,
    /// [`crate::windows::Fnv1a`] of the windows' ids and labels, in order (set by
    /// [`WindowWriter::finish`]).
    pub windows_hash: u64,
    pub examples: usize,
    pub windows_with_answer: usize,
    /// Examples that got no window, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl WindowMeta {
    /// The report of a run that cut these windows.
    pub fn report(&self, windows: usize) -> FeatureReport {
        FeatureReport {
            examples: self.examples,
            windows,
            windows_with_answer: self.windows_with_answer,
            skipped: self.skipped.clone(),
        }
    }
}

/// One window's entry in the table: where its blob is and what decoding needs without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    offset: u64,
    blob_len: u32,
    example_index: u32,
    window: u32,
    tokens: u32,
    start_position: u32,
    end_position: u32,
}

impl Entry {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        for value in [
            self.blob_len,
            self.example_index,
            self.window,
            self.tokens,
            self.start_position,
            self.end_position,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn read(bytes: &[u8]) -> Self {
        let u32_at =
            |i: usize| u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        Self {
            offset: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            blob_len: u32_at(0),
            example_index: u32_at(1),
            window: u32_at(2),
            tokens: u32_at(3),
            start_position: u32_at(4),
            end_position: u32_at(5),
        }
    }
}

/// A value that does not fit the file's 32-bit fields.
fn narrow(path: &Path, what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        DataError::Config(format!(
            "{}: {what} {value} does not fit a window file (at most {})",
            path.display(),
            u32::MAX
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// The blob codec

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// `values` as (value, run length) pairs, preceded by the number of runs.
fn put_runs(out: &mut Vec<u8>, values: impl Iterator<Item = u64>) {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for value in values {
        match runs.last_mut() {
            Some((last, count)) if *last == value => *count += 1,
            _ => runs.push((value, 1)),
        }
    }
    put_varint(out, runs.len() as u64);
    for (value, count) in runs {
        put_varint(out, value);
        put_varint(out, count);
    }
}

/// Appends the blob of `feature` (everything but what the table holds) to `out`.
fn encode(feature: &Feature, width: IdWidth, out: &mut Vec<u8>) {
    for &id in &feature.input_ids {
        match width {
            IdWidth::U16 => out.extend_from_slice(&(id as u16).to_le_bytes()),
            IdWidth::U32 => out.extend_from_slice(&id.to_le_bytes()),
        }
    }
    put_runs(out, feature.token_type_ids.iter().map(|&t| u64::from(t)));
    put_runs(out, feature.attention_mask.iter().map(|&m| u64::from(m)));
    put_runs(out, feature.offsets.iter().map(|o| u64::from(o.is_some())));
    let mut previous_end = 0i64;
    for &(start, end) in feature.offsets.iter().flatten() {
        put_signed(out, start as i64 - previous_end);
        put_signed(out, end as i64 - start as i64);
        previous_end = end as i64;
    }
    put_runs(out, feature.max_context.iter().map(|&m| u64::from(m)));
    put_runs(out, feature.word_ids.iter().map(|w| u64::from(w.is_some())));
    let mut previous_word = 0i64;
    for &word in feature.word_ids.iter().flatten() {
        put_signed(out, i64::from(word) - previous_word);
        previous_word = i64::from(word);
    }
}

/// Reads a blob back; `None` when it is cut short or malformed.
struct Blob<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Blob<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn signed(&mut self) -> Option<i64> {
        let raw = self.varint()?;
        Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A run-length-encoded sequence, each value mapped by `map`.
    fn runs<T: Clone>(&mut self, map: impl Fn(u64) -> Option<T>) -> Option<Vec<T>> {
        let count = self.varint()?;
        let mut out = Vec::new();
        for _ in 0..count {
            let value = map(self.varint()?)?;
            let length = usize::try_from(self.varint()?).ok()?;
            // A run longer than the blob could describe is corruption, not a huge window.
            if length > self.bytes.len().saturating_mul(8).max(1 << 16) {
                return None;
            }
            out.extend(std::iter::repeat_n(value, length));
        }
        Some(out)
    }
}

fn decode(entry: &Entry, width: IdWidth, bytes: &[u8]) -> Option<Feature> {
    let tokens = entry.tokens as usize;
    let id_bytes = tokens.checked_mul(width.bytes())?;
    let ids = bytes.get(..id_bytes)?;
    let input_ids = match width {
        IdWidth::U16 => ids
            .chunks_exact(2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        IdWidth::U32 => ids
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    };
    let mut blob = Blob {
        bytes,
        at: id_bytes,
    };
    let small = |v: u64| u32::try_from(v).ok();
    let token_type_ids = blob.runs(small)?;
    let attention_mask = blob.runs(small)?;
    let present = blob.runs(|v| Some(v == 1))?;
    let mut previous_end = 0i64;
    let mut offsets = Vec::with_capacity(present.len());
    for is_present in present {
        if !is_present {
            offsets.push(None);
            continue;
        }
        let start = previous_end.checked_add(blob.signed()?)?;
        let end = start.checked_add(blob.signed()?)?;
        previous_end = end;
        offsets.push(Some((
            usize::try_from(start).ok()?,
            usize::try_from(end).ok()?,
        )));
    }
    let max_context = blob.runs(|v| Some(v == 1))?;
    let has_word = blob.runs(|v| Some(v == 1))?;
    let mut previous_word = 0i64;
    let mut word_ids = Vec::with_capacity(has_word.len());
    for has in has_word {
        if !has {
            word_ids.push(None);
            continue;
        }
        previous_word = previous_word.checked_add(blob.signed()?)?;
        word_ids.push(Some(u32::try_from(previous_word).ok()?));
    }
    (blob.at == bytes.len()).then_some(Feature {
        example_index: entry.example_index as usize,
        window: entry.window as usize,
        input_ids,
        token_type_ids,
        attention_mask,
        offsets,
        max_context,
        word_ids,
        start_position: entry.start_position as usize,
        end_position: entry.end_position as usize,
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes windows to a temporary file beside `path`, published at `path` by [`Self::finish`]
/// (dropped unfinished, it is deleted).
pub struct WindowWriter {
    path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    width: IdWidth,
    table: Vec<u8>,
    written: u64,
    windows: usize,
    hash: Fnv1a,
}

impl WindowWriter {
    /// Starts a file for windows whose token ids are below `vocab_size`.
    pub fn create(path: &Path, vocab_size: usize) -> Result<Self> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| DataError::io(dir, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, temp);
        file.write_all(&[0; HEADER_LEN])
            .map_err(|e| DataError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            width: IdWidth::for_vocab(vocab_size),
            table: Vec::new(),
            written: HEADER_LEN as u64,
            windows: 0,
            hash: Fnv1a::new(),
        })
    }

    /// Appends windows, in order (encoded in parallel, written in one pass).
    pub fn write(&mut self, features: &[Feature]) -> Result<()> {
        let limit = match self.width {
            IdWidth::U16 => u32::from(u16::MAX),
            IdWidth::U32 => u32::MAX,
        };
        if let Some(&id) = features
            .iter()
            .flat_map(|f| &f.input_ids)
            .find(|&&id| id > limit)
        {
            return Err(DataError::Config(format!(
                "{}: token id {id} is beyond the vocabulary this window file was made for",
                self.path.display()
            )));
        }
        let blobs: Vec<Vec<u8>> = features
            .par_iter()
            .map(|feature| {
                let mut blob = Vec::with_capacity(2 * feature.input_ids.len() + 64);
                encode(feature, self.width, &mut blob);
                blob
            })
            .collect();
        for (feature, blob) in features.iter().zip(blobs) {
            self.hash.window(feature);
            let entry = Entry {
                offset: self.written,
                blob_len: narrow(&self.path, "a window's size", blob.len())?,
                example_index: narrow(&self.path, "example index", feature.example_index)?,
                window: narrow(&self.path, "window number", feature.window)?,
                tokens: narrow(&self.path, "window length", feature.input_ids.len())?,
                start_position: narrow(&self.path, "start position", feature.start_position)?,
                end_position: narrow(&self.path, "end position", feature.end_position)?,
            };
            self.file
                .write_all(&blob)
                .map_err(|e| DataError::io(&self.path, e))?;
            self.written += blob.len() as u64;
            entry.write(&mut self.table);
            self.windows += 1;
        }
        Ok(())
    }

    /// Writes the table and `meta` (with the windows' hash), then moves the file into place;
    /// returns its size in bytes. The file is not synced to the device: what must hold is that
    /// a killed process never leaves a file at the final path, which the rename ensures.
    pub fn finish(mut self, meta: &WindowMeta) -> Result<u64> {
        let io = |e| DataError::io(&self.path, e);
        let table_offset = self.written;
        self.file.write_all(&self.table).map_err(io)?;
        let meta = WindowMeta {
            windows_hash: self.hash.finish(),
            ..meta.clone()
        };
        let meta_json = serde_json::to_vec(&meta).expect("window metadata serializes");
        let meta_offset = table_offset + self.table.len() as u64;
        self.file.write_all(&meta_json).map_err(io)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&[self.width.code(), 0, 0, 0]);
        for value in [
            self.windows as u64,
            table_offset,
            meta_offset,
            meta_json.len() as u64,
        ] {
            header.extend_from_slice(&value.to_le_bytes());
        }
        let temp = self
            .file
            .into_inner()
            .map_err(|e| DataError::io(&self.path, e.into_error()))?;
        let mut file = temp.as_file();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        let size = meta_offset + meta_json.len() as u64;
        temp.persist(&self.path)
            .map_err(|e| DataError::io(&self.path, e.error))?;
        Ok(size)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A window file, open for random access: the table and metadata are in memory, each window's
/// blob is read from disk when asked for.
#[derive(Debug)]
pub struct WindowFile {
    path: PathBuf,
    file: File,
    width: IdWidth,
    entries: Vec<Entry>,
    pub meta: WindowMeta,
    /// Bytes on disk.
    pub size: u64,
}

impl WindowFile {
    /// Opens `path`, checking that it is a complete window file of this format version.
    pub fn open(path: &Path) -> Result<Self> {
        let corrupt = |why: &str| {
            DataError::Config(format!(
                "{}: not a window file of format {FORMAT_VERSION} ({why})",
                path.display()
            ))
        };
        let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let size = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header)
            .map_err(|_| corrupt("shorter than its header"))?;
        if &header[..8] != MAGIC {
            return Err(corrupt("no magic"));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(corrupt(&format!("format {version}")));
        }
        let width = IdWidth::from_code(header[12]).ok_or_else(|| corrupt("id width"))?;
        let u64_at =
            |i: usize| u64::from_le_bytes(header[16 + 8 * i..24 + 8 * i].try_into().unwrap());
        let (windows, table_offset, meta_offset, meta_len) =
            (u64_at(0), u64_at(1), u64_at(2), u64_at(3));
        let table_len = windows
            .checked_mul(ENTRY_LEN as u64)
            .filter(|&len| table_offset.checked_add(len) == Some(meta_offset))
            .ok_or_else(|| corrupt("table size"))?;
        if meta_offset.checked_add(meta_len) != Some(size) {
            return Err(corrupt("length"));
        }
        file.seek(SeekFrom::Start(table_offset))
            .map_err(|e| DataError::io(path, e))?;
        let mut table = vec![0u8; table_len as usize];
        file.read_exact(&mut table)
            .map_err(|_| corrupt("table cut short"))?;
        let entries: Vec<Entry> = table.chunks_exact(ENTRY_LEN).map(Entry::read).collect();
        if entries.iter().any(|e| {
            e.offset < HEADER_LEN as u64 || e.offset + u64::from(e.blob_len) > table_offset
        }) {
            return Err(corrupt("a window outside the file"));
        }
        let mut meta_json = vec![0u8; meta_len as usize];
        file.read_exact(&mut meta_json)
            .map_err(|_| corrupt("metadata cut short"))?;
        let meta = serde_json::from_slice(&meta_json).map_err(|_| corrupt("metadata"))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            width,
            entries,
            meta,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Window `index`'s length in tokens, from the table.
    pub fn window_len(&self, index: usize) -> usize {
        self.entries[index].tokens as usize
    }

    /// Window `index`'s start label, from the table (0: [CLS], no answer in the window).
    pub fn start_position(&self, index: usize) -> usize {
        self.entries[index].start_position as usize
    }

    /// Window `index`, read from disk.
    pub fn get(&self, index: usize) -> Result<Feature> {
        let entry = &self.entries[index];
        let mut bytes = vec![0u8; entry.blob_len as usize];
        read_at(&self.file, &mut bytes, entry.offset).map_err(|e| DataError::io(&self.path, e))?;
        self.decode(entry, &bytes)
    }

    fn decode(&self, entry: &Entry, bytes: &[u8]) -> Result<Feature> {
        decode(entry, self.width, bytes).ok_or_else(|| {
            DataError::Config(format!(
                "{}: window {} of example {} is corrupt",
                self.path.display(),
                entry.window,
                entry.example_index
            ))
        })
    }

    /// Every window, in order: the blobs read in one pass and decoded in parallel.
    pub fn read_all(&self) -> Result<Vec<Feature>> {
        let Some(first) = self.entries.first() else {
            return Ok(Vec::new());
        };
        let last = self.entries.last().unwrap_or(first);
        let end = last.offset + u64::from(last.blob_len);
        let mut bytes = vec![0u8; (end - first.offset) as usize];
        read_at(&self.file, &mut bytes, first.offset).map_err(|e| DataError::io(&self.path, e))?;
        self.entries
            .par_iter()
            .map(|entry| {
                let at = (entry.offset - first.offset) as usize;
                self.decode(entry, &bytes[at..at + entry.blob_len as usize])
            })
            .collect()
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(())
}

/// Bytes a [`Feature`] holds in memory (its vectors' elements and the struct itself): what the
/// compact form is measured against.
pub fn feature_bytes(feature: &Feature) -> usize {
    std::mem::size_of::<Feature>()
        + feature.input_ids.len() * 4
        + feature.token_type_ids.len() * 4
        + feature.attention_mask.len() * 4
        + feature.offsets.len() * std::mem::size_of::<Option<(usize, usize)>>()
        + feature.max_context.len()
        + feature.word_ids.len() * std::mem::size_of::<Option<u32>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(example_index: usize, window: usize, word_ids: bool) -> Feature {
        let len = 12;
        let offsets: Vec<Option<(usize, usize)>> = (0..len)
            .map(|i| (i >= 5 && i < len - 1).then(|| (i * 7 + 100_000, i * 7 + 103)))
            .collect();
        Feature {
            example_index,
            window,
            input_ids: (0..len as u32).map(|i| i * 5_000 + 1).collect(),
            token_type_ids: (0..len).map(|i| u32::from(i >= 4)).collect(),
            attention_mask: (0..len).map(|i| u32::from(i < len - 2)).collect(),
            max_context: (0..len).map(|i| (6..9).contains(&i)).collect(),
            word_ids: if word_ids {
                offsets
                    .iter()
                    .enumerate()
                    .map(|(i, o)| o.map(|_| (i / 2) as u32))
                    .collect()
            } else {
                Vec::new()
            },
            offsets,
            start_position: 6,
            end_position: 8,
        }
    }

    #[test]
    fn windows_round_trip_exactly_and_a_cut_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.windows");
        let mut features = vec![window(0, 0, true), window(0, 1, false), window(3, 0, true)];
        // A byte-level BPE quirk: offsets that go backwards.
        features[1].offsets[6] = Some((10, 4));
        for vocab in [60_000, 300_000] {
            let mut writer = WindowWriter::create(&path, vocab).unwrap();
            writer.write(&features[..2]).unwrap();
            writer.write(&features[2..]).unwrap();
            let meta = WindowMeta {
                fingerprint: "f".into(),
                windows_hash: 0,
                examples: 4,
                windows_with_answer: 3,
                skipped: vec![("q9".into(), "too long".into())],
            };
            let size = writer.finish(&meta).unwrap();
            let file = WindowFile::open(&path).unwrap();
            assert_eq!(file.size, size);
            let mut hash = Fnv1a::new();
            features.iter().for_each(|f| hash.window(f));
            assert_eq!(
                file.meta,
                WindowMeta {
                    windows_hash: hash.finish(),
                    ..meta
                }
            );
            assert_eq!(file.read_all().unwrap(), features);
            assert_eq!(file.get(1).unwrap(), features[1]);
            assert_eq!(file.window_len(2), 12);
        }
        // A file cut short (a killed copy) is refused, never read as fewer windows.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let e = WindowFile::open(&path).unwrap_err().to_string();
        assert!(e.contains("not a window file"), "{e}");
        // A writer dropped before `finish` leaves nothing behind.
        let unfinished = dir.path().join("unfinished.windows");
        let mut writer = WindowWriter::create(&unfinished, 100).unwrap();
        writer.write(&features[..1]).unwrap();
        drop(writer);
        assert!(!unfinished.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn ids_beyond_the_files_width_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = WindowWriter::create(&dir.path().join("w"), 1_000).unwrap();
        let mut wide = window(0, 0, false);
        wide.input_ids[3] = 70_000;
        let e = writer.write(&[wide]).unwrap_err().to_string();
        assert!(e.contains("beyond the vocabulary"), "{e}");
    }
}
