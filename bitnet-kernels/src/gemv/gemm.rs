//! The prefill product (GEMM): a tile's codes are unpacked once into an L1-resident buffer, one byte per
//! weight, and a group of tokens runs against it, so each code load and each activation load serves several
//! products and no token repeats the unpacking.
//!
//! Unpacked layout of one tile (`blocks` blocks of 4 rows x 256 weights, 1 KiB per block):
//!
//! ```text
//! byte ((4b + r) * 4 + p) * 64 + j  =  code of weight 64p + j of block b of row r   (0, 1 or 2)
//! ```
//!
//! so the 64 codes of sub-block `p` sit next to each other and meet the 64 activations at offset
//! `256b + 64p` of a token's row. The kernels compute the same exact i32 sums `sum_k c[n,k] q[m,k]` as the
//! single-token kernels of this module's parent, so the outputs are bit-identical whichever path runs.
//!
//! Token groups: 3 on AVX-512 VNNI (12 accumulators + 12 activation vectors of 32 registers), 2 on AVX2
//! (8 + 4 of 16), 4 on NEON with `sdot` (16 + 4 of 32). Other kernels (scalar, AVX-512BW, plain NEON) keep the
//! per-token path.

use crate::dispatch::Kernel;
use crate::formats::native::{TernaryLayout, NATIVE_BLOCK_BYTES, ROW_TILE};

/// Weights per row of one unpacked block.
pub(crate) const GEMM_BLOCK: usize = 256;

/// Bytes of one unpacked block of a tile (4 rows x 256 codes).
pub(crate) const UNPACKED_BLOCK: usize = ROW_TILE * GEMM_BLOCK;

/// The most tokens a kernel takes at once.
pub(crate) const MAX_GROUP: usize = 4;

/// A GEMM kernel: the sums of the 4 rows of an unpacked tile (`blocks` blocks) for `acts.len()` tokens (the
/// kernel's group size), each activation row `blocks * 256` bytes.
pub(crate) type Gemm = unsafe fn(codes: *const u8, acts: &[*const i8], blocks: usize, out: &mut [[i32; 4]]);

/// The GEMM kernel of `kernel` and its token group size, if it has one. The caller has checked that the
/// kernel is available.
pub(crate) fn gemm_fn(kernel: Kernel) -> Option<(Gemm, usize)> {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => Some((x86::gemm3_vnni, 3)),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => Some((x86::gemm2_avx2, 2)),
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonDotprod => Some((neon::gemm4_dotprod, 4)),
        _ => None,
    }
}

/// The most unpacked blocks a GEMM call reads: 16 KiB of codes, and 12-16 KiB of its tokens' activations, stay
/// in a 32 KiB L1 together. A 6912-wide row (27-28 blocks) unpacks to 27-28 KiB, and with three tokens'
/// activations it filled a 48 KiB L1 (`ternary_gemm/down` in the criterion benches).
const MAX_CHUNK_BLOCKS: usize = 16;

/// How many column chunks of about equal size a row of `blocks` unpacked blocks runs in (1 up to
/// [`MAX_CHUNK_BLOCKS`]).
pub(crate) fn column_chunks(blocks: usize) -> usize {
    blocks.div_ceil(MAX_CHUNK_BLOCKS).max(1)
}

/// Unpacks one interleaved tile (`blocks` blocks of 64 bytes a row, block `b` of row `r` at byte `(4b + r) * 64`)
/// of `layout` into `out` (1024 bytes for every 256 weights of a row, the layout of the module docs; a five-trit
/// tile's planes `P = 5b + p` land in unpacked block `P / 4`, sub-block `P % 4`).
/// Each 2-bit code is `(byte >> 2p) & 3`, so the body vectorizes to a shift and a mask per vector; it is compiled
/// for the widest vectors the GEMM kernel's CPU has (the unpacking is a fifth of a small-batch step otherwise).
pub(crate) fn unpack_tile(kernel: Kernel, layout: TernaryLayout, tile: &[u8], out: &mut [u8]) {
    if layout == TernaryLayout::Trits5 {
        return match kernel {
            // SAFETY: the caller runs `kernel`'s GEMM, so the CPU has its features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::unpack_tile_trits5_avx512(tile, out) },
            _ => unpack_tile_trits5_body(tile, out),
        };
    }
    match kernel {
        // SAFETY: the caller runs `kernel`'s GEMM, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => unsafe { x86::unpack_tile_avx512(tile, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::unpack_tile_avx2(tile, out) },
        _ => unpack_tile_body(tile, out),
    }
}

