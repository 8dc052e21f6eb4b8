//! The two quantizers of BitLinear (W1.58A8), bit-compatible with the Hugging Face reference.
//!
//! * Weights, per tensor (absmean): `g = max(mean|W|, 1e-5)`, `Wq = clamp(round(W * (1/g)), -1, 1)`,
//!   stored as 2-bit codes `c = Wq + 1` in {0, 1, 2}. Dequantized weight: `Wq * g`.
//! * Activations, per token (absmax): `s = 127 / max(max|x|, 1e-5)`, `q = clamp(round(x * s), -128, 127)`.
//!
//! `round` is round-half-to-even, and the reciprocal is formed first and multiplied, exactly as
//! transformers' `BitLinear` does in f32, so the codes match the reference bit for bit.

use crate::aligned::AlignedBytes;
use crate::dispatch::Kernel;
use crate::error::{ensure_eq, ensure_len, Result};
use crate::formats::native::TernaryLayout;
use crate::pool::{chunk_count, split_range, ThreadPool};
use std::sync::Mutex;

/// Smallest scale denominator of both quantizers (the `1e-5` clamp of the reference).
pub const SCALE_EPS: f32 = 1e-5;

/// Activation rows are padded with zero codes to a multiple of this many elements, the block size of the
/// native ternary layout, so kernels never need a scalar tail.
pub const ACT_PAD: usize = 256;

/// `round(x)` with ties to even, as `torch.round`. Below `2^22` in magnitude it adds and subtracts `1.5 · 2^23`
/// (the f32 addition rounds to an integer, ties to even, in every build; `f32::round_ties_even` is a libm call
/// on baseline x86-64); larger values and NaN take the library path. A result of zero may lose its sign.
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

