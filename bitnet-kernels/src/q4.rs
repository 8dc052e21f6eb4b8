//! Q4, a 4.5-bit block format for the output head: one f16 scale per 32 weights and a 4-bit code per weight,
//! the numbers of ggml's Q4_0 (`w = d · (u - 8)`, `u` in `[0, 15]`) laid out for the kernels. Made from a wider
//! head at load time ([`BlockMatrix::quantize`]) or repacked from a GGUF file's Q4_0 blocks
//! ([`from_ggml_q4_0`]), and written back as Q4_0 ([`to_ggml_q4_0`]). The kernels take a
//! [`BlockView`] of [`BlockFormat::Q4`].
//!
//! # Layout (one super-block of 256 weights, 144 bytes)
//! ```text
//! bytes  0..16   d[0..8]: the f16 scales of the super-block's eight 32-weight groups
//! bytes 16..144  four 32-byte vectors; in vector c, byte k holds two codes of group g = k / 4:
//!                weight 8c + k % 4 of the group (low nibble) and weight 8c + 4 + k % 4 (high nibble)
//! ```
//! so each 32-byte load holds eight codes of every group, four bytes per group: after `vpmaddubsw` and
//! `vpmaddwd` against activations permuted the same way (once per token), i32 lane `g` belongs to group `g`, and
//! the eight scales of a super-block convert to f32 with one instruction. A row is `cols / 256` super-blocks
//! (`cols` a multiple of 256, as for Q6_K). ggml's Q4_0 stores the same numbers per group as `d` then 16 bytes,
//! byte `j` holding weight `j` (low nibble) and `j + 16` (high nibble).
//!
//! # The product
//! Against per-token int8 activations `a` with scale `s` (as every other kernel here), with `A_g` the sum of
//! the activations of group `g`:
//! ```text
//! S_g = sum_{l in g} (u_l - 8) · a_l = sum_{l in g} u_l a_l - 8 A_g          (exact, |S_g| <= 2^15)
//! y[m, n] = (((L_0 + L_1) + (L_2 + L_3)) + ((L_4 + L_5) + (L_6 + L_7))) / s_m,  L_i = sum_{g = i mod 8} d_g S_g
//! ```
//! The eight partial sums `L_i` run over the super-blocks in order (group `i` of each), so a SIMD kernel keeps
//! them in the eight f32 lanes of one vector and every kernel agrees bit for bit with the scalar reference.
//! AVX2 multiplies the unsigned codes with `vpmaddubsw(u, a)` (a pair sum is at most `2 · 15 · 128`), sums the eight
//! products of a super-block in i16 (at most `8 · 3840 < 2^15`, exact) and widens once with `vpmaddwd`; AVX-512 VNNI
//! loads two code vectors at a time and sums four products straight into i32 with `vpdpbusd` (the permuted activations
//! put the low-nibble runs of two vectors side by side, `low_run`; lanes `g` and `8 + g` both belong to group `g` and
//! are added before the f32 steps, which are the AVX2 kernel's); AVX-512 BW runs the AVX2 code. NEON with dotprod runs
//! `sdot` on the same layout (a 16-byte half of a code vector covers four groups); plain NEON runs the portable body.

use crate::block_format::{gemv_rows, BlockFormat, BlockMatrix, BlockView};
use crate::dense::f16_to_f32;
use crate::dispatch::Kernel;
use crate::error::{checked_elems, ensure_len, KernelError, Result};
use crate::pool::ThreadPool;
use crate::quant::{fitted_scale, round_half_even, QuantizedActivations};

/// Weights per group (one scale).
pub const Q4_GROUP: usize = 32;
/// Weights per super-block.
pub const Q4_SUPER_BLOCK: usize = 256;
/// Bytes per super-block.
pub const Q4_SUPER_BLOCK_BYTES: usize = 144;
/// Bytes of one ggml Q4_0 block (32 weights).
pub const GGML_Q4_0_BLOCK_BYTES: usize = 18;
/// Groups per super-block.
const GROUPS: usize = Q4_SUPER_BLOCK / Q4_GROUP;
/// Offset of the codes in a super-block.
const CODES: usize = 2 * GROUPS;

