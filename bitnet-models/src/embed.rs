//! Text embeddings from a decoder: the final-normed hidden states of a prompt, pooled into one vector and
//! L2-normalized, `e = p(h) / |p(h)|`, as Microsoft's BitNet embedding models (Qwen3 blocks with a norm before
//! every projection) and other decoder-based embedding models define them. Pooling is the last token's state
//! by default (what those models are trained with); mean and first-token pooling are there for models that
//! declare them (GGUF `{arch}.pooling_type`: 1 mean, 2 first / CLS, 3 last).

use crate::bundle::{Checkpoint, CheckpointFiles};
use crate::error::{ModelError, Result};
use crate::model::BitNetModel;
use bitnet_backend::BitNetBackend;

/// How the hidden states of a text become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The last token's state (causal decoders: the only one that has seen the whole text).
    #[default]
    Last,
    /// The mean over the tokens.
    Mean,
    /// The first token's state.
    First,
}

impl Pooling {
    /// Every pooling with its name.
    pub const ALL: [(Pooling, &'static str); 3] = [(Self::Last, "last"), (Self::Mean, "mean"), (Self::First, "first")];

    /// The pooling a checkpoint declares (GGUF `{arch}.pooling_type`), if any; an error for one this crate
    /// does not implement (none, rank).
    pub fn declared(checkpoint: &Checkpoint) -> Result<Option<Self>> {
        let CheckpointFiles::Gguf(file) = checkpoint.files() else { return Ok(None) };
        let key = format!("{}.pooling_type", file.architecture());
        match file.get(&key).map(|v| v.as_i128()) {
            None => Ok(None),
            Some(Some(1)) => Ok(Some(Self::Mean)),
            Some(Some(2)) => Ok(Some(Self::First)),
            Some(Some(3)) => Ok(Some(Self::Last)),
            Some(other) => Err(file.error(format!(
                "metadata '{key}' = {other:?}: only mean (1), first (2) and last-token (3) pooling are supported"
            ))),
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(p, _)| *p)
            .ok_or_else(|| format!("unknown pooling '{s}' (expected last, mean or first)"))
    }
}

/// The L2-normalized, pooled embedding of `ids` (one text, at most `max_position_embeddings` tokens).
pub fn embed<B: BitNetBackend>(model: &BitNetModel<B>, ids: &[u32], pooling: Pooling) -> Result<Vec<f32>> {
    let h = model.final_hidden_states(ids)?;
    let [t, d] = h.dims();
    let pooled = match pooling {
        Pooling::Last => h.slice([t - 1..t, 0..d]),
        Pooling::First => h.slice([0..1, 0..d]),
        Pooling::Mean => h.mean_dim(0),
    };
    let values = pooled
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ModelError::Request(format!("reading the embedding: {e:?}")))?;
    let norm = values.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(ModelError::Request(format!("the pooled state has norm {norm}: no direction to embed")));
    }
    Ok(values.iter().map(|&v| (v as f64 / norm) as f32).collect())
}