/// The portable body of [`unpack_tile`].
#[inline(always)]
fn unpack_tile_body(tile: &[u8], out: &mut [u8]) {
    for (src, dst) in tile.chunks_exact(NATIVE_BLOCK_BYTES).zip(out.chunks_exact_mut(4 * NATIVE_BLOCK_BYTES)) {
        for (p, dst) in dst.chunks_exact_mut(NATIVE_BLOCK_BYTES).enumerate() {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (s >> (2 * p)) & 3;
            }
        }
    }
}

/// The portable body of [`unpack_tile`] for a five-trit tile: each byte's codes by the tripling of the layout
/// docs (`y_(p+1) = 3 y_p mod 256`, code `3 y_p >> 8`), in 16-bit arithmetic that vectorizes.
#[inline(always)]
fn unpack_tile_trits5_body(tile: &[u8], out: &mut [u8]) {
    for (b, src) in tile.chunks_exact(ROW_TILE * NATIVE_BLOCK_BYTES).enumerate() {
        for (r, row) in src.chunks_exact(NATIVE_BLOCK_BYTES).enumerate() {
            let mut y: [u16; NATIVE_BLOCK_BYTES] = std::array::from_fn(|j| row[j] as u16);
            for p in 0..5 {
                let plane = 5 * b + p;
                let at = ((4 * (plane / 4) + r) * 4 + plane % 4) * NATIVE_BLOCK_BYTES;
                for (d, y) in out[at..at + NATIVE_BLOCK_BYTES].iter_mut().zip(y.iter_mut()) {
                    let tripled = *y * 3;
                    *d = (tripled >> 8) as u8;
                    *y = tripled & 0xff;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod x86 {
    use super::{NATIVE_BLOCK_BYTES, ROW_TILE, UNPACKED_BLOCK};
    use core::arch::x86_64::*;

    /// [`super::unpack_tile_trits5_body`] in byte vectors: a byte's next code is `3 y >> 8`, which is 1 from
    /// `y = 86` and 2 from `y = 171` on (`3 * 85 = 255`, `3 * 170 = 510`), so two unsigned compares give it, and
    /// `3 y mod 256` is two byte additions: seven instructions a plane of 64 codes (the 16-bit body widens,
    /// multiplies, shifts and narrows).
    ///
    /// # Safety
    /// avx512f/bw present. Panics (before any store) unless `tile` is whole 4-row blocks of 64 bytes and `out`
    /// holds every plane's unpacked sub-block.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn unpack_tile_trits5_avx512(tile: &[u8], out: &mut [u8]) {
        const ROW: usize = NATIVE_BLOCK_BYTES;
        assert!(tile.len().is_multiple_of(ROW_TILE * ROW), "a five-trit tile is whole blocks of 4 rows");
        let planes = tile.len() / (ROW_TILE * ROW) * 5;
        assert!(out.len() >= planes.div_ceil(4) * UNPACKED_BLOCK, "the unpacked tile holds every plane");
        unsafe {
            let (one, from_1, from_2) = (_mm512_set1_epi8(1), _mm512_set1_epi8(86), _mm512_set1_epi8(171u8 as i8));
            for (b, src) in tile.chunks_exact(ROW_TILE * ROW).enumerate() {
                for r in 0..ROW_TILE {
                    let mut y = _mm512_loadu_si512(src.as_ptr().add(r * ROW).cast());
                    for p in 0..5 {
                        let plane = 5 * b + p;
                        let at = ((4 * (plane / 4) + r) * 4 + plane % 4) * ROW;
                        let at_least_1 = _mm512_cmpge_epu8_mask(y, from_1);
                        let at_least_2 = _mm512_cmpge_epu8_mask(y, from_2);
                        let ones = _mm512_maskz_mov_epi8(at_least_1, one);
                        let code = _mm512_mask_add_epi8(ones, at_least_2, ones, one);
                        // In bounds: `at + 64 <= (plane / 4 + 1) * UNPACKED_BLOCK <= out.len()` (asserted above).
                        _mm512_storeu_si512(out.as_mut_ptr().add(at).cast(), code);
                        y = _mm512_add_epi8(_mm512_add_epi8(y, y), y);
                    }
                }
            }
        }
    }

    /// [`super::unpack_tile_body`] compiled for AVX-512BW.
    ///
    /// # Safety
    /// avx512f/bw present.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn unpack_tile_avx512(tile: &[u8], out: &mut [u8]) {
        super::unpack_tile_body(tile, out)
    }

    /// [`super::unpack_tile_body`] compiled for AVX2.
    ///
    /// # Safety
    /// avx2 present.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn unpack_tile_avx2(tile: &[u8], out: &mut [u8]) {
        super::unpack_tile_body(tile, out)
    }

    /// VNNI, three tokens: `vpdpbusd(codes, activations)` per sub-block; a lane sums at most `K / 16`
    /// products of `2 * 128`, exact in i32 for any supported `K`.
    ///
    /// # Safety
    /// avx512f/bw/vnni present; `codes` holds `blocks` unpacked blocks; `acts` holds 3 rows of `blocks * 256`
    /// bytes; `out` holds 3 entries.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm3_vnni(codes: *const u8, acts: &[*const i8], blocks: usize, out: &mut [[i32; 4]]) {
        unsafe {
            let a = [acts[0], acts[1], acts[2]];
            let mut acc = [[_mm512_setzero_si512(); 4]; 3];
            for b in 0..blocks {
                let mut x = [[_mm512_setzero_si512(); 4]; 3];
                for t in 0..3 {
                    for p in 0..4 {
                        x[t][p] = _mm512_loadu_si512(a[t].add(256 * b + 64 * p).cast());
                    }
                }
                let c = codes.add(UNPACKED_BLOCK * b);
                for r in 0..4 {
                    for p in 0..4 {
                        let v = _mm512_loadu_si512(c.add((4 * r + p) * 64).cast());
                        for t in 0..3 {
                            acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], v, x[t][p]);
                        }
                    }
                }
            }
            for t in 0..3 {
                for r in 0..4 {
                    out[t][r] = _mm512_reduce_add_epi32(acc[t][r]);
                }
            }
        }
    }

    /// Blocks whose sums [`gemm2_avx2`] keeps in i16: a `vpmaddubsw` lane is two products of a code (0..=2) and
    /// an activation (-128..=127), at most 512 in magnitude; a block adds two of them per sub-block, four
    /// sub-blocks, so at most 4096; seven blocks stay below 2^15 (28672).
    const I16_BLOCKS: usize = 7;

    /// AVX2, two tokens: per sub-block, `vpmaddubsw(codes, activations)` of its two 32-byte halves, summed in
    /// i16 over up to [`I16_BLOCKS`] blocks (exact, see there), then widened by `vpmaddwd` into i32 accumulators:
    /// one widening per seven blocks instead of one per sub-block (two multiplies per 64 codes and token
    /// instead of three).
    ///
    /// # Safety
    /// avx2 present; as [`gemm3_vnni`] with 2 rows of activations.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gemm2_avx2(codes: *const u8, acts: &[*const i8], blocks: usize, out: &mut [[i32; 4]]) {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let a = [acts[0], acts[1]];
            let mut acc = [[_mm256_setzero_si256(); 4]; 2];
            let mut first = 0;
            while first < blocks {
                let end = (first + I16_BLOCKS).min(blocks);
                let mut narrow = [[_mm256_setzero_si256(); 4]; 2];
                for b in first..end {
                    let c = codes.add(UNPACKED_BLOCK * b);
                    for p in 0..4 {
                        let mut x = [[_mm256_setzero_si256(); 2]; 2];
                        for t in 0..2 {
                            for h in 0..2 {
                                x[t][h] = _mm256_loadu_si256(a[t].add(256 * b + 64 * p + 32 * h).cast());
                            }
                        }
                        for r in 0..4 {
                            let at = c.add((4 * r + p) * 64);
                            let (v0, v1) = (_mm256_loadu_si256(at.cast()), _mm256_loadu_si256(at.add(32).cast()));
                            for t in 0..2 {
                                let s = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(v0, x[t][0]),
                                    _mm256_maddubs_epi16(v1, x[t][1]),
                                );
                                narrow[t][r] = _mm256_add_epi16(narrow[t][r], s);
                            }
                        }
                    }
                }
                for t in 0..2 {
                    for r in 0..4 {
                        acc[t][r] = _mm256_add_epi32(acc[t][r], _mm256_madd_epi16(narrow[t][r], ones));
                    }
                }
                first = end;
            }
            for t in 0..2 {
                for r in 0..4 {
                    let v = acc[t][r];
                    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                    out[t][r] = _mm_cvtsi128_si32(s);
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
#[allow(clippy::needless_range_loop)]
mod neon {
    use super::UNPACKED_BLOCK;
    use core::arch::aarch64::*;

    /// NEON dotprod, four tokens: `sdot(codes, activations)` per 16-byte quarter of each sub-block.
    ///
    /// # Safety
    /// neon + dotprod present; as the x86 kernels with 4 rows of activations.
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn gemm4_dotprod(codes: *const u8, acts: &[*const i8], blocks: usize, out: &mut [[i32; 4]]) {
        unsafe {
            let a = [acts[0], acts[1], acts[2], acts[3]];
            let mut acc = [[vdupq_n_s32(0); 4]; 4];
            for b in 0..blocks {
                let c = codes.add(UNPACKED_BLOCK * b);
                for q in 0..16 {
                    let (p, i) = (q / 4, q % 4);
                    let mut x = [vdupq_n_s8(0); 4];
                    for t in 0..4 {
                        x[t] = vld1q_s8(a[t].add(256 * b + 64 * p + 16 * i));
                    }
                    for r in 0..4 {
                        let v = vld1q_s8(c.add((4 * r + p) * 64 + 16 * i).cast());
                        for t in 0..4 {
                            acc[t][r] = super::super::neon::sdot(acc[t][r], v, x[t]);
                        }
                    }
                }
            }
            for t in 0..4 {
                for r in 0..4 {
                    out[t][r] = vaddvq_s32(acc[t][r]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel's unpacking of a five-trit tile equals the portable body's, byte for byte, on tiles whose every
    /// 256 bytes hold each byte value once (`97 i` runs through all of them), bytes outside the layout's 243 codes
    /// included. The products are tested against scalar in `tests/trits5.rs`; this pins the unpacking alone.
    #[test]
    fn five_trit_unpacking_matches_the_portable_body() {
        for blocks in [1usize, 2, 3, 4, 8, 9] {
            let tile: Vec<u8> = (0..blocks * ROW_TILE * NATIVE_BLOCK_BYTES).map(|i| (i * 97) as u8).collect();
            let len = (5 * blocks).div_ceil(4) * UNPACKED_BLOCK;
            let mut want = vec![0xAAu8; len];
            unpack_tile_trits5_body(&tile, &mut want);
            for kernel in Kernel::available() {
                let mut got = vec![0xAAu8; len];
                unpack_tile(kernel, TernaryLayout::Trits5, &tile, &mut got);
                assert_eq!(got, want, "{kernel}, {blocks} blocks");
            }
        }
    }
}