/// Byte and nibble shift of weight `j` of group `g` in a super-block's codes (module docs).
#[inline(always)]
fn code_at(g: usize, j: usize) -> (usize, usize) {
    let (c, r) = (j / 8, j % 8);
    (CODES + 32 * c + 4 * g + r % 4, 4 * (r / 4))
}

/// The code `u` in `[0, 15]` of element `e` (`0..256`) of a super-block.
#[inline(always)]
fn code(block: &[u8], e: usize) -> u8 {
    let (at, shift) = code_at(e / Q4_GROUP, e % Q4_GROUP);
    block[at] >> shift & 0x0f
}

/// The f16 bits of group `g`'s scale.
#[inline(always)]
fn scale_bits(block: &[u8], g: usize) -> u16 {
    u16::from_le_bytes([block[2 * g], block[2 * g + 1]])
}

/// Dequantizes whole super-blocks: `out.len() / 256` of them from `blocks`.
pub(crate) fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (block, out) in blocks.chunks_exact(Q4_SUPER_BLOCK_BYTES).zip(out.chunks_exact_mut(Q4_SUPER_BLOCK)) {
        for (e, v) in out.iter_mut().enumerate() {
            *v = f16_to_f32(scale_bits(block, e / Q4_GROUP)) * (code(block, e) as i32 - 8) as f32;
        }
    }
}

/// The numbers of Q4 weights as ggml Q4_0 blocks, row after row (what a GGUF file stores).
pub fn to_ggml_q4_0(w: BlockView<'_>) -> Result<Vec<u8>> {
    if w.format() != BlockFormat::Q4 {
        let got = w.format().name();
        return Err(KernelError::WrongBlockFormat { what: "Q4_0 export", expected: BlockFormat::Q4.name(), got });
    }
    let bytes = w.bytes();
    let mut out = Vec::with_capacity(bytes.len() / Q4_SUPER_BLOCK_BYTES * GROUPS * GGML_Q4_0_BLOCK_BYTES);
    for block in bytes.chunks_exact(Q4_SUPER_BLOCK_BYTES) {
        for g in 0..GROUPS {
            out.extend_from_slice(&scale_bits(block, g).to_le_bytes());
            let e = g * Q4_GROUP;
            out.extend((0..16).map(|j| code(block, e + j) | code(block, e + j + 16) << 4));
        }
    }
    Ok(out)
}

/// Writes group `g` of a super-block: its scale bits and its 32 codes.
fn put_group(block: &mut [u8], g: usize, scale: u16, codes: impl Iterator<Item = u8>) {
    block[2 * g..2 * g + 2].copy_from_slice(&scale.to_le_bytes());
    for (j, u) in codes.enumerate() {
        let (at, shift) = code_at(g, j);
        block[at] = block[at] & !(0x0f << shift) | (u & 0x0f) << shift;
    }
}

/// Quantizes `w` (a multiple of 256 values) into Q4 super-blocks (`out` holds `w.len() / 256 * 144` bytes): each
/// group's scale by `fitted_scale` (codes -8..=7), rounded to f16 before the codes are chosen against it.
pub fn quantize_row(w: &[f32], out: &mut [u8]) -> Result<()> {
    let blocks = BlockFormat::Q4.row_bytes(w.len())? / Q4_SUPER_BLOCK_BYTES;
    ensure_len("Q4 output bytes", blocks * Q4_SUPER_BLOCK_BYTES, out.len())?;
    for (x, block) in w.chunks_exact(Q4_SUPER_BLOCK).zip(out.chunks_exact_mut(Q4_SUPER_BLOCK_BYTES)) {
        for (g, group) in x.chunks_exact(Q4_GROUP).enumerate() {
            if let Some(&v) = group.iter().find(|v| !v.is_finite()) {
                return Err(KernelError::NonFiniteScale { what: "a weight", value: v });
            }
            let d = half::f16::from_f32(fitted_scale(group, -8.0, 7.0));
            let d32 = d.to_f32();
            if !d32.is_finite() {
                return Err(KernelError::NonFiniteScale {
                    what: "a Q4 scale (weights beyond f16's range)",
                    value: d32,
                });
            }
            let codes = group.iter().map(|&v| {
                let q = if d32 != 0.0 { round_half_even(v / d32).clamp(-8.0, 7.0) } else { 0.0 };
                (q as i32 + 8) as u8
            });
            put_group(block, g, d.to_bits(), codes);
        }
    }
    Ok(())
}

