//! Rotary position embedding in the rotate-half (NEOX) layout, as transformers' BitNet:
//! `inv_freq[i] = 1 / theta^(2i / d)`, `emb = [p·inv_freq, p·inv_freq]`, `x' = x·cos(emb) + rotate_half(x)·sin(emb)`
//! with `rotate_half([x1, x2]) = [-x2, x1]` over the two halves of the head dimension. Tables are in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Precomputed `cos` and `sin` tables, `[max_positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    head_dim: usize,
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..max_positions`.
    pub fn new(head_dim: usize, max_positions: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            // emb = [freqs, freqs]: both halves of the head use the same angles.
            for _half in 0..2 {
                for &f in &inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [max_positions, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            head_dim,
        }
    }

    /// Applies the rotation to `x` (`[heads, T, head_dim]`) for positions `start..start + T`.
    pub fn apply(&self, x: Tensor<B, 3>, start: usize) -> Tensor<B, 3> {
        let [heads, t, d] = x.dims();
        let cos = self.cos.clone().slice([start..start + t, 0..d]).unsqueeze::<3>();
        let sin = self.sin.clone().slice([start..start + t, 0..d]).unsqueeze::<3>();
        let half = self.head_dim / 2;
        let x1 = x.clone().slice([0..heads, 0..t, 0..half]);
        let x2 = x.clone().slice([0..heads, 0..t, half..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
        x * cos + rotated * sin
    }
}
