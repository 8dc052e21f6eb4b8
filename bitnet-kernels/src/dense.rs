//! Dense GEMV kernels decode needs around the ternary ones, above all for the tied output embedding
//! (`logits = E h`, 128256 x 2560 in 2B-4T):
//!
//! * [`f32_gemv`]: `y[n] = sum_k W[n,k] x[k]`, W stored as f32;
//! * [`bf16_gemv`] and [`f16_gemv`]: the same with W stored as bf16 or IEEE f16 (widened exactly to f32 in
//!   registers, half the bytes: GGUF files store embeddings in f16, Hugging Face checkpoints in bf16);
//! * [`Int8Matrix`] + [`int8_gemv`]: W quantized per row to int8 (`W[n,k] ≈ Wq[n,k] * r_n`,
//!   `r_n = max|W[n,:]| / 127`, codes in [-127, 127]) against per-token int8 activations:
//!   `y[n] = (sum_k Wq[n,k] q[k]) * r_n / s` (a quarter of the f32 bytes).
//!
//! Each dot product keeps a fixed set of independent accumulator lanes and reduces them in a fixed order,
//! written so the compiler vectorizes it; the ISA variants are the same code compiled with more target
//! features, so they give identical results (no FMA contraction happens without fast-math).

use crate::aligned::AlignedBytes;
use crate::dispatch::Kernel;
use crate::error::{checked_elems, ensure_eq, ensure_len, Result};
use crate::gemv::OutPtr;
use crate::pool::{split_range, ThreadPool};
use crate::quant::{round_half_even, QuantizedActivations, ACT_PAD};

const F32_LANES: usize = 64;
const I8_LANES: usize = 64;