/// [`round_half_even`] without its branch, for `|x| < 2^22` (callers clamp first; NaN stays NaN): a loop of it
/// vectorizes, where a call per element does not.
#[inline(always)]
pub fn round_half_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// `round_half_even(x) as i32` for `|x| < 2^22`, without a float-to-int conversion: `x + 1.5 * 2^23` has
/// exponent 23, so its mantissa holds `2^22 + round(x)` (the addition rounds, ties to even) and the difference
/// of the bit patterns is the integer. Integer arithmetic vectorizes where `f32 as i32` (saturating) does not;
/// a NaN or out-of-range `x` gives a meaningless value, never undefined behaviour.
#[inline(always)]
pub(crate) fn round_half_even_small_i32(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((x + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// The scale `s` of a group of weights `x` coded as integers `q` in `[low, high]` (`low < 0 < high`, `x ≈ s q`,
/// `q = round(x / s)` clamped): of five candidates that map the largest magnitude to `low`, `low (1 - 1/32)`, ...,
/// `low (1 - 4/32)` (trading clipping for resolution), the one with the least squared error, then refined once by
/// least squares (`s = sum x q / sum q q`) if that lowers the error. An all-zero group gets 0. The block formats
/// of the output head (Q6_K's sub-blocks, Q4's groups) choose their scales with it.
pub(crate) fn fitted_scale(x: &[f32], low: f32, high: f32) -> f32 {
    let max = x.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if max.abs() < 1e-30 {
        return 0.0;
    }
    // (squared error, least-squares refit) of scale `s`.
    let fit = |s: f32| -> (f32, f32) {
        let inv = 1.0 / s;
        let (mut err, mut xq, mut qq) = (0f32, 0f32, 0f32);
        for &v in x {
            let q = round_half_even(v * inv).clamp(low, high);
            err += (v - s * q) * (v - s * q);
            xq += v * q;
            qq += q * q;
        }
        (err, if qq > 0.0 { xq / qq } else { s })
    };
    let (mut best, mut best_fit) = (f32::INFINITY, (0f32, 0f32));
    for t in 0..5 {
        let s = -max / (-low - t as f32 * (-low / 32.0));
        let (err, refined) = fit(s);
        if err < best {
            (best, best_fit) = (err, (s, refined));
        }
    }
    let (s, refined) = best_fit;
    if refined != 0.0 && refined.is_finite() && fit(refined).0 < best {
        refined
    } else {
        s
    }
}

/// The absmean weight scale `g = max(mean|W|, 1e-5)`; the mean is accumulated in f64.
pub fn absmean_scale(weights: &[f32]) -> f32 {
    if weights.is_empty() {
        return SCALE_EPS;
    }
    let sum: f64 = weights.iter().map(|w| w.abs() as f64).sum();
    ((sum / weights.len() as f64) as f32).max(SCALE_EPS)
}

/// Quantizes `weights` per tensor to ternary codes `c = clamp(round(w / g), -1, 1) + 1` and returns `(codes, g)`.
pub fn quantize_weights_absmean(weights: &[f32]) -> (Vec<u8>, f32) {
    let g = absmean_scale(weights);
    (quantize_weights_with_scale(weights, g), g)
}

/// Ternary codes of `weights` for a given scale `g` (`c = clamp(round(w * (1/g)), -1, 1) + 1`).
pub fn quantize_weights_with_scale(weights: &[f32], g: f32) -> Vec<u8> {
    let inv = 1.0 / g;
    weights.iter().map(|&w| (round_half_even(w * inv).clamp(-1.0, 1.0) as i8 + 1) as u8).collect()
}

/// Per-token int8 activations: `m` rows of `k` codes, each row zero-padded to `k_padded` (a multiple of
/// [`ACT_PAD`], or of the block of the ternary layout they were made for: [`Self::zeros_for`]), with the row's scale `s`, its reciprocal `1 / s` (the factor every product's output takes) and
/// code sum `sum q` (the term the ternary kernels subtract).
#[derive(Debug, Clone)]
pub struct QuantizedActivations {
    rows: usize,
    cols: usize,
    cols_padded: usize,
    codes: AlignedBytes,
    /// The rows' scales `s`, then their reciprocals `1 / s`: `2 * rows` values in one allocation (a decoded
    /// token quantizes ~120 times, so a fourth vector would be ~120 more allocations per token).
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl QuantizedActivations {
    /// An all-zero buffer for `rows` tokens of width `cols`; reuse it with [`Self::quantize_from`] so that
    /// decode allocates nothing per token.
    pub fn zeros(rows: usize, cols: usize) -> Result<Self> {
        Self::zeros_for(TernaryLayout::Bits2, rows, cols)
    }

    /// [`Self::zeros`] with rows padded to whole blocks of `layout` ([`TernaryLayout::cols_padded`]), the width
    /// its matrices take (the 2-bit layout's is [`ACT_PAD`], the one every other product takes too).
    pub fn zeros_for(layout: TernaryLayout, rows: usize, cols: usize) -> Result<Self> {
        let cols_padded = layout.act_cols_padded(cols);
        let len = crate::error::checked_elems("activations", rows, cols_padded)?;
        Ok(Self {
            rows,
            cols,
            cols_padded,
            codes: AlignedBytes::zeroed(len),
            scales: vec![1.0; crate::error::checked_elems("activation scales", rows, 2)?],
            sums: vec![0; rows],
        })
    }

    /// Quantizes `x` (`rows * cols` f32, row-major) into a new buffer.
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::quantize_for(TernaryLayout::Bits2, x, rows, cols)
    }

    /// [`Self::quantize`] padded for `layout` (see [`Self::zeros_for`]).
    pub fn quantize_for(layout: TernaryLayout, x: &[f32], rows: usize, cols: usize) -> Result<Self> {
        let mut q = Self::zeros_for(layout, rows, cols)?;
        q.quantize_from(x)?;
        Ok(q)
    }

    /// [`Self::quantize`] with the rows spread over `pool` when there are enough values to pay for a dispatch
    /// (a prompt's tokens; one decoded token stays on the caller). Rows are independent, so the result is the
    /// same as [`Self::quantize`]'s.
    pub fn quantize_on(x: &[f32], rows: usize, cols: usize, pool: &ThreadPool) -> Result<Self> {
        Self::quantize_on_for(TernaryLayout::Bits2, x, rows, cols, pool)
    }

    /// [`Self::quantize_on`] padded for `layout` (see [`Self::zeros_for`]).
    pub fn quantize_on_for(
        layout: TernaryLayout,
        x: &[f32],
        rows: usize,
        cols: usize,
        pool: &ThreadPool,
    ) -> Result<Self> {
        /// Values below which the caller quantizes alone.
        const PARALLEL_MIN_VALUES: usize = 1 << 15;
        ensure_eq("activation length", rows * cols, x.len())?;
        let mut q = Self::zeros_for(layout, rows, cols)?;
        let chunks = if x.len() < PARALLEL_MIN_VALUES { 1 } else { chunk_count(pool, rows, 1) };
        if chunks <= 1 {
            q.quantize_from(x)?;
            return Ok(q);
        }
        let stride = q.cols_padded;
        // Each chunk owns a contiguous run of rows of the codes, scales and sums.
        let mut parts = Vec::with_capacity(chunks);
        let (mut codes, mut scales, mut sums) = (q.codes.as_i8_mut(), &mut q.scales[..rows], q.sums.as_mut_slice());
        for c in 0..chunks {
            let n = split_range(rows, chunks, c, 1).len();
            let (c_part, c_rest) = std::mem::take(&mut codes).split_at_mut(n * stride);
            let (s_part, s_rest) = std::mem::take(&mut scales).split_at_mut(n);
            let (u_part, u_rest) = std::mem::take(&mut sums).split_at_mut(n);
            (codes, scales, sums) = (c_rest, s_rest, u_rest);
            parts.push(Mutex::new((c_part, s_part, u_part)));
        }
        pool.run(chunks, &|c| {
            let first = split_range(rows, chunks, c, 1).start;
            let mut part = parts[c].lock().unwrap_or_else(|e| e.into_inner());
            let (codes, scales, sums) = &mut *part;
            for (i, (scale, sum)) in scales.iter_mut().zip(sums.iter_mut()).enumerate() {
                let src = &x[(first + i) * cols..(first + i + 1) * cols];
                (*scale, *sum) = quantize_row_absmax(src, &mut codes[i * stride..i * stride + cols]);
            }
        });
        q.update_inv_scales();
        Ok(q)
    }

    /// Re-quantizes `x` (same shape as this buffer) in place.
    pub fn quantize_from(&mut self, x: &[f32]) -> Result<()> {
        ensure_eq("activation length", self.rows * self.cols, x.len())?;
        let (cols, stride) = (self.cols, self.cols_padded);
        let codes = self.codes.as_i8_mut();
        for r in 0..self.rows {
            let src = &x[r * cols..(r + 1) * cols];
            let dst = &mut codes[r * stride..r * stride + cols];
            let (scale, sum) = quantize_row_absmax(src, dst);
            self.scales[r] = scale;
            self.sums[r] = sum;
        }
        self.update_inv_scales();
        Ok(())
    }

    /// `1 / s` of every row, from the scales just written.
    fn update_inv_scales(&mut self) {
        let (scales, inv_scales) = self.scales.split_at_mut(self.rows);
        for (inv, &s) in inv_scales.iter_mut().zip(&*scales) {
            *inv = 1.0 / s;
        }
    }

    /// Builds activations from codes the caller already has (`rows * cols` i8) and per-row scales.
    pub fn from_codes(codes: &[i8], scales: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::from_codes_for(TernaryLayout::Bits2, codes, scales, rows, cols)
    }

    /// [`Self::from_codes`] padded for `layout` (see [`Self::zeros_for`]).
    pub fn from_codes_for(
        layout: TernaryLayout,
        codes: &[i8],
        scales: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        ensure_eq("activation code count", rows * cols, codes.len())?;
        ensure_eq("activation scale count", rows, scales.len())?;
        let mut q = Self::zeros_for(layout, rows, cols)?;
        let stride = q.cols_padded;
        let dst = q.codes.as_i8_mut();
        for r in 0..rows {
            let row = &codes[r * cols..(r + 1) * cols];
            dst[r * stride..r * stride + cols].copy_from_slice(row);
            q.sums[r] = row.iter().map(|&c| c as i32).sum();
        }
        q.scales[..rows].copy_from_slice(scales);
        q.update_inv_scales();
        Ok(q)
    }

    /// Number of tokens.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Logical width `k`.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Padded row stride (a multiple of [`ACT_PAD`], or of the layout's block); codes past `cols` are zero.
    pub fn cols_padded(&self) -> usize {
        self.cols_padded
    }
    /// Codes of row `r`, padded.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.codes.as_i8()[r * self.cols_padded..(r + 1) * self.cols_padded]
    }
    /// All codes, padded rows.
    pub fn codes(&self) -> &[i8] {
        self.codes.as_i8()
    }
    /// Per-row scales `s` (`x ≈ q / s`).
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.rows]
    }
    /// Per-row reciprocals `1 / s` (computed once here, so that a product does not divide per output).
    pub fn inv_scales(&self) -> &[f32] {
        &self.scales[self.rows..]
    }
    /// Per-row code sums `sum q`.
    pub fn sums(&self) -> &[i32] {
        &self.sums
    }
}

