//! The one bridge between host memory and `bitnet-kernels`.
//!
//! Every CPU-side implementation of the extension traits ends here with plain slices: Flex hands over its
//! tensors' buffers in place ([`crate::flex`]), candle reads its tensors back first ([`crate::candle`]). The
//! functions panic with a message naming the op on malformed input, burn's convention for backend ops (the
//! tensor-level wrappers check shapes before they reach a backend).

use bitnet_kernels::pool::for_each_rows;
use bitnet_kernels::quant::round_half_even_small;
use bitnet_kernels::{global_pool, ternary_matmul_many, BlockFormat, QuantizedActivations, TernaryLayout, TernaryView};

/// Whether the CPU kernel this process runs ([`bitnet_kernels::Kernel::selected`]) reads ternary weights in
/// `layout`: what the CPU backends read, and what a loaded packed record must be in (`PackedTernary`).
pub(crate) fn cpu_reads(layout: TernaryLayout) -> bool {
    layout.is_read_by(bitnet_kernels::Kernel::selected())
}

/// The smallest buffer (elements) that a row-wise host pass splits over the kernels' pool.
const PARALLEL_MIN_LEN: usize = 1 << 15;

/// Per-token int8 quantization of `x` (`[m, k]`, row-major), padded for ternary weights in `layout`.
pub(crate) fn quantize(x: &[f32], m: usize, k: usize, layout: TernaryLayout, what: &str) -> QuantizedActivations {
    QuantizedActivations::quantize_on_for(layout, x, m, k, global_pool()).unwrap_or_else(|e| panic!("{what}: {e}"))
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

/// RMSNorm of each row of `x` (rows of `gamma.len()`).
pub(crate) fn rms_norm(x: &[f32], gamma: &[f32], eps: f64) -> Vec<f32> {
    let d = gamma.len();
    assert!(d > 0 && x.len().is_multiple_of(d), "rms_norm: {} values in rows of {d}", x.len());
    let mut out = vec![0f32; x.len()];
    for_each_rows(global_pool(), &mut out, d, PARALLEL_MIN_LEN, &|first, out| {
        let rows = &x[first * d..first * d + out.len()];
        bitnet_kernels::transformer::rms_norm(rows, gamma, eps as f32, out).unwrap_or_else(|e| panic!("rms_norm: {e}"));
    });
    out
}

/// Fake quantization of rows of `k` values (see `TernaryBackend::fake_quantize_activations`), the tensor ops'
/// arithmetic in one pass: `s = 127 / max(max|x|, 1e-5)`, `x + λ · (clamp(round_half_even(x · s), -128, 127) / s
/// - x)`.
pub(crate) fn fake_quantize(x: &[f32], k: usize, lambda: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for_each_rows(global_pool(), &mut out, k, PARALLEL_MIN_LEN, &|first, out| {
        for (row, out) in x[first * k..].chunks_exact(k).zip(out.chunks_exact_mut(k)) {
            let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs())).max(crate::quant::SCALE_EPS);
            let s = 127.0 / absmax;
            for (o, &v) in out.iter_mut().zip(row) {
                // |v · s| <= 127 by the choice of s: in the range of the branch-free rounding.
                let q = round_half_even_small((v * s).clamp(-128.0, 127.0));
                *o = v + (q / s - v) * lambda;
            }
        }
    });
    out
}

/// Fake quantization of a whole weight tensor (see `TernaryBackend::fake_quantize_weights`): `g` the kernels'
/// absmean scale, `w + λ · (clamp(round_half_even(w · (1/g)), -1, 1) · g - w)`.
pub(crate) fn fake_quantize_weights(w: &[f32], lambda: f32) -> Vec<f32> {
    let g = bitnet_kernels::quant::absmean_scale(w);
    let inv = 1.0 / g;
    let mut out = vec![0f32; w.len()];
    for_each_rows(global_pool(), &mut out, 1, PARALLEL_MIN_LEN, &|first, out| {
        for (o, &v) in out.iter_mut().zip(&w[first..]) {
            // Clamped to ±2 first (the same codes after the clamp to ±1), inside the branch-free rounding's range.
            *o = v + (round_half_even_small((v * inv).clamp(-2.0, 2.0)).clamp(-1.0, 1.0) * g - v) * lambda;
        }
    });
    out
}

/// Rotary embedding of rows of `x` whose position is `row % t`.
pub(crate) fn rotary(x: &[f32], cos: &[f32], sin: &[f32], t: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    bitnet_kernels::transformer::rotate_half(x, cos, sin, t, &mut out).unwrap_or_else(|e| panic!("rotary: {e}"));
    out
}

