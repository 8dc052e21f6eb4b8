//! The last step of attention's score dot products: each row's `LANES` partial sums added by halves (lane `i`
//! plus lane `i + 8`, then `i + 4`, `i + 2`, `i + 1`), the order of `crate::dense::reduce_f32`.
//!
//! The compiler does this one element at a time (15 scalar additions and 16 loads a score: over a third of the
//! attention kernel's time); the x86 versions below add four rows' halves in shared vectors instead, the same
//! additions on the same operands, so the same bits.

use super::LANES;

const _: () = assert!(LANES == 16, "the vector versions below sum 16 lanes");

/// How a copy of the attention body sums the lanes of its score dot products.
pub(super) trait LaneSums {
    /// `reduce_f32` of each of the `R` rows of `acc`.
    fn sums<const R: usize>(acc: &[[f32; LANES]; R]) -> [f32; R];
}

/// Element by element: the scalar twin, and the NEON copy's.
pub(super) struct Portable;

impl LaneSums for Portable {
    #[inline(always)]
    fn sums<const R: usize>(acc: &[[f32; LANES]; R]) -> [f32; R] {
        // The barrier of `crate::dense::dot_lanes`: without it LLVM vectorizes the dot products' loop to fit
        // this reduction, in two-lane vectors; the values are unchanged.
        std::hint::black_box(*acc).map(crate::dense::reduce_f32)
    }
}

/// A [`LaneSums`] that adds four rows' lanes with `x86::$sums4` and any other number of rows element by element.
macro_rules! vector_lane_sums {
    ($(#[$doc:meta])* $name:ident, $sums4:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        pub(super) struct $name;

        #[cfg(target_arch = "x86_64")]
        impl LaneSums for $name {
            #[inline(always)]
            fn sums<const R: usize>(acc: &[[f32; LANES]; R]) -> [f32; R] {
                match <&[[f32; LANES]; 4]>::try_from(acc.as_slice()) {
                    Ok(four) => {
                        // SAFETY: this type is used only by the copies compiled for the ISA `$sums4` needs, which
                        // run only where the CPU has it (`Kernel::is_available` is checked before any copy runs).
                        let sums = unsafe { x86::$sums4(four) };
                        std::array::from_fn(|r| sums[r])
                    }
                    Err(_) => Portable::sums(acc),
                }
            }
        }
    };
}

vector_lane_sums!(
    /// Four rows at a time in 256-bit vectors. Only the AVX2 copies (compiled with `avx2,fma`) use it.
    Avx2,
    sums4_avx2
);
vector_lane_sums!(
    /// Four rows at a time in 512-bit vectors. Only the AVX-512 copies use it.
    Avx512,
    sums4_avx512
);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Within each 128-bit lane `[x0, x1, x2, x3]`: lane 0 becomes `(x0 + x2) + (x1 + x3)`.
    macro_rules! quarter_sums {
        ($add:ident, $permute:ident, $v:expr) => {{
            let v = $v;
            let v = $add(v, $permute::<0b01_00_11_10>(v));
            $add(v, $permute::<0b10_11_00_01>(v))
        }};
    }

    /// Rows `a` and `b` in the two 128-bit halves, lane `i` of each: `a[i] + a[i + 4]` (AVX, 8-lane rows).
    #[inline(always)]
    unsafe fn pair_avx(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b)) }
    }

    /// Lane `i` of row `row`: `row[i] + row[i + 8]` (AVX).
    #[inline(always)]
    unsafe fn halves_avx(row: &[f32; 16]) -> __m256 {
        unsafe { _mm256_add_ps(_mm256_loadu_ps(row.as_ptr()), _mm256_loadu_ps(row.as_ptr().add(8))) }
    }

    /// # Safety
    /// The CPU has AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn sums4_avx2(acc: &[[f32; 16]; 4]) -> [f32; 4] {
        unsafe {
            let p01 = pair_avx(halves_avx(&acc[0]), halves_avx(&acc[1]));
            let p23 = pair_avx(halves_avx(&acc[2]), halves_avx(&acc[3]));
            let mut out = [[0f32; 8]; 2];
            _mm256_storeu_ps(out[0].as_mut_ptr(), quarter_sums!(_mm256_add_ps, _mm256_permute_ps, p01));
            _mm256_storeu_ps(out[1].as_mut_ptr(), quarter_sums!(_mm256_add_ps, _mm256_permute_ps, p23));
            [out[0][0], out[0][4], out[1][0], out[1][4]]
        }
    }

    /// Rows `a` and `b` in the two 256-bit halves, lane `i` of each: `a[i] + a[i + 8]` (AVX-512F).
    #[inline(always)]
    unsafe fn halves_avx512(a: __m512, b: __m512) -> __m512 {
        unsafe {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
        }
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sums4_avx512(acc: &[[f32; 16]; 4]) -> [f32; 4] {
        unsafe {
            let s01 = halves_avx512(_mm512_loadu_ps(acc[0].as_ptr()), _mm512_loadu_ps(acc[1].as_ptr()));
            let s23 = halves_avx512(_mm512_loadu_ps(acc[2].as_ptr()), _mm512_loadu_ps(acc[3].as_ptr()));
            // Row r in 128-bit lane r, lane i: s[i] + s[i + 4].
            let t = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(s01, s23),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(s01, s23),
            );
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), quarter_sums!(_mm512_add_ps, _mm512_permute_ps, t));
            [out[0], out[4], out[8], out[12]]
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Lanes of every magnitude, so that a different order of additions would round differently.
    fn lanes(seed: u32) -> [[f32; LANES]; 4] {
        std::array::from_fn(|r| {
            std::array::from_fn(|l| {
                let i = seed.wrapping_mul(2654435761).wrapping_add((r * LANES + l) as u32 * 40503);
                let mantissa = (i >> 9) as f32 / (1u32 << 23) as f32 - 0.5;
                mantissa * 2f32.powi((i % 41) as i32 - 20)
            })
        })
    }

    #[test]
    fn vector_lane_sums_are_the_scalar_ones() {
        for seed in 0..2000 {
            let acc = lanes(seed);
            let want = Portable::sums(&acc).map(f32::to_bits);
            if is_x86_feature_detected!("avx2") {
                assert_eq!(Avx2::sums(&acc).map(f32::to_bits), want, "avx2, seed {seed}");
            }
            if is_x86_feature_detected!("avx512f") {
                assert_eq!(Avx512::sums(&acc).map(f32::to_bits), want, "avx512, seed {seed}");
            }
        }
        let special = [[f32::INFINITY; LANES], [f32::NAN; LANES], [-0.0; LANES], [f32::MAX; LANES]];
        let want = Portable::sums(&special).map(f32::to_bits);
        if is_x86_feature_detected!("avx512f") {
            assert_eq!(Avx512::sums(&special).map(f32::to_bits), want);
        }
        if is_x86_feature_detected!("avx2") {
            assert_eq!(Avx2::sums(&special).map(f32::to_bits), want);
        }
    }
}
