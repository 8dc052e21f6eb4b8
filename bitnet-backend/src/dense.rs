//! [`DenseLinearBackend`]: `y = x W^T` for the output head of a BitNet model, either a dense weight kept in its
//! stored precision (f32, bf16 or f16) or a per-row int8 quantization of it (W8A8).
//!
//! Decode multiplies one token by the whole head, so it is a GEMV bound by the bytes of `W`: reading a bf16 head
//! in place streams half the bytes of a widened f32 copy, and the values are exactly the checkpoint's; an int8
//! head streams half of that again, at the cost of rounding the head to 8 bits per row and the activations to 8
//! bits per token (`y = (sum_k Wq q) · r_n / s`); a block-quantized head ([`BlockFormat`]: ggml's 6.5625-bit
//! Q6_K, as GGUF files ship their `token_embd`, or the 4.5-bit Q4) streams 0.82 or 0.56 of that.

use crate::ops::float_tensor;
use crate::quant::activation_quant_dequant;
use bitnet_kernels::BlockFormat;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};

/// A burn backend with a dense linear op that reads its weight in the weight's own dtype.
pub trait DenseLinearBackend: Backend {
    /// `y = x W^T` for a dense `W` (`[N, K]`, f32, bf16 or f16) and f32 `x` (`[M, K]`); returns `[M, N]` in f32.
    /// The default is burn's matmul on `W` cast to f32; CPU backends override it with a streaming GEMV.
    fn dense_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        dense_linear_matmul::<Self>(x, weight)
    }

    /// `y[m, n] = (sum_k Wq[n,k] q[m,k]) · r_n / s_m` for int8 codes `Wq` (`[N, K]`, values in [-127, 127]),
    /// per-row scales `r` (`[N]`) and `x` (`[M, K]`, f32) quantized per token to int8 (`q`, `s`, as the ternary
    /// ops quantize). The default dequantizes both with burn ops and multiplies in f32; the CPU runs exact
    /// integer dot products.
    fn int8_linear(x: FloatTensor<Self>, codes: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self> {
        int8_linear_ops::<Self>(x, codes, scales)
    }

    /// Whether [`DenseLinearBackend::block_linear`] reads blocks where they live on `device`. The defaults read
    /// the blocks back to the host on every call (correct anywhere, fast nowhere), so models keep
    /// block-quantized weights only where this is true and a dense copy elsewhere.
    fn has_native_blocks(_device: &Self::Device) -> bool {
        false
    }

    /// `y = x W^T` for `W` in the block format `format` (u8, `[N, format.row_bytes(K)]`; see
    /// [`bitnet_kernels::block_format`]) and `x` (`[M, K]`, f32) quantized per token to int8. The default
    /// computes on the host (see [`DenseLinearBackend::has_native_blocks`]).
    fn block_linear(
        x: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        cols: usize,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        block_linear_host::<Self>(x, blocks, cols, format)
    }

    /// Rows `ids` (`[T]`) of blocks of `format` (`[N, format.row_bytes(K)]`), dequantized to f32 `[T, K]`: the
    /// embedding lookup of a block-quantized table. The default selects the rows on the device and dequantizes
    /// them on the host.
    fn block_rows(
        blocks: IntTensor<Self>,
        ids: IntTensor<Self>,
        cols: usize,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        let device = Self::int_device(&blocks);
        let rows =
            Tensor::<Self, 2, Int>::from_primitive(blocks).select(0, Tensor::<Self, 1, Int>::from_primitive(ids));
        let [t, _] = rows.dims();
        let data = rows.into_data();
        let mut out = vec![0f32; t * cols];
        format
            .dequantize(host_bytes(&data, "block_rows blocks"), [t, cols], &mut out)
            .unwrap_or_else(|e| panic!("block_rows: {e}"));
        Tensor::<Self, 2>::from_data(TensorData::new(out, [t, cols]), &device).into_primitive().tensor()
    }
}

/// The bytes of a u8 tensor's data.
fn host_bytes<'a>(data: &'a TensorData, what: &str) -> &'a [u8] {
    assert!(data.dtype == DType::U8, "{what}: expected u8 blocks, got {:?}", data.dtype);
    data.as_bytes()
}

