//! One training run per output folder: [`OutputLock`] holds an exclusive OS lock on
//! `OUTPUT_DIR/.qa-train.lock` for the whole run, so a second `qa train` on the same folder is
//! refused at once instead of interleaving its logs and checkpoints with the first's.
//!
//! The lock is the operating system's (`flock`), so it dies with its process: a file left by a
//! killed run is not a held lock. The file records the holder (pid, host, start time) so the
//! refusal can name it, and a run taking over a file a dead run left says so.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The lock file's name inside the output folder.
pub const FILE_NAME: &str = ".qa-train.lock";

/// Held for as long as the run writes into its output folder; released on drop (or exit).
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Creates `dir` if needed and locks it, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        if dir.exists() && !dir.is_dir() {
            return Err(TrainError::OutputIsAFile(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let mut holder = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // A held lock: its holder wrote itself in before anyone could see it.
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::OutputLocked {
                    dir: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(TrainError::Io { path, source }),
        }
        let _ = file.read_to_string(&mut holder);
        if !holder.trim().is_empty() {
            tracing::warn!(
                "{}: taking over the lock left by a run that is no longer running ({})",
                dir.display(),
                holder.trim()
            );
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let me = format!(
            "pid {} on host {}, started at unix time {started}",
            std::process::id(),
            host.trim()
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{me}"))
            .and_then(|()| file.flush())
            .map_err(io(&path))?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Emptied, not removed: removing would let a run that opened the old file and one
        // that creates a new one both hold "the" lock. An empty file is no stale holder.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_a_dead_ones_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = OutputLock::acquire(&out).unwrap();
        let err = OutputLock::acquire(&out).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("out"),
            "{err}"
        );
        drop(first);
        let again = OutputLock::acquire(&out).unwrap();
        drop(again);
        assert_eq!(std::fs::read_to_string(out.join(FILE_NAME)).unwrap(), "");
        // A file a killed run left behind is not a held lock.
        std::fs::write(out.join(FILE_NAME), "pid 1 on host gone").unwrap();
        let taken = OutputLock::acquire(&out).unwrap();
        assert!(std::fs::read_to_string(taken.path())
            .unwrap()
            .contains(&format!("pid {}", std::process::id())));
        // A file where the folder should be.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = OutputLock::acquire(&file).unwrap_err().to_string();
        assert!(err.ends_with("the output folder is a file"), "{err}");
    }
}
