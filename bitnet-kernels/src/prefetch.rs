//! Software prefetch for the decode GEMVs on AVX2 and AVX-512.
//!
//! Decode reads every weight once per token, so its speed is the rate at which one core (or two) can stream
//! the weights from DRAM while computing on them. On the AVX2 machine we measured (AMD EPYC Zen 3 under KVM,
//! 2 cores, a plain read of one core ~12 GB/s), the hardware prefetchers alone kept too few cache lines in
//! flight while the kernels computed: the ternary GEMV streamed at 70% of a plain read of the same number of
//! bytes and the bf16 head GEMV at 85%. Asking for the line [`TERNARY_AHEAD_AVX2`] (ternary) or
//! [`DENSE_AHEAD_AVX2`] (16-bit, int8 and Q6_K heads) bytes in front of each read brought both to 95-100% of the
//! plain read at 1 and 2 threads (distances from a sweep of 512 to 8192 bytes: shorter ones arrive late, longer
//! ones are evicted before use at 2 threads).
//!
//! The AVX-512 decode GEMVs (ternary, f16, bf16, int8, Q6_K, Q4) prefetch much further ahead, and how far depends on how many
//! threads stream at once ([`ahead_avx512`]). On the AVX-512 Zen 5 machine (2 cores under KVM) a distance of
//! 1-2 KB, the AVX2 one, made the ternary GEMV 10-15% slower at 1 thread (what earlier tries on a Zen 4 had found
//! too), but the sweep went on to 4-16 KB: by Little's law a core keeps `latency x rate` bytes in flight, and one
//! core streaming alone at ~35 GiB/s needs ~10 KB of them while each of two sharing the memory system needs less.
//! Measured there against a plain read of the same bytes, 8 interleaved rounds per distance (docs/PERFORMANCE.md,
//! "Software prefetch on AVX-512: further ahead"): ternary 2560 x 2560 and 6912 x 2560 at 1 thread 94-98% without,
//! 109-110% at [`AHEAD_AVX512_ALONE`]; at 2 threads 86-92% without, 95-102% at [`AHEAD_AVX512_SHARED`] (10 KB
//! there swung between 89% and 107% with the guest's bandwidth); the f16 output head 101% -> 116% at 1 thread and
//! 101% -> 103% at 2; the Q6_K and Q4 heads 96% -> 116-118% at 1 thread, int8 103% -> 107-110%. Prefill is compute-bound and does not prefetch.

/// Bytes ahead of the current read at which the AVX2 ternary GEMV prefetches (about one 4-row tile of a
/// 2560-wide matrix).
#[cfg(target_arch = "x86_64")]
pub(crate) const TERNARY_AHEAD_AVX2: usize = 2048;

/// Bytes ahead of the current read at which the AVX2 dense (16-bit, int8, Q6_K) GEMVs prefetch.
#[cfg(target_arch = "x86_64")]
pub(crate) const DENSE_AHEAD_AVX2: usize = 1024;

/// Bytes ahead of the current read at which the AVX-512 decode GEMVs prefetch when one thread streams alone
/// (a 1-thread pool, or a product too small to split).
#[cfg(target_arch = "x86_64")]
pub(crate) const AHEAD_AVX512_ALONE: usize = 10 << 10;

/// Bytes ahead at which the AVX-512 decode GEMVs prefetch when two or more threads stream at once.
#[cfg(target_arch = "x86_64")]
pub(crate) const AHEAD_AVX512_SHARED: usize = 6 << 10;

/// The AVX-512 prefetch distance for a product that `streams` threads read at once.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn ahead_avx512(streams: usize) -> usize {
    if streams <= 1 {
        AHEAD_AVX512_ALONE
    } else {
        AHEAD_AVX512_SHARED
    }
}

/// Asks the cache hierarchy to fetch the line holding `p` into L1. Any address is allowed: a prefetch is a
/// hint that never faults and never changes memory (callers form `p` with `wrapping_add`, so computing it past
/// the end of a buffer is not undefined behaviour either). A no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` only hints the cache; it cannot fault or write, for any address (SSE is part of
    // the x86-64 baseline).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches `lines` consecutive cache lines starting `ahead` bytes past `p` (addresses formed with
/// `wrapping_add`, so `p + ahead` may lie past the end of the buffer).
#[inline(always)]
pub(crate) fn prefetch_lines(p: *const u8, ahead: usize, lines: usize) {
    let first = p.wrapping_add(ahead);
    for line in 0..lines {
        prefetch(first.wrapping_add(64 * line));
    }
}
