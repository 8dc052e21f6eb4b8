//! The extension traits for burn's CPU backend, Flex: the `bitnet-kernels` SIMD kernels run directly on the
//! tensors' buffers (zero-copy slices of the activations, the packed words, the scales and the dense head),
//! through [`crate::host`].

use crate::cache::{cache_write_slice_assign, CacheWriteBackend};
use crate::dense::{dense_linear_matmul, DenseLinearBackend};
use crate::host::{self, DenseWeight};
use crate::ops::{assert_input_fits, QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use bitnet_kernels::{QuantizedActivations, TernaryView};
use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape, TensorMetadata};

/// A contiguous view of `t`, checked to hold `dtype` (the message names the op and both dtypes).
fn contiguous(t: FlexTensor, dtype: DType, what: &str) -> FlexTensor {
    assert!(t.dtype() == dtype, "{what}: expected a {dtype:?} tensor, got {:?}", t.dtype());
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

fn dims2(t: &FlexTensor, what: &str) -> [usize; 2] {
    let shape = t.shape();
    assert!(shape.num_dims() == 2, "{what}: expected a 2-D tensor, got {} dimensions", shape.num_dims());
    shape.dims::<2>()
}

fn f32_tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), DType::F32)
}

/// The words and scales of a packed weight as contiguous host tensors of the kernels' dtypes (I32 words: an
/// I64 default int dtype is narrowed on the fly).
fn host_parts(w: &TernaryWeightPrimitive<Flex>) -> (FlexTensor, FlexTensor) {
    let words = if w.words.dtype() == DType::I64 {
        <Flex as burn::tensor::ops::IntTensorOps<Flex>>::int_cast(w.words.clone(), burn::tensor::IntDType::I32)
    } else {
        w.words.clone()
    };
    (
        contiguous(words, DType::I32, "ternary weight words"),
        contiguous(w.scales.clone(), DType::F32, "ternary row scales"),
    )
}

/// The kernel view of a packed weight over its host parts.
fn view_of<'a>(w: &TernaryWeightPrimitive<Flex>, (words, scales): &'a (FlexTensor, FlexTensor)) -> TernaryView<'a> {
    let words = words.as_slice::<i32>().expect("contiguous i32 tensor");
    let scales = scales.as_slice::<f32>().expect("contiguous f32 tensor");
    TernaryView::new(w.rows, w.cols, bytemuck::cast_slice(words), scales)
        .unwrap_or_else(|e| panic!("ternary weight [{}, {}]: {e}", w.rows, w.cols))
}

/// Quantizes `x` (`[M, K]`, f32) per token on the host buffer, without copying `x`.
fn quantize_input(x: FlexTensor, what: &str) -> QuantizedActivations {
    let [m, k] = dims2(&x, what);
    let x = contiguous(x, DType::F32, what);
    host::quantize(x.as_slice::<f32>().expect("contiguous f32 tensor"), m, k, what)
}

/// The ternary products of one input with several packed weights, quantizing it once.
fn linear_many(x: FlexTensor, weights: &[TernaryWeightPrimitive<Flex>], what: &str) -> Vec<FlexTensor> {
    let q = quantize_input(x, what);
    let m = q.rows();
    for w in weights {
        assert_input_fits(what, m, q.cols(), w);
    }
    let parts: Vec<_> = weights.iter().map(host_parts).collect();
    let views: Vec<_> = weights.iter().zip(&parts).map(|(w, p)| view_of(w, p)).collect();
    let outs = host::ternary_products(&q, &views);
    outs.into_iter().zip(weights).map(|(y, w)| f32_tensor(y, Shape::new([m, w.rows]))).collect()
}

impl TernaryBackend for Flex {
    fn ternary_linear(x: FlexTensor, weight: TernaryWeightPrimitive<Self>) -> FlexTensor {
        linear_many(x, std::slice::from_ref(&weight), "ternary_linear").pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: FlexTensor, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FlexTensor> {
        linear_many(x, &weights, "ternary_linear_many")
    }

    fn quantize_activations(x: FlexTensor) -> QuantizedActivationsPrimitive<Self> {
        let q = quantize_input(x, "quantize_activations");
        let (m, k) = (q.rows(), q.cols());
        QuantizedActivationsPrimitive {
            codes: FlexTensor::new(
                Bytes::from_elems(host::activation_codes(&q)),
                Layout::contiguous(Shape::new([m, k])),
                DType::I32,
            ),
            scales: f32_tensor(q.scales().to_vec(), Shape::new([m])),
        }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FlexTensor {
        let parts = host_parts(&weight);
        let values = view_of(&weight, &parts).dequantize();
        f32_tensor(values, Shape::new([weight.rows, weight.cols]))
    }
}

/// Up to this many tokens, [`DenseLinearBackend::dense_linear`] streams the weight once through the
/// bitnet-kernels GEMV (decode, short prompts); longer inputs (perplexity windows, `logits`) go to burn's
/// matmul, whose blocking reuses the weight across many tokens.
const DENSE_GEMV_MAX_TOKENS: usize = 8;

impl DenseLinearBackend for Flex {
    fn dense_linear(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let [m, k] = dims2(&x, "dense_linear input");
        let [n, kw] = dims2(&weight, "dense_linear weight");
        assert!(k == kw, "dense_linear: input [{m}, {k}] does not match a weight of shape [{n}, {kw}]");
        if m > DENSE_GEMV_MAX_TOKENS {
            return dense_linear_matmul::<Flex>(x, weight);
        }
        let x = contiguous(x, DType::F32, "dense_linear input");
        let xs = x.as_slice::<f32>().expect("contiguous f32 tensor");
        let dtype = weight.dtype();
        let weight = contiguous(weight, dtype, "dense_linear weight");
        let w = match dtype {
            DType::F32 => DenseWeight::F32(weight.as_slice::<f32>().expect("contiguous f32 tensor")),
            DType::BF16 => DenseWeight::Bf16(bytemuck::cast_slice(
                weight.as_slice::<half::bf16>().expect("contiguous bf16 tensor"),
            )),
            DType::F16 => {
                DenseWeight::F16(bytemuck::cast_slice(weight.as_slice::<half::f16>().expect("contiguous f16 tensor")))
            }
            other => panic!("dense_linear: weights of dtype {other:?} are not supported (f32, bf16, f16)"),
        };
        f32_tensor(host::dense_gemv(xs, m, w, n, k), Shape::new([m, n]))
    }
}

impl CacheWriteBackend for Flex {
    fn cache_write(cache: FlexTensor, start: usize, values: FlexTensor) -> FlexTensor {
        if cache.dtype() != DType::F32 || values.dtype() != DType::F32 {
            return cache_write_slice_assign::<Flex>(cache, start, values);
        }
        let dims = cache.shape().dims::<3>();
        let mut cache = contiguous(cache, DType::F32, "cache_write cache");
        let values = contiguous(values, DType::F32, "cache_write values");
        let (offset, _) = cache.layout().contiguous_offsets().expect("contiguous tensor");
        // Copies the buffer only if another handle (a view the caller still holds) shares it.
        let dst = cache.storage_mut::<f32>();
        host::write_positions(dst, offset, dims, start, values.as_slice::<f32>().expect("contiguous f32 tensor"));
        cache
    }
}