/// Quantizes one row: writes `q = clamp(round(x * s), -128, 127)` into `dst` and returns `(s, sum q)`, with
/// the selected kernel's vectorized copy.
pub fn quantize_row_absmax(x: &[f32], dst: &mut [i8]) -> (f32, i32) {
    quantize_row_absmax_with(Kernel::selected(), x, dst)
}

/// [`quantize_row_absmax`] with the copy compiled for `kernel` (the portable code if `kernel` is not available
/// on this CPU). Every copy gives identical codes, scales and sums.
pub fn quantize_row_absmax_with(kernel: Kernel, x: &[f32], dst: &mut [i8]) -> (f32, i32) {
    assert_eq!(x.len(), dst.len(), "quantize_row_absmax: {} values into {} codes", x.len(), dst.len());
    let kernel = if kernel.is_available() { kernel } else { Kernel::Scalar };
    let absmax = absmax::call(kernel, x);
    // A non-finite input has no 8-bit code: the row's scale becomes NaN, so every product of the row is NaN
    // (the model's output shows the fault) instead of the value being quantized to 0 unseen.
    if !absmax.is_finite() {
        dst.fill(0);
        return (f32::NAN, 0);
    }
    let scale = 127.0 / absmax.max(SCALE_EPS);
    (scale, round_codes::call(kernel, x, scale, dst))
}

