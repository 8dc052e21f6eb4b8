//! [`DenseLinearBackend`]: `y = x W^T` for a dense weight kept in its stored precision (the output head and
//! tied embedding of a BitNet model: f32, bf16 or f16).
//!
//! Decode multiplies one token by the whole head, so it is a GEMV bound by the bytes of `W`: reading a bf16 head
//! in place streams half the bytes of a widened f32 copy, and the values are exactly the checkpoint's.

use crate::ops::float_tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Tensor};

/// A burn backend with a dense linear op that reads its weight in the weight's own dtype.
pub trait DenseLinearBackend: Backend {
    /// `y = x W^T` for a dense `W` (`[N, K]`, f32, bf16 or f16) and f32 `x` (`[M, K]`); returns `[M, N]` in f32.
    /// The default is burn's matmul on `W` cast to f32; CPU backends override it with a streaming GEMV.
    fn dense_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        dense_linear_matmul::<Self>(x, weight)
    }
}

/// `x W^T` with burn's matmul on `W` cast to f32 (the default of [`DenseLinearBackend::dense_linear`], and the
/// path of backends whose GEMV only pays off for a few tokens).
pub(crate) fn dense_linear_matmul<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    let x = float_tensor::<B, 2>(x);
    let w = float_tensor::<B, 2>(weight).cast(FloatDType::F32);
    x.matmul(w.transpose()).into_primitive().tensor()
}

/// `y = x W^T` for a dense `W` (`[N, K]`, f32, bf16 or f16) and f32 `x` (`[M, K]`), in f32.
///
/// # Panics
/// If the widths differ, naming both shapes.
pub fn dense_linear<B: DenseLinearBackend>(x: Tensor<B, 2>, weight: &Tensor<B, 2>) -> Tensor<B, 2> {
    let ([m, k], [n, kw]) = (x.dims(), weight.dims());
    assert!(k == kw, "dense_linear: input [{m}, {k}] does not match a weight of shape [{n}, {kw}]");
    float_tensor(B::dense_linear(x.into_primitive().tensor(), weight.clone().into_primitive().tensor()))
}
