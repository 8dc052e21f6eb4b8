//! Host-side implementations of the ternary ops for backends whose primitives cannot be read in place (candle):
//! tensors are read back with burn's data API, the `bitnet-kernels` SIMD kernels run on the host, and the
//! result is uploaded again. Exact (same kernels as the CPU backend), but each call pays two transfers.

use crate::ops::{QuantizedActivationsPrimitive, TernaryWeightPrimitive};
use bitnet_kernels::{global_pool, ternary_matmul, QuantizedActivations, TernaryView};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};

fn read_f32<B: Backend, const D: usize>(t: Tensor<B, D>, what: &str) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// Runs `f` on the host copy of a packed weight.
pub fn with_host_view<B: Backend, R>(w: &TernaryWeightPrimitive<B>, f: impl FnOnce(TernaryView<'_>) -> R) -> R {
    let words = Tensor::<B, 2, Int>::from_primitive(w.words.clone()).into_data().convert::<i32>();
    let words = words.as_slice::<i32>().unwrap_or_else(|e| panic!("ternary weight words: {e:?}"));
    let scales =
        read_f32(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(w.scales.clone())), "ternary row scales");
    let view = TernaryView::new(w.rows, w.cols, bytemuck::cast_slice(words), &scales)
        .unwrap_or_else(|e| panic!("ternary weight [{}, {}]: {e}", w.rows, w.cols));
    f(view)
}

fn host_activations<B: Backend>(x: FloatTensor<B>) -> (QuantizedActivations, B::Device) {
    let x = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x));
    let ([m, k], device) = (x.dims(), x.device());
    let q = QuantizedActivations::quantize(&read_f32(x, "activations"), m, k).unwrap_or_else(|e| panic!("{e}"));
    (q, device)
}

fn upload<B: Backend>(values: Vec<f32>, shape: [usize; 2], device: &B::Device) -> FloatTensor<B> {
    Tensor::<B, 2>::from_data(TensorData::new(values, shape), device).into_primitive().tensor()
}

/// `ternary_linear` on the host.
pub fn ternary_linear<B: Backend>(x: FloatTensor<B>, w: TernaryWeightPrimitive<B>) -> FloatTensor<B> {
    let (q, device) = host_activations::<B>(x);
    let (m, n) = (q.rows(), w.rows);
    crate::ops::assert_input_fits("ternary_linear", m, q.cols(), &w);
    let mut y = vec![0f32; m * n];
    with_host_view(&w, |view| ternary_matmul(view, &q, &mut y, global_pool())).unwrap_or_else(|e| panic!("{e}"));
    upload::<B>(y, [m, n], &device)
}

/// `quantize_activations` on the host; codes are uploaded in the device's default int dtype.
pub fn quantize_activations<B: Backend>(x: FloatTensor<B>) -> QuantizedActivationsPrimitive<B> {
    let (q, device) = host_activations::<B>(x);
    let (m, k) = (q.rows(), q.cols());
    let codes: Vec<i32> = (0..m).flat_map(|r| q.row(r)[..k].iter().map(|&c| c as i32).collect::<Vec<_>>()).collect();
    let codes = Tensor::<B, 2, Int>::from_data(TensorData::new(codes, [m, k]), &device).into_primitive();
    let scales = Tensor::<B, 1>::from_data(TensorData::new(q.scales().to_vec(), [m]), &device);
    QuantizedActivationsPrimitive { codes, scales: scales.into_primitive().tensor() }
}

/// `ternary_dequantize` on the host.
pub fn ternary_dequantize<B: Backend>(w: TernaryWeightPrimitive<B>) -> FloatTensor<B> {
    let device = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(w.scales.clone())).device();
    let values = with_host_view(&w, |view| view.dequantize());
    upload::<B>(values, [w.rows, w.cols], &device)
}

/// The int dtype words are stored in on `B` (its default int dtype must hold i32 values).
pub fn words_dtype_ok(dtype: DType) -> bool {
    matches!(dtype, DType::I32 | DType::I64)
}
