//! Output files written whole or not at all: into a temporary file beside the target, then
//! renamed over it, so a killed run never leaves a truncated file at the final path.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// An output file that could not be written (with the path the user named).
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `path` through `fill`, atomically: a temporary `.PATH.tmp` in the same folder (so
/// the rename stays on one file system), flushed, then renamed into place.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let error = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut out)?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_names_the_target_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomically(&path, |w| w.write_all(b"first")).unwrap();
        // A failure half-way leaves the old file untouched and no temporary behind.
        let err = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("killed"))
        })
        .unwrap_err();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(err.to_string().contains("out.txt: cannot write"), "{err}");
        let missing = dir.path().join("no/such/dir/out.txt");
        let err = write_atomically(&missing, |w| w.write_all(b"x")).unwrap_err();
        assert!(
            err.to_string().starts_with(&missing.display().to_string()),
            "{err}"
        );
    }
}
