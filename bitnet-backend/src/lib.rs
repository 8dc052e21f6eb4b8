//! # bitnet-backend
//!
//! The burn backend extension of BitNet-Rust: a `TernaryBackend: Backend` trait with the ternary ops
//! (per-token int8 activation quantization, ternary GEMV/GEMM on packed weights) implemented for burn's
//! CPU, CubeCL (wgpu, cuda), candle and `Autodiff` backends, and the `BitLinear` module, a drop-in for
//! `burn::nn::Linear`.
//!
//! Status: this crate is filled by the backend-extension issue. Today it re-exports the compute core,
//! [`bitnet_kernels`], which the burn ops will call without copies.

pub use bitnet_kernels as kernels;
