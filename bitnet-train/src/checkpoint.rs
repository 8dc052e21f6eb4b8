//! Crash-safe checkpoints.
//!
//! burn-train saves three records per checkpoint (`model-N`, `optim-N`, `scheduler-N` in `<dir>/checkpoint/`).
//! [`AtomicFileRecorder`] writes each one to a temporary file in the same directory, flushes it to disk and
//! renames it into place, so a reader (or a run resumed after `kill -9`) sees either the previous state or the
//! complete new file, never a half-written one. [`latest_complete_checkpoint`] picks the newest `N` whose three
//! files all exist.

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
        let bytes = Recorder::<B>::save_item(&self.inner, item, ())?;
        let path = file.with_extension(EXTENSION);
        write_atomically(&path, &bytes).map_err(|e| RecorderError::Unknown(format!("writing {}: {e}", path.display())))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        let path = file.with_extension(EXTENSION);
        let mut bytes = std::fs::read(&path)
            .map_err(|e| RecorderError::FileNotFound(format!("reading {}: {e}", path.display())))?;
        Recorder::<B>::load_item(&self.inner, &mut bytes)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicFileRecorder {
    fn file_extension() -> &'static str {
        EXTENSION
    }
}

/// The newest checkpoint in `<artifact_dir>/checkpoint` whose model, optimizer and scheduler records all exist.
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
    epochs.into_iter().rev().find(|n| RECORDS.iter().all(|r| dir.join(format!("{r}-{n}.{EXTENSION}")).is_file()))
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
        for r in RECORDS {
            write_atomically(&ck.join(format!("{r}-1.mpk")), b"x").unwrap();
        }
        write_atomically(&ck.join("model-2.mpk"), b"x").unwrap();
        write_atomically(&ck.join("optim-2.mpk"), b"x").unwrap();
        assert_eq!(latest_complete_checkpoint(&dir), Some(1), "checkpoint 2 lacks its scheduler record");
        write_atomically(&ck.join("scheduler-2.mpk"), b"x").unwrap();
        assert_eq!(latest_complete_checkpoint(&dir), Some(2));
        assert!(std::fs::read_dir(&ck).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
