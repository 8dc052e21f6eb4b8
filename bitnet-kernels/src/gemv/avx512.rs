//! AVX-512 ternary dot products on the native layout: VNNI (`vpdpbusd`) and plain AVX-512BW
//! (`vpmaddubsw` + `vpmaddwd`).
//!
//! One 64-byte load of a row gives, after `(v >> 2p) & 3`, the codes of weights `64p .. 64p + 64` of a
//! block; these multiply (unsigned) the 64 activations (signed) at the same offset. Four rows share each
//! activation load. All sums are exact in i32: a `vpmaddubsw` lane is at most `2 * 2 * 128 = 512` in
//! magnitude (codes are <= 2), so four of them still fit i16 before `vpmaddwd` widens them.

use crate::prefetch::prefetch_lines;
use core::arch::x86_64::*;

/// Codes of sub-block `P` (`(v >> 2P) & 3`).
#[inline(always)]
unsafe fn codes<const SHIFT: u32>(v: __m512i, mask: __m512i) -> __m512i {
    unsafe { _mm512_and_si512(_mm512_srli_epi16::<SHIFT>(v), mask) }
}

/// The 256 activations of one block as four vectors.
#[inline(always)]
unsafe fn load_act(a: *const i8) -> [__m512i; 4] {
    unsafe {
        [
            _mm512_loadu_si512(a.cast()),
            _mm512_loadu_si512(a.add(64).cast()),
            _mm512_loadu_si512(a.add(128).cast()),
            _mm512_loadu_si512(a.add(192).cast()),
        ]
    }
}

/// VNNI: sums for the four rows of one interleaved tile (block `b` of row `r` at byte `(4b + r) * 64`).
///
/// Shift-free: sub-block `p` is selected in place with the mask `3 << 2p`, so its codes arrive multiplied
/// by `4^p` (at most `2 << 6 = 128`, still a valid unsigned byte). Each `p` has its own accumulator, and
/// an exact arithmetic shift right by `2p` per lane undoes the factor at the end (every product in that
/// accumulator is a multiple of `4^p`). A lane of the `p = 3` accumulator sums `K / 64` products of at
/// most `128 * 128`, so it cannot overflow i32 for `K < 2^23`.
///
/// Each block first asks for the tile bytes `AHEAD` past it (see [`crate::prefetch::ahead_avx512`]).
///
/// # Safety
/// The CPU has avx512f/bw/vnni; `w` and `act` are valid for `blocks * 256` bytes; `blocks * 256 < 2^23`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot4_vnni<const AHEAD: usize>(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    unsafe {
        // Closures would not inherit the target features and are not inlined here: no `map`/`from_fn`.
        let masks =
            [_mm512_set1_epi8(0x03), _mm512_set1_epi8(0x0c), _mm512_set1_epi8(0x30), _mm512_set1_epi8(0xc0u8 as i8)];
        let mut acc = [[_mm512_setzero_si512(); 4]; 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            let x = load_act(a);
            let tile = w.add(b * 256);
            // The tiles of a matrix are contiguous: this reaches into the next ones (past the matrix, a hint).
            prefetch_lines(tile, AHEAD, 4);
            for r in 0..4 {
                let v = _mm512_loadu_si512(tile.add(r * 64).cast());
                for p in 0..4 {
                    acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], _mm512_and_si512(v, masks[p]), x[p]);
                }
            }
        }
        let mut out = [0i32; 4];
        for r in 0..4 {
            let [a0, a1, a2, a3] = acc[r];
            let s = _mm512_add_epi32(a0, _mm512_srai_epi32::<2>(a1));
            let s = _mm512_add_epi32(s, _mm512_srai_epi32::<4>(a2));
            out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(s, _mm512_srai_epi32::<6>(a3)));
        }
        out
    }
}

/// The i16 sum of the four sub-block products of one 64-byte load (exact: |lane| <= 4 * 512).
#[inline(always)]
unsafe fn maddubs_block(v: __m512i, mask: __m512i, x: &[__m512i; 4]) -> __m512i {
    unsafe {
        let p0 = _mm512_maddubs_epi16(_mm512_and_si512(v, mask), x[0]);
        let p1 = _mm512_maddubs_epi16(codes::<2>(v, mask), x[1]);
        let p2 = _mm512_maddubs_epi16(codes::<4>(v, mask), x[2]);
        let p3 = _mm512_maddubs_epi16(codes::<6>(v, mask), x[3]);
        _mm512_add_epi16(_mm512_add_epi16(p0, p1), _mm512_add_epi16(p2, p3))
    }
}