/// Pairwise reduction of the lane array, in a fixed order.
#[inline(always)]
fn reduce_f32<const N: usize>(mut acc: [f32; N]) -> f32 {
    let mut width = N;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

#[inline(always)]
fn dot_f32_body(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; F32_LANES];
    let (wc, xc) = (w.chunks_exact(F32_LANES), x.chunks_exact(F32_LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for l in 0..F32_LANES {
            acc[l] += a[l] * b[l];
        }
    }
    for (l, (a, b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += a * b;
    }
    reduce_f32(acc)
}

#[inline(always)]
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[inline(always)]
fn dot_bf16_body(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; F32_LANES];
    let (wc, xc) = (w.chunks_exact(F32_LANES), x.chunks_exact(F32_LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for l in 0..F32_LANES {
            acc[l] += bf16_to_f32(a[l]) * b[l];
        }
    }
    for (l, (a, b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += bf16_to_f32(*a) * b;
    }
    reduce_f32(acc)
}

/// IEEE half -> f32, exactly, without branches (so it vectorizes): the 15 magnitude bits move into an f32's
/// exponent and mantissa fields and a multiplication by 2^112 rebiases the exponent (exact for normal and
/// subnormal halves alike); infinities and NaNs get the all-ones exponent instead.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let magnitude = (bits as u32 & 0x7fff) << 13;
    let rebiased = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
    let special = if bits & 0x7c00 == 0x7c00 { magnitude | 0x7f80_0000 } else { rebiased };
    f32::from_bits(special | (bits as u32 & 0x8000) << 16)
}

#[inline(always)]
fn dot_f16_body(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; F32_LANES];
    let (wc, xc) = (w.chunks_exact(F32_LANES), x.chunks_exact(F32_LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for l in 0..F32_LANES {
            acc[l] += f16_to_f32(a[l]) * b[l];
        }
    }
    for (l, (a, b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += f16_to_f32(*a) * b;
    }
    reduce_f32(acc)
}

#[inline(always)]
fn dot_i8_body(w: &[i8], x: &[i8]) -> i32 {
    let mut acc = [0i32; I8_LANES];
    for (a, b) in w.chunks_exact(I8_LANES).zip(x.chunks_exact(I8_LANES)) {
        for l in 0..I8_LANES {
            acc[l] += a[l] as i32 * b[l] as i32;
        }
    }
    acc.iter().sum()
}

multiversion!(dot_f32, dot_f32_body, (w: &[f32], x: &[f32]) -> f32);
multiversion!(dot_bf16, dot_bf16_body, (w: &[u16], x: &[f32]) -> f32);
multiversion!(dot_f16_portable, dot_f16_body, (w: &[u16], x: &[f32]) -> f32);

/// The f16 dot product: on x86-64 the hardware conversion (`vcvtph2ps`, exact like [`f16_to_f32`]) in the same
/// lane order as [`dot_f16_body`], so every copy gives the same sums (NaN payloads aside); elsewhere the
/// portable copies.
mod dot_f16 {
    use super::*;

    #[inline(always)]
    pub(super) fn call(kernel: Kernel, w: &[u16], x: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the kernel is available (checked by the public entry point): AVX-512F is present.
            Kernel::Avx512Bw | Kernel::Avx512Vnni => return unsafe { x86::dot_f16_avx512(w, x) },
            // SAFETY: AVX2 and FMA are present (kernel available); F16C is checked here.
            Kernel::Avx2 if std::is_x86_feature_detected!("f16c") => return unsafe { x86::dot_f16_avx2(w, x) },
            _ => {}
        }
        dot_f16_portable::call(kernel, w, x)
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::{reduce_f32, F32_LANES};
        use std::arch::x86_64::*;

        /// Lanes `l` of the accumulators match `acc[l]` of the portable body: 4 x 16 lanes, mul then add.
        #[target_feature(enable = "avx512f")]
        pub(in super::super) unsafe fn dot_f16_avx512(w: &[u16], x: &[f32]) -> f32 {
            let n = w.len().min(x.len());
            let full = n / F32_LANES * F32_LANES;
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            while i < full {
                for (j, a) in acc.iter_mut().enumerate() {
                    let at = i + 16 * j;
                    // SAFETY: `at + 16 <= full <= n`, within both slices.
                    let (h, v) = unsafe {
                        (_mm256_loadu_si256(w.as_ptr().add(at) as *const __m256i), _mm512_loadu_ps(x.as_ptr().add(at)))
                    };
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(_mm512_cvtph_ps(h), v));
                }
                i += F32_LANES;
            }
            let mut lanes = [0.0f32; F32_LANES];
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: 16 floats fit at `lanes[16 j..]`.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * j), *a) };
            }
            finish(lanes, &w[full..n], &x[full..n])
        }

        /// As [`dot_f16_avx512`] with 8 x 8 lanes.
        #[target_feature(enable = "avx2,f16c")]
        pub(in super::super) unsafe fn dot_f16_avx2(w: &[u16], x: &[f32]) -> f32 {
            let n = w.len().min(x.len());
            let full = n / F32_LANES * F32_LANES;
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut i = 0;
            while i < full {
                for (j, a) in acc.iter_mut().enumerate() {
                    let at = i + 8 * j;
                    // SAFETY: `at + 8 <= full <= n`, within both slices.
                    let (h, v) = unsafe {
                        (_mm_loadu_si128(w.as_ptr().add(at) as *const __m128i), _mm256_loadu_ps(x.as_ptr().add(at)))
                    };
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_cvtph_ps(h), v));
                }
                i += F32_LANES;
            }
            let mut lanes = [0.0f32; F32_LANES];
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: 8 floats fit at `lanes[8 j..]`.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * j), *a) };
            }
            finish(lanes, &w[full..n], &x[full..n])
        }

        /// The tail and the reduction, exactly as the portable body does them.
        #[inline(always)]
        fn finish(mut lanes: [f32; F32_LANES], w: &[u16], x: &[f32]) -> f32 {
            for (l, (a, b)) in w.iter().zip(x).enumerate() {
                lanes[l] += super::super::f16_to_f32(*a) * b;
            }
            reduce_f32(lanes)
        }
    }
}
multiversion!(dot_i8, dot_i8_body, (w: &[i8], x: &[i8]) -> i32);

/// The kernel a dense GEMV runs: `kernel` if available, checked.
fn checked(kernel: Kernel) -> Result<Kernel> {
    if kernel.is_available() {
        Ok(kernel)
    } else {
        Err(crate::error::KernelError::KernelUnavailable(kernel.name()))
    }
}

/// Runs `row(n) -> y[n]` over `rows` rows on the pool, each thread a contiguous range.
fn for_rows(rows: usize, y: &mut [f32], pool: &ThreadPool, row: impl Fn(usize) -> f32 + Sync) {
    for_rows_tokens(rows, 1, y, pool, |n, _| row(n));
}