/// `max |x|`, or NaN when `x` holds a NaN or an infinity. Computed on the bit patterns: for non-negative
/// floats (the sign bit cleared) integer order is float order, and every infinity or NaN pattern
/// (`>= 0x7f80_0000`) is above every finite one, so one integer max gives both the maximum and whether the
/// row is finite. (A float max with a separate NaN check kept the compiler's loop in 128-bit blends and scalar
/// `max`es; docs/PERFORMANCE.md, "Activation quantization and RMSNorm", has the before and after.)
#[inline(always)]
fn absmax_body(x: &[f32]) -> f32 {
    // An integer max may be reordered, so the compiler vectorizes this plain reduction by itself.
    let max = x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    if max >= f32::INFINITY.to_bits() {
        f32::NAN
    } else {
        f32::from_bits(max)
    }
}

/// Writes `clamp(round_half_even(x * scale), -128, 127)` into `dst` and returns the sum of the codes.
///
/// Clamped before it is rounded (the same codes: rounding is monotone and the bounds are integers), so the
/// branch-free integer rounding applies: `f32 as i8` saturates, which compiles to a scalar conversion per
/// element (with the scalar absmax, a 2560-wide row took 14x the time it takes now). The caller passes finite
/// `x * scale` (the absmax check rejects non-finite rows).
#[inline(always)]
fn round_codes_body(x: &[f32], scale: f32, dst: &mut [i8]) -> i32 {
    let mut sum = 0i32;
    for (d, &v) in dst.iter_mut().zip(x) {
        let q = round_half_even_small_i32((v * scale).clamp(-128.0, 127.0));
        *d = q as i8;
        sum += q;
    }
    sum
}

multiversion!(absmax, absmax_body, (x: &[f32]) -> f32);
multiversion!(round_codes, round_codes_body, (x: &[f32], scale: f32, dst: &mut [i8]) -> i32);

