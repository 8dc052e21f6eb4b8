//! The tokenizer a GGUF file carries (`tokenizer.ggml.*`), converted to a `tokenizers` BPE and run on a text.
#![no_main]

use bitnet_models::gguf::{GgufFile, GgufVocab, SharedBytes};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), SharedBytes::from_vec(data.to_vec())) else {
        return;
    };
    let Ok(Some(vocab)) = GgufVocab::from_file(&file) else { return };
    if let Ok(tokenizer) = vocab.to_tokenizer() {
        if let Ok(ids) = tokenizer.encode("ROMEO: But, soft! <|eot_id|> ünï 日本 12345") {
            let _ = tokenizer.decode(&ids, false);
        }
    }
});
