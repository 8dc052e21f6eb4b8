//! AVX2 ternary dot products on the native layout (`vpmaddubsw` + `vpmaddwd`).
//!
//! A native block is 64 bytes; each 32-byte half `h` gives, after `(v >> 2p) & 3`, the codes of weights
//! `64p + 32h .. 64p + 32h + 32`. Exactness as in the AVX-512BW kernel: the four `vpmaddubsw` results of one
//! load are summed in i16 (|lane| <= 2048) before `vpmaddwd` widens them to i32.

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
