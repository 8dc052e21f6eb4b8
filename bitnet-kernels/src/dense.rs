//! Dense GEMV kernels decode needs around the ternary ones, above all for the tied output embedding
//! (`logits = E h`, 128256 x 2560 in 2B-4T):
//!
//! * [`f32_gemv`]: `y[n] = sum_k W[n,k] x[k]`, W stored as f32;
//! * [`bf16_gemv`] and [`f16_gemv`]: the same with W stored as bf16 or IEEE f16 (widened exactly to f32 in
//!   registers, half the bytes: GGUF files store embeddings in f16, Hugging Face checkpoints in bf16);
//! * the int8 head (W8A8) lives in [`crate::int8`].
//!
//! Each dot product keeps a fixed set of independent accumulator lanes and reduces them in a fixed order,
//! written so the compiler vectorizes it; the ISA variants are the same code compiled with more target
//! features, so they give identical results (no FMA contraction happens without fast-math).

use crate::dispatch::Kernel;
use crate::error::{checked_elems, ensure_eq, ensure_len, Result};
use crate::gemv::OutPtr;
use crate::pool::{chunk_count, split_range, ThreadPool};
use crate::prefetch::prefetch_lines;

const F32_LANES: usize = 64;

/// Pairwise reduction of the lane array, in a fixed order.
#[inline(always)]
pub(crate) fn reduce_f32<const N: usize>(mut acc: [f32; N]) -> f32 {
    let mut width = N;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// `sum_k w[k] x[k]` in `N` lanes (lane `l` takes every `N`-th product, the tail adds into the first lanes), the
/// lanes then summed pairwise: the one fixed order every f32 dot product of the crate uses, whatever the ISA.
#[inline(always)]
pub(crate) fn dot_lanes<const N: usize>(w: &[f32], x: &[f32]) -> f32 {
    // Without the barrier LLVM vectorizes the loop to fit the pairwise reduction (two-lane vectors and shuffles,
    // a third of the speed); the values are unchanged.
    let [lanes] = std::hint::black_box(lane_sums_rows::<N, 1>([w], x));
    reduce_f32(lanes)
}

/// The `N` lane sums of [`dot_lanes`] for `R` rows (each as long as `x`) with `x` at once, before their reduction:
/// every row's lanes as alone, each chunk of `x` loaded once for all rows, the rows' additions independent (so
/// they overlap). Callers reduce them in [`reduce_f32`]'s order.
#[inline(always)]
pub(crate) fn lane_sums_rows<const N: usize, const R: usize>(rows: [&[f32]; R], x: &[f32]) -> [[f32; N]; R] {
    let (x_chunks, x_tail) = x.as_chunks::<N>();
    let row_chunks: [&[[f32; N]]; R] = rows.map(|row| row.as_chunks::<N>().0);
    let n = row_chunks.iter().fold(x_chunks.len(), |n, c| n.min(c.len()));
    let mut acc = [[0f32; N]; R];
    for (c, xc) in x_chunks[..n].iter().enumerate() {
        for r in 0..R {
            let (a, w) = (&mut acc[r], &row_chunks[r][c]);
            for l in 0..N {
                a[l] += w[l] * xc[l];
            }
        }
    }
    let tail = n * N;
    for (a, row) in acc.iter_mut().zip(rows) {
        for ((a, &w), &v) in a.iter_mut().zip(&row[tail..]).zip(x_tail) {
            *a += w * v;
        }
    }
    acc
}

#[inline(always)]
fn dot_f32_body(w: &[f32], x: &[f32]) -> f32 {
    dot_lanes::<F32_LANES>(w, x)
}

#[inline(always)]
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Prefetches the two cache lines `AHEAD` bytes past a 64-value chunk of 16-bit weights (nothing when 0).
#[inline(always)]
fn prefetch_chunk<const AHEAD: usize>(chunk: &[u16]) {
    if AHEAD > 0 {
        prefetch_lines(chunk.as_ptr().cast(), AHEAD, 2);
    }
}

#[inline(always)]
fn dot_bf16_body<const AHEAD: usize>(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; F32_LANES];
    let (wc, xc) = (w.chunks_exact(F32_LANES), x.chunks_exact(F32_LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        prefetch_chunk::<AHEAD>(a);
        for l in 0..F32_LANES {
            acc[l] += bf16_to_f32(a[l]) * b[l];
        }
    }
    for (l, (a, b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += bf16_to_f32(*a) * b;
    }
    reduce_f32(acc)
}

/// IEEE half -> f32, exactly, without branches (so it vectorizes). A normal half moves its 15 magnitude bits
/// into an f32's exponent and mantissa fields and rebiases the exponent by adding `(127 - 15) << 23` to the
/// bits; a subnormal half is `mantissa * 2^-24`, an integer times a power of two (both normal f32, so no
/// operation here ever sees a denormal: multiplying one, as a shortcut would, costs a microcode assist of some
/// hundred cycles on x86, and the Q6_K block scale `d` of small weights is usually a subnormal half);
/// infinities and NaNs get the all-ones exponent with their mantissa.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let (exponent, mantissa) = (bits as u32 & 0x7c00, bits as u32 & 0x03ff);
    let normal = ((bits as u32 & 0x7fff) << 13) + ((127 - 15) << 23);
    let subnormal = (mantissa as f32 * f32::from_bits(0x3380_0000)).to_bits();
    let magnitude = match exponent {
        0 => subnormal,
        0x7c00 => mantissa << 13 | 0x7f80_0000,
        _ => normal,
    };
    f32::from_bits(magnitude | (bits as u32 & 0x8000) << 16)
}

#[inline(always)]
fn dot_f16_body<const AHEAD: usize>(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; F32_LANES];
    let (wc, xc) = (w.chunks_exact(F32_LANES), x.chunks_exact(F32_LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        prefetch_chunk::<AHEAD>(a);
        for l in 0..F32_LANES {
            acc[l] += f16_to_f32(a[l]) * b[l];
        }
    }
    for (l, (a, b)) in wr.iter().zip(xr).enumerate() {
        acc[l] += f16_to_f32(*a) * b;
    }
    reduce_f32(acc)
}

/// `[w0·x0, w0·x1, w1·x0, w1·x1]`, each summed in exactly [`dot_lanes`]'s order (so bit for bit the four single
/// dot products), with each weight chunk widened once for both inputs and each input chunk read once for both
/// rows: the tile a GEMV over several tokens is made of.
#[inline(always)]
fn dot2x2_lanes<W: Copy>([w0, w1]: [&[W]; 2], [x0, x1]: [&[f32]; 2], widen: impl Fn(W) -> f32) -> [f32; 4] {
    const N: usize = F32_LANES;
    let mut acc = [[0.0f32; N]; 4];
    let chunks = w0.chunks_exact(N).zip(w1.chunks_exact(N)).zip(x0.chunks_exact(N).zip(x1.chunks_exact(N)));
    for ((a0, a1), (b0, b1)) in chunks {
        let mut wide = [[0.0f32; N]; 2];
        for l in 0..N {
            wide[0][l] = widen(a0[l]);
            wide[1][l] = widen(a1[l]);
        }
        for (r, row) in wide.iter().enumerate() {
            for l in 0..N {
                acc[2 * r][l] += row[l] * b0[l];
                acc[2 * r + 1][l] += row[l] * b1[l];
            }
        }
    }
    let full = w0.len().min(x0.len()) / N * N;
    for (r, w) in [w0, w1].into_iter().enumerate() {
        for (t, x) in [x0, x1].into_iter().enumerate() {
            for (l, (a, b)) in w[full..].iter().zip(&x[full..]).enumerate() {
                acc[2 * r + t][l] += widen(*a) * b;
            }
        }
    }
    acc.map(reduce_f32)
}

#[inline(always)]
fn dot2x2_f32_body(w0: &[f32], w1: &[f32], x0: &[f32], x1: &[f32]) -> [f32; 4] {
    dot2x2_lanes([w0, w1], [x0, x1], |v| v)
}

#[inline(always)]
fn dot2x2_bf16_body(w0: &[u16], w1: &[u16], x0: &[f32], x1: &[f32]) -> [f32; 4] {
    dot2x2_lanes([w0, w1], [x0, x1], bf16_to_f32)
}

multiversion!(dot_f32, dot_f32_body, (w: &[f32], x: &[f32]) -> f32);
multiversion!(dot2x2_f32, dot2x2_f32_body, (w0: &[f32], w1: &[f32], x0: &[f32], x1: &[f32]) -> [f32; 4]);
multiversion!(dot2x2_bf16, dot2x2_bf16_body, (w0: &[u16], w1: &[u16], x0: &[f32], x1: &[f32]) -> [f32; 4]);
multiversion!(dot_bf16_portable, dot_bf16_body::<AHEAD>, (w: &[u16], x: &[f32]) -> f32);
multiversion!(dot_f16_portable, dot_f16_body::<AHEAD>, (w: &[u16], x: &[f32]) -> f32);

/// The 16-bit dot products. On AVX-512 both types have explicit copies that prefetch at a distance set by
/// `streams`, how many threads read the matrix at once ([`crate::prefetch::ahead_avx512`]); f16 also has an
/// AVX2 copy with the hardware conversion (`vcvtph2ps`, exact like [`f16_to_f32`]). Each copy sums in the lane
/// order of its portable body ([`dot_f16_body`], [`dot_bf16_body`]), so every copy gives the same sums (NaN
/// payloads aside); the other kernels run the portable copies.
mod dot_half {
    use super::*;

    #[inline(always)]
    pub(super) fn f16(kernel: Kernel, w: &[u16], x: &[f32], streams: usize) -> f32 {
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the kernel is available (checked by the public entry point): AVX-512F is present.
            Kernel::Avx512Bw | Kernel::Avx512Vnni => {
                return unsafe { x86::dot_half_avx512::<false>(w, x, crate::prefetch::ahead_avx512(streams)) }
            }
            // SAFETY: AVX2 and FMA are present (kernel available); F16C is checked here.
            Kernel::Avx2 if std::is_x86_feature_detected!("f16c") => return unsafe { x86::dot_f16_avx2(w, x) },
            _ => {}
        }
        let _ = streams;
        dot_f16_portable::call(kernel, w, x)
    }

    #[inline(always)]
    pub(super) fn bf16(kernel: Kernel, w: &[u16], x: &[f32], streams: usize) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Kernel::Avx512Bw | Kernel::Avx512Vnni = kernel {
            // SAFETY: the kernel is available (checked by the public entry point): AVX-512F is present.
            return unsafe { x86::dot_half_avx512::<true>(w, x, crate::prefetch::ahead_avx512(streams)) };
        }
        let _ = streams;
        dot_bf16_portable::call(kernel, w, x)
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::{bf16_to_f32, f16_to_f32, prefetch_chunk, reduce_f32, F32_LANES};
        use crate::prefetch::{prefetch_lines, DENSE_AHEAD_AVX2};
        use std::arch::x86_64::*;

        /// Lanes `l` of the accumulators match `acc[l]` of the portable body: 4 x 16 lanes, mul then add. Each
        /// 64-value step first asks for the two cache lines `ahead` bytes past it (rows are contiguous: near a
        /// row's end this reaches into the next ones). bf16 widens by moving the bits to the top half of an
        /// f32, exactly as `bf16_to_f32`; f16 with `vcvtph2ps`.
        #[target_feature(enable = "avx512f")]
        pub(in super::super) unsafe fn dot_half_avx512<const BF16: bool>(w: &[u16], x: &[f32], ahead: usize) -> f32 {
            let n = w.len().min(x.len());
            let full = n / F32_LANES * F32_LANES;
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            while i < full {
                prefetch_lines(w.as_ptr().wrapping_add(i).cast(), ahead, 2);
                for (j, a) in acc.iter_mut().enumerate() {
                    let at = i + 16 * j;
                    // SAFETY: `at + 16 <= full <= n`, within both slices.
                    let (h, v) = unsafe {
                        (_mm256_loadu_si256(w.as_ptr().add(at) as *const __m256i), _mm512_loadu_ps(x.as_ptr().add(at)))
                    };
                    let wide = if BF16 {
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                    } else {
                        _mm512_cvtph_ps(h)
                    };
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(wide, v));
                }
                i += F32_LANES;
            }
            let mut lanes = [0.0f32; F32_LANES];
            for (j, a) in acc.iter().enumerate() {
                // SAFETY: 16 floats fit at `lanes[16 j..]`.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * j), *a) };
            }
            let widen = if BF16 { bf16_to_f32 } else { f16_to_f32 };
            finish(lanes, &w[full..n], &x[full..n], widen)
        }

        /// The f16 case of [`dot_half_avx512`] with 8 x 8 lanes.
        #[target_feature(enable = "avx2,f16c")]
        pub(in super::super) unsafe fn dot_f16_avx2(w: &[u16], x: &[f32]) -> f32 {
            let n = w.len().min(x.len());
            let full = n / F32_LANES * F32_LANES;
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut i = 0;
            while i < full {
                prefetch_chunk::<DENSE_AHEAD_AVX2>(&w[i..]);
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
            finish(lanes, &w[full..n], &x[full..n], f16_to_f32)
        }

        /// The tail and the reduction, exactly as the portable bodies do them.
        #[inline(always)]
        fn finish(mut lanes: [f32; F32_LANES], w: &[u16], x: &[f32], widen: fn(u16) -> f32) -> f32 {
            for (l, (a, b)) in w.iter().zip(x).enumerate() {
                lanes[l] += widen(*a) * b;
            }
            reduce_f32(lanes)
        }
    }
}

