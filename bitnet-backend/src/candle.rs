//! [`TernaryBackend`] for burn-candle (deprecated upstream in burn 0.21).
//!
//! Candle's tensor primitive keeps its inner `candle_core::Tensor` private, and burn-candle implements no int
//! bitwise ops, so no device kernel can be attached: this implementation runs the ops on the host with the
//! `bitnet-kernels` SIMD kernels ([`crate::host`]), which gives exactly the CPU backend's results, at the cost
//! of a device-to-host and host-to-device copy per call on candle's CUDA/Metal devices.
#![allow(deprecated)]

use crate::host;
use crate::ops::{QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use burn::backend::candle::{Candle, FloatCandleElement, IntCandleElement};
use burn::tensor::ops::FloatTensor;

impl<F: FloatCandleElement, I: IntCandleElement> TernaryBackend for Candle<F, I> {
    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        host::ternary_linear::<Self>(x, weight)
    }

    fn quantize_activations(x: FloatTensor<Self>) -> QuantizedActivationsPrimitive<Self> {
        host::quantize_activations::<Self>(x)
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        host::ternary_dequantize::<Self>(weight)
    }
}
