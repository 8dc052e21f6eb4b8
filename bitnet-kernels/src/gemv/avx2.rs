//! AVX2 ternary dot products on the native layout (`vpmaddubsw` + `vpmaddwd`).
//!
//! A native block is 64 bytes; each 32-byte half `h` gives, after `(v >> 2p) & 3`, the codes of weights
//! `64p + 32h .. 64p + 32h + 32`. Exactness as in the AVX-512BW kernel: the four `vpmaddubsw` results of one
//! load are summed in i16 (|lane| <= 2048) before `vpmaddwd` widens them to i32.

use crate::prefetch::{prefetch_lines, TERNARY_AHEAD_AVX2};
use core::arch::x86_64::*;

#[inline(always)]
unsafe fn codes<const SHIFT: i32>(v: __m256i, mask: __m256i) -> __m256i {
    unsafe { _mm256_and_si256(_mm256_srli_epi16::<SHIFT>(v), mask) }
}

/// i16 sum of the four sub-block products of one 32-byte load.
#[inline(always)]
unsafe fn maddubs_half(v: __m256i, mask: __m256i, x: &[__m256i; 4]) -> __m256i {
    unsafe {
        let p0 = _mm256_maddubs_epi16(_mm256_and_si256(v, mask), x[0]);
        let p1 = _mm256_maddubs_epi16(codes::<2>(v, mask), x[1]);
        let p2 = _mm256_maddubs_epi16(codes::<4>(v, mask), x[2]);
        let p3 = _mm256_maddubs_epi16(codes::<6>(v, mask), x[3]);
        _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3))
    }
}

#[inline(always)]
unsafe fn reduce(v: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Activation vectors of half `h` of a block: offsets `64p + 32h`.
#[inline(always)]
unsafe fn act_half(a: *const i8, h: usize) -> [__m256i; 4] {
    // Closures would not inherit the target features and are not inlined here: no `map`/`from_fn`.
    unsafe {
        [
            _mm256_loadu_si256(a.add(32 * h).cast()),
            _mm256_loadu_si256(a.add(64 + 32 * h).cast()),
            _mm256_loadu_si256(a.add(128 + 32 * h).cast()),
            _mm256_loadu_si256(a.add(192 + 32 * h).cast()),
        ]
    }
}

/// Sums for the four rows of one interleaved tile (block `b` of row `r` at byte `(4b + r) * 64`).
///
/// # Safety
/// The CPU has avx2; `w` and `act` are valid for `blocks * 256` bytes.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot4(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    unsafe {
        let mask = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            // The tiles of a matrix are contiguous: this reaches into the next tile (past the matrix, a hint).
            prefetch_lines(w.wrapping_add(b * 256), TERNARY_AHEAD_AVX2, 4);
            for h in 0..2 {
                let x = act_half(a, h);
                for r in 0..4 {
                    let v = _mm256_loadu_si256(w.add((4 * b + r) * 64 + 32 * h).cast());
                    acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(maddubs_half(v, mask, &x), ones));
                }
            }
        }
        [reduce(acc[0]), reduce(acc[1]), reduce(acc[2]), reduce(acc[3])]
    }
}

/// The 128-bit halves of `a` and `b` summed: `[a.lo + a.hi, b.lo + b.hi]`.
#[inline(always)]
unsafe fn halves(a: __m256i, b: __m256i) -> __m256i {
    unsafe { _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b)) }
}

/// Two vectors whose lane `i` (of 16) is the sum of the 8 lanes of `v[i]`: two rounds of horizontal adds,
/// then the 128-bit halves.
#[inline(always)]
unsafe fn sum16(v: &[__m256i; 16]) -> [__m256i; 2] {
    unsafe {
        let mut h = [_mm256_setzero_si256(); 8];
        for i in 0..8 {
            h[i] = _mm256_hadd_epi32(v[2 * i], v[2 * i + 1]);
        }
        let mut g = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            g[j] = _mm256_hadd_epi32(h[2 * j], h[2 * j + 1]);
        }
        [halves(g[0], g[1]), halves(g[2], g[3])]
    }
}

/// Grouped scales (see the scalar twin): signed plane sums exact in i16 over both halves of a block
/// (|lane| <= 2 * 768), widened, reduced, converted and scaled into 16 f32 accumulators.
///
/// # Safety
/// The CPU has avx2; `w` and `act` are valid for `blocks * 256` bytes, `scales` for `blocks * 16` values.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot4_grouped(w: *const u8, act: *const i8, scales: *const f32, blocks: usize) -> [f32; 4] {
    unsafe {
        let mask = _mm256_set1_epi8(3);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..blocks {
            let a = act.add(b * 256);
            // The tiles of a matrix are contiguous: this reaches into the next tile (past the matrix, a hint).
            prefetch_lines(w.wrapping_add(b * 256), TERNARY_AHEAD_AVX2, 4);
            let mut e = [_mm256_setzero_si256(); 16];
            for h in 0..2 {
                let x = act_half(a, h);
                let xs = [
                    _mm256_maddubs_epi16(ones8, x[0]),
                    _mm256_maddubs_epi16(ones8, x[1]),
                    _mm256_maddubs_epi16(ones8, x[2]),
                    _mm256_maddubs_epi16(ones8, x[3]),
                ];
                for r in 0..4 {
                    let v = _mm256_loadu_si256(w.add((4 * b + r) * 64 + 32 * h).cast());
                    let c = [_mm256_and_si256(v, mask), codes::<2>(v, mask), codes::<4>(v, mask), codes::<6>(v, mask)];
                    for p in 0..4 {
                        let signed = _mm256_sub_epi16(_mm256_maddubs_epi16(c[p], x[p]), xs[p]);
                        e[4 * r + p] = _mm256_add_epi16(e[4 * r + p], signed);
                    }
                }
            }
            let mut d = [_mm256_setzero_si256(); 16];
            for i in 0..16 {
                d[i] = _mm256_madd_epi16(e[i], ones16);
            }
            let sums = sum16(&d);
            for half in 0..2 {
                let s = _mm256_loadu_ps(scales.add(16 * b + 8 * half));
                acc[half] = _mm256_add_ps(acc[half], _mm256_mul_ps(_mm256_cvtepi32_ps(sums[half]), s));
            }
        }
        let mut l = [0f32; 16];
        _mm256_storeu_ps(l.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(l.as_mut_ptr().add(8), acc[1]);
        [
            (l[0] + l[1]) + (l[2] + l[3]),
            (l[4] + l[5]) + (l[6] + l[7]),
            (l[8] + l[9]) + (l[10] + l[11]),
            (l[12] + l[13]) + (l[14] + l[15]),
        ]
    }
}
