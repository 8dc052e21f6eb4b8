//! Shared helpers of the BitNet-Rust criterion benchmarks (`benches/benches/*.rs`).
//!
//! The figure of merit of a decode kernel is how close it comes to streaming its weights at the
//! machine's memory bandwidth, so every weight benchmark reports bytes of weights read per second and
//! [`read_bandwidth`] measures the ceiling the same way: a pure streaming read of a buffer far larger
//! than the caches. Weight benchmarks rotate through [`Rotation`] copies whose total also exceeds the
//! caches, so each call reads its weights from DRAM as decode of a real model does.

use bitnet_kernels::pool::{split_range, ThreadPool};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes a benchmark's working set must exceed to defeat the caches (L3 is at most tens of MB here).
pub const WORKING_SET_BYTES: usize = 512 << 20;

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

/// Reads every byte of `buf` once, split across the pool's threads; returns a checksum so the reads
/// cannot be optimised away.
pub fn read_bandwidth(buf: &[u64], pool: &ThreadPool) -> u64 {
    let total = AtomicU64::new(0);
    let threads = pool.threads();
    pool.run(&|t| {
        let part = &buf[split_range(buf.len(), threads, t, 4096)];
        total.fetch_add(sum_words(part), Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed)
}

/// Enough copies of a value that together exceed [`WORKING_SET_BYTES`], handed out round-robin.
pub struct Rotation<T> {
    items: Vec<T>,
    next: usize,
}

impl<T: Clone> Rotation<T> {
    /// Clones `item` (of `bytes` bytes) until the copies exceed the working set (at least 2 copies).
    pub fn new(item: T, bytes: usize) -> Self {
        let copies = (WORKING_SET_BYTES / bytes.max(1) + 1).max(2);
        Self { items: vec![item; copies], next: 0 }
    }

    /// The next copy.
    pub fn next_item(&mut self) -> &T {
        self.next = (self.next + 1) % self.items.len();
        &self.items[self.next]
    }
}