/// Causal grouped-query attention; keys and values are `(buffer, offset, group stride)` with rows `d` apart.
pub(crate) fn causal_attention(
    q: &[f32],
    (keys, k_offset, k_stride): (&[f32], usize, usize),
    (values, v_offset, v_stride): (&[f32], usize, usize),
    [groups, len, d]: [usize; 3],
    t: usize,
    start: usize,
    scale: f64,
) -> Vec<f32> {
    use bitnet_kernels::transformer::{causal_attention, KvLayout};
    let mut out = vec![0f32; q.len()];
    // Keys and values may lie at different offsets of different buffers: give each its own view.
    let span = |offset: usize, stride: usize| offset..offset + (groups - 1) * stride + len * d;
    let (k, v) = (&keys[span(k_offset, k_stride)], &values[span(v_offset, v_stride)]);
    assert_eq!(k_stride, v_stride, "causal_attention: keys and values of different layouts");
    let layout = KvLayout { groups, len, offset: 0, group_stride: k_stride };
    causal_attention(q, k, v, layout, d, t, start, scale as f32, &mut out, global_pool())
        .unwrap_or_else(|e| panic!("causal_attention: {e}"));
    out
}

/// The causal attention probabilities in place: each row `r` of `scores` (`[rows, len]`, `q k^T` of a query at
/// position `start + r % t`) becomes `softmax(scores_r · scale)` over its visible positions `0..=start + r % t`
/// (max subtracted before `exp`) and 0 beyond them.
pub(crate) fn causal_softmax(scores: &mut [f32], len: usize, t: usize, start: usize, scale: f32) {
    assert!(len > 0 && t > 0 && scores.len().is_multiple_of(len) && start + t <= len, "causal_softmax: shapes");
    for_each_rows(global_pool(), scores, len, PARALLEL_MIN_LEN, &|first, rows| {
        for (r, row) in rows.chunks_exact_mut(len).enumerate() {
            let (visible, masked) = row.split_at_mut(start + (first + r) % t + 1);
            let max = visible.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
            let mut sum = 0f32;
            for s in visible.iter_mut() {
                *s = (*s * scale - max).exp();
                sum += *s;
            }
            let inverse = 1.0 / sum;
            visible.iter_mut().for_each(|s| *s *= inverse);
            masked.fill(0.0);
        }
    });
}

/// The softmax's backward in place, scaled: each row of `d_p` (`[rows, len]`, the gradient of the probabilities
/// `p`) becomes `p ⊙ (d_p - Σ p ⊙ d_p) · scale`, the gradient of the scores before their scaling.
pub(crate) fn softmax_gradient(p: &[f32], d_p: &mut [f32], len: usize, scale: f32) {
    assert!(len > 0 && p.len() == d_p.len() && p.len().is_multiple_of(len), "softmax_gradient: shapes");
    for_each_rows(global_pool(), d_p, len, PARALLEL_MIN_LEN, &|first, rows| {
        for (p, d) in p[first * len..].chunks_exact(len).zip(rows.chunks_exact_mut(len)) {
            let dot: f32 = p.iter().zip(d.iter()).map(|(&p, &d)| p * d).sum();
            for (d, &p) in d.iter_mut().zip(p) {
                *d = p * (*d - dot) * scale;
            }
        }
    });
}

/// `act(gate) * up`.
pub(crate) fn gated_activation(gate: &[f32], up: &[f32], act: bitnet_kernels::transformer::GateActivation) -> Vec<f32> {
    assert!(gate.len() == up.len(), "gated_activation: {} gate values, {} up values", gate.len(), up.len());
    let mut out = vec![0f32; gate.len()];
    // Elementwise: any split of the values gives the same result.
    for_each_rows(global_pool(), &mut out, 1, PARALLEL_MIN_LEN, &|first, out| {
        let range = first..first + out.len();
        bitnet_kernels::transformer::gated_activation(&gate[range.clone()], &up[range], act, out)
            .unwrap_or_else(|e| panic!("gated_activation: {e}"));
    });
    out
}

/// The gradients of `act(gate) ⊙ up` given the output's gradient `g`: `(d_gate, d_up)` (see
/// `TransformerBackend::gated_activation_gradients`), one pass.
pub(crate) fn gated_activation_gradients(
    gate: &[f32],
    up: &[f32],
    g: &[f32],
    act: bitnet_kernels::transformer::GateActivation,
) -> (Vec<f32>, Vec<f32>) {
    use bitnet_kernels::transformer::GateActivation;
    assert!(gate.len() == up.len() && gate.len() == g.len(), "gated_activation_gradients: lengths differ");
    let mut d_gate = vec![0f32; gate.len()];
    let mut d_up = vec![0f32; gate.len()];
    let items = d_gate.iter_mut().zip(d_up.iter_mut()).zip(gate.iter().zip(up).zip(g));
    match act {
        GateActivation::ReluSquared => {
            for ((dg, du), ((&x, &u), &g)) in items {
                let r = x.max(0.0);
                *dg = g * u * (r * 2.0);
                *du = g * (r * r);
            }
        }
        GateActivation::Silu => {
            for ((dg, du), ((&x, &u), &g)) in items {
                let s = 1.0 / (1.0 + (-x).exp());
                *dg = g * u * (s * ((1.0 - s) * x + 1.0));
                *du = g * (s * x);
            }
        }
    }
    (d_gate, d_up)
}

