//! Fused f32 kernels for the non-ternary ops of a transformer block: RMSNorm, rotary embedding, causal
//! grouped-query attention and the gated FFN activation. Each replaces a chain of tensor-framework ops
//! (allocations and passes over memory per op) by one pass, which matters in decode, where these ops run on a
//! single token between the large ternary products.
//!
//! Reductions keep a fixed set of lanes summed in a fixed order (the per-ISA copies are the same code, see
//! `multiversion`), so every kernel gives identical results on every ISA and any thread count.

use crate::dispatch::Kernel;
use crate::error::{ensure_eq, ensure_len, KernelError, Result};
use crate::gemv::OutPtr;
use crate::pool::{chunk_count, ThreadPool};
use crate::prefetch::prefetch_lines;
use crate::quant::{round_half_even_small, round_half_even_small_i32};
use lane_sums::LaneSums;

mod lane_sums;

const LANES: usize = 16;

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    crate::dense::dot_lanes::<LANES>(a, b)
}
multiversion!(dot, dot_body, (a: &[f32], b: &[f32]) -> f32);

fn selected() -> Result<Kernel> {
    Kernel::selected().checked()
}

/// RMSNorm of each `d`-wide row of `x`: `out = x / sqrt(sum(x²) / d + eps) * gamma`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) -> Result<()> {
    let d = gamma.len();
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(KernelError::ShapeMismatch {
            what: "rms_norm input (a multiple of the width)",
            expected: d,
            got: x.len(),
        });
    }
    ensure_len("rms_norm output", x.len(), out.len())?;
    let kernel = selected()?;
    for (row, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let rms = (dot::call(kernel, row, row) / d as f32 + eps).sqrt();
        normalize::call(kernel, row, gamma, rms, dst);
    }
    Ok(())
}

/// `out = x / rms * gamma`, element by element (the per-ISA copies divide in vectors, with the same results).
#[inline(always)]
fn normalize_body(x: &[f32], gamma: &[f32], rms: f32, out: &mut [f32]) {
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(gamma) {
        *o = v / rms * g;
    }
}
multiversion!(normalize, normalize_body, (x: &[f32], gamma: &[f32], rms: f32, out: &mut [f32]) -> ());

/// Rotary embedding in the rotate-half layout: `x` holds rows of `d` values whose position index (the row of
/// `cos` / `sin`, each `[t, d]`) is `row % t`; `out = x * cos + rotate_half(x) * sin`, with
/// `rotate_half([x1, x2]) = [-x2, x1]` over the two halves of a row.
pub fn rotate_half(x: &[f32], cos: &[f32], sin: &[f32], t: usize, out: &mut [f32]) -> Result<()> {
    let d = cos.len().checked_div(t).unwrap_or(0);
    if d == 0 || !d.is_multiple_of(2) || cos.len() != t * d || sin.len() != cos.len() || !x.len().is_multiple_of(d) {
        return Err(KernelError::ShapeMismatch {
            what: "rotary tables [t, d] and rows",
            expected: t * d,
            got: cos.len(),
        });
    }
    ensure_len("rotary output", x.len(), out.len())?;
    let half = d / 2;
    for (r, (row, dst)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let p = (r % t) * d;
        let (c, s) = (&cos[p..p + d], &sin[p..p + d]);
        for i in 0..half {
            dst[i] = row[i] * c[i] + -row[i + half] * s[i];
            dst[i + half] = row[i + half] * c[i + half] + row[i] * s[i + half];
        }
    }
    Ok(())
}

/// Where the keys and values of each group lie in their buffers.
#[derive(Debug, Clone, Copy)]
pub struct KvLayout {
    /// Key/value groups (batch x key/value heads).
    pub groups: usize,
    /// Positions per group.
    pub len: usize,
    /// Element offset of group `g`'s first row: `offset + g * group_stride`; rows are `d` apart.
    pub offset: usize,
    /// Elements between groups.
    pub group_stride: usize,
}