/// Repacks ggml Q4_0 blocks (`rows * cols / 32` blocks of 18 bytes, row after row). Scales that are not
/// finite are refused (they would turn every logit into NaN).
pub fn from_ggml_q4_0(ggml: &[u8], rows: usize, cols: usize) -> Result<BlockMatrix> {
    let row_bytes = BlockFormat::Q4.row_bytes(cols)?;
    let groups = checked_elems("Q4_0 blocks", rows, cols / Q4_GROUP)?;
    ensure_len("Q4_0 bytes", checked_elems("Q4_0 bytes", groups, GGML_Q4_0_BLOCK_BYTES)?, ggml.len())?;
    // Decode streams these bytes every token: in huge pages, as the heads quantized at load are.
    let mut bytes = crate::huge_pages::huge_page_vec(0u8, checked_elems("Q4 weights", rows, row_bytes)?);
    let super_blocks = bytes.chunks_exact_mut(Q4_SUPER_BLOCK_BYTES);
    for (block, ggml) in super_blocks.zip(ggml.chunks_exact(GROUPS * GGML_Q4_0_BLOCK_BYTES)) {
        for (g, b) in ggml.chunks_exact(GGML_Q4_0_BLOCK_BYTES).enumerate() {
            let scale = u16::from_le_bytes([b[0], b[1]]);
            if scale & 0x7c00 == 0x7c00 {
                return Err(KernelError::NonFiniteScale { what: "a Q4_0 scale", value: f16_to_f32(scale) });
            }
            let qs = &b[2..];
            put_group(block, g, scale, (0..Q4_GROUP).map(|j| qs[j % 16] >> (4 * (j / 16)) & 0x0f));
        }
    }
    BlockMatrix::from_bytes(BlockFormat::Q4, bytes, rows, cols)
}

/// The activation sum `A_g` of each 32-element group of the first `cols` codes (`|A_g| <= 4096`).
fn group_sums(act: &[i8], out: &mut Vec<i32>) {
    out.clear();
    out.extend(act.chunks_exact(Q4_GROUP).map(|g| g.iter().map(|&v| v as i32).sum::<i32>()));
}

/// `S_g` of group `g` of a super-block against its 256 activations, exactly.
#[inline(always)]
fn group_sum(block: &[u8], act: &[i8], g: usize, sum: i32) -> i32 {
    let first = g * Q4_GROUP;
    let s: i32 =
        act[first..first + Q4_GROUP].iter().enumerate().map(|(l, &a)| code(block, first + l) as i32 * a as i32).sum();
    s - 8 * sum
}