/// `x` (`[b, p, q, d]`, row-major) as `[b, q, p, d]`: rows of `d` copied to their new places.
pub(crate) fn swap_tokens_and_heads(x: &[f32], [b, p, q, d]: [usize; 4]) -> Vec<f32> {
    assert_eq!(x.len(), b * p * q * d, "swap_tokens_and_heads: {} values for [{b}, {p}, {q}, {d}]", x.len());
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    for (x, out) in x.chunks_exact(p * q * d).zip(out.chunks_exact_mut(p * q * d)) {
        for (i, row) in x.chunks_exact(d).enumerate() {
            let (pi, qi) = (i / q, i % q);
            let at = (qi * p + pi) * d;
            out[at..at + d].copy_from_slice(row);
        }
    }
    out
}

/// `max_j x_j + ln Σ_j exp(x_j - max)` of a non-empty row.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

/// The class of row `r`, checked against the vocabulary.
fn target_class(targets: &[i64], r: usize, vocab: usize) -> usize {
    let t = targets[r];
    usize::try_from(t)
        .ok()
        .filter(|&c| c < vocab)
        .unwrap_or_else(|| panic!("cross_entropy: class {t} of row {r} is outside 0..{vocab}"))
}

/// Cross-entropy `logsumexp(row) - row[target]` of each row of `logits` (rows of `vocab`).
pub(crate) fn cross_entropy(logits: &[f32], vocab: usize, targets: &[i64]) -> Vec<f32> {
    assert_eq!(logits.len(), targets.len() * vocab, "cross_entropy: logits and targets disagree");
    let mut losses = vec![0f32; targets.len()];
    for_each_rows(global_pool(), &mut losses, 1, PARALLEL_MIN_LEN / vocab.max(1), &|first, losses| {
        for (i, (loss, row)) in losses.iter_mut().zip(logits[first * vocab..].chunks_exact(vocab)).enumerate() {
            *loss = log_sum_exp(row) - row[target_class(targets, first + i, vocab)];
        }
    });
    losses
}

/// The cross-entropy's gradient `g_r (softmax(row) - onehot(target_r))` for each row of `logits`, one pass.
pub(crate) fn cross_entropy_gradient(logits: &[f32], vocab: usize, targets: &[i64], g: &[f32]) -> Vec<f32> {
    assert!(logits.len() == targets.len() * vocab && g.len() == targets.len(), "cross_entropy_gradient: shapes");
    let mut out = vec![0f32; logits.len()];
    for_each_rows(global_pool(), &mut out, vocab, PARALLEL_MIN_LEN, &|first, out| {
        for (i, (row, out)) in logits[first * vocab..].chunks_exact(vocab).zip(out.chunks_exact_mut(vocab)).enumerate()
        {
            let r = first + i;
            let lse = log_sum_exp(row);
            for (o, &v) in out.iter_mut().zip(row) {
                *o = g[r] * (v - lse).exp();
            }
            out[target_class(targets, r, vocab)] -= g[r];
        }
    });
    out
}

/// `y = (Wq q) · r / s` for int8 codes `[n, k]` and quantized activations `q` (`[m, k]`): `[m, n]`.
pub(crate) fn int8_gemv(q: &QuantizedActivations, codes: &[i8], [n, k]: [usize; 2], scales: &[f32]) -> Vec<f32> {
    let view = bitnet_kernels::Int8View::new(codes, n, k, k, scales).unwrap_or_else(|e| panic!("int8_linear: {e}"));
    let mut y = vec![0f32; q.rows() * n];
    bitnet_kernels::int8_gemv(view, q, &mut y, global_pool()).unwrap_or_else(|e| panic!("int8_linear: {e}"));
    y
}

/// `y = x W^T` for blocks of `format` (`[n, format.row_bytes(cols)]`) and quantized activations `q`
/// (`[m, cols]`): `[m, n]`.
pub(crate) fn block_gemv(
    q: &QuantizedActivations,
    blocks: &[u8],
    [n, cols]: [usize; 2],
    format: BlockFormat,
) -> Vec<f32> {
    let mut y = vec![0f32; q.rows() * n];
    format.gemv(blocks, [n, cols], q, &mut y, global_pool()).unwrap_or_else(|e| panic!("block_linear: {e}"));
    y
}
