//! The extension traits for burn's CPU backend, Flex: the `bitnet-kernels` SIMD and fused kernels run directly
//! on the tensors' buffers (zero-copy slices of the activations, the packed words, the scales, the dense head and
//! the KV cache), through [`crate::host`].

use crate::cache::{cache_write_slice_assign, CacheWriteBackend};
use crate::dense::{dense_linear_matmul, int8_linear_ops, DenseLinearBackend};
use crate::host::{self, DenseWeight};
use crate::ops::{
    assert_input_fits, float_tensor, QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive,
};
use crate::transformer::{
    causal_attention_gradients_ops, causal_attention_ops, cross_entropy_gradient_ops, cross_entropy_ops,
    gated_activation_gradients_ops, gated_activation_ops, rms_norm_ops, rotary_ops, GateActivation, TransformerBackend,
};
use bitnet_kernels::{BlockFormat, QuantizedActivations, TernaryLayout, TernaryView};
use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{Bytes, DType, FloatDType, IntDType, Shape, TensorMetadata};

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
    (int_contiguous(w.words.clone(), IntDType::I32), contiguous(w.scales.clone(), DType::F32, "ternary row scales"))
}

/// The int tensor `t` as a contiguous tensor of `dtype` (cast when it holds another int dtype).
fn int_contiguous(t: FlexTensor, dtype: IntDType) -> FlexTensor {
    let t = if t.dtype() == DType::from(dtype) {
        t
    } else {
        <Flex as burn::tensor::ops::IntTensorOps<Flex>>::int_cast(t, dtype)
    };
    contiguous(t, dtype.into(), "int input")
}

/// The kernel view of a packed weight over its host parts.
fn view_of<'a>(w: &TernaryWeightPrimitive<Flex>, (words, scales): &'a (FlexTensor, FlexTensor)) -> TernaryView<'a> {
    let words = words.as_slice::<i32>().expect("contiguous i32 tensor");
    let scales = scales.as_slice::<f32>().expect("contiguous f32 tensor");
    TernaryView::new_in(w.layout, w.rows, w.cols, bytemuck::cast_slice(words), scales)
        .unwrap_or_else(|e| panic!("ternary weight [{}, {}]: {e}", w.rows, w.cols))
}

/// Quantizes `x` (`[M, K]`, f32) per token on the host buffer, without copying `x`, padded for weights in `layout`.
fn quantize_input(x: FlexTensor, layout: TernaryLayout, what: &str) -> QuantizedActivations {
    let [m, k] = dims2(&x, what);
    let x = contiguous(x, DType::F32, what);
    host::quantize(x.as_slice::<f32>().expect("contiguous f32 tensor"), m, k, layout, what)
}