/// The final reduction of the eight partial sums (the same tree in every kernel).
#[inline(always)]
fn reduce(l: &[f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// The scalar reference of one row (module docs): `sums` is [`group_sums`] of `act`.
#[inline(always)]
fn row_dot_body(row: &[u8], act: &[i8], sums: &[i32]) -> f32 {
    let mut lanes = [0f32; GROUPS];
    for (b, block) in row.chunks_exact(Q4_SUPER_BLOCK_BYTES).enumerate() {
        let act = &act[b * Q4_SUPER_BLOCK..(b + 1) * Q4_SUPER_BLOCK];
        for (g, lane) in lanes.iter_mut().enumerate() {
            let s = group_sum(block, act, g, sums[b * GROUPS + g]);
            *lane += f16_to_f32(scale_bits(block, g)) * s as f32;
        }
    }
    reduce(&lanes)
}
multiversion!(row_dot_portable, row_dot_body, (row: &[u8], act: &[i8], sums: &[i32]) -> f32);

/// Where the activations of code vector `c`'s low nibbles start in a super-block's permuted activations; those
/// of its high nibbles follow 64 bytes later. Vectors pair up (0 and 1, 2 and 3): the low-nibble runs of a pair
/// side by side, then its high-nibble runs, so a 64-byte kernel reads each kind with one load and a 32- or
/// 16-byte kernel with one per vector.
#[inline(always)]
const fn low_run(c: usize) -> usize {
    128 * (c / 2) + 32 * (c % 2)
}

/// The activations of a token in the order of the codes (module docs): per super-block, for code vector `c` and
/// nibble `half`, the 32 activations of weight `8c + 4 half + k % 4` of group `k / 4` (`k` in `0..32`), at
/// [`low_run`]`(c) + 64 half`.
fn permute_activations(act: &[i8], out: &mut Vec<i8>) {
    out.clear();
    for block in act.chunks_exact(Q4_SUPER_BLOCK) {
        for pair in 0..2 {
            for half in 0..2 {
                for c in 2 * pair..2 * pair + 2 {
                    debug_assert_eq!(out.len() % Q4_SUPER_BLOCK, low_run(c) + 64 * half);
                    out.extend((0..32).map(|k| block[Q4_GROUP * (k / 4) + 8 * c + 4 * half + k % 4]));
                }
            }
        }
    }
}

/// The row kernel a product runs, decided once per product from the caller's (checked) kernel and, on x86, the
/// CPU's F16C: the hand-written AVX-512 VNNI or AVX2 code (AVX-512 BW machines run the AVX2 one), NEON dotprod,
/// or the portable body.
#[derive(Debug, Clone, Copy)]
enum RowKernel {
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Dotprod,
    Portable(Kernel),
}

impl RowKernel {
    /// The row kernel for `kernel`, which the caller has checked is available.
    fn for_kernel(kernel: Kernel) -> Self {
        #[cfg(target_arch = "x86_64")]
        if kernel != Kernel::Scalar && x86::available() {
            return if kernel == Kernel::Avx512Vnni { Self::Avx512Vnni } else { Self::Avx2 };
        }
        #[cfg(target_arch = "aarch64")]
        if kernel == Kernel::NeonDotprod {
            return Self::Dotprod;
        }
        Self::Portable(kernel)
    }

    /// One row's product (`permuted` is [`permute_activations`] of `act`, `sums` [`group_sums`] of it) in a
    /// matrix that `streams` threads read at once (the AVX-512 prefetch distance,
    /// [`crate::prefetch::ahead_avx512`]).
    #[inline(always)]
    fn dot(self, row: &[u8], act: &[i8], permuted: &[i8], sums: &[i32], streams: usize) -> f32 {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = streams;
        match self {
            // SAFETY: `for_kernel` chose it only for an available Avx512Vnni kernel (avx512f, avx512bw,
            // avx512vnni) with avx2 and f16c present; `row` holds whole super-blocks and `permuted`, `sums` cover
            // them (checked by the entry points).
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => unsafe {
                x86::row_dot_avx512vnni(row, permuted, sums, crate::prefetch::ahead_avx512(streams))
            },
            // SAFETY: `for_kernel` chose it only with avx2 and f16c present; as above.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { x86::row_dot_avx2(row, permuted, sums) },
            // SAFETY: chosen only for an available NeonDotprod kernel (neon and dotprod present); as above.
            #[cfg(target_arch = "aarch64")]
            Self::Dotprod => unsafe { neon::row_dot_dotprod(row, permuted, sums) },
            Self::Portable(kernel) => row_dot_portable::call(kernel, row, act, sums),
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{f16_to_f32, low_run, reduce, scale_bits, CODES, GROUPS, Q4_SUPER_BLOCK, Q4_SUPER_BLOCK_BYTES};
    use crate::gemv::neon::sdot;
    use core::arch::aarch64::*;

    /// NEON dotprod: each 16-byte half of a code vector holds four codes of each of four groups, so `sdot`
    /// against the permuted activations (codes 0..=15 are valid signed bytes) sums group `g` into lane `g % 4`
    /// of one of two i32 accumulators; then as the AVX2 kernel (`8 A_g` subtracted, converted, multiplied by the
    /// scales and added to eight f32 lanes, no fused multiply-add).
    ///
    /// # Safety
    /// neon and dotprod present; `row` holds whole super-blocks; `permuted` and `sums` cover `row`'s elements.
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn row_dot_dotprod(row: &[u8], permuted: &[i8], sums: &[i32]) -> f32 {
        unsafe {
            let nibble = vdupq_n_u8(0x0f);
            let mut acc = [vdupq_n_f32(0.0); 2];
            for (b, block) in row.chunks_exact(Q4_SUPER_BLOCK_BYTES).enumerate() {
                let p = block.as_ptr();
                let x = permuted.as_ptr().add(b * Q4_SUPER_BLOCK);
                let mut s = [vdupq_n_s32(0); 2];
                for c in 0..4 {
                    for (h, s) in s.iter_mut().enumerate() {
                        let v = vld1q_u8(p.add(CODES + 32 * c + 16 * h));
                        let low = vreinterpretq_s8_u8(vandq_u8(v, nibble));
                        let high = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                        *s = sdot(*s, low, vld1q_s8(x.add(low_run(c) + 16 * h)));
                        *s = sdot(*s, high, vld1q_s8(x.add(low_run(c) + 64 + 16 * h)));
                    }
                }
                let mut scales = [0f32; GROUPS];
                for (g, d) in scales.iter_mut().enumerate() {
                    *d = f16_to_f32(scale_bits(block, g));
                }
                for h in 0..2 {
                    let offsets = vshlq_n_s32::<3>(vld1q_s32(sums.as_ptr().add(b * GROUPS + 4 * h)));
                    let exact = vcvtq_f32_s32(vsubq_s32(s[h], offsets));
                    acc[h] = vaddq_f32(acc[h], vmulq_f32(exact, vld1q_f32(scales.as_ptr().add(4 * h))));
                }
            }
            let mut lanes = [0f32; GROUPS];
            vst1q_f32(lanes.as_mut_ptr(), acc[0]);
            vst1q_f32(lanes.as_mut_ptr().add(4), acc[1]);
            reduce(&lanes)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{low_run, reduce, CODES, GROUPS, Q4_SUPER_BLOCK, Q4_SUPER_BLOCK_BYTES};
    use crate::prefetch::{prefetch_lines, DENSE_AHEAD_AVX2};
    use std::arch::x86_64::*;

    /// Whether the CPU runs [`row_dot_avx2`] (every AVX-512 CPU does too: the BW kernel uses it, and the VNNI
    /// one's f32 steps are AVX2 and F16C instructions).
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")
    }

    /// The f32 step of a super-block, shared by the x86 kernels: `acc + d · (S - 8 A)` per group, from the
    /// eight code-times-activation sums `S` (lane `g` for group `g`), the super-block's f16 scales at `block` and
    /// its eight activation sums `A` at `offsets` (a rounded product, then a rounded sum: no fused multiply-add).
    ///
    /// # Safety
    /// avx2 and f16c present; `block` points at a super-block and `offsets` at eight readable `i32`.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn add_scaled(acc: __m256, sums: __m256i, block: *const u8, offsets: *const i32) -> __m256 {
        unsafe {
            let exact = _mm256_sub_epi32(sums, _mm256_slli_epi32::<3>(_mm256_loadu_si256(offsets.cast())));
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(block.cast()));
            _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(exact), scales))
        }
    }

    /// The eight partial sums of `acc` reduced by the tree every kernel uses ([`reduce`]).
    #[inline]
    #[target_feature(enable = "avx")]
    fn reduce_lanes(acc: __m256) -> f32 {
        let mut lanes = [0f32; GROUPS];
        // SAFETY: `lanes` holds the eight f32 an unaligned 32-byte store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        reduce(&lanes)
    }

    /// AVX2: per super-block, four 32-byte loads hold eight codes of every group (low and high nibbles);
    /// `vpmaddubsw(u, a)` against the permuted activations, the eight products summed in i16 (exact, module
    /// docs), and one `vpmaddwd` against ones leave group `g`'s sum in i32 lane `g`; `8 A_g` is subtracted, the
    /// sums converted, multiplied by the eight scales and added to the eight lanes of the accumulator (no fused
    /// multiply-add: the scalar reference rounds the product).
    ///
    /// # Safety
    /// avx2 and f16c present; `row` holds whole super-blocks; `permuted` ([`super::permute_activations`]) and
    /// `sums` cover `row`'s elements.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn row_dot_avx2(row: &[u8], permuted: &[i8], sums: &[i32]) -> f32 {
        unsafe {
            let nibble = _mm256_set1_epi8(0x0f);
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            for (b, block) in row.chunks_exact(Q4_SUPER_BLOCK_BYTES).enumerate() {
                let p = block.as_ptr();
                // A super-block is 144 bytes: its (up to) 3 lines' worth, `DENSE_AHEAD_AVX2` bytes on.
                prefetch_lines(p, DENSE_AHEAD_AVX2, 3);
                let x = permuted.as_ptr().add(b * Q4_SUPER_BLOCK);
                let mut narrow = _mm256_setzero_si256();
                for c in 0..4 {
                    let v = _mm256_loadu_si256(p.add(CODES + 32 * c).cast());
                    let low = _mm256_and_si256(v, nibble);
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                    let products = _mm256_add_epi16(
                        _mm256_maddubs_epi16(low, _mm256_loadu_si256(x.add(low_run(c)).cast())),
                        _mm256_maddubs_epi16(high, _mm256_loadu_si256(x.add(low_run(c) + 64).cast())),
                    );
                    narrow = _mm256_add_epi16(narrow, products);
                }
                acc = add_scaled(acc, _mm256_madd_epi16(narrow, ones), p, sums.as_ptr().add(b * GROUPS));
            }
            reduce_lanes(acc)
        }
    }

    /// AVX-512 VNNI: per super-block, two 64-byte loads hold all its codes (each half of one, a 32-byte vector
    /// of the layout, holds four codes of every group in four adjacent bytes); `vpdpbusd(u, a)` against the
    /// permuted activations sums each four products straight into i32, so lanes `g` and `8 + g` hold
    /// group `g`'s partial sums, added in one `vpaddd` of the two halves (exact: every step is an integer sum
    /// far from overflow). From there the same f32 steps as [`row_dot_avx2`], so the same bits. Each super-block
    /// first asks for the bytes `ahead` past it.
    ///
    /// # Safety
    /// avx512f, avx512bw, avx512vnni, avx2 and f16c present; `row` holds whole super-blocks; `permuted`
    /// ([`super::permute_activations`]) and `sums` cover `row`'s elements.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
    pub(super) unsafe fn row_dot_avx512vnni(row: &[u8], permuted: &[i8], sums: &[i32], ahead: usize) -> f32 {
        unsafe {
            let nibble = _mm512_set1_epi8(0x0f);
            let mut acc = _mm256_setzero_ps();
            for (b, block) in row.chunks_exact(Q4_SUPER_BLOCK_BYTES).enumerate() {
                let p = block.as_ptr();
                prefetch_lines(p, ahead, 3);
                let x = permuted.as_ptr().add(b * Q4_SUPER_BLOCK);
                // Two chains, one per 64-byte load, so the `vpdpbusd` latencies overlap.
                let mut s = [_mm512_setzero_si512(); 2];
                for (h, s) in s.iter_mut().enumerate() {
                    let v = _mm512_loadu_si512(p.add(CODES + 64 * h).cast());
                    let low = _mm512_and_si512(v, nibble);
                    let high = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                    *s = _mm512_dpbusd_epi32(*s, low, _mm512_loadu_si512(x.add(low_run(2 * h)).cast()));
                    *s = _mm512_dpbusd_epi32(*s, high, _mm512_loadu_si512(x.add(low_run(2 * h) + 64).cast()));
                }
                let wide = _mm512_add_epi32(s[0], s[1]);
                let narrow = _mm256_add_epi32(_mm512_castsi512_si256(wide), _mm512_extracti64x4_epi64::<1>(wide));
                acc = add_scaled(acc, narrow, p, sums.as_ptr().add(b * GROUPS));
            }
            reduce_lanes(acc)
        }
    }
}