/// Dequantized ternary weights `(c - 1) * g` (for references and fallbacks).
pub fn dequantize_codes(codes: &[u8], g: f32, out: &mut [f32]) -> Result<()> {
    ensure_len("dequantized output", codes.len(), out.len())?;
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = (c as f32 - 1.0) * g;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_free_rounding_matches_the_library_below_2_pow_22() {
        let mut x = -4_194_303.5f32;
        while x < 4_194_304.0 {
            for v in [x, x + 0.25, x + 0.5, x + 0.75, x / 1024.0, x / 3e5] {
                assert_eq!(round_half_even_small(v), v.round_ties_even(), "{v}");
                assert_eq!(round_half_even_small_i32(v), v.round_ties_even() as i32, "{v}");
            }
            x += 997.25;
        }
        for v in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.49, -128.5, 0.49999997, 1e-30] {
            assert_eq!(round_half_even_small(v), v.round_ties_even(), "{v}");
            assert_eq!(round_half_even_small_i32(v), v.round_ties_even() as i32, "{v}");
        }
        assert!(round_half_even_small(f32::NAN).is_nan());
    }

    /// The pooled quantization gives the codes, scales and sums of the one-thread one, for a prompt-sized input
    /// (split over the threads), a non-finite row among them, and a single token (on the caller).
    #[test]
    fn quantize_on_a_pool_equals_quantize() {
        let pool = ThreadPool::new(2).expect("pool");
        for (rows, cols) in [(64usize, 700usize), (1, 2560), (3, 5)] {
            let mut x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.013).collect();
            if rows > 10 {
                x[10 * cols + 3] = f32::INFINITY;
            }
            let (a, b) = (
                QuantizedActivations::quantize(&x, rows, cols),
                QuantizedActivations::quantize_on(&x, rows, cols, &pool),
            );
            let (a, b) = (a.expect("quantize"), b.expect("quantize_on"));
            assert_eq!(a.codes(), b.codes(), "{rows}x{cols}");
            assert_eq!(a.sums(), b.sums(), "{rows}x{cols}");
            let bits = |q: &QuantizedActivations| q.scales().iter().map(|s| s.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{rows}x{cols}");
            assert_inverse_scales(&a);
            assert_inverse_scales(&b);
        }
        assert!(QuantizedActivations::quantize_on(&[0.0; 5], 2, 3, &pool).is_err());
    }

    #[test]
    fn round_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-0.5), 0.0);
        assert_eq!(round_half_even(-1.5), -2.0);
        for x in [0.49999997f32, 2.5000002, -3.5, 126.5, 127.49, 4_194_303.5, 8_388_607.0, 1e9, -1e9] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn absmean_codes() {
        let w = [0.3f32, -0.3, 0.0, 0.05, -1.0, 2.0];
        let (codes, g) = quantize_weights_absmean(&w);
        let expected_g = (0.3 + 0.3 + 0.0 + 0.05 + 1.0 + 2.0) / 6.0;
        assert!((g - expected_g).abs() < 1e-6);
        // 0.3/0.608 = 0.49 -> 0; 0.05 -> 0; -1/0.608 -> -1.6 -> clamp -1; 2 -> +1
        assert_eq!(codes, vec![1, 1, 1, 1, 0, 2]);
    }

    #[test]
    fn zero_weights_use_floor() {
        let (codes, g) = quantize_weights_absmean(&[0.0; 8]);
        assert_eq!(g, SCALE_EPS);
        assert!(codes.iter().all(|&c| c == 1));
    }

    #[test]
    fn activations_absmax_and_padding() {
        let x = [1.0f32, -2.0, 0.5, 0.0, 4.0, -4.0];
        let q = QuantizedActivations::quantize(&x, 2, 3).unwrap();
        assert_eq!(q.cols_padded(), 256);
        // row 0: s = 127/2; 1*63.5 = 63.5 -> 64 (even), -2 -> -127, 0.5*63.5 = 31.75 -> 32
        assert_eq!(&q.row(0)[..3], &[64, -127, 32]);
        assert!(q.row(0)[3..].iter().all(|&c| c == 0));
        assert_eq!(q.sums()[0], 64 - 127 + 32);
        assert_eq!(q.scales()[0], 63.5);
        // row 1: s = 127/4; 4 -> 127, -4 -> -127
        assert_eq!(&q.row(1)[..3], &[0, 127, -127]);
        assert_eq!(q.sums()[1], 0);
    }

    #[test]
    fn zero_row_uses_floor_scale() {
        let q = QuantizedActivations::quantize(&[0.0; 4], 1, 4).unwrap();
        assert_eq!(q.scales()[0], 127.0 / SCALE_EPS);
        assert!(q.row(0).iter().all(|&c| c == 0));
    }

    /// `inv_scales()[r]` is `1 / scales()[r]` bit for bit (NaN for a non-finite row), in every row.
    fn assert_inverse_scales(q: &QuantizedActivations) {
        assert_eq!(q.inv_scales().len(), q.rows());
        for (r, (&inv, &s)) in q.inv_scales().iter().zip(q.scales()).enumerate() {
            assert!(inv.to_bits() == (1.0 / s).to_bits() || (inv.is_nan() && s.is_nan()), "row {r}: {inv} for {s}");
        }
    }

    /// Every way of filling a buffer keeps the reciprocals in step with the scales, a reused buffer included.
    #[test]
    fn inverse_scales_follow_every_constructor() {
        let x = [1.0f32, -2.0, 0.5, 0.0, 0.0, 0.0, f32::NAN, 3.0, 1.0];
        let mut q = QuantizedActivations::zeros(3, 3).expect("zeros");
        assert_eq!(q.inv_scales(), &[1.0; 3]);
        q.quantize_from(&x).expect("quantize_from");
        assert_inverse_scales(&q);
        assert_eq!(q.inv_scales()[0], 2.0 / 127.0);
        assert!(q.inv_scales()[2].is_nan());
        q.quantize_from(&[4.0; 9]).expect("reuse");
        assert_inverse_scales(&q);
        assert_eq!(q.inv_scales()[2], 4.0 / 127.0);
        let c = QuantizedActivations::from_codes(&[1, 2, 3, -4], &[0.5, 8.0], 2, 2).expect("from_codes");
        assert_eq!(c.inv_scales(), &[2.0, 0.125]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut q = QuantizedActivations::zeros(2, 4).unwrap();
        assert!(q.quantize_from(&[0.0; 7]).is_err());
    }
}
