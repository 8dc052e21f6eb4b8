//! Text <-> token ids with the model's `tokenizer.json` (the `tokenizers` crate, pure-Rust regex), plus the
//! LLaMA-3 tokenizer the 2B-4T family uses, shipped gzip-compressed in the crate.

use crate::error::{ModelError, Result};
use std::io::Read;
use std::path::Path;

/// The LLaMA-3 `tokenizer.json`, gzip-compressed.
pub const LLAMA3_TOKENIZER_GZ: &[u8] = include_bytes!("../assets/llama3-tokenizer.json.gz");
/// The LLaMA-3 `tokenizer_config.json` (special tokens and a chat template).
pub const LLAMA3_TOKENIZER_CONFIG: &str = include_str!("../assets/llama3-tokenizer_config.json");

/// A tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Config { path: path.into(), message: format!("invalid tokenizer: {e}") }
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|cause| ModelError::Io { path: path.into(), cause })?;
        Self::from_bytes(&bytes).map_err(|e| tokenizer_error(path, e))
    }

    /// Parses the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        tokenizers::Tokenizer::from_bytes(bytes).map(|inner| Self { inner }).map_err(|e| e.to_string())
    }

    /// Wraps a tokenizer built through the `tokenizers` API.
    pub(crate) fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self { inner }
    }

    /// The LLaMA-3 tokenizer shipped with the crate.
    pub fn llama3() -> Self {
        Self::from_bytes(&llama3_tokenizer_json()).expect("the shipped LLaMA-3 tokenizer parses")
    }

    /// Token ids of `text` (special tokens written in the text, like `<|begin_of_text|>`, are recognized; no
    /// BOS is added implicitly).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Request(format!("tokenizing: {e}")))
    }

    /// The text of `ids` (special tokens skipped when `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| ModelError::Request(format!("detokenizing: {e}")))
    }

    /// The id of a token string (e.g. `<|eot_id|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The uncompressed shipped LLaMA-3 `tokenizer.json`.
pub fn llama3_tokenizer_json() -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(LLAMA3_TOKENIZER_GZ)
        .read_to_end(&mut out)
        .expect("the shipped tokenizer is valid gzip");
    out
}

/// Streams text while tokens arrive: emits only the part of the decoded text that can no longer change
/// (a multi-byte character split across tokens is held back until it is complete).
#[derive(Debug, Default)]
pub struct TextStream {
    tokens: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Adds a token and returns the newly completed text.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Result<String> {
        self.tokens.push(token);
        let text = tokenizer.decode(&self.tokens, true)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_round_trip_and_specials() {
        let t = Tokenizer::llama3();
        assert_eq!(t.vocab_size(), 128_256);
        assert_eq!(t.token_id("<|begin_of_text|>"), Some(128_000));
        assert_eq!(t.token_id("<|eot_id|>"), Some(128_009));
        let text = "ROMEO: But, soft! what light through yonder window breaks? ünïcödé 日本";
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), text);
        let with_bos = t.encode("<|begin_of_text|>Hello").unwrap();
        assert_eq!(with_bos[0], 128_000);
        // "Hello" is a single LLaMA-3 token (9906).
        assert_eq!(&with_bos[1..], &[9906]);
    }

    #[test]
    fn stream_holds_back_partial_characters() {
        let t = Tokenizer::llama3();
        let ids = t.encode("日本語のテキスト and more").unwrap();
        let mut stream = TextStream::default();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&stream.push(&t, id).unwrap());
        }
        assert_eq!(out, "日本語のテキスト and more");
    }
}