/// Causal grouped-query attention. `q` is `[groups, rows, d]` with `rows = rep * t` (the `rep` query heads of a
/// group stacked, head-major); query row `i` sits at position `start + i % t` and sees the keys of positions
/// `0..=start + i % t`. `keys` and `values` hold each group's `len` rows as `layout` says. Per row:
/// `out = softmax(q k^T * scale) v` (max subtracted before `exp`, this module's own, as in SiLU).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    layout: KvLayout,
    d: usize,
    t: usize,
    start: usize,
    scale: f32,
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    causal_attention_with(selected()?, q, keys, values, layout, d, t, start, scale, out, pool)
}

/// [`causal_attention`] with a given kernel, which the caller has checked is available.
#[allow(clippy::too_many_arguments)]
fn causal_attention_with(
    kernel: Kernel,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    layout: KvLayout,
    d: usize,
    t: usize,
    start: usize,
    scale: f32,
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let KvLayout { groups, len, offset, group_stride } = layout;
    if d == 0 || t == 0 || groups == 0 {
        return Err(KernelError::ShapeMismatch { what: "attention sizes", expected: 1, got: 0 });
    }
    let rows = q.len() / (groups * d);
    ensure_eq("attention query length", groups * rows * d, q.len())?;
    ensure_len("attention output", q.len(), out.len())?;
    if !rows.is_multiple_of(t) || start + t > len {
        return Err(KernelError::ShapeMismatch { what: "attention key positions", expected: start + t, got: len });
    }
    let last = offset + (groups - 1) * group_stride + len * d;
    if keys.len() < last || values.len() < last {
        return Err(KernelError::ShapeMismatch {
            what: "attention key/value buffers",
            expected: last,
            got: keys.len(),
        });
    }
    // Tasks: blocks of up to `QUERY_BLOCK` consecutive query rows of one group (in decode, the `rep` heads that
    // share a key/value head), so each key and value row is read once per block rather than once per row.
    let blocks = rows.div_ceil(QUERY_BLOCK);
    let tasks = groups * blocks;
    // Work per task grows with the context: split only when there is enough of it.
    let chunks = chunk_count(pool, tasks, if len * d >= PARALLEL_MIN_SCORES { 2 } else { usize::MAX });
    let dst = OutPtr(out.as_mut_ptr());
    pool.run(chunks, &|chunk| {
        let mut scores = vec![0f32; 2 * QUERY_BLOCK * len];
        let mut acc = vec![0f32; QUERY_BLOCK * d];
        for task in crate::pool::split_range(tasks, chunks, chunk, 1) {
            let (g, first) = (task / blocks, task % blocks * QUERY_BLOCK);
            let n = QUERY_BLOCK.min(rows - first);
            let row0 = g * rows + first;
            let base = offset + g * group_stride;
            let block = QueryBlock {
                q: &q[row0 * d..(row0 + n) * d],
                keys: &keys[base..base + len * d],
                values: &values[base..base + len * d],
                d,
                visible: std::array::from_fn(|r| start + (first + r.min(n - 1)) % t + 1),
                scale,
            };
            if n == QUERY_BLOCK {
                attend_block::call(kernel, &block, &mut scores, &mut acc);
            } else {
                for r in 0..n {
                    attend_row::call(kernel, &block.row(r), &mut scores, &mut acc[r * d..(r + 1) * d]);
                }
            }
            for (k, &v) in acc[..n * d].iter().enumerate() {
                // SAFETY: `row0 * d + k < (g * rows + rows) * d <= out.len()`; each task belongs to one chunk.
                unsafe { dst.write(row0 * d + k, v) };
            }
        }
    });
    Ok(())
}

/// Context size (`len * d`: positions times head width) from which attention is split over the pool: at 32
/// positions of 128-wide heads a decode step's attention takes ~20 us on one core, a dispatch a few.
const PARALLEL_MIN_SCORES: usize = 1 << 12;
/// Bytes ahead of the key or value row being read at which attention prefetches the cache (8 rows of a
/// 128-wide head): a decode step reads each layer's cache once, from DRAM once the context outgrows the caches.
const CACHE_AHEAD: usize = 4096;
/// Query rows attended together against each key and value row.
const QUERY_BLOCK: usize = 4;

