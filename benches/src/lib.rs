//! Shared helpers of the BitNet-Rust criterion benchmarks (`benches/benches/*.rs`).
//!
//! The figure of merit of a decode kernel is how close it comes to streaming its weights at the
//! machine's memory bandwidth, so every weight benchmark reports bytes of weights read per second and
//! [`read_bandwidth`] (the probe of `bitnet_kernels::probe`) measures the ceiling the same way: a pure
//! streaming read of a buffer far larger than the caches. Weight benchmarks rotate through [`Rotation`]
//! copies whose total also exceeds the caches, so each call reads its weights from DRAM as decode of a
//! real model does.

pub use bitnet_kernels::probe::read_bandwidth;

use bitnet_kernels::huge_pages::HugePageBytes;
use bitnet_kernels::{TernaryLayout, TernaryMatrix, TernaryView};

#[cfg(target_arch = "x86_64")]
pub mod avx2_peak;

/// Bytes a benchmark's working set must exceed to defeat the caches (L3 is at most tens of MB here).
pub const WORKING_SET_BYTES: usize = 512 << 20;

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

/// A ternary matrix laid out in memory as a loaded model holds its weights: the packed bytes carved out of
/// shared huge-page chunks ([`HugePageBytes`], as `bitnet_backend`'s packed weights), so a benchmark streams
/// them with decode's TLB behaviour. (A [`TernaryMatrix`] owns ordinary heap memory, in 4 KiB pages under the
/// `madvise` THP mode most systems ship; at 2 threads that read measurably slower than the model's weights.)
///
/// `Clone` copies the bytes into fresh memory, so [`Rotation`] copies are distinct reads.
pub struct ModelLaidTernary {
    layout: TernaryLayout,
    rows: usize,
    cols: usize,
    data: HugePageBytes,
    scales: Vec<f32>,
}

impl ModelLaidTernary {
    /// A huge-page copy of `matrix`.
    pub fn new(matrix: &TernaryMatrix) -> Self {
        let data = matrix.data();
        Self {
            layout: matrix.layout(),
            rows: matrix.rows(),
            cols: matrix.cols(),
            data: HugePageBytes::filled(data.len(), |out| out.copy_from_slice(data)),
            scales: matrix.scales().to_vec(),
        }
    }

    /// Bytes of packed weights.
    pub fn bytes(&self) -> usize {
        self.data.as_ref().len()
    }

    /// The kernels' view of the matrix.
    pub fn view(&self) -> TernaryView<'_> {
        TernaryView::new_in(self.layout, self.rows, self.cols, self.data.as_ref(), &self.scales)
            .expect("the view of a valid matrix's own bytes")
    }
}

impl Clone for ModelLaidTernary {
    fn clone(&self) -> Self {
        let data = self.data.as_ref();
        Self {
            layout: self.layout,
            rows: self.rows,
            cols: self.cols,
            data: HugePageBytes::filled(data.len(), |out| out.copy_from_slice(data)),
            scales: self.scales.clone(),
        }
    }
}
