//! Q6_K, ggml's 6.5625-bit block format, as an output-head format: read in place from a GGUF file whose
//! `token_embd` (or `output`) is Q6_K, or made from a 16-bit head at load time
//! ([`crate::block_format::BlockMatrix::quantize`]).
//!
//! # Layout (one block of 256 weights, 210 bytes)
//! ```text
//! bytes   0..128  ql: low 4 bits of the codes      bytes 128..192  qh: high 2 bits of the codes
//! bytes 192..208  sc: 16 signed sub-block scales   bytes 208..210  d: f16 block scale
//! ```
//! A code `u` in `[0, 63]` stands for `q = u - 32`, and the weight is `w = d · sc[j] · q` with `j` the
//! 16-weight sub-block. Element `e` of a block lives in half `h = e / 128`; with `r = e % 128`,
//! `p = r / 32` and `l = r % 32`:
//! ```text
//! low bits   ql[64h + 32(p % 2) + l], the low nibble for p < 2, the high nibble for p >= 2
//! high bits  (qh[32h + l] >> 2p) & 3
//! scale      sc[8h + 2p + l / 16]
//! ```
//! so the low nibbles of the 64 bytes `ql[64h..64h + 64]` are elements `128h + 0..64` in order and their high
//! nibbles are elements `128h + 64..128`: a 64-byte load, a mask and a shift give 64 consecutive codes.
//!
//! # The product
//! Against per-token int8 activations `a` with scale `s` (as every other kernel here):
//! ```text
//! y[m, n] = (sum_b d_b · S_b) / s_m,   S_b = sum_j sc_j · sum_{l in j} (u_l - 32) · a_l   (exact, i32)
//! ```
//! `S_b` is an exact integer (`|S_b| < 2^28`), and the f32 sum over blocks runs in block order in every kernel,
//! so all kernels agree bit for bit with the scalar reference. The SIMD kernels multiply the unsigned codes
//! with `vpmaddubsw(u, a)` (`u <= 63`, so a pair sum stays below `2^15`), widen with `vpmaddwd` against the
//! sub-block scales as 16-bit lanes (the scale multiply for free), and subtract `32 · sum_j sc_j A_j` once per
//! block, `A_j` the activation sum of sub-block `j`, precomputed per token.

use crate::block_format::{gemv_rows, BlockFormat, BlockView};
use crate::dense::f16_to_f32;
use crate::dispatch::Kernel;
use crate::error::{ensure_len, Result};
use crate::pool::ThreadPool;
use crate::quant::{fitted_scale, round_half_even, QuantizedActivations};

/// Weights per block.
pub const Q6K_BLOCK: usize = 256;
/// Bytes per block.
pub const Q6K_BLOCK_BYTES: usize = 210;
/// Offsets of a block's fields.
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// The code `u` in `[0, 63]` of element `e` of `block` (see the module docs).
#[inline(always)]
fn code(block: &[u8], e: usize) -> u8 {
    let (h, p, l) = (e / 128, (e % 128) / 32, e % 32);
    let low = block[64 * h + 32 * (p % 2) + l] >> (4 * (p / 2)) & 0x0f;
    let high = block[QH + 32 * h + l] >> (2 * p) & 3;
    low | high << 4
}

/// The scale index of element `e` of a block.
#[inline(always)]
fn scale_index(e: usize) -> usize {
    let (h, p, l) = (e / 128, (e % 128) / 32, e % 32);
    8 * h + 2 * p + l / 16
}

#[inline(always)]
fn block_scale(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[D], block[D + 1]]))
}

/// Dequantizes whole blocks: `out.len() / 256` blocks of `blocks`.
pub(crate) fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (block, out) in blocks.chunks_exact(Q6K_BLOCK_BYTES).zip(out.chunks_exact_mut(Q6K_BLOCK)) {
        let d = block_scale(block);
        for (e, v) in out.iter_mut().enumerate() {
            let sc = block[SCALES + scale_index(e)] as i8 as f32;
            *v = d * sc * (code(block, e) as i32 - 32) as f32;
        }
    }
}

