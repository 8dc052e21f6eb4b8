//! File input and output with the guarantees every command relies on: inputs are regular files (a FIFO or a
//! device given as a model would block or never end), and outputs are written atomically (a temporary file in
//! the destination's directory, flushed and synced, then renamed over the destination), so a reader never sees
//! a half-written file and a failed write (full disk, closed device) is an error, never a silent truncation.
//! Model files are mapped, not read: [`SharedBytes`] slices of the mapping are used in place (a 16-bit
//! embedding, Q6_K blocks) or copied into the kernels' layouts, after which their pages are handed back to the
//! OS, so a loaded model holds one copy of its weights.

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

/// The owner of shared bytes.
#[derive(Clone)]
enum Owner {
    /// A read-only file mapping (its pages can be handed back to the OS, see [`SharedBytes::release_pages`]).
    Mapped(std::sync::Arc<memmap2::Mmap>),
    /// Memory (an encoded buffer, static data).
    Memory(std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>),
}

/// Bytes shared with their owner (a file mapping or a buffer): a cheap, cloneable slice.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Owner,
    start: usize,
    end: usize,
}

impl SharedBytes {
    /// All of `owner`.
    pub fn new(owner: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        let end = (*owner).as_ref().len();
        Self { owner: Owner::Memory(owner), start: 0, end }
    }

    /// Owned bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self::new(std::sync::Arc::new(bytes))
    }

    /// Maps `path` read-only. Like every memory-mapped loader, this relies on the file not being truncated while
    /// it is mapped.
    pub fn map_file(path: &Path) -> Result<Self> {
        let file = open_regular_file(path)?;
        // SAFETY: a read-only, private map; see the doc comment for the one assumption.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|cause| ModelError::Io { path: path.into(), cause })?;
        let end = map.len();
        Ok(Self { owner: Owner::Mapped(std::sync::Arc::new(map)), start: 0, end })
    }

    /// The sub-slice `range` of this slice (`None` if it lies outside).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<Self> {
        let start = self.start.checked_add(range.start)?;
        let end = self.start.checked_add(range.end)?;
        (start <= end && end <= self.end).then(|| Self { owner: self.owner.clone(), start, end })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        let all: &[u8] = match &self.owner {
            Owner::Mapped(map) => map,
            Owner::Memory(bytes) => (**bytes).as_ref(),
        };
        &all[self.start..self.end]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// These bytes in memory: a slice of a file mapping is copied (a few MiB at a time, each copied part's
    /// pages released, so the copy does not double the resident size); memory-backed bytes are returned as
    /// they are. Read in place from the mapping, a 2B model's bf16 head decoded 8-12% slower on the 2-core VM
    /// of benches/README.md (file offsets misalign its rows; copies at other alignments measured no better).
    pub fn into_memory(self) -> Self {
        if !matches!(self.owner, Owner::Mapped(_)) || self.is_empty() {
            return self;
        }
        let mut copy = Words(bitnet_kernels::huge_pages::huge_page_vec(0u128, self.len().div_ceil(16)), self.len());
        const STEP: usize = 8 << 20;
        for start in (0..self.len()).step_by(STEP) {
            let end = (start + STEP).min(self.len());
            copy.as_mut()[start..end].copy_from_slice(&self.as_slice()[start..end]);
            if let Some(done) = self.slice(start..end) {
                done.release_pages();
            }
        }
        self.release_pages();
        Self::new(std::sync::Arc::new(copy))
    }

    /// Hands the pages of a mapped slice back to the OS once a loader has copied what it needs (they stop
    /// counting towards this process's resident memory and are read from the file again if touched). Only
    /// whole 64 KiB units inside the slice are released, so a neighbouring tensor that is used in place keeps
    /// its pages; at the ends of the mapping, which have no neighbour, everything goes. Memory-backed slices are
    /// left alone.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Owner::Mapped(map) = &self.owner {
            const UNIT: usize = 64 * 1024;
            // The map starts on a page boundary, and madvise rounds the length up to whole pages.
            let base = map.as_ptr() as usize;
            let first = if self.start == 0 { base } else { (base + self.start).next_multiple_of(UNIT) };
            let last = if self.end == map.len() { base + self.end } else { (base + self.end) / UNIT * UNIT };
            if last > first {
                // SAFETY: the map is read-only, so MADV_DONTNEED only drops clean pages that refault from the
                // file with the same contents; nothing here relies on them staying resident.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first - base, last - first)
                };
            }
        }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.len())
    }
}

/// Bytes in 16-byte words (the alignment burn's own buffers have), of which the first `.1` are the data.
struct Words(Vec<u128>, usize);

impl Words {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `u128` has no padding, so the vector's memory is `16 * len` initialized bytes.
        let all = unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), 16 * self.0.len()) };
        &mut all[..self.1]
    }
}

impl AsRef<[u8]> for Words {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `as_mut`.
        let all = unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), 16 * self.0.len()) };
        &all[..self.1]
    }
}
