//! AVX-512 ternary dot products on the native layout: VNNI (`vpdpbusd`) and plain AVX-512BW
//! (`vpmaddubsw` + `vpmaddwd`).
//!
//! One 64-byte load of a row gives, after `(v >> 2p) & 3`, the codes of weights `64p .. 64p + 64` of a
//! block; these multiply (unsigned) the 64 activations (signed) at the same offset. Four rows share each
//! activation load. All sums are exact in i32: a `vpmaddubsw` lane is at most `2 * 2 * 128 = 512` in
//! magnitude (codes are <= 2), so four of them still fit i16 before `vpmaddwd` widens them.

use core::arch::x86_64::*;

/// Codes of sub-block `P` (`(v >> 2P) & 3`).
#[inline(always)]
unsafe fn codes<const SHIFT: u32>(v: __m512i, mask: __m512i) -> __m512i {
    unsafe { _mm512_and_si512(_mm512_srli_epi16::<SHIFT>(v), mask) }
}

/// VNNI: sums for four rows `stride` bytes apart.
///
/// # Safety
/// The CPU has avx512f/bw/vnni; `w` is valid for `3 * stride + blocks * 64` bytes, `act` for `blocks * 256`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot4_vnni(
    w: *const u8,
    stride: usize,
    act: *const i8,
    blocks: usize,
) -> [i32; 4] {
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let mut lo = [_mm512_setzero_si512(); 4];
        let mut hi = [_mm512_setzero_si512(); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            let x0 = _mm512_loadu_si512(a.cast());
            let x1 = _mm512_loadu_si512(a.add(64).cast());
            let x2 = _mm512_loadu_si512(a.add(128).cast());
            let x3 = _mm512_loadu_si512(a.add(192).cast());
            for r in 0..4 {
                let v = _mm512_loadu_si512(w.add(r * stride + b * 64).cast());
                lo[r] = _mm512_dpbusd_epi32(lo[r], _mm512_and_si512(v, mask), x0);
                hi[r] = _mm512_dpbusd_epi32(hi[r], codes::<2>(v, mask), x1);
                lo[r] = _mm512_dpbusd_epi32(lo[r], codes::<4>(v, mask), x2);
                hi[r] = _mm512_dpbusd_epi32(hi[r], codes::<6>(v, mask), x3);
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_epi32(_mm512_add_epi32(lo[r], hi[r])))
    }
}

/// VNNI: sum for one row.
///
/// # Safety
/// As [`dot4_vnni`] with one row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot1_vnni(w: *const u8, act: *const i8, blocks: usize) -> i32 {
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for b in 0..blocks {
            let a = act.add(b * 256);
            let v = _mm512_loadu_si512(w.add(b * 64).cast());
            lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(v, mask), _mm512_loadu_si512(a.cast()));
            hi = _mm512_dpbusd_epi32(
                hi,
                codes::<2>(v, mask),
                _mm512_loadu_si512(a.add(64).cast()),
            );
            lo = _mm512_dpbusd_epi32(
                lo,
                codes::<4>(v, mask),
                _mm512_loadu_si512(a.add(128).cast()),
            );
            hi = _mm512_dpbusd_epi32(
                hi,
                codes::<6>(v, mask),
                _mm512_loadu_si512(a.add(192).cast()),
            );
        }
        _mm512_reduce_add_epi32(_mm512_add_epi32(lo, hi))
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

/// AVX-512BW: sums for four rows `stride` bytes apart.
///
/// # Safety
/// The CPU has avx512f/bw; pointers as in [`dot4_vnni`].
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn dot4_bw(
    w: *const u8,
    stride: usize,
    act: *const i8,
    blocks: usize,
) -> [i32; 4] {
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let ones = _mm512_set1_epi16(1);
        let mut acc = [_mm512_setzero_si512(); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            let x = [0, 64, 128, 192].map(|o| _mm512_loadu_si512(a.add(o).cast()));
            for r in 0..4 {
                let v = _mm512_loadu_si512(w.add(r * stride + b * 64).cast());
                let s = maddubs_block(v, mask, &x);
                acc[r] = _mm512_add_epi32(acc[r], _mm512_madd_epi16(s, ones));
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_epi32(acc[r]))
    }
}

/// AVX-512BW: sum for one row.
///
/// # Safety
/// As [`dot4_bw`] with one row.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn dot1_bw(w: *const u8, act: *const i8, blocks: usize) -> i32 {
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let ones = _mm512_set1_epi16(1);
        let mut acc = _mm512_setzero_si512();
        for b in 0..blocks {
            let a = act.add(b * 256);
            let x = [0, 64, 128, 192].map(|o| _mm512_loadu_si512(a.add(o).cast()));
            let v = _mm512_loadu_si512(w.add(b * 64).cast());
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(maddubs_block(v, mask, &x), ones));
        }
        _mm512_reduce_add_epi32(acc)
    }
}