/// Quantizes `w` (a multiple of 256 values) into Q6_K blocks (`out` holds `w.len() / 256 * 210` bytes):
/// sub-block scales by `fitted_scale` (codes -32..=31), the block scale `d` maps the largest to `-128` and is rounded to
/// f16 before the codes are chosen against the scales actually stored.
pub fn quantize_row(w: &[f32], out: &mut [u8]) -> Result<()> {
    let blocks = BlockFormat::Q6K.row_bytes(w.len())? / Q6K_BLOCK_BYTES;
    ensure_len("Q6_K output bytes", blocks * Q6K_BLOCK_BYTES, out.len())?;
    for (x, block) in w.chunks_exact(Q6K_BLOCK).zip(out.chunks_exact_mut(Q6K_BLOCK_BYTES)) {
        block.fill(0);
        let mut scales = [0f32; 16];
        for (s, sub) in scales.iter_mut().zip(x.chunks_exact(16)) {
            *s = fitted_scale(sub, -32.0, 31.0);
        }
        let max = scales.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let d = half::f16::from_f32(-max / 128.0);
        let d32 = d.to_f32();
        let mut sc = [0i8; 16];
        if d32 != 0.0 && d32.is_finite() {
            for (c, s) in sc.iter_mut().zip(&scales) {
                *c = round_half_even(s / d32).clamp(-128.0, 127.0) as i8;
            }
        }
        for (e, &v) in x.iter().enumerate() {
            let step = d32 * sc[scale_index(e)] as f32;
            let q = if step != 0.0 && step.is_finite() { round_half_even(v / step).clamp(-32.0, 31.0) } else { 0.0 };
            let u = (q as i32 + 32) as u8;
            let (h, p, l) = (e / 128, (e % 128) / 32, e % 32);
            block[64 * h + 32 * (p % 2) + l] |= (u & 0x0f) << (4 * (p / 2));
            block[QH + 32 * h + l] |= (u >> 4) << (2 * p);
        }
        for (dst, &c) in block[SCALES..D].iter_mut().zip(&sc) {
            *dst = c as u8;
        }
        block[D..].copy_from_slice(&d.to_bits().to_le_bytes());
    }
    Ok(())
}

