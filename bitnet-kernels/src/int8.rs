//! The int8 dense product, for output heads quantized per row (W8A8): `W[n,k] ≈ Wq[n,k] · r_n` with codes in
//! `[-127, 127]`, against per-token int8 activations `q` with scale `s`:
//!
//! ```text
//! y[m, n] = (sum_k Wq[n,k] q[m,k]) · r_n / s_m
//! ```
//!
//! A head stored this way streams one byte per weight (half of bf16), and the products are integer dot
//! products: on AVX-512 VNNI, `vpdpbusd` takes unsigned bytes, so a code is read with its sign bit flipped
//! (`Wq + 128`) and `128 · sum_k q` is subtracted once per row; on AVX2, `vpmaddubsw` on `|Wq|` and
//! `q · sign(Wq)` (exact in i16 for codes in `[-127, 127]`). Every kernel computes the same i32 sum, so all
//! agree bit for bit with the scalar reference.

use crate::aligned::AlignedBytes;
use crate::dispatch::Kernel;
use crate::error::{checked_elems, ensure_eq, ensure_len, KernelError, Result};
use crate::gemv::OutPtr;
use crate::pool::{chunk_count, split_range, ThreadPool};
use crate::quant::{round_half_even_small, QuantizedActivations, ACT_PAD};

/// Rows of one int8 tile (they share each activation load).
const TILE: usize = 4;
/// Rows below which a product runs on the calling thread alone.
const MIN_PARALLEL_ROWS: usize = 256;

/// Int8 weights `[rows, cols]` in memory someone else owns: row `n` at `codes[n * stride..][..cols]`.
#[derive(Debug, Clone, Copy)]
pub struct Int8View<'a> {
    codes: &'a [i8],
    rows: usize,
    cols: usize,
    stride: usize,
    row_scales: &'a [f32],
}

impl<'a> Int8View<'a> {
    /// A view of `rows` rows of `cols` codes, `stride` apart, with one scale per row. Codes must lie in
    /// `[-127, 127]` (the quantizers here produce nothing else; -128 saturates the AVX2 kernel).
    pub fn new(codes: &'a [i8], rows: usize, cols: usize, stride: usize, row_scales: &'a [f32]) -> Result<Self> {
        if stride < cols {
            return Err(KernelError::ShapeMismatch {
                what: "int8 row stride (>= columns)",
                expected: cols,
                got: stride,
            });
        }
        let needed = if rows == 0 { 0 } else { checked_elems("int8 weights", rows - 1, stride)? + cols };
        if codes.len() < needed {
            return Err(KernelError::ShapeMismatch { what: "int8 weight bytes", expected: needed, got: codes.len() });
        }
        ensure_eq("int8 row scale count", rows, row_scales.len())?;
        Ok(Self { codes, rows, cols, stride, row_scales })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Codes of row `n`.
    pub fn row(&self, n: usize) -> &'a [i8] {
        &self.codes[n * self.stride..n * self.stride + self.cols]
    }

    /// Per-row scales `r_n`.
    pub fn row_scales(&self) -> &'a [f32] {
        self.row_scales
    }
}

/// Per-row absmax int8 quantization of one row: `r = max(max|w|, 1e-5) / 127`,
/// `codes = clamp(round(w / r), -127, 127)` (round half to even); returns `r`.
pub fn quantize_row(w: &[f32], codes: &mut [i8]) -> f32 {
    let absmax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = absmax.max(crate::quant::SCALE_EPS) / 127.0;
    let inv = 1.0 / scale;
    for (d, &v) in codes.iter_mut().zip(w) {
        // Clamping first changes nothing (|v * inv| <= 127 up to rounding) and lets the branch-free rounding
        // vectorize.
        *d = round_half_even_small((v * inv).clamp(-127.0, 127.0)) as i8;
    }
    scale
}

/// A dense matrix quantized per row to int8 ([`quantize_row`]), rows zero-padded to a multiple of 256.
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    cols_padded: usize,
    codes: AlignedBytes,
    row_scales: Vec<f32>,
}

impl Int8Matrix {
    /// Quantizes f32 `[rows, cols]` row-major.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        ensure_eq("weight element count", checked_elems("int8 weights", rows, cols)?, w.len())?;
        let cols_padded = cols.div_ceil(ACT_PAD) * ACT_PAD;
        let mut codes = AlignedBytes::zeroed(checked_elems("int8 weights", rows, cols_padded)?);
        let dst = codes.as_i8_mut();
        let row_scales = (0..rows)
            .map(|n| quantize_row(&w[n * cols..(n + 1) * cols], &mut dst[n * cols_padded..n * cols_padded + cols]))
            .collect();
        Ok(Self { rows, cols, cols_padded, codes, row_scales })
    }

    /// The view the kernels take.
    pub fn view(&self) -> Int8View<'_> {
        Int8View {
            codes: self.codes.as_i8(),
            rows: self.rows,
            cols: self.cols,
            stride: self.cols_padded,
            row_scales: &self.row_scales,
        }
    }

    /// Bytes of weight codes (what a GEMV reads).
    pub fn packed_bytes(&self) -> usize {
        self.codes.len()
    }
}