/// The exact group sums `S_g` of one row against one token's codes (for [`crate::block_format::block_sums`]).
pub(crate) fn row_sums(row: &[u8], act: &[i8], out: &mut [i32]) {
    let mut sums = Vec::new();
    group_sums(act, &mut sums);
    for (b, block) in row.chunks_exact(Q4_SUPER_BLOCK_BYTES).enumerate() {
        let act = &act[b * Q4_SUPER_BLOCK..(b + 1) * Q4_SUPER_BLOCK];
        for g in 0..GROUPS {
            out[b * GROUPS + g] = group_sum(block, act, g, sums[b * GROUPS + g]);
        }
    }
}

/// `y[m, n] = (the module docs' sum) / s_m` for every token `m` of `x` (a checked kernel, Q4 blocks: see
/// [`crate::block_format::block_gemv_with`]).
pub(crate) fn gemv(
    kernel: Kernel,
    w: BlockView<'_>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let row_kernel = RowKernel::for_kernel(kernel);
    let prepare = |act: &[i8]| {
        let (mut sums, mut permuted) = (Vec::with_capacity(act.len() / Q4_GROUP), Vec::with_capacity(act.len()));
        group_sums(act, &mut sums);
        permute_activations(act, &mut permuted);
        (sums, permuted)
    };
    gemv_rows(w, x, y, pool, prepare, |row, act, (sums, permuted): &(Vec<i32>, Vec<i8>), streams| {
        row_kernel.dot(row, act, permuted, sums, streams)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0 * (1.0 + (i / 32 % 5) as f32)).collect()
    }

    #[test]
    fn quantize_dequantize_round_trip_is_close() {
        let w = weights(2, 512);
        let m = BlockMatrix::quantize(BlockFormat::Q4, &w, 2, 512).unwrap();
        let mut back = vec![0f32; 512];
        for n in 0..2 {
            m.view().dequantize_row(n, &mut back).unwrap();
            for (group, got) in w[n * 512..(n + 1) * 512].chunks(32).zip(back.chunks(32)) {
                // At most half a step (a sixteenth of the group's range), or the clipped end's distance.
                let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in group.iter().zip(got) {
                    assert!((a - b).abs() <= max / 7.0, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn ggml_q4_0_round_trips_exactly() {
        let w = weights(3, 256);
        let m = BlockMatrix::quantize(BlockFormat::Q4, &w, 3, 256).unwrap();
        let ggml = to_ggml_q4_0(m.view()).unwrap();
        assert_eq!(ggml.len(), 3 * 8 * GGML_Q4_0_BLOCK_BYTES);
        // ggml's element order: weight j of a block in byte j (low nibble) or j - 16 (high nibble).
        let (mut ours, mut theirs) = (vec![0f32; 256], vec![0f32; 256]);
        m.view().dequantize_row(1, &mut ours).unwrap();
        for (g, b) in ggml[8 * 18..16 * 18].chunks_exact(18).enumerate() {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            for j in 0..32 {
                theirs[32 * g + j] = d * ((b[2 + j % 16] >> (4 * (j / 16)) & 0x0f) as i32 - 8) as f32;
            }
        }
        assert_eq!(ours, theirs);
        let back = from_ggml_q4_0(&ggml, 3, 256).unwrap();
        assert_eq!(back.as_bytes(), m.as_bytes());
    }

    #[test]
    fn hostile_input_is_refused() {
        assert!(BlockFormat::Q4.row_bytes(255).is_err());
        assert!(BlockView::new(BlockFormat::Q4, &[0u8; 143], 1, 256).is_err());
        let q6k = BlockMatrix::quantize(BlockFormat::Q6K, &[0.5; 256], 1, 256).unwrap();
        assert!(to_ggml_q4_0(q6k.view()).is_err(), "Q6_K blocks are not Q4");
        assert!(from_ggml_q4_0(&[0u8; 8 * 18 - 1], 1, 256).is_err());
        let mut infinite = vec![0u8; 8 * 18];
        infinite[18..20].copy_from_slice(&0x7c00u16.to_le_bytes());
        assert!(from_ggml_q4_0(&infinite, 1, 256).is_err());
        assert!(BlockMatrix::quantize(BlockFormat::Q4, &[f32::NAN; 256], 1, 256).is_err());
        assert_eq!(BlockFormat::Q4.row_bytes(2560).unwrap(), 1440);
    }

    #[test]
    fn zero_rows_stay_zero() {
        let m = BlockMatrix::quantize(BlockFormat::Q4, &[0.0; 256], 1, 256).unwrap();
        let mut back = vec![1f32; 256];
        m.view().dequantize_row(0, &mut back).unwrap();
        assert!(back.iter().all(|&v| v == 0.0));
    }
}
