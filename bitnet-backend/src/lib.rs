//! # bitnet-backend
//!
//! The burn backend extension of BitNet-Rust.
//!
//! * [`TernaryBackend`]: a `Backend` extension trait with the ternary ops BitNet runs: per-token int8
//!   activation quantization, the ternary x int8 product on packed weights (one weight, or several sharing one
//!   quantization of their input) and dequantization.
//! * [`DenseLinearBackend`]: `y = x W^T` with `W` read in its stored precision (f32, bf16, f16): the output
//!   head of a BitNet model.
//! * [`CacheWriteBackend`]: the in-place append of a key/value cache.
//! * [`TransformerBackend`]: RMSNorm, rotary embedding, causal grouped-query attention and the gated FFN
//!   activation, each one op (fused kernels on the CPU, burn ops elsewhere).
//! * [`BitNetBackend`]: the four together, what a whole model needs. Implemented for burn's CPU backend Flex
//!   (feature `cpu`, default: the `bitnet-kernels` SIMD kernels on the tensors' buffers), the CubeCL backends
//!   (features `wgpu`, `cuda`), their `Fusion` wrappers, candle (feature `candle`, host-side) and `Autodiff<B>`
//!   of each (straight-through estimator for the ternary op; the inner backend's fast paths when nothing is
//!   tracked).
//! * [`BitLinear`] + [`BitLinearConfig`]: a drop-in for `burn::nn::Linear`: train with latent f32 weights
//!   and fake quantization, then [`BitLinear::pack`] for the fast packed op.
//! * [`quant`]: tensor-level straight-through fake quantizers for QAT on any backend.
//!
//! Swapping `Linear` for `BitLinear` in a burn model:
//!
//! ```
//! use bitnet_backend::{BitLinear, BitLinearConfig};
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//!
//! type B = Flex;
//! let device = Default::default();
//! // was: let layer: Linear<B> = LinearConfig::new(64, 32).init(&device);
//! let layer: BitLinear<B> = BitLinearConfig::new(64, 32).with_bias(false).init(&device);
//! let x = Tensor::<B, 3>::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
//! let y_train = layer.forward(x.clone()); // fake-quantized latent weights (QAT)
//! let packed = layer.clone().pack()?;     // 2-bit weights, SIMD kernels
//! let y_infer = packed.forward(x);
//! assert_eq!(y_infer.dims(), [2, 5, 32]);
//! let diff = (y_train - y_infer).abs().max().into_scalar();
//! assert!(diff < 1e-3, "latent and packed forward agree: {diff}");
//! # Ok::<(), bitnet_backend::BackendError>(())
//! ```

#![warn(missing_docs)]

mod autodiff;
mod backend;
pub mod bitlinear;
mod cache;
#[cfg(feature = "candle")]
mod candle;
#[cfg(feature = "cube")]
pub mod cube;
mod dense;
pub mod error;
#[cfg(feature = "cpu")]
mod flex;
#[cfg(feature = "cube")]
mod fusion;
mod host;
mod ops;
mod packed_layout;
mod packed_ternary;
pub mod quant;
mod transformer;

pub use backend::BitNetBackend;
pub use bitlinear::{BitLinear, BitLinearConfig, BitLinearWeight, PackedTernary};
pub use bitnet_kernels as kernels;
pub use cache::{cache_write, CacheWriteBackend};
pub use dense::{block_linear, block_rows, dense_linear, int8_linear, DenseLinearBackend};
pub use error::{BackendError, Result};
pub use ops::{
    fake_quantize_activations, fake_quantize_weights, packed_words_shape, quantize_activations, ternary_dequantize,
    ternary_linear, ternary_linear_many, ternary_rows, QuantizedActivationsPrimitive, TernaryBackend, TernaryWeight,
    TernaryWeightPrimitive,
};
pub use transformer::{
    causal_attention, cross_entropy, gated_activation, rms_norm, rotary, swap_tokens_and_heads, GateActivation,
    TransformerBackend,
};

/// Sets the number of threads the CPU kernels run on (the process-wide pool of `bitnet-kernels`). Call it before
/// the first CPU op: the pool is created once, with the default of `BITNET_THREADS` or the CPUs this process may
/// use, on first use.
pub fn set_cpu_threads(threads: usize) -> Result<()> {
    bitnet_kernels::pool::init_global_pool(threads)?;
    Ok(())
}
