//! Scalar reference of the ternary dot product on the native layout; every SIMD kernel must match it
//! bit for bit.

use crate::formats::native::{NATIVE_BLOCK, NATIVE_BLOCK_BYTES, ROW_TILE};

/// `sum_k c[r, k] * a[k]` for the four rows of one interleaved tile (`blocks` blocks per row; block `b` of
/// row `r` at byte `(4b + r) * 64`).
///
/// # Safety
/// `w` is valid for `blocks * 256` bytes and `act` for `blocks * 256` bytes.
pub(crate) unsafe fn dot4(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    // SAFETY: lengths guaranteed by the caller.
    let (w, act) = unsafe {
        (
            std::slice::from_raw_parts(w, blocks * ROW_TILE * NATIVE_BLOCK_BYTES),
            std::slice::from_raw_parts(act, blocks * NATIVE_BLOCK),
        )
    };
    let mut acc = [0i32; 4];
    for (tile_block, ab) in w.chunks_exact(ROW_TILE * NATIVE_BLOCK_BYTES).zip(act.chunks_exact(NATIVE_BLOCK)) {
        for (r, wb) in tile_block.chunks_exact(NATIVE_BLOCK_BYTES).enumerate() {
            for (j, &byte) in wb.iter().enumerate() {
                for p in 0..4 {
                    let code = ((byte >> (2 * p)) & 3) as i32;
                    acc[r] += code * ab[64 * p + j] as i32;
                }
            }
        }
    }
    acc
}