/// `R` query rows of one group and the keys and values they attend to.
#[derive(Clone, Copy)]
struct QueryBlock<'a, const R: usize> {
    /// `[R, d]` query rows.
    q: &'a [f32],
    /// `[len, d]` key and value rows of the group.
    keys: &'a [f32],
    values: &'a [f32],
    d: usize,
    /// Positions each row sees: `0..visible[r]`, at most `len`.
    visible: [usize; R],
    scale: f32,
}

impl<'a, const R: usize> QueryBlock<'a, R> {
    /// Row `r` of the block alone.
    fn row(&self, r: usize) -> QueryBlock<'a, 1> {
        let QueryBlock { q, keys, values, d, visible, scale } = *self;
        QueryBlock { q: &q[r * d..(r + 1) * d], keys, values, d, visible: [visible[r]], scale }
    }
}

#[inline(always)]
fn attend_block_body(block: &QueryBlock<'_, QUERY_BLOCK>, scratch: &mut [f32], out: &mut [f32]) {
    attend_rows::<QUERY_BLOCK, 16, lane_sums::Portable>(block, scratch, out)
}
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn attend_block_avx2(block: &QueryBlock<'_, QUERY_BLOCK>, scratch: &mut [f32], out: &mut [f32]) {
    attend_rows::<QUERY_BLOCK, 16, lane_sums::Avx2>(block, scratch, out)
}
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn attend_block_avx512(block: &QueryBlock<'_, QUERY_BLOCK>, scratch: &mut [f32], out: &mut [f32]) {
    attend_rows::<QUERY_BLOCK, 64, lane_sums::Avx512>(block, scratch, out)
}
multiversion!(attend_block, [attend_block_body, attend_block_avx2, attend_block_avx512], (block: &QueryBlock<'_, QUERY_BLOCK>, scratch: &mut [f32], out: &mut [f32]) -> ());

#[inline(always)]
fn attend_row_body(block: &QueryBlock<'_, 1>, scratch: &mut [f32], out: &mut [f32]) {
    attend_rows::<1, 64, lane_sums::Portable>(block, scratch, out)
}
multiversion!(attend_row, attend_row_body, (block: &QueryBlock<'_, 1>, scratch: &mut [f32], out: &mut [f32]) -> ());

/// `out[r] = softmax(q[r] k^T * scale) v` over each row's visible positions, `out` `[R, d]`, `scratch` at least
/// `2 * R * max(visible)` values. Each row's arithmetic is that of a lone row: the crate's `LANES`-lane dot
/// product per score (its lanes summed as `S` does it, in `reduce_f32`'s order), max subtracted before `exp`, then
/// `out += (e / sum) v` position by position. The block only shares the reads: a key or value row comes from
/// memory once for all the rows of the block, and the whole block runs inside one ISA-specific copy (no call per
/// dot product). `CHUNK` outputs of every row are held in registers while the values are summed.
#[inline(always)]
fn attend_rows<const R: usize, const CHUNK: usize, S: LaneSums>(
    block: &QueryBlock<'_, R>,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let QueryBlock { q, keys, values, d, visible, scale } = *block;
    let len = visible.iter().copied().max().unwrap_or(0);
    let shared = visible.iter().copied().min().unwrap_or(0);
    let (scores, by_position) = scratch[..2 * R * len].split_at_mut(R * len);
    let q_rows: [&[f32]; R] = std::array::from_fn(|r| &q[r * d..(r + 1) * d]);
    for (j, key) in keys.chunks_exact(d).take(len).enumerate() {
        prefetch_lines(key.as_ptr().cast(), CACHE_AHEAD, d.div_ceil(16));
        let dots = S::sums(&crate::dense::lane_sums_rows::<LANES, R>(q_rows, key));
        for (r, (&seen, &dot)) in visible.iter().zip(&dots).enumerate() {
            if j < seen {
                scores[r * len + j] = dot * scale;
            }
        }
    }
    for (r, &seen) in visible.iter().enumerate() {
        let row = &mut scores[r * len..r * len + seen];
        let max = max_of(row);
        // The exponentials in one pass (vectorized, see `exp`), then their sum in position order.
        for s in row.iter_mut() {
            *s = exp(*s - max);
        }
        let mut sum = 0f32;
        for &s in row.iter() {
            sum += s;
        }
        for s in row.iter_mut() {
            *s /= sum;
        }
        // The positions every row sees, position-major: `[shared, R]`.
        for (j, &p) in row[..shared].iter().enumerate() {
            by_position[j * R + r] = p;
        }
    }
    let by_position = &by_position[..shared * R];
    let mut c = 0;
    while c < d {
        let width = CHUNK.min(d - c);
        let mut acc = if width == CHUNK {
            shared_values::<R, CHUNK>(by_position, values, d, c)
        } else {
            let mut acc = [[0f32; CHUNK]; R];
            for (p, value) in by_position.chunks_exact(R).zip(values.chunks_exact(d)) {
                for (a, &pr) in acc.iter_mut().zip(p) {
                    for (a, &v) in a.iter_mut().zip(&value[c..c + width]) {
                        *a += pr * v;
                    }
                }
            }
            acc
        };
        // Positions past the shortest row's end, for the rows that see them.
        for (r, a) in acc.iter_mut().enumerate() {
            let row = &scores[r * len..r * len + visible[r]];
            for (&p, value) in row.iter().zip(values.chunks_exact(d)).skip(shared) {
                for (a, &v) in a.iter_mut().zip(&value[c..c + width]) {
                    *a += p * v;
                }
            }
            out[r * d + c..r * d + c + width].copy_from_slice(&a[..width]);
        }
        c += width;
    }
}

/// `acc[r] = sum_j p[j][r] v_j[c..c + CHUNK]` over the positions of `p` (`[positions, R]`), in position order: the
/// whole chunk's sums stay in registers, each value row is read once for all the rows.
#[inline(always)]
fn shared_values<const R: usize, const CHUNK: usize>(
    p: &[f32],
    values: &[f32],
    d: usize,
    c: usize,
) -> [[f32; CHUNK]; R] {
    let mut acc = [[0f32; CHUNK]; R];
    for (p, value) in p.chunks_exact(R).zip(values.chunks_exact(d)) {
        if c == 0 {
            prefetch_lines(value.as_ptr().cast(), CACHE_AHEAD, d.div_ceil(16));
        }
        let (Ok(p), Ok(v)) = (<&[f32; R]>::try_from(p), <&[f32; CHUNK]>::try_from(&value[c..c + CHUNK])) else {
            continue;
        };
        for (a, &pr) in acc.iter_mut().zip(p) {
            for l in 0..CHUNK {
                a[l] += pr * v[l];
            }
        }
    }
    acc
}

/// The largest of `row`'s values that is not NaN (negative infinity when there is none): the value a fold with
/// `f32::max` gives, up to the sign of a zero (which `exp(s - max)` does not see), found in `LANES` lanes.
#[inline(always)]
fn max_of(row: &[f32]) -> f32 {
    let (chunks, tail) = row.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for l in 0..LANES {
            lanes[l] = if chunk[l] > lanes[l] { chunk[l] } else { lanes[l] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &s in lanes.iter().chain(tail) {
        max = if s > max { s } else { max };
    }
    max
}

/// The activation of a gated FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    /// `relu(x)²`.
    ReluSquared,
    /// `x * sigmoid(x)`.
    Silu,
}

/// `out = act(gate) * up`, elementwise. SiLU's `sigmoid(g) = 1 / (1 + e^-g)` takes `e^-g` from this module's own
/// `exp`, so every ISA gives the same bits.
pub fn gated_activation(gate: &[f32], up: &[f32], act: GateActivation, out: &mut [f32]) -> Result<()> {
    ensure_eq("gate and up lengths", gate.len(), up.len())?;
    ensure_len("gated activation output", gate.len(), out.len())?;
    match act {
        GateActivation::ReluSquared => {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                let r = g.max(0.0);
                *o = r * r * u;
            }
        }
        GateActivation::Silu => silu::call(selected()?, gate, up, out),
    }
    Ok(())
}

#[inline(always)]
fn silu_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}
multiversion!(silu, silu_body, (gate: &[f32], up: &[f32], out: &mut [f32]) -> ());

/// `e^x` in f32 from operations the compiler vectorizes (no call into the C library, whose `expf` runs one value
/// at a time), with the same bits on every ISA: IEEE adds, multiplies and fused multiply-adds in a fixed order.
/// Fast only inside the per-ISA copies (`multiversion!`), whose targets have FMA: compiled for baseline x86-64,
/// each `mul_add` is a call to the C library's `fmaf`, which is why the training-side softmax and SiLU gradient in
/// `bitnet-backend` (plain functions) keep the C library's `expf`.
///
/// `x` is clamped to `[-86.5, 89]` (NaN stays NaN): above `ln(f32::MAX) ≈ 88.72` the result is infinity, as
/// `e^x` overflows, and below -86.5 it is `e^-86.5 ≈ 2.7e-38` instead of a smaller number at the bottom of the
/// normal range. Then `x = n ln 2 + r` with `n = round(x log2 e)` (as a float and as an integer, through
/// `quant`'s branch-free roundings: `x + 1.5 · 2^23` holds `n` in its mantissa) and `r = x - n ln 2` (Cody and Waite: `ln 2` in two parts, the first with few enough
/// bits that `n · LN2_HI` is exact), `|r| <= ln 2 / 2` up to the rounding of `x log2 e`. `e^r ≈ 1 + r + r² P(r)`,
/// `P` the degree-5 minimax polynomial of Cephes' `expf`, and `e^x = e^r · 2^(n-1) · 2`, with `2^(n-1)` built
/// from its exponent bits (`n - 1` in `[-126, 127]`, so it is a normal f32; the last doubling overflows to
/// infinity exactly when `e^x` does). Within 2 ulp of `e^x` (`exp_stays_within_two_ulp` checks).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375 = 355 / 512
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 - LN2_HI
    const P: [f32; 6] = [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
    let x = x.clamp(-86.5, 89.0);
    let n = round_half_even_small(x * LOG2_E);
    // `n` is in -125..=128 here; `n - 1 + 127` is the biased exponent of `2^(n-1)`.
    let exponent = round_half_even_small_i32(x * LOG2_E).wrapping_add(126);
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(r, c);
    }
    let e_r = p.mul_add(r * r, r) + 1.0;
    e_r * f32::from_bits((exponent as u32) << 23) * 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_matches_a_naive_softmax_and_is_causal() {
        let (groups, rep, t, d, start) = (2, 3, 4, 8, 5);
        let len = start + t;
        let rows = rep * t;
        let cap = 12; // the cache holds more positions than are filled
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 50.0;
        let q: Vec<f32> = (0..groups * rows * d).map(value).collect();
        let kv: Vec<f32> = (0..groups * cap * d).map(|i| value(i + 7)).collect();
        let vv: Vec<f32> = (0..groups * cap * d).map(|i| value(i + 13)).collect();
        let layout = KvLayout { groups, len, offset: 0, group_stride: cap * d };
        let mut out = vec![0f32; q.len()];
        for threads in 1..=3 {
            let pool = ThreadPool::new(threads).unwrap();
            causal_attention(&q, &kv, &vv, layout, d, t, start, 0.3, &mut out, &pool).unwrap();
            for g in 0..groups {
                for i in 0..rows {
                    let visible = start + i % t + 1;
                    let qi = &q[(g * rows + i) * d..][..d];
                    let s: Vec<f64> = (0..visible)
                        .map(|j| (0..d).map(|k| qi[k] as f64 * kv[g * cap * d + j * d + k] as f64).sum::<f64>() * 0.3)
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for k in 0..d {
                        let want: f64 =
                            (0..visible).map(|j| (s[j] - m).exp() / z * vv[g * cap * d + j * d + k] as f64).sum();
                        let got = out[(g * rows + i) * d + k] as f64;
                        assert!((got - want).abs() < 1e-5, "g{g} row {i} dim {k}: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// One query row at a time, one key or value row at a time: the arithmetic `attend_rows` must reproduce.
    fn attention_row_by_row(q: &[f32], keys: &[f32], values: &[f32], d: usize, visible: usize, scale: f32) -> Vec<f32> {
        let s: Vec<f32> =
            (0..visible).map(|j| crate::dense::dot_lanes::<LANES>(q, &keys[j * d..(j + 1) * d]) * scale).collect();
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let e: Vec<f32> = s.iter().map(|&x| exp(x - max)).collect();
        let sum = e.iter().fold(0f32, |a, &x| a + x);
        let mut out = vec![0f32; d];
        for (j, &ej) in e.iter().enumerate() {
            let p = ej / sum;
            for (o, &v) in out.iter_mut().zip(&values[j * d..(j + 1) * d]) {
                *o += p * v;
            }
        }
        out
    }

    #[test]
    fn blocked_attention_is_bit_identical_to_row_by_row() {
        let value = |i: usize| ((i * 7919 % 2003) as f32 - 1001.0) / 700.0;
        // Head widths below, at and off the lane and value-chunk widths; group sizes below, at and off the block;
        // blocks whose rows see different numbers of positions (t > 1); one case with a key that makes a score
        // infinite and a value that is NaN.
        let cases = [
            (128, 4, 1, 37, false),
            (128, 4, 3, 70, false),
            (24, 3, 2, 5, false),
            (20, 5, 3, 0, false),
            (8, 1, 1, 0, false),
            (40, 4, 4, 9, false),
            (64, 4, 2, 20, true),
        ];
        for (d, rep, t, start, special) in cases {
            let (groups, len, cap) = (2, start + t, start + t + 3);
            let rows = rep * t;
            let q: Vec<f32> = (0..groups * rows * d).map(value).collect();
            let mut keys: Vec<f32> = (0..groups * cap * d).map(|i| value(i + 11)).collect();
            let mut values: Vec<f32> = (0..groups * cap * d).map(|i| value(i + 5)).collect();
            if special {
                keys[d + 3 * d + 1] = f32::INFINITY;
                values[d + 7 * d + 2] = f32::NAN;
            }
            let layout = KvLayout { groups, len, offset: d, group_stride: cap * d - d };
            for (kernel, threads) in Kernel::available().into_iter().flat_map(|k| (1..=3).map(move |n| (k, n))) {
                let pool = ThreadPool::new(threads).unwrap();
                let mut out = vec![f32::NAN; q.len()];
                causal_attention_with(kernel, &q, &keys, &values, layout, d, t, start, 0.125, &mut out, &pool).unwrap();
                for g in 0..groups {
                    let base = d + g * (cap * d - d);
                    for i in 0..rows {
                        let qi = &q[(g * rows + i) * d..][..d];
                        let want =
                            attention_row_by_row(qi, &keys[base..], &values[base..], d, start + i % t + 1, 0.125);
                        let got = &out[(g * rows + i) * d..][..d];
                        let same =
                            got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan());
                        assert!(same, "{kernel}: d {d} rep {rep} t {t} group {g} row {i} threads {threads}");
                    }
                }
            }
        }
    }

    /// Distance from `want` in units in the last place of an f32 at `want`'s magnitude.
    fn ulps(got: f32, want: f64) -> f64 {
        let ulp = 2f64.powi(want.abs().log2().floor() as i32 - 23);
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_stays_within_two_ulp() {
        let (low, high) = (-86.5f64, 88.72f64);
        let steps = 1 << 21;
        let worst = (0..=steps)
            .map(|i| (low + (high - low) * i as f64 / steps as f64) as f32)
            .map(|x| ulps(exp(x), (x as f64).exp()))
            .fold(0f64, f64::max);
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        let largest = 88.72283f32; // the largest f32 whose e^x is below f32::MAX
        assert!(exp(largest).is_finite() && exp(largest.next_up()).is_infinite() && exp(f32::INFINITY).is_infinite());
        assert_eq!(exp(-1e30), exp(-86.5));
        assert!(exp(-86.5).is_normal());
    }

    /// Gates spread over SiLU's whole range, the edges included.
    fn silu_inputs() -> Vec<f32> {
        let mut gate: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) / 16.0).collect();
        gate.extend([0.0, -0.0, 1e-40, -1e-40, 1e30, -1e30, 87.5, -87.5, 100.0, -100.0, f32::INFINITY, f32::NAN]);
        gate
    }

    #[test]
    fn silu_is_the_same_on_every_kernel_and_close_to_exact() {
        let gate = silu_inputs();
        let up: Vec<f32> = (0..gate.len()).map(|i| 0.5 + (i % 7) as f32 / 4.0).collect();
        let mut want = vec![0f32; gate.len()];
        silu::generic(&gate, &up, &mut want);
        for kernel in Kernel::available() {
            let mut got = vec![f32::NAN; gate.len()];
            silu::call(kernel, &gate, &up, &mut got);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan(),
                    "{kernel} gate {}: {a} vs {b}",
                    gate[i]
                );
            }
        }
        for ((&g, &u), &got) in gate.iter().zip(&up).zip(&want) {
            let exact = g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64;
            if g.is_nan() || g.is_infinite() {
                assert!(g.is_nan() == got.is_nan() && (g.is_nan() || got == g * u), "gate {g}: {got}");
            } else {
                // Four roundings and exp's two ulp, relative; absolute where e^-g overflows (gates below -88.7,
                // whose SiLU is below 1e-36 in magnitude and comes out as -0).
                let close = (got as f64 - exact).abs() <= 1e-6 * exact.abs() + 1e-36;
                assert!(close, "gate {g}: {got} vs {exact}");
            }
        }
    }

    #[test]
    fn normalize_is_the_same_on_every_kernel() {
        // A 2B-4T-wide row (whole vectors) and an odd width (a tail), with values that round differently.
        for d in [2560usize, 37] {
            let x: Vec<f32> = (0..d).map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0).collect();
            let gamma: Vec<f32> = (0..d).map(|i| 0.3 + (i % 11) as f32 / 7.0).collect();
            let rms = 2.718_281_7f32;
            let mut want = vec![0f32; d];
            normalize::generic(&x, &gamma, rms, &mut want);
            for (i, &w) in want.iter().enumerate() {
                assert_eq!(w.to_bits(), (x[i] / rms * gamma[i]).to_bits(), "element {i}");
            }
            for kernel in Kernel::available() {
                let mut got = vec![f32::NAN; d];
                normalize::call(kernel, &x, &gamma, rms, &mut got);
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kernel}, width {d}");
            }
        }
    }

    #[test]
    fn norms_rotations_and_gates() {
        let x = [1.0f32, -2.0, 3.0, 4.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &[1.0, 2.0, 1.0, 0.5], 1e-5, &mut out).unwrap();
        let rms = ((1.0 + 4.0 + 9.0 + 16.0) / 4.0f32 + 1e-5).sqrt();
        assert_eq!(out, [1.0 / rms, -2.0 / rms * 2.0, 3.0 / rms, 4.0 / rms * 0.5]);
        rotate_half(&x, &[1.0, 0.0, 1.0, 0.0], &[0.0, 1.0, 0.0, 1.0], 1, &mut out).unwrap();
        assert_eq!(out, [1.0, -4.0, 3.0, -2.0]);
        gated_activation(&[-1.0, 2.0], &[3.0, 0.5], GateActivation::ReluSquared, &mut out[..2]).unwrap();
        assert_eq!(&out[..2], &[0.0, 2.0]);
        assert!(rms_norm(&x, &[1.0; 3], 1e-5, &mut out).is_err());
    }
}
