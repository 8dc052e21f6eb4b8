//! # bitnet-backend
//!
//! The burn backend extension of BitNet-Rust.
//!
//! * [`TernaryBackend`]: a `Backend` extension trait with the ops BitNet inference needs: per-token int8
//!   activation quantization, the ternary x int8 product on packed weights (GEMV and GEMM, and several weights
//!   sharing one quantization), dequantization, the dense output head in its stored precision
//!   ([`dense_linear`]) and the in-place KV-cache write ([`cache_write`]). Implemented for burn's CPU backend
//!   Flex (feature `cpu`, default: the `bitnet-kernels` SIMD kernels on the tensors' buffers), the CubeCL
//!   backends (features `wgpu`, `cuda`), Fusion, candle (feature `candle`) and `Autodiff<B>`
//!   (straight-through estimator).
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
//! let packed = layer.pack()?;             // 2-bit weights, SIMD kernels
//! let y_infer = packed.forward(x);
//! assert_eq!(y_infer.dims(), [2, 5, 32]);
//! let diff = (y_train - y_infer).abs().max().into_scalar();
//! assert!(diff < 1e-3, "latent and packed forward agree: {diff}");
//! # Ok::<(), bitnet_backend::BackendError>(())
//! ```

#![warn(missing_docs)]

pub mod autodiff;
pub mod bitlinear;
#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "cube")]
pub mod cube;
pub mod error;
#[cfg(feature = "cpu")]
pub mod flex;
#[cfg(feature = "cube")]
pub mod fusion;
pub mod host;
pub mod ops;
pub mod quant;

pub use bitlinear::{BitLinear, BitLinearConfig, PackedTernary};
pub use bitnet_kernels as kernels;
pub use error::{BackendError, Result};
pub use ops::{
    cache_write, dense_linear, quantize_activations, ternary_dequantize, ternary_linear, ternary_linear_many,
    TernaryBackend, TernaryWeight,
};
