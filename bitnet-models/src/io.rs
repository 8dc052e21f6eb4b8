//! File input and output with the guarantees every command relies on: inputs are regular files (a FIFO or a
//! device given as a model would block or never end), and outputs are written atomically (a temporary file in
//! the destination's directory, flushed and synced, then renamed over the destination), so a reader never sees
//! a half-written file and a failed write (full disk, closed device) is an error, never a silent truncation.

use crate::error::{ModelError, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Opens `path` for reading after checking it is a regular file.
pub fn open_regular_file(path: &Path) -> Result<File> {
    let io = |cause| ModelError::Io { path: path.into(), cause };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ModelError::Io {
            path: path.into(),
            cause: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let file = File::open(path).map_err(io)?;
    // The path may have been replaced between the two calls: check what was opened.
    if !file.metadata().map_err(io)?.is_file() {
        return Err(ModelError::Io {
            path: path.into(),
            cause: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    Ok(file)
}

/// Reads a whole regular file.
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular_file(path)?.read_to_end(&mut bytes).map_err(|cause| ModelError::Io { path: path.into(), cause })?;
    Ok(bytes)
}

/// Reads a UTF-8 text file, gunzipping it first when its name ends in `.gz`.
pub fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let io = |cause| ModelError::Io { path: path.into(), cause };
    let bytes = read_regular_file(path)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).map_err(io)?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| ModelError::Request(format!("{}: not UTF-8 text ({e})", path.display())))
}

/// A file being written atomically: the bytes go to a temporary file beside `path`, which [`AtomicFile::commit`]
/// renames over `path`. Dropped without a commit, the temporary file is removed and `path` is untouched.
///
/// A destination that exists and is not a regular file (a device such as `/dev/stdout`, a FIFO) cannot be
/// replaced by a rename: it is written directly, and every write error (a full device, a closed pipe) is still
/// reported by [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    /// The temporary file, `None` when writing a non-regular destination directly.
    tmp: Option<PathBuf>,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (its directory must exist).
    pub fn create(path: &Path) -> Result<Self> {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|cause| ModelError::Io { path: path.into(), cause })?;
            return Ok(Self { path: path.into(), tmp: None, out: Some(BufWriter::with_capacity(1 << 20, file)) });
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = dir.join(format!(".{name}.tmp-{}-{unique}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|cause| ModelError::Io { path: path.into(), cause })?;
        Ok(Self { path: path.into(), tmp: Some(tmp), out: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("an uncommitted file has a writer");
        out.write_all(bytes).map_err(|cause| ModelError::Io { path: self.path.clone(), cause })
    }

    /// Flushes, syncs and renames the file into place (then syncs the directory, so the rename survives a crash).
    pub fn commit(mut self) -> Result<()> {
        let io = |cause| ModelError::Io { path: self.path.clone(), cause };
        let out = self.out.take().expect("an uncommitted file has a writer");
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        let Some(tmp) = self.tmp.take() else {
            // A device or FIFO: the flush above reported any write error; syncing is not defined for all of them.
            return Ok(());
        };
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().expect("an uncommitted file has a writer").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("an uncommitted file has a writer").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let (Some(_), Some(tmp)) = (self.out.take(), &self.tmp) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bitnet-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_writes_replace_or_leave_nothing() {
        let dir = scratch("atomic");
        let path = dir.join("f.bin");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"abandoned").unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_devices_and_non_files_are_errors() {
        let full = Path::new("/dev/full");
        if std::fs::metadata(full).is_ok_and(|m| !m.is_file()) {
            // A device is written directly (never replaced by a rename), and its ENOSPC is an error.
            assert!(write_atomically(full, &[0; 1 << 16]).is_err());
            assert!(std::fs::metadata(full).is_ok_and(|m| !m.is_file()), "the device node is untouched");
            assert!(open_regular_file(full).is_err());
        }
        let dir = scratch("nonfile");
        assert!(open_regular_file(&dir).is_err(), "a directory is not a model file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