/// Rows below which a dense GEMV runs on the calling thread alone (a dispatch costs more than the work).
const MIN_PARALLEL_ROWS: usize = 256;

/// Whether `kernel` has the registers for [`dot2x2_lanes`]' sixteen 64-lane accumulators (AVX-512: 32 zmm); the
/// others take one dot product at a time, which gives the same bits.
fn tiles_pairs(kernel: Kernel) -> bool {
    matches!(kernel, Kernel::Avx512Bw | Kernel::Avx512Vnni)
}

/// The chunks [`for_rows_tokens`] cuts `rows` into on `pool` (runs of 16 rows; one below [`MIN_PARALLEL_ROWS`]).
fn row_chunks(pool: &ThreadPool, rows: usize) -> usize {
    chunk_count(pool, rows.div_ceil(16), MIN_PARALLEL_ROWS / 16)
}

/// Runs `dot(n, t) -> y[t * rows + n]` for every row `n` and token `t < tokens` on the pool, in chunks of
/// contiguous rows: a weight row is read from memory once and reused from L1 for every token. With `pair`,
/// two rows and two tokens at a time go through `pair(n, t)` (`[dot(n, t), dot(n, t + 1), dot(n + 1, t),
/// dot(n + 1, t + 1)]`, bit for bit), the rest through `dot`.
fn for_rows_tokens(
    rows: usize,
    tokens: usize,
    y: &mut [f32],
    pool: &ThreadPool,
    dot: impl Fn(usize, usize) -> f32 + Sync,
    pair: Option<impl Fn(usize, usize) -> [f32; 4] + Sync>,
) {
    let out = OutPtr(y.as_mut_ptr());
    // SAFETY (every write): `token * rows + n < tokens * rows <= y.len()` (checked by callers) and row ranges are
    // disjoint per chunk.
    let write = |n: usize, token: usize, v: f32| unsafe { out.write(token * rows + n, v) };
    let chunks = row_chunks(pool, rows);
    pool.run(chunks, &|c| {
        let range = split_range(rows, chunks, c, 16);
        let mut n = range.start;
        if let Some(pair) = pair.as_ref().filter(|_| tokens >= 2) {
            while n + 2 <= range.end {
                let mut token = 0;
                while token + 2 <= tokens {
                    let [a, b, c, d] = pair(n, token);
                    write(n, token, a);
                    write(n, token + 1, b);
                    write(n + 1, token, c);
                    write(n + 1, token + 1, d);
                    token += 2;
                }
                for token in token..tokens {
                    write(n, token, dot(n, token));
                    write(n + 1, token, dot(n + 1, token));
                }
                n += 2;
            }
        }
        for n in n..range.end {
            for token in 0..tokens {
                write(n, token, dot(n, token));
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
    let kernel = kernel.checked()?;
    ensure_eq("weight element count", checked_elems("f32 weights", rows, cols)?, w.len())?;
    let tokens = token_count(x, y, rows, cols)?;
    let (row, input) = (|n: usize| &w[n * cols..(n + 1) * cols], |t: usize| &x[t * cols..(t + 1) * cols]);
    let pair = |n: usize, t: usize| dot2x2_f32::call(kernel, row(n), row(n + 1), input(t), input(t + 1));
    let dot = |n: usize, t: usize| dot_f32::call(kernel, row(n), input(t));
    for_rows_tokens(rows, tokens, y, pool, dot, tiles_pairs(kernel).then_some(pair));
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
    let kernel = kernel.checked()?;
    let pair = tiles_pairs(kernel).then_some(dot2x2_bf16::call);
    half_gemv(kernel, "bf16 weights", dot_half::bf16, pair, w, rows, cols, x, y, pool)
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
    type Pair = fn(Kernel, &[u16], &[u16], &[f32], &[f32]) -> [f32; 4];
    half_gemv(kernel.checked()?, "f16 weights", dot_half::f16, None::<Pair>, w, rows, cols, x, y, pool)
}

/// The GEMV of a 16-bit weight type whose dot product is `dot(kernel, row, input, streams)`, `streams` being
/// how many threads read the weights at once (and, when given, whose 2 x 2 tile is `pair`).
#[allow(clippy::too_many_arguments)]
fn half_gemv(
    kernel: Kernel,
    what: &'static str,
    dot: impl Fn(Kernel, &[u16], &[f32], usize) -> f32 + Sync,
    pair: Option<impl Fn(Kernel, &[u16], &[u16], &[f32], &[f32]) -> [f32; 4] + Sync>,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ensure_eq("weight element count", checked_elems(what, rows, cols)?, w.len())?;
    let tokens = token_count(x, y, rows, cols)?;
    let (row, input) = (|n: usize| &w[n * cols..(n + 1) * cols], |t: usize| &x[t * cols..(t + 1) * cols]);
    let pair = pair.map(|pair| move |n: usize, t: usize| pair(kernel, row(n), row(n + 1), input(t), input(t + 1)));
    let streams = pool.streams(row_chunks(pool, rows));
    for_rows_tokens(rows, tokens, y, pool, |n, t| dot(kernel, row(n), input(t), streams), pair);
    Ok(())
}