/// Runs `dot(n, t) -> y[t * rows + n]` for every row `n` and token `t < tokens` on the pool, each thread a
/// contiguous range of rows: a weight row is read from memory once and reused from L1 for every token.
fn for_rows_tokens(
    rows: usize,
    tokens: usize,
    y: &mut [f32],
    pool: &ThreadPool,
    dot: impl Fn(usize, usize) -> f32 + Sync,
) {
    let out = OutPtr(y.as_mut_ptr());
    let threads = pool.threads().min(rows.div_ceil(16)).max(1);
    pool.run(&|t| {
        if t >= threads {
            return;
        }
        for n in split_range(rows, threads, t, 16) {
            for token in 0..tokens {
                // SAFETY: `token * rows + n < tokens * rows <= y.len()` (checked by callers) and row ranges are
                // disjoint per thread.
                unsafe { out.write(token * rows + n, dot(n, token)) };
            }
        }
    });
}

/// The token count of `x` (`tokens * cols` values, at least one token), checked against `y` (`tokens * rows`).
fn token_count(x: &[f32], y: &[f32], rows: usize, cols: usize) -> Result<usize> {
    let tokens = x.len().checked_div(cols).unwrap_or(1);
    ensure_eq("input length (tokens x cols)", tokens.max(1) * cols, x.len())?;
    ensure_len("output", tokens.max(1) * rows, y.len())?;
    Ok(tokens.max(1))
}

/// `y = W x` with `W` f32 `[rows, cols]` row-major, for one token or a few: `x` holds `tokens` rows of `cols`
/// values and `y` gets `[tokens, rows]`; each weight row is read once for all tokens.
pub fn f32_gemv(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    f32_gemv_with(Kernel::selected(), w, rows, cols, x, y, pool)
}

/// [`f32_gemv`] with an explicit kernel.
pub fn f32_gemv_with(
    kernel: Kernel,
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let kernel = checked(kernel)?;
    ensure_eq("weight element count", checked_elems("f32 weights", rows, cols)?, w.len())?;
    let tokens = token_count(x, y, rows, cols)?;
    for_rows_tokens(rows, tokens, y, pool, |n, t| {
        dot_f32::call(kernel, &w[n * cols..(n + 1) * cols], &x[t * cols..(t + 1) * cols])
    });
    Ok(())
}

/// `y = W x` with `W` stored as bf16 bits (`u16`), `[rows, cols]` row-major; `x` and `y` as in [`f32_gemv`].
pub fn bf16_gemv(w: &[u16], rows: usize, cols: usize, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    bf16_gemv_with(Kernel::selected(), w, rows, cols, x, y, pool)
}

/// [`bf16_gemv`] with an explicit kernel.
pub fn bf16_gemv_with(
    kernel: Kernel,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    half_gemv(checked(kernel)?, "bf16 weights", dot_bf16::call, w, rows, cols, x, y, pool)
}

/// `y = W x` with `W` stored as IEEE f16 bits (`u16`), `[rows, cols]` row-major; `x` and `y` as in
/// [`f32_gemv`].
pub fn f16_gemv(w: &[u16], rows: usize, cols: usize, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    f16_gemv_with(Kernel::selected(), w, rows, cols, x, y, pool)
}

/// [`f16_gemv`] with an explicit kernel.
pub fn f16_gemv_with(
    kernel: Kernel,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    half_gemv(checked(kernel)?, "f16 weights", dot_f16::call, w, rows, cols, x, y, pool)
}

/// The GEMV of a 16-bit weight type whose dot product is `dot`.
#[allow(clippy::too_many_arguments)]
fn half_gemv(
    kernel: Kernel,
    what: &'static str,
    dot: impl Fn(Kernel, &[u16], &[f32]) -> f32 + Sync,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ensure_eq("weight element count", checked_elems(what, rows, cols)?, w.len())?;
    let tokens = token_count(x, y, rows, cols)?;
    for_rows_tokens(rows, tokens, y, pool, |n, t| {
        dot(kernel, &w[n * cols..(n + 1) * cols], &x[t * cols..(t + 1) * cols])
    });
    Ok(())
}