/// The activation sum of each 16-element sub-block (`|sum| <= 2048`, an i16), for the first `cols` codes: the
/// kernels add `-32 · sum_j sc_j · A_j` once per block for the offset of the unsigned codes.
fn sub_block_sums(act: &[i8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(act.chunks_exact(16).map(|g| g.iter().map(|&v| v as i16).sum::<i16>()));
}

/// The scalar reference: `sum_b d_b · S_b` of one row (block order, f32).
#[inline(always)]
fn row_dot_body(row: &[u8], act: &[i8]) -> f32 {
    let mut acc = 0f32;
    for (b, block) in row.chunks_exact(Q6K_BLOCK_BYTES).enumerate() {
        acc += block_scale(block) * block_sum(block, &act[b * Q6K_BLOCK..(b + 1) * Q6K_BLOCK]) as f32;
    }
    acc
}
multiversion!(row_dot_portable, row_dot_body, (row: &[u8], act: &[i8]) -> f32);

/// `S_b` of one block, exactly.
#[inline(always)]
fn block_sum(block: &[u8], act: &[i8]) -> i32 {
    let mut sum = 0i32;
    for j in 0..16 {
        let mut sub = 0i32;
        for i in 0..16 {
            // Element 16j + i: the sub-blocks are the scale indices in element order.
            let e = 16 * j + i;
            sub += (code(block, e) as i32 - 32) * act[e] as i32;
        }
        sum += block[SCALES + scale_index(16 * j)] as i8 as i32 * sub;
    }
    sum
}

/// One row's `sum_b d_b · S_b` with `kernel`'s instructions. `sums` is [`sub_block_sums`] of `act`; `streams`
/// threads read the matrix at once (the AVX-512 prefetch distance, [`crate::prefetch::ahead_avx512`]).
#[inline(always)]
fn row_dot(kernel: Kernel, row: &[u8], act: &[i8], sums: &[i16], streams: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: the kernel is available (checked by the entry points); `row` holds whole blocks and `act`,
        // `sums` cover them (checked by the entry points).
        Kernel::Avx512Vnni | Kernel::Avx512Bw => {
            return unsafe { x86::row_dot_avx512(row, act, sums, crate::prefetch::ahead_avx512(streams)) }
        }
        // SAFETY: as above.
        Kernel::Avx2 => return unsafe { x86::row_dot_avx2(row, act, sums) },
        _ => {}
    }
    let _ = (sums, streams);
    row_dot_portable::call(kernel, row, act)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{block_scale, Q6K_BLOCK, Q6K_BLOCK_BYTES, QH, SCALES};
    use crate::prefetch::{prefetch_lines, DENSE_AHEAD_AVX2};
    use std::arch::x86_64::*;

    /// Bytes `[sc[b] x8, sc[b+1] x8]` of a 16-byte scale vector (the 16-bit lanes of one 32-element quarter:
    /// lane `i` covers elements `2i, 2i + 1`, in sub-block `i / 8`).
    const fn pair(b: i8) -> [i8; 16] {
        [b, b, b, b, b, b, b, b, b + 1, b + 1, b + 1, b + 1, b + 1, b + 1, b + 1, b + 1]
    }

    /// AVX-512BW: per half block, 64 low-nibble codes (elements 0..64) and 64 high-nibble codes (64..128)
    /// with their high bits from `qh` (the same 32 bytes serve both quarters of each vector, shifted by a
    /// per-quarter amount); `vpmaddubsw(u, a)` then `vpmaddwd` with the sub-block scales as 16-bit lanes. Each
    /// block first asks for the bytes `ahead` past it.
    ///
    /// # Safety
    /// avx512f/bw present; `row` holds whole blocks; `act` and `sums` cover `row`'s elements.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn row_dot_avx512(row: &[u8], act: &[i8], sums: &[i16], ahead: usize) -> f32 {
        unsafe {
            let nibble = _mm512_set1_epi8(0x0f);
            let high = _mm512_set1_epi8(0x30);
            // 16-bit lanes 0..16 cover bytes 0..32 (the first quarter of a vector), 16..32 the second.
            let shifts = |first: i16, second: i16| {
                let mut lanes = [0i16; 32];
                lanes[..16].fill(first);
                lanes[16..].fill(second);
                _mm512_loadu_si512(lanes.as_ptr().cast())
            };
            let (shift_low, shift_high) = (shifts(4, 2), shifts(0, 2));
            // Scale patterns of the four 64-element vectors of a half block: quarters (0, 1) and (2, 3).
            let pattern = |q: i8| {
                let (a, b) = (pair(2 * q), pair(2 * q + 2));
                let mut bytes = [0i8; 32];
                bytes[..16].copy_from_slice(&a);
                bytes[16..].copy_from_slice(&b);
                _mm256_loadu_si256(bytes.as_ptr().cast())
            };
            let patterns = [pattern(0), pattern(2), pattern(4), pattern(6)];
            let mut acc = 0f32;
            for (b, block) in row.chunks_exact(Q6K_BLOCK_BYTES).enumerate() {
                let p = block.as_ptr();
                // Rows are contiguous: near a row's end this reaches into the next ones (a hint).
                prefetch_lines(p, ahead, Q6K_BLOCK_BYTES.div_ceil(64));
                let sc = _mm_loadu_si128(p.add(SCALES).cast());
                let sc2 = _mm256_broadcastsi128_si256(sc);
                // -32 · sum_j sc_j A_j, in the same vector.
                let offset =
                    _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), _mm256_loadu_si256(sums.as_ptr().add(16 * b).cast()));
                let mut sum =
                    _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset)));
                for h in 0..2 {
                    let ql = _mm512_loadu_si512(p.add(64 * h).cast());
                    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(QH + 32 * h).cast()));
                    let low = _mm512_or_si512(
                        _mm512_and_si512(ql, nibble),
                        _mm512_and_si512(_mm512_sllv_epi16(qh, shift_low), high),
                    );
                    let upper = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), nibble),
                        _mm512_and_si512(_mm512_srlv_epi16(qh, shift_high), high),
                    );
                    for (i, codes) in [low, upper].into_iter().enumerate() {
                        let at = b * Q6K_BLOCK + 128 * h + 64 * i;
                        let x = _mm512_loadu_si512(act.as_ptr().add(at).cast());
                        let scales = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(sc2, patterns[2 * h + i]));
                        sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(codes, x), scales));
                    }
                }
                acc += block_scale(block) * _mm512_reduce_add_epi32(sum) as f32;
            }
            acc
        }
    }

    /// AVX2: the four 32-element quarters of each half block, `vpmaddubsw(u, a)` then `vpmaddwd` with the
    /// sub-block scales as 16-bit lanes.
    ///
    /// # Safety
    /// avx2 present; `row` holds whole blocks; `act` and `sums` cover `row`'s elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_dot_avx2(row: &[u8], act: &[i8], sums: &[i16]) -> f32 {
        unsafe {
            let nibble = _mm256_set1_epi8(0x0f);
            let high = _mm256_set1_epi8(0x30);
            let patterns: [__m128i; 8] = std::array::from_fn(|q| _mm_loadu_si128(pair(2 * q as i8).as_ptr().cast()));
            let mut acc = 0f32;
            for (b, block) in row.chunks_exact(Q6K_BLOCK_BYTES).enumerate() {
                let p = block.as_ptr();
                // A block is 210 bytes: its 4 lines' worth, `DENSE_AHEAD_AVX2` bytes on.
                prefetch_lines(p, DENSE_AHEAD_AVX2, 4);
                let sc = _mm_loadu_si128(p.add(SCALES).cast());
                let offset =
                    _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), _mm256_loadu_si256(sums.as_ptr().add(16 * b).cast()));
                let mut sum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset));
                for h in 0..2 {
                    let ql0 = _mm256_loadu_si256(p.add(64 * h).cast());
                    let ql1 = _mm256_loadu_si256(p.add(64 * h + 32).cast());
                    let qh = _mm256_loadu_si256(p.add(QH + 32 * h).cast());
                    let quarters = [
                        _mm256_or_si256(
                            _mm256_and_si256(ql0, nibble),
                            _mm256_and_si256(_mm256_slli_epi16::<4>(qh), high),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(ql1, nibble),
                            _mm256_and_si256(_mm256_slli_epi16::<2>(qh), high),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), nibble),
                            _mm256_and_si256(qh, high),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), nibble),
                            _mm256_and_si256(_mm256_srli_epi16::<2>(qh), high),
                        ),
                    ];
                    for (q, codes) in quarters.into_iter().enumerate() {
                        let at = b * Q6K_BLOCK + 128 * h + 32 * q;
                        let x = _mm256_loadu_si256(act.as_ptr().add(at).cast());
                        let scales = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, patterns[4 * h + q]));
                        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), scales));
                    }
                }
                let lanes: [i32; 8] = std::mem::transmute(sum);
                acc += block_scale(block) * lanes.iter().sum::<i32>() as f32;
            }
            acc
        }
    }
}

