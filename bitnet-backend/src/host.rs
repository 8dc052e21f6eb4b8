//! The one bridge between host memory and `bitnet-kernels`.
//!
//! Every CPU-side implementation of the extension traits ends here with plain slices: Flex hands over its
//! tensors' buffers in place ([`crate::flex`]), candle reads its tensors back first ([`crate::candle`]). The
//! functions panic with a message naming the op on malformed input, burn's convention for backend ops (the
//! tensor-level wrappers check shapes before they reach a backend).

use bitnet_kernels::{global_pool, ternary_matmul_many, QuantizedActivations, TernaryView};

/// Per-token int8 quantization of `x` (`[m, k]`, row-major).
pub(crate) fn quantize(x: &[f32], m: usize, k: usize, what: &str) -> QuantizedActivations {
    QuantizedActivations::quantize(x, m, k).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The activation codes of `q` as i32, `[m, k]` (without the kernels' row padding).
pub(crate) fn activation_codes(q: &QuantizedActivations) -> Vec<i32> {
    (0..q.rows()).flat_map(|r| q.row(r)[..q.cols()].iter().map(|&c| c as i32)).collect()
}

/// The ternary products `q W_i^T` of quantized activations with several weights, in one dispatch on the
/// kernels' pool: `[m, rows_i]` each.
pub(crate) fn ternary_products(q: &QuantizedActivations, weights: &[TernaryView<'_>]) -> Vec<Vec<f32>> {
    let m = q.rows();
    let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0f32; m * w.rows()]).collect();
    let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| y.as_mut_slice()).collect();
    ternary_matmul_many(weights, q, &mut ys, global_pool()).unwrap_or_else(|e| panic!("ternary_linear: {e}"));
    outs
}

/// A dense weight `[n, k]` in its stored precision.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DenseWeight<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bf16 bit patterns.
    Bf16(&'a [u16]),
    /// f16 bit patterns.
    F16(&'a [u16]),
}

/// `x W^T` (`x`: `[m, k]` f32) with the bitnet-kernels GEMV, reading `W` in place: `[m, n]`.
pub(crate) fn dense_gemv(x: &[f32], m: usize, weight: DenseWeight<'_>, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    let pool = global_pool();
    let result = match weight {
        DenseWeight::F32(w) => bitnet_kernels::f32_gemv(w, n, k, x, &mut y, pool),
        DenseWeight::Bf16(w) => bitnet_kernels::bf16_gemv(w, n, k, x, &mut y, pool),
        DenseWeight::F16(w) => bitnet_kernels::f16_gemv(w, n, k, x, &mut y, pool),
    };
    result.unwrap_or_else(|e| panic!("dense_linear: {e}"));
    y
}

/// Copies `values` (`[h, t, d]`) into `cache` (`[h, capacity, d]`, starting at element `offset` of `cache`) at
/// positions `start..start + t` of every head.
pub(crate) fn write_positions(
    cache: &mut [f32],
    offset: usize,
    [h, capacity, d]: [usize; 3],
    start: usize,
    values: &[f32],
) {
    let t = values.len() / (h * d).max(1);
    for head in 0..h {
        let at = offset + (head * capacity + start) * d;
        cache[at..at + t * d].copy_from_slice(&values[head * t * d..(head + 1) * t * d]);
    }
}
