//! The memory-read probe: how fast this machine streams a buffer far larger than its caches, with the kernels'
//! thread pool. Decode reads every weight once per token, so this rate is its roofline: `bytes per token /
//! probe rate` is the shortest possible time per token. Benchmarks (criterion's `bandwidth/read` and
//! `bitnet bench`) report kernels and decode as a fraction of it.

use crate::pool::{split_range, ThreadPool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Sums `words` with 8 independent lanes (vectorizes; the add is cheap next to the memory traffic).
#[inline(never)]
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in words.chunks_exact(8) {
        for l in 0..8 {
            acc[l] = acc[l].wrapping_add(chunk[l]);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// Reads every byte of `buf` once, split across the pool's threads in contiguous parts; returns a checksum so
/// the reads cannot be optimised away.
pub fn read_bandwidth(buf: &[u64], pool: &ThreadPool) -> u64 {
    let total = AtomicU64::new(0);
    let threads = pool.threads();
    pool.run(threads, &|t| {
        let part = &buf[split_range(buf.len(), threads, t, 4096)];
        total.fetch_add(sum_words(part), Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed)
}

/// A buffer for [`read_rate`]: `bytes` (rounded down to whole 64-byte lines) of non-zero words, every page
/// written so that reads hit DRAM rather than the shared zero page, in huge pages like the weights
/// ([`crate::huge_pages`]) so that the probe measures the same kind of reads.
pub fn probe_buffer(bytes: usize) -> Vec<u64> {
    let mut words = crate::huge_pages::huge_page_vec(0u64, bytes / 64 * 8);
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u64 ^ 0x9e37_79b9_7f4a_7c15;
    }
    words
}

/// The best of `passes` full reads of `buf` on `pool`, in bytes per second.
pub fn read_rate(buf: &[u64], pool: &ThreadPool, passes: usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        std::hint::black_box(read_bandwidth(buf, pool));
        best = best.min(start.elapsed().as_secs_f64());
    }
    (buf.len() * 8) as f64 / best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_word() {
        let buf: Vec<u64> = (0..100_000).collect();
        let expected = buf.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        for threads in 1..=3 {
            let pool = ThreadPool::new(threads).unwrap();
            assert_eq!(read_bandwidth(&buf, &pool), expected, "{threads} threads");
        }
        assert!(read_rate(&buf, &ThreadPool::new(1).unwrap(), 2) > 0.0);
        assert_eq!(probe_buffer(1000).len(), 15 * 8);
    }
}
