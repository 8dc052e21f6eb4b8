//! The extension traits for burn-candle (deprecated upstream in burn 0.21).
//!
//! Candle's tensor primitive keeps its inner `candle_core::Tensor` private, and burn-candle implements no int
//! bitwise ops, so no device kernel can be attached: the ternary ops read their tensors back with burn's data
//! API, run the `bitnet-kernels` SIMD kernels through [`crate::host`] and upload the result. That gives exactly
//! the CPU backend's results, at the cost of a device-to-host and host-to-device copy per call on candle's
//! CUDA/Metal devices. The dense head and the cache append use burn's own ops (the trait defaults).
#![allow(deprecated)]

use crate::cache::CacheWriteBackend;
use crate::dense::DenseLinearBackend;
use crate::host;
use crate::ops::{
    assert_input_fits, float_tensor, QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive,
};
use bitnet_kernels::{QuantizedActivations, TernaryLayout, TernaryView};
use burn::backend::candle::{Candle, FloatCandleElement, IntCandleElement};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Int, Tensor, TensorData};

fn read_f32<B: Backend, const D: usize>(t: Tensor<B, D>, what: &str) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// The host copy of a packed weight: its words as bytes and its row scales.
fn read_weight<B: Backend>(w: &TernaryWeightPrimitive<B>) -> (Vec<i32>, Vec<f32>) {
    let words = Tensor::<B, 2, Int>::from_primitive(w.words.clone()).into_data().convert::<i32>();
    let words = words.into_vec::<i32>().unwrap_or_else(|e| panic!("ternary weight words: {e:?}"));
    (words, read_f32(float_tensor::<B, 1>(w.scales.clone()), "ternary row scales"))
}

fn view<'a, B: Backend>(w: &TernaryWeightPrimitive<B>, (words, scales): &'a (Vec<i32>, Vec<f32>)) -> TernaryView<'a> {
    TernaryView::new_in(w.layout, w.rows, w.cols, bytemuck::cast_slice(words), scales)
        .unwrap_or_else(|e| panic!("ternary weight [{}, {}]: {e}", w.rows, w.cols))
}

/// `x` quantized on the host, padded for ternary weights in `layout`.
fn read_activations<B: Backend>(
    x: FloatTensor<B>,
    layout: TernaryLayout,
    what: &str,
) -> (QuantizedActivations, B::Device) {
    let x = float_tensor::<B, 2>(x);
    let ([m, k], device) = (x.dims(), x.device());
    (host::quantize(&read_f32(x, what), m, k, layout, what), device)
}

fn upload<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D], device: &B::Device) -> FloatTensor<B> {
    Tensor::<B, D>::from_data(TensorData::new(values, shape), device).into_primitive().tensor()
}

impl<F: FloatCandleElement, I: IntCandleElement> TernaryBackend for Candle<F, I> {
    fn reads_ternary_layout(layout: TernaryLayout) -> bool {
        host::cpu_reads(layout)
    }

    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        Self::ternary_linear_many(x, vec![weight]).pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: FloatTensor<Self>, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FloatTensor<Self>> {
        let layout = weights.first().map_or(TernaryLayout::Bits2, |w| w.layout);
        assert!(weights.iter().all(|w| w.layout == layout), "ternary_linear: weights in different ternary layouts");
        let (q, device) = read_activations::<Self>(x, layout, "ternary_linear input");
        for w in &weights {
            assert_input_fits("ternary_linear", q.rows(), q.cols(), w);
        }
        let hosts: Vec<_> = weights.iter().map(read_weight).collect();
        let views: Vec<_> = weights.iter().zip(&hosts).map(|(w, h)| view(w, h)).collect();
        let m = q.rows();
        host::ternary_products(&q, &views)
            .into_iter()
            .zip(&weights)
            .map(|(y, w)| upload::<Self, 2>(y, [m, w.rows], &device))
            .collect()
    }

    fn quantize_activations(x: FloatTensor<Self>) -> QuantizedActivationsPrimitive<Self> {
        let (q, device) = read_activations::<Self>(x, TernaryLayout::Bits2, "quantize_activations input");
        let (m, k) = (q.rows(), q.cols());
        let codes = Tensor::<Self, 2, Int>::from_data(TensorData::new(host::activation_codes(&q), [m, k]), &device);
        QuantizedActivationsPrimitive {
            codes: codes.into_primitive(),
            scales: upload::<Self, 1>(q.scales().to_vec(), [m], &device),
        }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        let device = float_tensor::<Self, 1>(weight.scales.clone()).device();
        let host = read_weight(&weight);
        upload::<Self, 2>(view(&weight, &host).dequantize(), [weight.rows, weight.cols], &device)
    }
}

impl<F: FloatCandleElement, I: IntCandleElement> DenseLinearBackend for Candle<F, I> {}

impl<F: FloatCandleElement, I: IntCandleElement> CacheWriteBackend for Candle<F, I> {}

impl<F: FloatCandleElement, I: IntCandleElement> crate::transformer::TransformerBackend for Candle<F, I> {}
