//! # bitnet-kernels
//!
//! The compute core of BitNet-Rust, with no burn dependency: ternary weight formats and the CPU kernels
//! of BitNet b1.58 (W1.58A8: weights in {-1, 0, +1}, 8-bit activations).
//!
//! * [`quant`]: absmean ternary weight quantization and per-token absmax int8 activation quantization,
//!   bit-compatible with the Hugging Face reference (round half to even, `1e-5` floor).
//! * [`formats`]: the on-disk layouts (HF packed, GGUF I2_S, TQ2_0, TQ1_0) with pack/unpack, and the
//!   kernel-native [`TernaryMatrix`] every format repacks into.
//! * [`gemv`]: ternary x int8 GEMV/GEMM to f32, `y = (sum c*q - sum q) * g / s`, accumulated exactly in
//!   i32 by a scalar reference and hand-written AVX2, AVX-512 (VNNI / BW) and NEON (sdot / plain) kernels.
//! * [`dispatch`]: run-time kernel choice by CPU feature detection, overridable with `BITNET_KERNEL`.
//! * [`pool`]: a persistent thread pool; results are identical for any thread count.
//! * [`dense`]: f32, bf16 and f16 GEMV for the output embedding; [`int8`]: the per-row int8 head (W8A8);
//!   [`q6k`] and [`q4`]: the block-quantized heads (6.56 and 4.5 bits per weight).
//! * [`huge_pages`]: weight buffers marked for transparent huge pages (fewer TLB misses when decode streams them).
//! * [`transformer`]: fused RMSNorm, rotary embedding, causal grouped-query attention and gated activation
//!   (SiLU through an `exp` of our own, vectorized and the same bits on every ISA).
//!
//! ```
//! use bitnet_kernels::{global_pool, ternary_gemv, QuantizedActivations, TernaryCodes, TernaryMatrix};
//!
//! // A 2 x 3 ternary layer: W = [[1, 0, -1], [-1, 1, 1]] * 0.5.
//! let codes = TernaryCodes::from_ternary(2, 3, &[1, 0, -1, -1, 1, 1])?;
//! let w = TernaryMatrix::from_codes_with_scale(&codes, 0.5)?;
//! let x = QuantizedActivations::quantize(&[1.0, 2.0, 4.0], 1, 3)?;
//! let mut y = [0.0f32; 2];
//! ternary_gemv(&w, &x, &mut y, global_pool())?;
//! // Exact: W x = [(1 - 4) * 0.5, (-1 + 2 + 4) * 0.5] = [-1.5, 2.5] up to int8 activation rounding.
//! assert!((y[0] + 1.5).abs() < 0.05 && (y[1] - 2.5).abs() < 0.05);
//! # Ok::<(), bitnet_kernels::KernelError>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[macro_use]
mod multiversion;

pub mod aligned;
pub mod block_format;
pub mod dense;
pub mod dispatch;
pub mod error;
pub mod formats;
pub mod gemv;
pub mod huge_pages;
pub mod int8;
pub mod pool;
mod prefetch;
pub mod probe;
pub mod q4;
pub mod q6k;
pub mod quant;
pub mod transformer;

pub use block_format::{block_gemv, block_gemv_with, BlockFormat, BlockMatrix, BlockView};
pub use dense::{bf16_gemv, f16_gemv, f32_gemv};
pub use dispatch::Kernel;
pub use error::{KernelError, Result};
pub use formats::native::{TernaryLayout, TernaryView};
pub use formats::{TernaryCodes, TernaryMatrix};
pub use gemv::{
    ternary_accumulators, ternary_gemv, ternary_matmul, ternary_matmul_many, ternary_matmul_many_with,
    ternary_matmul_with,
};
pub use int8::{int8_gemv, Int8Matrix, Int8View};
pub use pool::{global_pool, ThreadPool};
pub use quant::QuantizedActivations;
