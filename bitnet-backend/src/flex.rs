//! [`TernaryBackend`] for burn's CPU backend, Flex: the `bitnet-kernels` SIMD kernels run directly on the
//! tensors' buffers (zero-copy slices of the activations, the packed words and the scales).

use crate::ops::{assert_input_fits, QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use bitnet_kernels::{global_pool, ternary_matmul_many, QuantizedActivations, TernaryView};
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
    assert!(shape.num_dims() == 2, "{what}: expected a 2-D tensor, got shape {:?}", shape.dims::<1>());
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

/// Runs `f` on the kernel view of a packed weight held in Flex tensors.
fn with_view<R>(w: &TernaryWeightPrimitive<Flex>, f: impl FnOnce(TernaryView<'_>) -> R) -> R {
    let parts = host_parts(w);
    f(view_of(w, &parts))
}

/// Quantizes `x` (`[M, K]`, f32) per token on the host buffer, without copying `x`.
fn quantize_input(x: FlexTensor, what: &str) -> QuantizedActivations {
    let [m, k] = dims2(&x, what);
    let x = contiguous(x, DType::F32, what);
    QuantizedActivations::quantize(x.as_slice::<f32>().expect("contiguous f32 tensor"), m, k)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The ternary products of already-quantized activations with several packed weights, in one dispatch on the
/// kernels' pool.
fn matmul_quantized_many(q: &QuantizedActivations, weights: &[TernaryWeightPrimitive<Flex>]) -> Vec<FlexTensor> {
    let m = q.rows();
    for w in weights {
        assert_input_fits("ternary_linear", m, q.cols(), w);
    }
    let parts: Vec<_> = weights.iter().map(host_parts).collect();
    let views: Vec<_> = weights.iter().zip(&parts).map(|(w, p)| view_of(w, p)).collect();
    let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0f32; m * w.rows]).collect();
    let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| y.as_mut_slice()).collect();
    ternary_matmul_many(&views, q, &mut ys, global_pool()).unwrap_or_else(|e| panic!("ternary_linear: {e}"));
    outs.into_iter().zip(weights).map(|(y, w)| f32_tensor(y, Shape::new([m, w.rows]))).collect()
}

/// Up to this many tokens, [`TernaryBackend::dense_linear`] streams the weight once through the bitnet-kernels
/// GEMV (decode, short prompts); longer inputs (perplexity windows, `logits`) go to burn's matmul, whose blocking
/// reuses the weight across many tokens.
const DENSE_GEMV_MAX_TOKENS: usize = 8;

/// `x W^T` with the bitnet-kernels GEMV: f32, bf16 or f16 `W` read in place, rows split over the pool, each weight
/// row used for every token while it is in L1.
fn dense_gemv(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
    let [m, k] = dims2(&x, "dense_linear input");
    let [n, kw] = dims2(&weight, "dense_linear weight");
    assert!(k == kw, "dense_linear: input [{m}, {k}] does not match a weight of shape [{n}, {kw}]");
    let x = contiguous(x, DType::F32, "dense_linear input");
    let x = x.as_slice::<f32>().expect("contiguous f32 tensor");
    let mut y = vec![0f32; m * n];
    let dtype = weight.dtype();
    let weight = contiguous(weight, dtype, "dense_linear weight");
    let result = match dtype {
        DType::F32 => bitnet_kernels::f32_gemv(
            weight.as_slice::<f32>().expect("contiguous f32 tensor"),
            n,
            k,
            x,
            &mut y,
            global_pool(),
        ),
        DType::BF16 => {
            let w: &[u16] = bytemuck::cast_slice(weight.as_slice::<half::bf16>().expect("contiguous bf16 tensor"));
            bitnet_kernels::bf16_gemv(w, n, k, x, &mut y, global_pool())
        }
        DType::F16 => {
            let w: &[u16] = bytemuck::cast_slice(weight.as_slice::<half::f16>().expect("contiguous f16 tensor"));
            bitnet_kernels::f16_gemv(w, n, k, x, &mut y, global_pool())
        }
        other => panic!("dense_linear: weights of dtype {other:?} are not supported (f32, bf16, f16)"),
    };
    result.unwrap_or_else(|e| panic!("dense_linear: {e}"));
    f32_tensor(y, Shape::new([m, n]))
}

/// [`TernaryBackend::cache_write`] for f32: copies each head's `T x D` block into the cache buffer. burn-flex's
/// `slice_assign` keeps a second handle to its destination while it writes, so its copy-on-write always copies
/// the whole cache; here the buffer is written in place when this is its only handle.
fn write_positions(cache: FlexTensor, start: usize, values: FlexTensor) -> FlexTensor {
    let [h, capacity, d] = cache.shape().dims::<3>();
    let t = values.shape().dims::<3>()[1];
    let mut cache = contiguous(cache, DType::F32, "cache_write cache");
    let values = contiguous(values, DType::F32, "cache_write values");
    let src = values.as_slice::<f32>().expect("contiguous f32 tensor");
    let (offset, _) = cache.layout().contiguous_offsets().expect("contiguous tensor");
    // Copies the buffer only if another handle (a view the caller still holds) shares it.
    let dst = cache.storage_mut::<f32>();
    for head in 0..h {
        let at = offset + (head * capacity + start) * d;
        dst[at..at + t * d].copy_from_slice(&src[head * t * d..(head + 1) * t * d]);
    }
    cache
}

impl TernaryBackend for Flex {
    fn dense_linear(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let tokens = x.shape().dims::<2>()[0];
        if tokens <= DENSE_GEMV_MAX_TOKENS {
            dense_gemv(x, weight)
        } else {
            crate::ops::dense_linear_matmul::<Flex>(x, weight)
        }
    }

    fn cache_write(cache: FlexTensor, start: usize, values: FlexTensor) -> FlexTensor {
        if cache.dtype() != DType::F32 || values.dtype() != DType::F32 {
            return crate::ops::cache_write_slice_assign::<Flex>(cache, start, values);
        }
        write_positions(cache, start, values)
    }

    fn ternary_linear(x: FlexTensor, weight: TernaryWeightPrimitive<Self>) -> FlexTensor {
        let q = quantize_input(x, "ternary_linear input");
        matmul_quantized_many(&q, std::slice::from_ref(&weight)).pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: FlexTensor, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FlexTensor> {
        let q = quantize_input(x, "ternary_linear_many input");
        matmul_quantized_many(&q, &weights)
    }

    fn quantize_activations(x: FlexTensor) -> QuantizedActivationsPrimitive<Self> {
        let q = quantize_input(x, "quantize_activations input");
        let (m, k) = (q.rows(), q.cols());
        let codes: Vec<i32> = (0..m).flat_map(|r| q.row(r)[..k].iter().map(|&c| c as i32)).collect();
        QuantizedActivationsPrimitive {
            codes: FlexTensor::new(Bytes::from_elems(codes), Layout::contiguous(Shape::new([m, k])), DType::I32),
            scales: f32_tensor(q.scales().to_vec(), Shape::new([m])),
        }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FlexTensor {
        let values = with_view(&weight, |view| view.dequantize());
        f32_tensor(values, Shape::new([weight.rows, weight.cols]))
    }
}