/// AVX-512BW: sums for the four rows of one interleaved tile.
///
/// Prefetches as [`dot4_vnni`] does.
///
/// # Safety
/// The CPU has avx512f/bw; pointers as in [`dot4_vnni`].
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn dot4_bw<const AHEAD: usize>(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let ones = _mm512_set1_epi16(1);
        let mut acc = [_mm512_setzero_si512(); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            let x = load_act(a);
            prefetch_lines(w.wrapping_add(b * 256), AHEAD, 4);
            for r in 0..4 {
                let v = _mm512_loadu_si512(w.add((4 * b + r) * 64).cast());
                let s = maddubs_block(v, mask, &x);
                acc[r] = _mm512_add_epi32(acc[r], _mm512_madd_epi16(s, ones));
            }
        }
        [
            _mm512_reduce_add_epi32(acc[0]),
            _mm512_reduce_add_epi32(acc[1]),
            _mm512_reduce_add_epi32(acc[2]),
            _mm512_reduce_add_epi32(acc[3]),
        ]
    }
}

/// 128-bit quarters of `a` and `b` summed in pairs: `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
#[inline(always)]
unsafe fn quarters(a: __m512i, b: __m512i) -> __m512i {
    unsafe {
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0b10_00_10_00>(a, b), _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b))
    }
}

/// Lane `i` of the result is the sum of the 16 lanes of `v[i]` (a transposing reduction: pairs of 32-bit
/// lanes, then 64-bit halves, then 128-bit quarters).
#[inline(always)]
unsafe fn sum16(v: &[__m512i; 16]) -> __m512i {
    unsafe {
        let mut t = [_mm512_setzero_si512(); 8];
        for i in 0..8 {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
        }
        let mut u = [_mm512_setzero_si512(); 4];
        for j in 0..4 {
            let (a, b) = (t[2 * j], t[2 * j + 1]);
            u[j] = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
        }
        let w0 = quarters(u[0], u[1]);
        let w1 = quarters(u[2], u[3]);
        quarters(w0, w1)
    }
}

/// Grouped scales (see the scalar twin): per block, the 16 signed plane sums `sum (c - 1) * a` of the
/// tile's four rows are exact in i16 before widening (|lane| <= 512 + 256), reduced to one vector, converted
/// (exact, |sum| < 2^15) and scaled into 16 f32 accumulators, one per row and plane. Prefetches as
/// [`dot4_vnni`] does.
///
/// # Safety
/// The CPU has avx512f/bw; `w` and `act` are valid for `blocks * 256` bytes, `scales` for `blocks * 16`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn dot4_grouped<const AHEAD: usize>(
    w: *const u8,
    act: *const i8,
    scales: *const f32,
    blocks: usize,
) -> [f32; 4] {
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let ones8 = _mm512_set1_epi8(1);
        let ones16 = _mm512_set1_epi16(1);
        let mut acc = _mm512_setzero_ps();
        for b in 0..blocks {
            let x = load_act(act.add(b * 256));
            prefetch_lines(w.wrapping_add(b * 256), AHEAD, 4);
            let xs = [
                _mm512_maddubs_epi16(ones8, x[0]),
                _mm512_maddubs_epi16(ones8, x[1]),
                _mm512_maddubs_epi16(ones8, x[2]),
                _mm512_maddubs_epi16(ones8, x[3]),
            ];
            let mut d = [_mm512_setzero_si512(); 16];
            for r in 0..4 {
                let v = _mm512_loadu_si512(w.add((4 * b + r) * 64).cast());
                let c = [_mm512_and_si512(v, mask), codes::<2>(v, mask), codes::<4>(v, mask), codes::<6>(v, mask)];
                for p in 0..4 {
                    let signed = _mm512_sub_epi16(_mm512_maddubs_epi16(c[p], x[p]), xs[p]);
                    d[4 * r + p] = _mm512_madd_epi16(signed, ones16);
                }
            }
            let sums = _mm512_cvtepi32_ps(sum16(&d));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(sums, _mm512_loadu_ps(scales.add(16 * b))));
        }
        let mut l = [0f32; 16];
        _mm512_storeu_ps(l.as_mut_ptr(), acc);
        [
            (l[0] + l[1]) + (l[2] + l[3]),
            (l[4] + l[5]) + (l[6] + l[7]),
            (l[8] + l[9]) + (l[10] + l[11]),
            (l[12] + l[13]) + (l[14] + l[15]),
        ]
    }
}

