//! GGUF loading (TQ2_0, TQ1_0, I2_S; fixtures made by `fixtures/make_gguf_fixtures.py` from the transformers
//! model `tiny-bitlinear-256`) against that model's reference logits, and malformed GGUF files.

mod common;

use bitnet_models::gguf::GgufFile;
use bitnet_models::load_gguf;
use burn::backend::Flex;
use std::path::PathBuf;

type B = Flex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn hf_source_model_matches_transformers() {
    common::check_logits::<B>("tiny-bitlinear-256", &Default::default());
}

#[test]
fn ternary_gguf_types_match_transformers() {
    common::gguf_types_match_transformers::<B>(&Default::default());
}

/// Writes `bytes` to a scratch file and returns the load error's text.
fn load_error(tag: &str, bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("bitnet-gguf-{tag}-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let err = load_gguf::<B>(&path, &Default::default()).expect_err(tag).to_string();
    eprintln!("{tag}: {err}");
    std::fs::remove_file(&path).ok();
    assert!(err.contains(&format!("bitnet-gguf-{tag}")), "{tag}: the error names the file: {err}");
    assert_eq!(err.lines().count(), 1, "{tag}: one line: {err}");
    err
}

#[test]
fn malformed_gguf_files_are_one_line_errors() {
    let good = std::fs::read(fixtures().join("tiny-tq2_0.gguf")).unwrap();
    let info = GgufFile::open(&fixtures().join("tiny-tq2_0.gguf")).unwrap();
    assert_eq!(info.architecture(), "bitnet-25");
    let header_end = info.tensors().iter().map(|t| t.start).min().unwrap();

    assert!(load_error("truncated", &good[..good.len() - 100]).contains("past the end"));
    let cut = load_error("header-cut", &good[..200]);
    assert!(cut.contains("truncated") || cut.contains("impossible"), "{cut}");
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    assert!(load_error("magic", &bad_magic).contains("magic"));
    let mut version = good.clone();
    version[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(load_error("version", &version).contains("version"));
    let mut count = good.clone();
    count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_error("count", &count).contains("impossible"));
    let mut kv_count = good.clone();
    kv_count[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(load_error("kv-count", &kv_count).contains("impossible"));
    // The first metadata key's length: absurd.
    let mut key_len = good.clone();
    key_len[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(load_error("key-len", &key_len).contains("impossible"));
    // A tensor type this reader does not know: patch the type of the first TQ2_0 tensor header (35 -> 99).
    let header = &good[..header_end];
    let pos = header.windows(4).rposition(|w| w == 35u32.to_le_bytes()).unwrap();
    let mut unknown = good.clone();
    unknown[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(load_error("type", &unknown).contains("unknown ggml type 99"));
    // An I2_S type id in an upstream-llama.cpp architecture file is not I2_S.
    let mut arch = good.clone();
    let at = header.windows(9).position(|w| w == b"bitnet-25").unwrap();
    arch[at..at + 9].copy_from_slice(b"llama-xyz");
    assert!(load_error("arch", &arch).contains("llama-xyz"));
}
