//! A GGUF file from arbitrary bytes: the container (header, metadata, tensor table), the BitNet configuration
//! from its metadata, its chat template, and the whole model built from its tensors on the CPU backend.
#![no_main]

use bitnet_models::gguf::{config_from_metadata, GgufFile, SharedBytes};
use bitnet_models::{build_model, LoadOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), SharedBytes::from_vec(data.to_vec())) else {
        return;
    };
    for t in file.tensors() {
        let _ = file.data(t).len();
    }
    let _ = bitnet_models::chat::ChatTemplate::from_gguf(&file);
    if let Ok(config) = config_from_metadata(&file) {
        let _ = build_model::<burn::backend::Flex>(&config, &file, LoadOptions::packed(), &Default::default());
    }
});
