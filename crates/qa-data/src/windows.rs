//! Windows as a run reads them: by index, from memory or from a window file on disk
//! ([`crate::window_file`]), so that training holds only the batch it is on.

use std::borrow::Cow;

use crate::error::Result;
use crate::features::{Feature, TrainWindows};
use crate::window_file::WindowFile;

/// FNV-1a, 64 bits: the stable hash of the run fingerprints (data, model) that checkpoints and
/// data-parallel nodes compare. Unlike `std`'s hasher it never changes between toolchains, so
/// old checkpoints stay resumable.
pub struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Self(Self::OFFSET)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }

    /// Adds one window's token ids and labels to the windows' fingerprint.
    pub fn window(&mut self, feature: &Feature) {
        let mut eat = |value: u64| self.write(&value.to_le_bytes());
        eat(feature.input_ids.len() as u64);
        feature.input_ids.iter().for_each(|&id| eat(u64::from(id)));
        eat(feature.start_position as u64);
        eat(feature.end_position as u64);
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

/// Windows read by index.
pub trait WindowSource: Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Window `index`: borrowed when in memory, read when on disk.
    fn window(&self, index: usize) -> Result<Cow<'_, Feature>>;

    /// Window `index`'s length in tokens, without reading the window.
    fn window_len(&self, index: usize) -> usize;

    /// [`Fnv1a`] of every window's token ids and labels, in order: what resumed runs and
    /// data-parallel nodes check they train on.
    fn fingerprint(&self) -> Result<u64> {
        hash_each(self)
    }
}

/// [`WindowSource::fingerprint`] by reading every window.
fn hash_each<S: WindowSource + ?Sized>(source: &S) -> Result<u64> {
    let mut hash = Fnv1a::new();
    for index in 0..source.len() {
        hash.window(source.window(index)?.as_ref());
    }
    Ok(hash.finish())
}

impl WindowSource for [Feature] {
    fn len(&self) -> usize {
        <[Feature]>::len(self)
    }

    fn window(&self, index: usize) -> Result<Cow<'_, Feature>> {
        Ok(Cow::Borrowed(&self[index]))
    }

    fn window_len(&self, index: usize) -> usize {
        self[index].len()
    }
}

/// As the slice (a `Vec` can be passed as `&dyn WindowSource`; a slice, unsized, cannot).
impl WindowSource for Vec<Feature> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn window(&self, index: usize) -> Result<Cow<'_, Feature>> {
        self.as_slice().window(index)
    }

    fn window_len(&self, index: usize) -> usize {
        self.as_slice().window_len(index)
    }
}

/// The windows of a prepared dataset: in memory, or in a window file read one window at a time.
#[derive(Debug)]
pub enum Windows {
    Memory(Vec<Feature>),
    File {
        file: WindowFile,
        /// Which of the file's windows are in use, in order (all of them when `None`).
        keep: Option<Vec<usize>>,
    },
}

impl Windows {
    /// Keeps the windows `which` says a run learns from (see [`TrainWindows`]); on disk, from
    /// the labels in the file's table, without reading the windows.
    pub fn select(self, which: TrainWindows) -> Self {
        match (self, which) {
            (windows, TrainWindows::All) => windows,
            (Self::Memory(features), which) => Self::Memory(which.select(features)),
            (Self::File { file, keep }, TrainWindows::WithAnswer) => {
                let indices: Vec<usize> = match keep {
                    Some(keep) => keep,
                    None => (0..file.len()).collect(),
                };
                let keep = indices
                    .into_iter()
                    .filter(|&i| file.start_position(i) > 0)
                    .collect();
                Self::File {
                    file,
                    keep: Some(keep),
                }
            }
        }
    }

    /// Every window in memory, borrowed when they already are.
    pub fn features(&self) -> Result<Cow<'_, [Feature]>> {
        match self {
            Self::Memory(features) => Ok(Cow::Borrowed(features)),
            Self::File { file, keep: None } => Ok(Cow::Owned(file.read_all()?)),
            Self::File {
                file,
                keep: Some(keep),
            } => keep
                .iter()
                .map(|&i| file.get(i))
                .collect::<Result<Vec<_>>>()
                .map(Cow::Owned),
        }
    }

    /// The file index of window `index`.
    fn file_index(keep: &Option<Vec<usize>>, index: usize) -> usize {
        keep.as_ref().map_or(index, |keep| keep[index])
    }
}

impl WindowSource for Windows {
    fn len(&self) -> usize {
        match self {
            Self::Memory(features) => features.len(),
            Self::File { file, keep } => keep.as_ref().map_or(file.len(), Vec::len),
        }
    }

    fn window(&self, index: usize) -> Result<Cow<'_, Feature>> {
        match self {
            Self::Memory(features) => Ok(Cow::Borrowed(&features[index])),
            Self::File { file, keep } => Ok(Cow::Owned(file.get(Self::file_index(keep, index))?)),
        }
    }

    fn window_len(&self, index: usize) -> usize {
        match self {
            Self::Memory(features) => features[index].len(),
            Self::File { file, keep } => file.window_len(Self::file_index(keep, index)),
        }
    }

    fn fingerprint(&self) -> Result<u64> {
        match self {
            // Recorded when the file was written.
            Self::File { file, keep: None } => Ok(file.meta.windows_hash),
            _ => hash_each(self),
        }
    }
}
