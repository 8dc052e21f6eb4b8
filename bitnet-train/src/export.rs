//! Export of a trained model: `pack()` (each projection's latent weight quantized exactly as the training forward
//! pass fake-quantizes it: `g = max(mean|W|, 1e-5)`, `c = clamp(round(W / g), -1, 1)`) and one of the writers of
//! `bitnet_models::export`: the Hugging Face packed layout every command (and transformers'
//! `BitNetForCausalLM`) loads, or a GGUF file; and the latent master weights as a bf16 checkpoint for
//! continuing in PyTorch tools.

use crate::error::{Result, TrainError};
use crate::model::LanguageModel;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::export::{write_gguf_model, write_hf_checkpoint, write_hf_master, TernaryGgufType, TokenizerFiles};
use bitnet_models::gguf::GgufVocab;
use std::path::Path;

fn packed<B: BitNetBackend>(model: &LanguageModel<B>) -> Result<bitnet_models::BitNetModel<B>> {
    if !model.is_quantized() {
        return Err(TrainError::Export(
            "the full-precision baseline has no ternary weights to pack; train without --full-precision".into(),
        ));
    }
    model.pack()
}

/// The tokenizer files an export writes beside the weights.
fn tokenizer_files(tokenizer_json: Option<&[u8]>) -> Option<TokenizerFiles> {
    tokenizer_json.map(|t| TokenizerFiles { tokenizer_json: t.to_vec(), tokenizer_config: None })
}

/// Writes `model` (ternary) into `dir` as an HF packed checkpoint, with `tokenizer_json` if given.
pub fn export_hf_packed<B: BitNetBackend>(
    model: &LanguageModel<B>,
    tokenizer_json: Option<&[u8]>,
    dir: &Path,
) -> Result<()> {
    write_hf_checkpoint(&packed(model)?, dir, tokenizer_files(tokenizer_json).as_ref())?;
    Ok(())
}

/// Writes `model`'s latent master weights into `dir` as a bf16 HF checkpoint that transformers' BitNet loads with
/// online quantization (see `bitnet_models::export::write_hf_master`), with `tokenizer_json` if given.
pub fn export_hf_master<B: BitNetBackend>(
    model: &LanguageModel<B>,
    tokenizer_json: Option<&[u8]>,
    dir: &Path,
) -> Result<()> {
    write_hf_master(model.decoder(), dir, tokenizer_files(tokenizer_json).as_ref())?;
    Ok(())
}

/// Writes `model` (ternary) as a GGUF file with ternary tensors of type `ty` and `vocab` in its metadata.
pub fn export_gguf<B: BitNetBackend>(
    model: &LanguageModel<B>,
    ty: TernaryGgufType,
    vocab: Option<&GgufVocab>,
    path: &Path,
) -> Result<()> {
    write_gguf_model(&packed(model)?, path, ty, "bitnet-rust trained model", vocab)?;
    Ok(())
}
