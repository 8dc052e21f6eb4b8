//! Crash-safe checkpoints.
//!
//! burn-train saves three records per checkpoint (`model-N`, `optim-N`, `scheduler-N` in `<dir>/checkpoint/`).
//! [`AtomicFileRecorder`] writes each one to a temporary file in the same directory, flushes it to disk and
//! renames it into place, so a reader (or a run resumed after `kill -9`) sees either the previous state or the
//! complete new file, never a half-written one. Each record ends with a 20-byte seal (`BNCK`, the payload's
//! length and a checksum of it), so a record damaged afterwards (truncated, overwritten, copied badly) is
//! recognized; [`latest_complete_checkpoint`] picks the newest `N` whose three records are all present and
//! intact, so `--resume` falls back to the previous complete checkpoint instead of failing on a damaged one.

use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkBytesRecorder, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// The file extension of checkpoint records.
pub const EXTENSION: &str = "mpk";
/// The three records of one checkpoint.
pub const RECORDS: [&str; 3] = ["model", "optim", "scheduler"];

/// Named MessagePack records (full precision), written atomically (temporary file + fsync + rename).
#[derive(Debug, Clone, Default)]
pub struct AtomicFileRecorder {
    inner: NamedMpkBytesRecorder<FullPrecisionSettings>,
}

use bitnet_models::io::write_atomically;

impl<B: Backend> Recorder<B> for AtomicFileRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let bytes = seal(Recorder::<B>::save_item(&self.inner, item, ())?);
        let path = file.with_extension(EXTENSION);
        write_atomically(&path, &bytes).map_err(|e| RecorderError::Unknown(format!("writing {}: {e}", path.display())))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        let path = file.with_extension(EXTENSION);
        let bytes = std::fs::read(&path)
            .map_err(|e| RecorderError::FileNotFound(format!("reading {}: {e}", path.display())))?;
        let mut payload = unseal(bytes)
            .ok_or_else(|| RecorderError::Unknown(format!("{}: the record is damaged", path.display())))?;
        Recorder::<B>::load_item(&self.inner, &mut payload)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicFileRecorder {
    fn file_extension() -> &'static str {
        EXTENSION
    }
}

const SEAL_MAGIC: &[u8; 4] = b"BNCK";
const SEAL_BYTES: usize = 20;

/// A checksum of `bytes`: FNV-1a over 8-byte words (fast enough for multi-GB records), then the tail bytes.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
    }
    for &b in tail {
        h = (h ^ b as u64).wrapping_mul(PRIME);
    }
    h
}

/// `payload` followed by its seal.
pub fn seal(mut payload: Vec<u8>) -> Vec<u8> {
    let (len, sum) = (payload.len() as u64, checksum(&payload));
    payload.extend_from_slice(SEAL_MAGIC);
    payload.extend_from_slice(&len.to_le_bytes());
    payload.extend_from_slice(&sum.to_le_bytes());
    payload
}

/// The payload of a sealed record, or `None` if the seal is missing or does not match.
pub fn unseal(mut bytes: Vec<u8>) -> Option<Vec<u8>> {
    let at = bytes.len().checked_sub(SEAL_BYTES)?;
    let seal = &bytes[at..];
    let len = u64::from_le_bytes(seal[4..12].try_into().ok()?);
    let sum = u64::from_le_bytes(seal[12..20].try_into().ok()?);
    if &seal[..4] != SEAL_MAGIC || len != at as u64 || sum != checksum(&bytes[..at]) {
        return None;
    }
    bytes.truncate(at);
    Some(bytes)
}

/// Whether the record at `path` exists and its seal matches.
fn intact(path: &Path) -> bool {
    std::fs::read(path).ok().and_then(unseal).is_some()
}

/// The newest checkpoint in `<artifact_dir>/checkpoint` whose model, optimizer and scheduler records all exist
/// and are intact.
pub fn latest_complete_checkpoint(artifact_dir: &Path) -> Option<usize> {
    let dir = artifact_dir.join("checkpoint");
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut epochs: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
            stem.strip_prefix("model-")?.parse().ok()
        })
        .collect();
    epochs.sort_unstable();
    epochs.into_iter().rev().find(|n| RECORDS.iter().all(|r| intact(&dir.join(format!("{r}-{n}.{EXTENSION}")))))
}

/// Deletes every checkpoint record in `<artifact_dir>/checkpoint` but those of the newest `keep` checkpoints
/// (burn-train prunes only what it wrote itself, so each resumed run would otherwise leave the earlier run's
/// checkpoints behind). Returns how many files were removed.
pub fn prune_checkpoints(artifact_dir: &Path, keep: usize) -> std::io::Result<usize> {
    let dir = artifact_dir.join("checkpoint");
    let epoch_of = |name: &str| -> Option<usize> {
        let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
        RECORDS.iter().find_map(|r| stem.strip_prefix(&format!("{r}-"))?.parse().ok())
    };
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| epoch_of(&e.file_name().to_string_lossy()).map(|n| (n, e.path())))
        .collect();
    let mut epochs: Vec<usize> = files.iter().map(|(n, _)| *n).collect();
    epochs.sort_unstable();
    epochs.dedup();
    let kept: Vec<usize> = epochs.iter().rev().take(keep).copied().collect();
    files.retain(|(n, _)| !kept.contains(n));
    for (_, path) in &files {
        std::fs::remove_file(path)?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_complete_checkpoint_needs_all_three_records() {
        let dir = std::env::temp_dir().join(format!("bitnet-ckpt-test-{}", std::process::id()));
        let ck = dir.join("checkpoint");
        std::fs::create_dir_all(&ck).unwrap();
        assert_eq!(latest_complete_checkpoint(&dir), None);
        let record = seal(b"a record".to_vec());
        for r in RECORDS {
            write_atomically(&ck.join(format!("{r}-1.mpk")), &record).unwrap();
        }
        write_atomically(&ck.join("model-2.mpk"), &record).unwrap();
        write_atomically(&ck.join("optim-2.mpk"), &record).unwrap();
        assert_eq!(latest_complete_checkpoint(&dir), Some(1), "checkpoint 2 lacks its scheduler record");
        write_atomically(&ck.join("scheduler-2.mpk"), &record).unwrap();
        assert_eq!(latest_complete_checkpoint(&dir), Some(2));
        // A damaged record (truncated, garbage, empty, unsealed) makes its checkpoint incomplete.
        for damaged in [&record[..record.len() - 1], b"garbage that is long enough to hold a seal", b"", b"a record"] {
            write_atomically(&ck.join("optim-2.mpk"), damaged).unwrap();
            assert_eq!(latest_complete_checkpoint(&dir), Some(1));
        }
        assert_eq!(unseal(record.clone()).unwrap(), b"a record");
        assert!(std::fs::read_dir(&ck).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