/// The ternary products of one input with several packed weights (all in one layout, as one model packs them),
/// quantizing it once.
fn linear_many(x: FlexTensor, weights: &[TernaryWeightPrimitive<Flex>], what: &str) -> Vec<FlexTensor> {
    let layout = weights.first().map_or(TernaryLayout::Bits2, |w| w.layout);
    assert!(weights.iter().all(|w| w.layout == layout), "{what}: weights in different ternary layouts");
    let q = quantize_input(x, layout, what);
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
    fn preferred_ternary_layout() -> TernaryLayout {
        TernaryLayout::selected()
    }

    fn reads_ternary_layout(layout: TernaryLayout) -> bool {
        host::cpu_reads(layout)
    }

    fn ternary_linear(x: FlexTensor, weight: TernaryWeightPrimitive<Self>) -> FlexTensor {
        linear_many(x, std::slice::from_ref(&weight), "ternary_linear").pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: FlexTensor, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FlexTensor> {
        linear_many(x, &weights, "ternary_linear_many")
    }

    fn fake_quantize_activations(x: FlexTensor, lambda: f32) -> FlexTensor {
        let shape = x.shape();
        match f32_contiguous(x.clone()) {
            Some(xs) => {
                let [_, k] = shape.dims::<2>();
                f32_tensor(host::fake_quantize(xs.as_slice::<f32>().expect("contiguous f32 tensor"), k, lambda), shape)
            }
            None => crate::quant::activation_fake_quant(crate::ops::float_tensor::<Flex, 2>(x), lambda)
                .into_primitive()
                .tensor(),
        }
    }

    fn fake_quantize_weights(w: FlexTensor, lambda: f32) -> FlexTensor {
        let shape = w.shape();
        match f32_contiguous(w.clone()) {
            Some(ws) => f32_tensor(
                host::fake_quantize_weights(ws.as_slice::<f32>().expect("contiguous f32 tensor"), lambda),
                shape,
            ),
            None => crate::quant::weight_fake_quant(crate::ops::float_tensor::<Flex, 2>(w), lambda)
                .into_primitive()
                .tensor(),
        }
    }

    fn quantize_activations(x: FlexTensor) -> QuantizedActivationsPrimitive<Self> {
        let q = quantize_input(x, TernaryLayout::Bits2, "quantize_activations");
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

/// Rows of a 16-bit weight widened to f32 at a time for burn's matmul (10 MiB of f32 at a 2560-wide head).
const WIDEN_ROWS: usize = 1024;

/// `x W^T` for a long input and a 16-bit `W` (`[n, k]`): burn's matmul on blocks of [`WIDEN_ROWS`] rows of
/// `W` widened to f32, the blocks' columns then joined. Widening a 2B model's head whole would allocate (and
/// fault in) 1.3 GB of f32 on every call; each block's products are the same dot products, so the result is
/// the same.
fn dense_linear_widening_blocks(x: FlexTensor, weight: FlexTensor, n: usize) -> FlexTensor {
    let x = float_tensor::<Flex, 2>(x);
    let weight = float_tensor::<Flex, 2>(weight);
    let blocks: Vec<_> = (0..n)
        .step_by(WIDEN_ROWS)
        .map(|start| {
            let rows = weight.clone().narrow(0, start, WIDEN_ROWS.min(n - start));
            x.clone().matmul(rows.cast(FloatDType::F32).transpose())
        })
        .collect();
    burn::tensor::Tensor::cat(blocks, 1).into_primitive().tensor()
}

impl DenseLinearBackend for Flex {
    fn dense_linear(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let [m, k] = dims2(&x, "dense_linear input");
        let [n, kw] = dims2(&weight, "dense_linear weight");
        assert!(k == kw, "dense_linear: input [{m}, {k}] does not match a weight of shape [{n}, {kw}]");
        if m > DENSE_GEMV_MAX_TOKENS {
            if weight.dtype() == DType::F32 || n == 0 {
                return dense_linear_matmul::<Flex>(x, weight);
            }
            return dense_linear_widening_blocks(x, weight, n);
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

    fn int8_linear(x: FlexTensor, codes: FlexTensor, scales: FlexTensor) -> FlexTensor {
        if codes.dtype() != DType::I8 || x.dtype() != DType::F32 || scales.dtype() != DType::F32 {
            return int8_linear_ops::<Flex>(x, codes, scales);
        }
        let [n, k] = dims2(&codes, "int8_linear codes");
        let q = quantize_input(x, TernaryLayout::Bits2, "int8_linear input");
        assert!(q.cols() == k, "int8_linear: input of width {} for codes [{n}, {k}]", q.cols());
        let codes = contiguous(codes, DType::I8, "int8_linear codes");
        let scales = contiguous(scales, DType::F32, "int8_linear scales");
        let y = host::int8_gemv(
            &q,
            codes.as_slice::<i8>().expect("contiguous i8 tensor"),
            [n, k],
            scales.as_slice::<f32>().expect("contiguous f32 tensor"),
        );
        f32_tensor(y, Shape::new([q.rows(), n]))
    }

    fn has_native_blocks(_device: &Self::Device) -> bool {
        true
    }

    fn block_linear(x: FlexTensor, blocks: FlexTensor, cols: usize, format: BlockFormat) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return crate::dense::block_linear_host::<Flex>(x, blocks, cols, format);
        }
        let [n, _] = dims2(&blocks, "block_linear blocks");
        let q = quantize_input(x, TernaryLayout::Bits2, "block_linear input");
        let blocks = contiguous(blocks, DType::U8, "block_linear blocks");
        let y = host::block_gemv(&q, blocks.as_slice::<u8>().expect("contiguous u8 tensor"), [n, cols], format);
        f32_tensor(y, Shape::new([q.rows(), n]))
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

/// A contiguous f32 view of `t`, or `None` for another dtype (the caller falls back to burn ops).
fn f32_contiguous(t: FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| contiguous(t, DType::F32, "f32 input"))
}

/// The most attention probabilities (`groups x rows x L`) the GEMM form of attention holds at once: 16 MiB.
const GEMM_ATTENTION_MAX_SCORES: usize = 1 << 22;

/// The f32 tensor `t` with a buffer of exactly its elements in row-major order (`storage` is the tensor), for
/// the host passes that work in place.
fn f32_dense(t: FlexTensor) -> FlexTensor {
    let t = contiguous(t, DType::F32, "f32 input");
    if t.layout().start_offset() == 0 && t.storage::<f32>().len() == t.shape().num_elements() {
        t
    } else {
        f32_tensor(t.as_slice::<f32>().expect("contiguous f32 tensor").to_vec(), t.shape())
    }
}

/// The causal attention probabilities `[groups, rows, L]` of f32 `q` (`[groups, rows, d]`) against `keys`
/// (`[groups, L, d]`): one burn-flex GEMM on the keys' transposed view, then one host pass that scales, masks
/// and normalizes each row in place.
fn causal_probabilities(q: FlexTensor, keys: FlexTensor, t: usize, start: usize, scale: f64) -> FlexTensor {
    let len = keys.shape().dims::<3>()[1];
    let mut p = f32_dense(Flex::float_matmul(q, Flex::float_swap_dims(keys, 1, 2)));
    host::causal_softmax(p.storage_mut::<f32>(), len, t, start, scale as f32);
    p
}

/// The element offset and group stride of a `[groups, len, d]` view whose rows are contiguous and `d` apart
/// (a prefix of a KV cache buffer), or `None` for another layout.
fn grouped_rows(t: &FlexTensor) -> Option<(usize, usize)> {
    let layout = t.layout();
    let [_, _, d] = t.shape().dims::<3>();
    match *layout.strides() {
        [g, r, 1] if r == d as isize && g >= 0 => Some((layout.start_offset(), g as usize)),
        _ => None,
    }
}

impl TransformerBackend for Flex {
    fn rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f64) -> FlexTensor {
        let shape = x.shape();
        match (f32_contiguous(x.clone()), f32_contiguous(gamma.clone())) {
            (Some(xs), Some(g)) => {
                let values = host::rms_norm(
                    xs.as_slice::<f32>().expect("contiguous f32 tensor"),
                    g.as_slice::<f32>().expect("contiguous f32 tensor"),
                    eps,
                );
                f32_tensor(values, shape)
            }
            _ => rms_norm_ops::<Flex>(x, gamma, eps),
        }
    }

    fn rotary(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        let shape = x.shape();
        let t = shape.dims::<4>()[2];
        match (f32_contiguous(x.clone()), f32_contiguous(cos.clone()), f32_contiguous(sin.clone())) {
            (Some(xs), Some(c), Some(s)) => {
                let values = host::rotary(
                    xs.as_slice::<f32>().expect("contiguous f32 tensor"),
                    c.as_slice::<f32>().expect("contiguous f32 tensor"),
                    s.as_slice::<f32>().expect("contiguous f32 tensor"),
                    t,
                );
                f32_tensor(values, shape)
            }
            _ => rotary_ops::<Flex>(x, cos, sin),
        }
    }

    fn causal_attention(
        q: FlexTensor,
        keys: FlexTensor,
        values: FlexTensor,
        t: usize,
        start: usize,
        scale: f64,
    ) -> FlexTensor {
        let f32_inputs = [&q, &keys, &values].iter().all(|x| x.dtype() == DType::F32);
        if !f32_inputs {
            return causal_attention_ops::<Flex>(q, keys, values, t, start, scale);
        }
        let shape = q.shape();
        let [groups, len, d] = keys.shape().dims::<3>();
        let rows = shape.dims::<3>()[1];
        // Several queries (training, prefill): two GEMMs around one softmax pass beat a dot product per
        // (query, key) pair, as long as the `[groups, rows, L]` probabilities stay small.
        if t > 1 && groups.saturating_mul(rows).saturating_mul(len) <= GEMM_ATTENTION_MAX_SCORES {
            return Flex::float_matmul(causal_probabilities(q, keys, t, start, scale), values);
        }
        let q = contiguous(q, DType::F32, "attention queries");
        // Keys and values are read in place when their rows are contiguous (a KV cache prefix), else copied.
        let same_layout = grouped_rows(&keys).is_some() && grouped_rows(&keys) == grouped_rows(&values);
        let (keys, values) = if same_layout { (keys, values) } else { (keys.to_contiguous(), values.to_contiguous()) };
        let (k_offset, k_stride) = grouped_rows(&keys).expect("contiguous rows");
        let (v_offset, v_stride) = grouped_rows(&values).expect("contiguous rows");
        let out = host::causal_attention(
            q.as_slice::<f32>().expect("contiguous f32 tensor"),
            (keys.storage::<f32>(), k_offset, k_stride),
            (values.storage::<f32>(), v_offset, v_stride),
            [groups, len, d],
            t,
            start,
            scale,
        );
        f32_tensor(out, shape)
    }

    /// The five products run as burn-flex GEMMs on strided views; the causal softmax and its backward are one
    /// host pass each over the `[groups, rows, L]` probabilities (no mask tensor, no broadcast).
    fn causal_attention_gradients(
        [q, keys, values]: [FlexTensor; 3],
        g: FlexTensor,
        t: usize,
        start: usize,
        scale: f64,
    ) -> [FlexTensor; 3] {
        let len = keys.shape().dims::<3>()[1];
        if [&q, &keys, &values, &g].iter().any(|x| x.dtype() != DType::F32) || len == 0 || t == 0 {
            return causal_attention_gradients_ops::<Flex>([q, keys, values], g, t, start, scale);
        }
        let transposed = |x: &FlexTensor| Flex::float_swap_dims(x.clone(), 1, 2);
        let p = causal_probabilities(q.clone(), keys.clone(), t, start, scale);
        let d_values = Flex::float_matmul(transposed(&p), g.clone());
        let mut d_scores = f32_dense(Flex::float_matmul(g, transposed(&values)));
        host::softmax_gradient(p.storage::<f32>(), d_scores.storage_mut::<f32>(), len, scale as f32);
        let d_q = Flex::float_matmul(d_scores.clone(), keys);
        let d_keys = Flex::float_matmul(transposed(&d_scores), q);
        [d_q, d_keys, d_values]
    }

    fn gated_activation(gate: FlexTensor, up: FlexTensor, act: GateActivation) -> FlexTensor {
        let shape = gate.shape();
        match (f32_contiguous(gate.clone()), f32_contiguous(up.clone())) {
            (Some(g), Some(u)) => {
                let values = host::gated_activation(
                    g.as_slice::<f32>().expect("contiguous f32 tensor"),
                    u.as_slice::<f32>().expect("contiguous f32 tensor"),
                    act,
                );
                f32_tensor(values, shape)
            }
            _ => gated_activation_ops::<Flex>(gate, up, act),
        }
    }

    fn gated_activation_gradients(
        gate: FlexTensor,
        up: FlexTensor,
        g: FlexTensor,
        act: GateActivation,
    ) -> [FlexTensor; 2] {
        let shape = gate.shape();
        match (f32_contiguous(gate.clone()), f32_contiguous(up.clone()), f32_contiguous(g.clone())) {
            (Some(x), Some(u), Some(gs)) => {
                let (d_gate, d_up) = host::gated_activation_gradients(
                    x.as_slice::<f32>().expect("contiguous f32 tensor"),
                    u.as_slice::<f32>().expect("contiguous f32 tensor"),
                    gs.as_slice::<f32>().expect("contiguous f32 tensor"),
                    act,
                );
                [f32_tensor(d_gate, shape.clone()), f32_tensor(d_up, shape)]
            }
            _ => gated_activation_gradients_ops::<Flex>(gate, up, g, act),
        }
    }

    fn swap_tokens_and_heads(x: FlexTensor) -> FlexTensor {
        let [b, p, q, d] = x.shape().dims::<4>();
        match f32_contiguous(x.clone()) {
            Some(xs) if d > 0 => f32_tensor(
                host::swap_tokens_and_heads(xs.as_slice::<f32>().expect("contiguous f32 tensor"), [b, p, q, d]),
                Shape::new([b, q, p, d]),
            ),
            _ => <Flex as burn::tensor::ops::FloatTensorOps<Flex>>::float_swap_dims(x, 1, 2),
        }
    }

    fn cross_entropy(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        let [rows, vocab] = dims2(&logits, "cross_entropy logits");
        match f32_contiguous(logits.clone()) {
            Some(x) if vocab > 0 => {
                let targets = int_contiguous(targets, IntDType::I64);
                let losses = host::cross_entropy(
                    x.as_slice::<f32>().expect("contiguous f32 tensor"),
                    vocab,
                    targets.as_slice::<i64>().expect("contiguous i64 tensor"),
                );
                f32_tensor(losses, Shape::new([rows]))
            }
            _ => cross_entropy_ops::<Flex>(logits, targets),
        }
    }

    fn cross_entropy_gradient(logits: FlexTensor, targets: FlexTensor, g: FlexTensor) -> FlexTensor {
        let shape = logits.shape();
        let [_, vocab] = dims2(&logits, "cross_entropy logits");
        match (f32_contiguous(logits.clone()), f32_contiguous(g.clone())) {
            (Some(x), Some(gs)) if vocab > 0 => {
                let targets = int_contiguous(targets, IntDType::I64);
                let gradient = host::cross_entropy_gradient(
                    x.as_slice::<f32>().expect("contiguous f32 tensor"),
                    vocab,
                    targets.as_slice::<i64>().expect("contiguous i64 tensor"),
                    gs.as_slice::<f32>().expect("contiguous f32 tensor"),
                );
                f32_tensor(gradient, shape)
            }
            _ => cross_entropy_gradient_ops::<Flex>(logits, targets, g),
        }
    }
}
