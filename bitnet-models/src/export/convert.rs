//! Converting a checkpoint from any supported format to any other: the model is loaded packed (so every
//! source, HF packed, bf16 master, GGUF of any ternary type, gives the codes and scales the kernels run) and
//! written by one of the writers, with the tokenizer and chat template carried along (beside an HF directory;
//! inside a GGUF file when the vocabulary is byte-level BPE, else as `tokenizer.json` beside it).
//!
//! A target that stores coarser scales than the model has (I2_S and the HF packed layout hold one scale per
//! tensor, TQ2_0 / TQ1_0 one per 256 weights, PQ2_0 one per 128, Q2_0 one per 64) is refused with the reason;
//! f16-scale targets round f32 scales to f16 (the only change a conversion makes to the weights).

use super::{write_gguf_model, write_hf_checkpoint, TernaryGgufType};
use crate::bundle::Checkpoint;
use crate::error::{ModelError, Result};
use crate::model::HeadFormat;
use crate::source::{build_model, LoadOptions};
use bitnet_backend::BitNetBackend;
use std::path::Path;

/// What a checkpoint can be converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertFormat {
    /// A Hugging Face directory (packed uint8 + `weight_scale` for BitNet members; dense ternary values for
    /// Qwen3 members).
    Hf,
    /// A GGUF file with projections of this type.
    Gguf(TernaryGgufType),
}

impl ConvertFormat {
    /// Every format with its command-line name.
    pub const ALL: [(ConvertFormat, &'static str); 6] = [
        (Self::Hf, "hf"),
        (Self::Gguf(TernaryGgufType::I2s), "i2s"),
        (Self::Gguf(TernaryGgufType::Tq2_0), "tq2_0"),
        (Self::Gguf(TernaryGgufType::Tq1_0), "tq1_0"),
        (Self::Gguf(TernaryGgufType::Q2_0), "q2_0"),
        (Self::Gguf(TernaryGgufType::Pq2_0), "pq2_0"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(f, _)| *f == self).map_or("hf", |(_, n)| n)
    }
}

impl std::str::FromStr for ConvertFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)).map(|(f, _)| *f).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
            format!("unknown format '{s}' (expected {})", names.join(", "))
        })
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertReport {
    /// Where the tokenizer went: "embedded", "beside", or why there is none.
    pub tokenizer: String,
}

/// Converts `checkpoint` to `format` at `out` (a directory for [`ConvertFormat::Hf`], a file otherwise), the
/// token matrices in `head` (as stored by default), loading the model on `device`.
pub fn convert<B: BitNetBackend>(
    checkpoint: &Checkpoint,
    out: &Path,
    format: ConvertFormat,
    head: HeadFormat,
    device: &B::Device,
) -> Result<ConvertReport> {
    let config = checkpoint.config()?;
    if let ConvertFormat::Gguf(ty) = format {
        crate::gguf::written_architecture(&config).map_err(ModelError::Request)?;
        ty.check_shapes(&config).map_err(ModelError::Request)?;
    }
    let model = build_model::<B>(&config, checkpoint.source(), LoadOptions::packed().with_head(head), device)?;
    let name = checkpoint.path().file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match format {
        ConvertFormat::Hf => {
            let files = checkpoint.tokenizer_files()?;
            write_hf_checkpoint(&model, out, files.as_ref())?;
            Ok(ConvertReport { tokenizer: if files.is_some() { "beside" } else { "none in the source" }.into() })
        }
        ConvertFormat::Gguf(ty) => match checkpoint.gguf_vocab() {
            Ok(vocab) => {
                write_gguf_model(&model, out, ty, &name, vocab.as_ref())?;
                Ok(ConvertReport { tokenizer: if vocab.is_some() { "embedded" } else { "none in the source" }.into() })
            }
            Err(why) => {
                // Not embeddable (e.g. a SentencePiece tokenizer.json): the loader finds it beside the file.
                write_gguf_model(&model, out, ty, &name, None)?;
                let Some(files) = checkpoint.tokenizer_files()? else { return Err(why) };
                let beside = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                crate::io::write_atomically(&beside.join("tokenizer.json"), &files.tokenizer_json)?;
                Ok(ConvertReport { tokenizer: format!("beside (not embedded: {why})") })
            }
        },
    }
}