/// The exact block sums `S_b` of one row against one token's codes (for [`crate::block_format::block_sums`]).
pub(crate) fn row_sums(row: &[u8], act: &[i8], out: &mut [i32]) {
    for (b, (block, s)) in row.chunks_exact(Q6K_BLOCK_BYTES).zip(out.iter_mut()).enumerate() {
        *s = block_sum(block, &act[b * Q6K_BLOCK..(b + 1) * Q6K_BLOCK]);
    }
}

/// `y[m, n] = (sum_b d_b · S_b) / s_m` for every token `m` of `x` (a checked kernel, Q6_K blocks: see
/// [`crate::block_format::block_gemv_with`]).
pub(crate) fn gemv(
    kernel: Kernel,
    w: BlockView<'_>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let prepare = |act: &[i8]| {
        let mut sums = Vec::with_capacity(act.len() / 16);
        sub_block_sums(act, &mut sums);
        sums
    };
    gemv_rows(w, x, y, pool, prepare, |row, act, sums: &Vec<i16>, streams| row_dot(kernel, row, act, sums, streams))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockMatrix;

    #[test]
    fn quantize_dequantize_round_trip_is_close() {
        let w: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let m = BlockMatrix::quantize(BlockFormat::Q6K, &w, 2, 256).unwrap();
        let mut back = vec![0f32; 256];
        for n in 0..2 {
            m.view().dequantize_row(n, &mut back).unwrap();
            for (a, b) in w[n * 256..(n + 1) * 256].iter().zip(&back) {
                assert!((a - b).abs() < 0.06, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn zero_rows_stay_zero() {
        let m = BlockMatrix::quantize(BlockFormat::Q6K, &[0.0; 256], 1, 256).unwrap();
        let mut back = vec![1f32; 256];
        m.view().dequantize_row(0, &mut back).unwrap();
        assert!(back.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn rows_must_be_whole_blocks() {
        assert!(BlockFormat::Q6K.row_bytes(255).is_err());
        assert!(BlockView::new(BlockFormat::Q6K, &[0u8; 209], 1, 256).is_err());
        assert_eq!(BlockFormat::Q6K.row_bytes(2560).unwrap(), 2100);
    }
}
