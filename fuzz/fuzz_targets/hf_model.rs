//! A Hugging Face checkpoint from arbitrary bytes: the first two bytes give the length of `config.json`, the
//! rest is `model.safetensors`; the configuration is parsed and checked, the safetensors header indexed, and
//! the whole model built from the tensors on the CPU backend.
#![no_main]

use bitnet_models::gguf::SharedBytes;
use bitnet_models::source::hf::HfCheckpoint;
use bitnet_models::{build_model, BitNetConfig, LoadOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (config, weights) = data[2..].split_at(n);
    let Ok(config) = std::str::from_utf8(config) else { return };
    let Ok(config) = BitNetConfig::from_json(config) else { return };
    let Ok(checkpoint) = HfCheckpoint::from_memory(Path::new("fuzz"), config, SharedBytes::from_vec(weights.to_vec()))
    else {
        return;
    };
    let _ = build_model::<burn::backend::Flex>(
        checkpoint.config(),
        &checkpoint,
        LoadOptions::packed(),
        &Default::default(),
    );
});