/// The portable dot product (the scalar reference, and the NEON/other copies).
#[inline(always)]
fn dot_i8_body(w: &[i8], x: &[i8]) -> i32 {
    const LANES: usize = 64;
    let mut acc = [0i32; LANES];
    let (wc, xc) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for l in 0..LANES {
            acc[l] += a[l] as i32 * b[l] as i32;
        }
    }
    for (l, (a, b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += *a as i32 * *b as i32;
    }
    acc.iter().sum()
}
multiversion!(dot_i8, dot_i8_body, (w: &[i8], x: &[i8]) -> i32);

/// The exact sums `sum_k Wq[n+i, k] q[k]` of up to four rows (`rows[i]`, all `cols` long) against `act`, whose
/// element sum is `act_sum`. Each row is read start to end before the next (one sequential stream for the
/// hardware prefetcher: rows are contiguous, and four interleaved streams of a few KiB each run at half the
/// bandwidth); the four rows stay in L1 for the next token of a multi-token product.
fn dot_tile(kernel: Kernel, rows: &[&[i8]], act: &[i8], act_sum: i32, streams: usize) -> [i32; TILE] {
    let mut sums = [0i32; TILE];
    for (s, row) in sums.iter_mut().zip(rows) {
        *s = dot_row(kernel, row, act, act_sum, streams);
    }
    sums
}

/// `sum_k row[k] act[k]`, exactly, with the kernel's instructions, in a matrix that `streams` threads read at once
/// (the VNNI prefetch distance, [`crate::prefetch::ahead_avx512`]).
#[inline(always)]
fn dot_row(kernel: Kernel, row: &[i8], act: &[i8], act_sum: i32, streams: usize) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        let full = act.len() / 64 * 64;
        let simd = match kernel {
            Kernel::Avx512Vnni => {
                let head_sum = act_sum - act[full..].iter().map(|&v| v as i32).sum::<i32>();
                let ahead = crate::prefetch::ahead_avx512(streams);
                // SAFETY: the kernel is available (checked by the entry points), so the CPU has its features;
                // `row` and `act` hold at least `full` bytes.
                Some(unsafe { x86::dot_vnni(row, act, full, head_sum, ahead) })
            }
            // SAFETY: as above.
            Kernel::Avx2 => Some(unsafe { x86::dot_avx2::<{ crate::prefetch::DENSE_AHEAD_AVX2 }>(row, act, full) }),
            // SAFETY: as above.
            Kernel::Avx512Bw => Some(unsafe { x86::dot_avx2::<0>(row, act, full) }),
            _ => None,
        };
        if let Some(sum) = simd {
            return sum + dot_i8_body(&row[full..], &act[full..]);
        }
    }
    let _ = (act_sum, streams);
    dot_i8::call(kernel, row, act)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// VNNI: `vpdpbusd` of the sign-flipped codes (`Wq + 128`, unsigned) with the activations, minus
    /// `128 · sum(act[..full])` (`head_sum`). Exact: a lane sums `full / 16` products of at most `255 · 128`.
    /// Each 128-byte step first asks for the two lines `ahead` bytes past it (rows are contiguous: near a row's
    /// end this reaches into the next ones).
    ///
    /// # Safety
    /// avx512f/bw/vnni present; `row` and `act` hold `full` (a multiple of 64) bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot_vnni(row: &[i8], act: &[i8], full: usize, head_sum: i32, ahead: usize) -> i32 {
        unsafe {
            let flip = _mm512_set1_epi8(i8::MIN);
            // Two accumulators hide the `vpdpbusd` latency.
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let load = |k: usize| {
                let x = _mm512_loadu_si512(act.as_ptr().add(k).cast());
                let w = _mm512_xor_si512(_mm512_loadu_si512(row.as_ptr().add(k).cast()), flip);
                (w, x)
            };
            let mut k = 0;
            while k + 128 <= full {
                crate::prefetch::prefetch_lines(row.as_ptr().cast::<u8>().wrapping_add(k), ahead, 2);
                let (w0, x0) = load(k);
                let (w1, x1) = load(k + 64);
                a0 = _mm512_dpbusd_epi32(a0, w0, x0);
                a1 = _mm512_dpbusd_epi32(a1, w1, x1);
                k += 128;
            }
            if k < full {
                let (w0, x0) = load(k);
                a0 = _mm512_dpbusd_epi32(a0, w0, x0);
            }
            let acc = [a0, a1];
            _mm512_reduce_add_epi32(_mm512_add_epi32(acc[0], acc[1])) - 128 * head_sum
        }
    }

    /// AVX2: `vpmaddubsw(|Wq|, q · sign(Wq))` (exact in i16: `2 · 127 · 128 < 2^15`), widened by `vpmaddwd`;
    /// prefetching `AHEAD` bytes ahead of each 64-byte read when `AHEAD > 0`.
    ///
    /// # Safety
    /// avx2 present; `row` and `act` hold `full` (a multiple of 64) bytes; codes in `[-127, 127]`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_avx2<const AHEAD: usize>(row: &[i8], act: &[i8], full: usize) -> i32 {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_si256(); 2];
            let mut k = 0;
            while k < full {
                if AHEAD > 0 {
                    crate::prefetch::prefetch_lines(row.as_ptr().cast::<u8>().wrapping_add(k), AHEAD, 1);
                }
                for (half, a) in acc.iter_mut().enumerate() {
                    let at = k + 32 * half;
                    let x = _mm256_loadu_si256(act.as_ptr().add(at).cast());
                    let w = _mm256_loadu_si256(row.as_ptr().add(at).cast());
                    let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, ones));
                }
                k += 64;
            }
            let lanes: [i32; 8] = std::mem::transmute(_mm256_add_epi32(acc[0], acc[1]));
            lanes.iter().sum()
        }
    }
}

