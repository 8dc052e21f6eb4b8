//! The factory that fills the module tree of [`crate::model`] from a [`TensorSource`], packed or latent, and the
//! loading entry points.

use super::{hf, LoadAs, LoadOptions, ProjectionData, TensorSource};
use crate::config::{BitNetConfig, Family};
use crate::error::{ModelError, Result};
use crate::model::{describe, BitNetModel, HeadFormat, ParamFactory, TensorId, TokenMatrix};
use bitnet_backend::{BitLinear, BitNetBackend, TernaryWeight};
use bitnet_kernels::TernaryMatrix;
use burn::module::Param;
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::path::Path;

/// Fills a model from a [`TensorSource`].
struct SourceFactory<'a, B: Backend> {
    source: &'a dyn TensorSource,
    options: LoadOptions,
    /// Whether the embedding is also the head.
    tied: bool,
    /// The family (a Qwen3 model must come ternary).
    family: Family,
    device: &'a B::Device,
}

/// Checks that every value of `values` is finite (NaN or infinite weights turn every logit into NaN).
fn check_finite(source: &dyn TensorSource, id: TensorId, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::Weights {
            path: source.path().into(),
            message: format!("{}: element {i} is {} (weights must be finite)", describe(id), values[i]),
        }),
    }
}

/// An error about tensor `id` that names the file and the tensor: kernel and backend errors (a scale that is
/// not finite, a code out of range) carry neither.
fn in_file(source: &dyn TensorSource, id: TensorId, e: ModelError) -> ModelError {
    match e {
        ModelError::Kernel(_) | ModelError::Backend(_) => {
            ModelError::Weights { path: source.path().into(), message: format!("{}: {e}", describe(id)) }
        }
        other => other,
    }
}

impl<B: BitNetBackend> ParamFactory<B> for SourceFactory<'_, B> {
    fn projection(&mut self, id: TensorId, rows: usize, cols: usize, norm: Option<RmsNorm<B>>) -> Result<BitLinear<B>> {
        self.load_projection(id, rows, cols, norm).map_err(|e| in_file(self.source, id, e))
    }

    fn norm(&mut self, id: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        self.load_norm(id, width, eps).map_err(|e| in_file(self.source, id, e))
    }

    fn matrix(&mut self, id: TensorId, rows: usize, cols: usize) -> Result<TokenMatrix<B>> {
        self.load_matrix(id, rows, cols).map_err(|e| in_file(self.source, id, e))
    }
}

impl<B: BitNetBackend> SourceFactory<'_, B> {
    fn load_projection(
        &mut self,
        id: TensorId,
        rows: usize,
        cols: usize,
        norm: Option<RmsNorm<B>>,
    ) -> Result<BitLinear<B>> {
        let data = self.source.projection(id, rows, cols)?;
        let layer = match (data, self.options.state) {
            (ProjectionData::Ternary(m), LoadAs::Packed) => {
                BitLinear::from_packed(TernaryWeight::from_matrix_preferred(&m, self.device)?, None, norm)?
            }
            (ProjectionData::Float(_), LoadAs::Packed) if self.family == Family::Qwen3 => {
                return Err(ModelError::Weights {
                    path: self.source.path().into(),
                    message: format!(
                        "{} holds full-precision weights: a Qwen3 model runs when its projections are ternary \
                         (GGUF Q2_0, PQ2_0, TQ2_0 or TQ1_0, or ternary values times per-row or per-64 scales)",
                        describe(id)
                    ),
                })
            }
            (ProjectionData::Float(values), LoadAs::Packed) => {
                check_finite(self.source, id, &values)?;
                let m = TernaryMatrix::quantize_absmean(&values, rows, cols)?;
                BitLinear::from_packed(TernaryWeight::from_matrix_preferred(&m, self.device)?, None, norm)?
            }
            (ProjectionData::Ternary(m), LoadAs::Latent) => {
                let values = latent_of_ternary(&m);
                let w = Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), self.device);
                BitLinear::from_latent(w.transpose(), None, norm)?
            }
            (ProjectionData::Float(values), LoadAs::Latent) => {
                check_finite(self.source, id, &values)?;
                let w = Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), self.device);
                BitLinear::from_latent(w.transpose(), None, norm)?
            }
        };
        self.source.release(id);
        Ok(layer)
    }

    fn load_norm(&mut self, id: TensorId, width: usize, eps: f64) -> Result<RmsNorm<B>> {
        let values = self.source.norm(id, width)?;
        check_finite(self.source, id, &values)?;
        let gamma = Tensor::from_data(TensorData::new(values, [width]), self.device);
        Ok(RmsNorm { gamma: Param::from_tensor(gamma), epsilon: eps })
    }

    fn load_matrix(&mut self, id: TensorId, rows: usize, cols: usize) -> Result<TokenMatrix<B>> {
        let data = self.source.matrix(id, rows, cols)?;
        // The head format applies to the head, and to the embedding of a tied model (its one matrix); a
        // checkpoint's 16-bit values stay 16-bit where the backend stores them (half the bytes for the head's
        // GEMV, exactly the checkpoint's values); training gets f32 parameters.
        let format = match (self.options.state, id) {
            (LoadAs::Latent, _) => HeadFormat::F32,
            (LoadAs::Packed, TensorId::Head) => self.options.head,
            (LoadAs::Packed, TensorId::Embedding) if self.tied => self.options.head,
            (LoadAs::Packed, _) => HeadFormat::Stored,
        };
        data.check([rows, cols]).map_err(|message| ModelError::Weights {
            path: self.source.path().into(),
            message: format!("{}: {message}", describe(id)),
        })?;
        let matrix = TokenMatrix::from_checked_data(data, [rows, cols], format, self.device)?;
        self.source.release(id);
        Ok(matrix)
    }
}

