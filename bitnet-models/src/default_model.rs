//! The embedded default model: a small BitNet b1.58 model trained on Shakespeare by `bitnet train` (README:
//! "The default model"), compiled into the crate (feature `default-model`) so that a program runs without a
//! download. It is read straight from the binary: nothing is unpacked to disk.

use crate::config::BitNetConfig;
use crate::error::{ModelError, Result};
use crate::gguf::SharedBytes;
use crate::source::hf::HfCheckpoint;
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// `config.json` of the default model.
const CONFIG_JSON: &str = include_str!("../default-model/config.json");
/// Its weights (the packed HF layout).
static SAFETENSORS: &[u8] = include_bytes!("../default-model/model.safetensors");
/// Its byte-level BPE tokenizer (2048 tokens).
const TOKENIZER_JSON: &[u8] = include_bytes!("../default-model/tokenizer.json");

/// The name the default model goes by in messages and listings.
pub const DEFAULT_MODEL_NAME: &str = "<embedded default model>";

/// The default model's checkpoint.
pub fn checkpoint() -> Result<HfCheckpoint> {
    let name = Path::new(DEFAULT_MODEL_NAME);
    let config = BitNetConfig::from_json(CONFIG_JSON)
        .map_err(|message| ModelError::Config { path: name.join("config.json"), message })?;
    HfCheckpoint::from_memory(name, config, SharedBytes::new(Arc::new(SAFETENSORS)))
}

/// The default model's tokenizer.
pub fn tokenizer() -> Result<Tokenizer> {
    Tokenizer::from_bytes(TOKENIZER_JSON).map_err(|message| ModelError::Config {
        path: Path::new(DEFAULT_MODEL_NAME).join("tokenizer.json"),
        message: format!("invalid tokenizer: {message}"),
    })
}

/// The bytes of its `tokenizer.json`.
pub fn tokenizer_json() -> &'static [u8] {
    TOKENIZER_JSON
}