/// The rows of tile `t` (the last tile may hold fewer than [`TILE`]) and how many there are.
fn tile_rows<'a>(w: &Int8View<'a>, t: usize) -> ([&'a [i8]; TILE], usize) {
    let first = t * TILE;
    let len = TILE.min(w.rows - first);
    let mut rows: [&[i8]; TILE] = [&[]; TILE];
    for (i, row) in rows.iter_mut().enumerate().take(len) {
        *row = w.row(first + i);
    }
    (rows, len)
}

/// Raw `acc[n] = sum_k Wq[n,k] q[token,k]` (the integer core every kernel must compute identically).
pub fn int8_accumulators(
    kernel: Kernel,
    w: Int8View<'_>,
    x: &QuantizedActivations,
    token: usize,
    acc: &mut [i32],
) -> Result<()> {
    let kernel = kernel.checked()?;
    ensure_eq("activation width (K)", w.cols, x.cols())?;
    ensure_len("accumulators", w.rows, acc.len())?;
    if token >= x.rows() {
        return Err(KernelError::ShapeMismatch { what: "token index", expected: x.rows(), got: token });
    }
    let act = &x.row(token)[..w.cols];
    let act_sum = act.iter().map(|&v| v as i32).sum();
    for (t, out) in acc.chunks_mut(TILE).enumerate() {
        let (rows, len) = tile_rows(&w, t);
        out.copy_from_slice(&dot_tile(kernel, &rows[..len], act, act_sum, 1)[..out.len()]);
    }
    Ok(())
}

/// `y[m, n] = (sum_k Wq[n,k] q[m,k]) · r_n / s_m` for every token `m` of `x`: `y` is `[x.rows(), w.rows()]`.
/// Each 4-row tile is read from memory once for all tokens.
pub fn int8_gemv(w: Int8View<'_>, x: &QuantizedActivations, y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    int8_gemv_with(Kernel::selected(), w, x, y, pool)
}

/// [`int8_gemv`] with an explicit kernel.
pub fn int8_gemv_with(
    kernel: Kernel,
    w: Int8View<'_>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let kernel = kernel.checked()?;
    ensure_eq("activation width (K)", w.cols, x.cols())?;
    ensure_len("output", x.rows() * w.rows, y.len())?;
    let (rows, tokens) = (w.rows, x.rows());
    let tiles = rows.div_ceil(TILE);
    let chunks = chunk_count(pool, tiles, MIN_PARALLEL_ROWS / TILE);
    let streams = pool.streams(chunks);
    let out = OutPtr(y.as_mut_ptr());
    pool.run(chunks, &|chunk| {
        for t in split_range(tiles, chunks, chunk, 1) {
            let first = t * TILE;
            let (tile, len) = tile_rows(&w, t);
            for m in 0..tokens {
                // Padding codes are zero, so the row's sum is the sum of its first `cols` codes.
                let sums = dot_tile(kernel, &tile[..len], &x.row(m)[..w.cols], x.sums()[m], streams);
                let inv_s = x.inv_scales()[m];
                for (i, &acc) in sums.iter().enumerate().take(len) {
                    let n = first + i;
                    // SAFETY: `m * rows + n < tokens * rows <= y.len()`; tile `t` belongs to this chunk alone.
                    unsafe { out.write(m * rows + n, acc as f32 * (w.row_scales[n] * inv_s)) };
                }
            }
        }
    });
    Ok(())
}
