//! Rotary position embedding in the rotate-half (NEOX) layout, as transformers' BitNet and LLaMA:
//! `inv_freq[i] = 1 / theta^(2i / d)`, `emb = [p·inv_freq, p·inv_freq]`,
//! `x' = x·cos(emb) + rotate_half(x)·sin(emb)` with `rotate_half([x1, x2]) = [-x2, x1]` over the two halves of
//! the head dimension. Angles and tables are f32, computed on the host for exactly the positions a forward pass
//! needs (so memory follows the request, not `max_position_embeddings`) and uploaded once per pass.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// `cos` and `sin` tables `[T, head_dim]` for positions `start..start + T`.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> RopeTables<B> {
    /// The tables of positions `start..start + len` for heads of `head_dim` (even) and base `theta`.
    pub fn new(head_dim: usize, theta: f64, start: usize, len: usize, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        for p in start..start + len {
            // emb = [freqs, freqs]: both halves of the head use the same angles.
            for _half in 0..2 {
                for &f in &inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [len, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Rotates `x` (`[batch, heads, T, head_dim]`).
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4>
    where
        B: bitnet_backend::TransformerBackend,
    {
        bitnet_backend::rotary(x, &self.cos, &self.sin)
    }
}
