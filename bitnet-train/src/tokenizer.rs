//! Training a byte-level BPE tokenizer with the `tokenizers` crate (`bitnet train-tokenizer`), for users who
//! have text but no tokenizer. Byte-level means every UTF-8 text round-trips (no unknown token).

use crate::error::{Result, TrainError};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

/// The end-of-text special token added to trained tokenizers (id 0).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Trains a byte-level BPE of `vocab_size` tokens (including the 256 byte tokens and [`END_OF_TEXT`]) on
/// `files` (plain or `.gz` text) and returns the `tokenizer.json` text.
pub fn train_bpe(files: &[&Path], vocab_size: usize) -> Result<String> {
    if vocab_size < 257 + 1 {
        return Err(TrainError::Config(format!(
            "--vocab-size {vocab_size} is below 258 (256 bytes + 1 merge + 1 special)"
        )));
    }
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        texts.push(crate::data::read_text(f)?);
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .build();
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        tokenizers::normalizers::NormalizerWrapper,
        ByteLevel,
        tokenizers::processors::PostProcessorWrapper,
        ByteLevelDecoder,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
    .with_decoder(Some(ByteLevelDecoder::default()))
    .build()
    .map_err(|e| TrainError::Config(format!("building the tokenizer: {e}")))?;
    tokenizer
        .train(&mut trainer, texts.iter().flat_map(|t| t.split_inclusive('\n')))
        .map_err(|e| TrainError::Data(format!("training the tokenizer: {e}")))?;
    let tokenizer: tokenizers::Tokenizer = tokenizer.into();
    tokenizer.to_string(false).map_err(|e| TrainError::Data(format!("serializing the tokenizer: {e}")))
}
