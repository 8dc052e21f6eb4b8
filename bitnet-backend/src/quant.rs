//! Tensor-level fake quantization with straight-through estimators, for quantization-aware training on any
//! backend:
//!
//! * weights (per tensor, absmean): `W_used = W + λ · stop_grad(dequant(quant(W)) - W)`,
//!   `dequant(quant(W)) = clamp(round(W / g), -1, 1) · g`, `g = max(mean|W|, 1e-5)`;
//! * activations (per token, absmax int8): `x_used = x + λ · stop_grad(clamp(round(x · s), -128, 127) / s - x)`,
//!   `s = 127 / max(max|x|, 1e-5)` over the last dimension.
//!
//! The gradient is the identity through both quantizers; `λ` ramps from 0 to 1 during an optional warm-up
//! (`λ = 1` is full quantization). `round` is half-to-even, as in torch and bitnet-kernels.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Smallest scale denominator of both quantizers.
pub const SCALE_EPS: f32 = 1e-5;

/// `dequant(quant(W))` for absmean ternary quantization (no gradient trick).
pub fn weight_quant_dequant<B: Backend, const D: usize>(w: Tensor<B, D>) -> Tensor<B, D> {
    let g = w.clone().abs().mean().clamp_min(SCALE_EPS);
    let inv = g.clone().recip();
    let shape = [1; D];
    (w * inv.reshape(shape)).round().clamp(-1.0, 1.0) * g.reshape(shape)
}

/// `dequant(quant(x))` for per-token absmax int8 quantization over the last dimension.
pub fn activation_quant_dequant<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // `127 / absmax` as a division (not `127 * (1 / absmax)`), exactly as the kernels form it, so both paths
    // round `x * s` identically.
    let absmax = x.clone().abs().max_dim(D - 1).clamp_min(SCALE_EPS);
    let s = absmax.ones_like() * 127.0 / absmax;
    (x * s.clone()).round().clamp(-128.0, 127.0) / s
}

/// Straight-through fake quantization of weights with warm-up factor `lambda`.
pub fn weight_fake_quant<B: Backend, const D: usize>(w: Tensor<B, D>, lambda: f32) -> Tensor<B, D> {
    // The correction is computed from a detached copy: an autodiff backend records none of its ops.
    let constant = w.clone().detach();
    let delta = weight_quant_dequant(constant.clone()) - constant;
    w + delta * lambda
}

/// Straight-through fake quantization of activations with warm-up factor `lambda`.
pub fn activation_fake_quant<B: Backend, const D: usize>(x: Tensor<B, D>, lambda: f32) -> Tensor<B, D> {
    let constant = x.clone().detach();
    let delta = activation_quant_dequant(constant.clone()) - constant;
    x + delta * lambda
}