/// A dense matrix quantized per row to int8: `W[n,k] ≈ codes[n,k] * row_scales[n]`, codes in [-127, 127],
/// rows zero-padded to a multiple of 256 to match [`QuantizedActivations`].
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    cols_padded: usize,
    codes: AlignedBytes,
    row_scales: Vec<f32>,
}

impl Int8Matrix {
    /// Quantizes f32 `[rows, cols]` row-major: `r_n = max(max|W[n,:]|, 1e-5) / 127`,
    /// `codes = clamp(round(W / r_n), -127, 127)` (round half to even).
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::quantize_rows(rows, cols, w.len(), |n| w[n * cols..(n + 1) * cols].to_vec())
    }

    /// Quantizes bf16-stored `[rows, cols]` weights.
    pub fn quantize_bf16(w: &[u16], rows: usize, cols: usize) -> Result<Self> {
        Self::quantize_rows(rows, cols, w.len(), |n| {
            w[n * cols..(n + 1) * cols].iter().map(|&b| bf16_to_f32(b)).collect()
        })
    }

    fn quantize_rows(rows: usize, cols: usize, len: usize, row: impl Fn(usize) -> Vec<f32>) -> Result<Self> {
        ensure_eq("weight element count", checked_elems("int8 weights", rows, cols)?, len)?;
        let cols_padded = cols.div_ceil(ACT_PAD) * ACT_PAD;
        let mut codes = AlignedBytes::zeroed(checked_elems("int8 weights", rows, cols_padded)?);
        let mut row_scales = Vec::with_capacity(rows);
        let dst_all = codes.as_i8_mut();
        for n in 0..rows {
            let src = row(n);
            let absmax = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = absmax.max(crate::quant::SCALE_EPS) / 127.0;
            let inv = 1.0 / scale;
            let dst = &mut dst_all[n * cols_padded..n * cols_padded + cols];
            for (d, &v) in dst.iter_mut().zip(&src) {
                *d = round_half_even(v * inv).clamp(-127.0, 127.0) as i8;
            }
            row_scales.push(scale);
        }
        Ok(Self { rows, cols, cols_padded, codes, row_scales })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Codes of row `n`, padded.
    pub fn row(&self, n: usize) -> &[i8] {
        &self.codes.as_i8()[n * self.cols_padded..(n + 1) * self.cols_padded]
    }
    /// Per-row scales `r_n`.
    pub fn row_scales(&self) -> &[f32] {
        &self.row_scales
    }
    /// Bytes of weight codes (what a GEMV reads).
    pub fn packed_bytes(&self) -> usize {
        self.codes.len()
    }
}

/// Raw `acc[n] = sum_k Wq[n,k] q[k]` of an int8 GEMV (the integer core the ISA copies must agree on).
pub fn int8_accumulators(kernel: Kernel, w: &Int8Matrix, x: &QuantizedActivations, acc: &mut [i32]) -> Result<()> {
    let kernel = checked(kernel)?;
    ensure_eq("activation width (K)", w.cols, x.cols())?;
    ensure_eq("GEMV token count", 1, x.rows())?;
    ensure_len("accumulators", w.rows, acc.len())?;
    for (n, a) in acc.iter_mut().enumerate().take(w.rows) {
        *a = dot_i8::call(kernel, w.row(n), x.row(0));
    }
    Ok(())
}

/// `y[n] = (sum_k Wq[n,k] q[k]) * r_n / s` for the single token of `x`.
pub fn int8_gemv(w: &Int8Matrix, x: &QuantizedActivations, y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    int8_gemv_with(Kernel::selected(), w, x, y, pool)
}

/// [`int8_gemv`] with an explicit kernel.
pub fn int8_gemv_with(
    kernel: Kernel,
    w: &Int8Matrix,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let kernel = checked(kernel)?;
    ensure_eq("activation width (K)", w.cols, x.cols())?;
    ensure_eq("GEMV token count", 1, x.rows())?;
    ensure_len("output", w.rows, y.len())?;
    let inv_s = 1.0 / x.scales()[0];
    let act = x.row(0);
    for_rows(w.rows, y, pool, |n| dot_i8::call(kernel, w.row(n), act) as f32 * (w.row_scales[n] * inv_s));
    Ok(())
}
