//! The embedded default model: a small BitNet b1.58 model trained on Shakespeare by `bitnet train` (README:
//! "The default model"), compiled into the binary so that `bitnet generate --prompt ...` runs without a
//! download. It is unpacked once into a cache directory keyed by its content hash and then loaded like any
//! HF directory.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The embedded files: name and bytes.
const FILES: [(&str, &[u8]); 3] = [
    ("config.json", include_bytes!("../default-model/config.json")),
    ("model.safetensors", include_bytes!("../default-model/model.safetensors")),
    ("tokenizer.json", include_bytes!("../default-model/tokenizer.json")),
];

/// Environment variable naming the directory the default model is unpacked into (default: the user cache dir).
pub const CACHE_ENV: &str = "BITNET_CACHE";

/// FNV-1a 64 of the embedded files.
fn content_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, bytes) in FILES {
        for &b in name.as_bytes().iter().chain(bytes.iter()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("bitnet-rust");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("bitnet-rust");
    }
    std::env::temp_dir().join("bitnet-rust")
}

/// Unpacks the embedded files into `root` (each file written atomically; present ones are kept).
fn unpack_into(root: PathBuf) -> Result<PathBuf> {
    let dir = root.join(format!("default-model-{:016x}", content_hash()));
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        bitnet_train::checkpoint::write_atomically(&path, bytes)
            .with_context(|| format!("unpacking the default model into {}", path.display()))?;
    }
    Ok(dir)
}

/// The directory holding the unpacked default model: the cache directory, or the system temporary directory
/// when the cache cannot be written.
pub fn path() -> Result<PathBuf> {
    let explicit = std::env::var_os(CACHE_ENV).is_some();
    match unpack_into(cache_root()) {
        Ok(dir) => Ok(dir),
        Err(_) if !explicit => unpack_into(std::env::temp_dir().join("bitnet-rust")),
        Err(e) => Err(e),
    }
}
