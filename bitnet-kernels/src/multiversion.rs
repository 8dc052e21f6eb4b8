//! Per-ISA copies of portable loop bodies: the same Rust code compiled with more target features (the compiler
//! vectorizes it for AVX2, AVX-512 or NEON), and a dispatcher over [`crate::Kernel`]. The copies compute the same
//! operations in the same order, so they give identical results; the `generic` copy is the scalar twin tests
//! compare them against.

/// Generates `mod $name` with the per-ISA copies of `$body` and `call(kernel, ...)`, which runs the copy for
/// `kernel` (the caller checks `kernel.is_available()` first).
///
/// With `$body::<AHEAD>`, the body is generic over `const AHEAD: usize`, the bytes ahead of its weight reads at
/// which it prefetches (0: none); the AVX2 copy gets [`crate::prefetch::DENSE_AHEAD_AVX2`], the others 0.
///
/// With `[$generic, $avx2, $avx512]`, each x86 copy compiles its own body (the NEON copy the generic one): for a
/// body that takes a few explicit vector steps where the compiler's own choice is slow. The bodies must compute the
/// same operations in the same order; tests compare them.
macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        multiversion!(@copies $name, [$body], [$body], ($($arg: $ty),*) -> $ret);
    };
    ($name:ident, $body:ident::<AHEAD>, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        multiversion!(
            @copies $name, [$body::<0>], [$body::<{ crate::prefetch::DENSE_AHEAD_AVX2 }>], ($($arg: $ty),*) -> $ret
        );
    };
    ($name:ident, [$plain:path, $avx2:path, $avx512:path], ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        multiversion!(@copies $name, [$plain], [$avx2], [$avx512], ($($arg: $ty),*) -> $ret);
    };
    (@copies $name:ident, [$($plain:tt)*], [$($avx2:tt)*], ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        multiversion!(@copies $name, [$($plain)*], [$($avx2)*], [$($plain)*], ($($arg: $ty),*) -> $ret);
    };
    (@copies $name:ident, [$($plain:tt)*], [$($avx2:tt)*], [$($avx512:tt)*], ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        mod $name {
            use super::*;
            pub(super) fn generic($($arg: $ty),*) -> $ret { $($plain)*($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn avx2($($arg: $ty),*) -> $ret { $($avx2)*($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw")]
            pub(super) unsafe fn avx512bw($($arg: $ty),*) -> $ret { $($avx512)*($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
            pub(super) unsafe fn avx512vnni($($arg: $ty),*) -> $ret { $($avx512)*($($arg),*) }
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon,dotprod")]
            pub(super) unsafe fn dotprod($($arg: $ty),*) -> $ret { $($plain)*($($arg),*) }

            /// Calls the copy for `kernel`, which the caller has checked is available.
            #[inline(always)]
            pub(super) fn call(kernel: Kernel, $($arg: $ty),*) -> $ret {
                // SAFETY: `kernel.is_available()` was checked by the public entry point, so the CPU has
                // the features each copy is compiled for.
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => unsafe { avx2($($arg),*) },
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512Bw => unsafe { avx512bw($($arg),*) },
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512Vnni => unsafe { avx512vnni($($arg),*) },
                    #[cfg(target_arch = "aarch64")]
                    Kernel::NeonDotprod => unsafe { dotprod($($arg),*) },
                    _ => generic($($arg),*),
                }
            }
        }
    };
}