/// [`DenseLinearBackend::block_linear`] on the host: reads `x` and the blocks back, runs the CPU kernel, uploads
/// `y`.
pub(crate) fn block_linear_host<B: Backend>(
    x: FloatTensor<B>,
    blocks: IntTensor<B>,
    cols: usize,
    format: BlockFormat,
) -> FloatTensor<B> {
    let x = float_tensor::<B, 2>(x);
    let device = x.device();
    let [m, k] = x.dims();
    assert!(k == cols, "block_linear: input [{m}, {k}] for blocks of {cols} columns");
    let blocks = Tensor::<B, 2, Int>::from_primitive(blocks);
    let [n, _] = blocks.dims();
    let xs = x.cast(FloatDType::F32).into_data().into_vec::<f32>().unwrap_or_else(|e| panic!("block_linear: {e:?}"));
    let data = blocks.into_data();
    let q = bitnet_kernels::QuantizedActivations::quantize(&xs, m, k).unwrap_or_else(|e| panic!("block_linear: {e}"));
    let mut y = vec![0f32; m * n];
    format
        .gemv(host_bytes(&data, "block_linear blocks"), [n, cols], &q, &mut y, bitnet_kernels::global_pool())
        .unwrap_or_else(|e| panic!("block_linear: {e}"));
    Tensor::<B, 2>::from_data(TensorData::new(y, [m, n]), &device).into_primitive().tensor()
}

/// [`DenseLinearBackend::int8_linear`] with burn ops.
pub(crate) fn int8_linear_ops<B: Backend>(
    x: FloatTensor<B>,
    codes: IntTensor<B>,
    scales: FloatTensor<B>,
) -> FloatTensor<B> {
    let x = activation_quant_dequant(float_tensor::<B, 2>(x));
    let w = Tensor::<B, 2, Int>::from_primitive(codes).float() * float_tensor::<B, 1>(scales).unsqueeze_dim(1);
    x.matmul(w.transpose()).into_primitive().tensor()
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

/// `y = x W^T` for a per-row int8 `W` (codes `[N, K]` in [-127, 127], scales `[N]`) with per-token int8
/// activations (see [`DenseLinearBackend::int8_linear`]).
///
/// # Panics
/// If the widths differ, naming both shapes.
pub fn int8_linear<B: DenseLinearBackend>(
    x: Tensor<B, 2>,
    codes: &Tensor<B, 2, Int>,
    scales: &Tensor<B, 1>,
) -> Tensor<B, 2> {
    let ([m, k], [n, kw]) = (x.dims(), codes.dims());
    assert!(k == kw && scales.dims() == [n], "int8_linear: input [{m}, {k}] does not match codes [{n}, {kw}]");
    float_tensor(B::int8_linear(
        x.into_primitive().tensor(),
        codes.clone().into_primitive(),
        scales.clone().into_primitive().tensor(),
    ))
}

/// Checks that blocks `[n, bytes]` of `format` hold rows of `cols` weights.
fn check_blocks(what: &str, [n, bytes]: [usize; 2], cols: usize, format: BlockFormat) {
    let want = format.row_bytes(cols).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(bytes == want, "{what}: {} blocks [{n}, {bytes}] do not hold {cols} columns", format.name());
}

/// `y = x W^T` for `W` in a block format (u8 `[N, format.row_bytes(cols)]`) with per-token int8 activations (see
/// [`DenseLinearBackend::block_linear`]).
///
/// # Panics
/// If `x` is not `cols` wide or the blocks do not hold `cols` columns.
pub fn block_linear<B: DenseLinearBackend>(
    x: Tensor<B, 2>,
    blocks: &Tensor<B, 2, Int>,
    cols: usize,
    format: BlockFormat,
) -> Tensor<B, 2> {
    let [m, k] = x.dims();
    assert!(k == cols, "block_linear: input [{m}, {k}] for blocks of {cols} columns");
    check_blocks("block_linear", blocks.dims(), cols, format);
    float_tensor(B::block_linear(x.into_primitive().tensor(), blocks.clone().into_primitive(), cols, format))
}

/// Rows `ids` of blocks of `format` (u8 `[N, format.row_bytes(cols)]`) as f32 `[T, cols]` (see
/// [`DenseLinearBackend::block_rows`]).
pub fn block_rows<B: DenseLinearBackend>(
    blocks: &Tensor<B, 2, Int>,
    ids: Tensor<B, 1, Int>,
    cols: usize,
    format: BlockFormat,
) -> Tensor<B, 2> {
    check_blocks("block_rows", blocks.dims(), cols, format);
    float_tensor(B::block_rows(blocks.clone().into_primitive(), ids.into_primitive(), cols, format))
}
