//! What a loaded model keeps resident: the file it was loaded from is mapped, and once the model is built none
//! of the mapping's pages count towards the process (Linux: read from `/proc/self/smaps`).
#![cfg(target_os = "linux")]

use bitnet_models::gguf::{config_from_metadata, GgufFile};
use bitnet_models::{build_model, LoadOptions};
use burn::backend::Flex;
use std::path::{Path, PathBuf};

/// The resident KiB of every mapping of `path` in this process (`None`: not mapped).
fn resident_kib_of(path: &Path) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let (mut total, mut inside, mut found) = (0, false, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name);
            found |= inside;
        } else if inside && first == "Rss:" {
            total += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        }
    }
    found.then_some(total)
}

#[test]
fn a_built_model_leaves_none_of_its_file_resident() {
    // A copy of its own, so no other test maps the same path.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-tq2_0.gguf");
    let path = std::env::temp_dir().join(format!("bitnet-memory-{}.gguf", std::process::id()));
    std::fs::copy(&fixture, &path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let config = config_from_metadata(&file).unwrap();
    // Reading every tensor makes the mapping resident (most of this file is tensors smaller than a 64 KiB
    // release unit, which per-tensor releases leave alone).
    let sum: u64 = file.tensors().iter().map(|t| file.data(t).iter().map(|&b| b as u64).sum::<u64>()).sum();
    assert!(sum > 0);
    let before = resident_kib_of(&path).expect("the file is mapped");
    assert!(before >= 400, "{before} KiB resident after reading the 610 KiB file");
    let model = build_model::<Flex>(&config, &file, LoadOptions::packed(), &Default::default()).unwrap();
    assert_eq!(resident_kib_of(&path), Some(0), "the mapping's pages are handed back once the model is built");
    // Still readable (the pages come back from the file), and the model runs.
    let again: u64 = file.tensors().iter().map(|t| file.data(t).iter().map(|&b| b as u64).sum::<u64>()).sum();
    assert_eq!(again, sum);
    let mut cache = model.new_cache(1, 8).unwrap();
    let prompt: &[u32] = &[1, 2, 3];
    model.forward_cached_last(&[prompt], &mut cache).unwrap();
    drop(file);
    std::fs::remove_file(&path).unwrap();
}