/// Blocks a five-trit accumulator runs before it is folded: a lane of `3 A - B` gains at most
/// `256 * 20 * 2 * 128` per block (20 bytes, codes <= 2, |activation| <= 128), so 1024 blocks stay below 2^31.
const TRITS5_FOLD_BLOCKS: usize = 1024;

/// VNNI on the five-trit layout ([`crate::formats::native::TernaryLayout::Trits5`]): sums for the four rows of
/// one interleaved tile (block `b` of row `r` at byte `(4b + r) * 64`, its 320 activations at `act + 320 b`).
///
/// A row's bytes are `y_0`; two byte additions give `y_(p+1) = 3 y_p mod 256` and `vpdpbusd` accumulates
/// `A += y_p . x_p` and `B += y_(p+1) . x_p` (unsigned bytes times signed activations). Every lane of
/// `3 A - B` is then 256 times that lane's share of `sum_p sum_j t_p[j] x_p[j]` (module docs of the layout), so it is
/// computed with wrapping i32 arithmetic, which is exact as long as the true value fits; the accumulators are
/// folded (`>> 8`, exact) into the row total every [`TRITS5_FOLD_BLOCKS`] blocks. Prefetches as [`dot4_vnni`]
/// does.
///
/// # Safety
/// The CPU has avx512f/bw/vnni; `w` is valid for `blocks * 256` bytes, `act` for `blocks * 320`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot4_trits5_vnni<const AHEAD: usize>(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    unsafe {
        let mut total = [_mm512_setzero_si512(); 4];
        let mut first = 0;
        while first < blocks {
            let end = blocks.min(first + TRITS5_FOLD_BLOCKS);
            let mut a = [_mm512_setzero_si512(); 4];
            let mut b = [_mm512_setzero_si512(); 4];
            for blk in first..end {
                let at = act.add(blk * 320);
                let x = [
                    _mm512_loadu_si512(at.cast()),
                    _mm512_loadu_si512(at.add(64).cast()),
                    _mm512_loadu_si512(at.add(128).cast()),
                    _mm512_loadu_si512(at.add(192).cast()),
                    _mm512_loadu_si512(at.add(256).cast()),
                ];
                let tile = w.add(blk * 256);
                prefetch_lines(tile, AHEAD, 4);
                for r in 0..4 {
                    let mut y = _mm512_loadu_si512(tile.add(r * 64).cast());
                    for p in 0..5 {
                        let mut next = _mm512_add_epi8(_mm512_add_epi8(y, y), y);
                        // An empty asm block hides `next` from the optimizer: otherwise it folds the chain of
                        // tripling into byte multiplies by 9, 27 and 81, which AVX-512 has no instruction for
                        // (emulated with `vpmullw`, `vpermt2b` and `vgf2p8affineqb`: the kernel ran 1.3x slower).
                        core::arch::asm!("/* {0} */", inout(zmm_reg) next, options(pure, nomem, nostack, preserves_flags));
                        a[r] = _mm512_dpbusd_epi32(a[r], y, x[p]);
                        b[r] = _mm512_dpbusd_epi32(b[r], next, x[p]);
                        y = next;
                    }
                }
            }
            for r in 0..4 {
                let three_a = _mm512_add_epi32(_mm512_add_epi32(a[r], a[r]), a[r]);
                total[r] = _mm512_add_epi32(total[r], _mm512_srai_epi32::<8>(_mm512_sub_epi32(three_a, b[r])));
            }
            first = end;
        }
        [
            _mm512_reduce_add_epi32(total[0]),
            _mm512_reduce_add_epi32(total[1]),
            _mm512_reduce_add_epi32(total[2]),
            _mm512_reduce_add_epi32(total[3]),
        ]
    }
}