/// Latent weights that BitLinear's absmean fake quantization maps back onto `m`: `W = (c - 1) · s / p`, with `s`
/// each weight's scale and `p` the fraction of nonzero codes. Then `mean |W| = s` (for one scale per tensor, as
/// every BitNet checkpoint has), `round(W / mean|W|) = round((c - 1) / p)` clamps to `c - 1` (since `1 / p >= 1`),
/// and the dequantized weight is `(c - 1) · s`: at `λ = 1` the latent model computes the packed model's
/// function, so fine-tuning starts where the checkpoint is. (Per-row or per-group scales start from their mean.)
fn latent_of_ternary(m: &TernaryMatrix) -> Vec<f32> {
    let mut values = m.view().dequantize();
    let nonzero = m.to_codes().codes().iter().filter(|&&c| c != 1).count();
    if nonzero > 0 {
        let inv_p = values.len() as f32 / nonzero as f32;
        values.iter_mut().for_each(|v| *v *= inv_p);
    }
    values
}

/// Builds a model of `config` from `source` as `options` say (packed or latent projections, the head's format).
pub fn build_model<B: BitNetBackend>(
    config: &BitNetConfig,
    source: &dyn TensorSource,
    options: LoadOptions,
    device: &B::Device,
) -> Result<BitNetModel<B>> {
    if let Some(last) = source.last_layer().filter(|&l| l >= config.num_hidden_layers) {
        return Err(ModelError::Weights {
            path: source.path().into(),
            message: format!(
                "the file holds tensors of layer {last}, but its configuration declares {} layers \
                 (num_hidden_layers / block_count)",
                config.num_hidden_layers
            ),
        });
    }
    let (tied, family) = (config.tie_word_embeddings, config.family);
    let model = BitNetModel::build(config, &mut SourceFactory { source, options, tied, family, device });
    source.release_all();
    model
}

/// Loads a Hugging Face checkpoint directory onto `device`, packed for inference.
pub fn load_hf_dir<B: BitNetBackend>(dir: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    let checkpoint = hf::HfCheckpoint::open(dir)?;
    build_model(checkpoint.config(), &checkpoint, LoadOptions::packed(), device)
}

/// Loads a GGUF file onto `device`, packed for inference.
pub fn load_gguf<B: BitNetBackend>(path: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    let file = crate::gguf::GgufFile::open(path)?;
    build_model(&crate::gguf::config_from_metadata(&file)?, &file, LoadOptions::packed(), device)
}

/// Loads a Hugging Face directory or a `.gguf` file onto `device`, packed for inference.
pub fn load_model<B: BitNetBackend>(path: &Path, device: &B::Device) -> Result<BitNetModel<B>> {
    if path.is_dir() {
        load_hf_dir(path, device)
    } else {
        load_gguf(path, device)
    }
}
