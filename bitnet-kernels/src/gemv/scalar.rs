//! Scalar reference of the ternary dot product on the native layouts; every SIMD kernel must match it
//! bit for bit.

use crate::formats::native::{NATIVE_BLOCK, NATIVE_BLOCK_BYTES, ROW_TILE, TRITS5_BLOCK};
use crate::formats::tq1_0::decode_trit;

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

/// Grouped scales: `out[r] = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])`, where `acc[r][p]` runs over
/// the blocks in order, `acc[r][p] = acc[r][p] + (d as f32) * h` with `d = sum_j (c - 1) * a` the exact
/// integer sum of plane `p` (64 weights) of row `r` in the block and `h` its group scale (`scales[16b + 4r +
/// p]`). Separate multiply and add (no fused multiply-add): every SIMD twin rounds the same way.
///
/// # Safety
/// `w` and `act` are valid for `blocks * 256` bytes, `scales` for `blocks * 16` values.
pub(crate) unsafe fn dot4_grouped(w: *const u8, act: *const i8, scales: *const f32, blocks: usize) -> [f32; 4] {
    // SAFETY: lengths guaranteed by the caller.
    let (w, act, scales) = unsafe {
        (
            std::slice::from_raw_parts(w, blocks * ROW_TILE * NATIVE_BLOCK_BYTES),
            std::slice::from_raw_parts(act, blocks * NATIVE_BLOCK),
            std::slice::from_raw_parts(scales, blocks * 16),
        )
    };
    let mut acc = [[0f32; 4]; 4];
    for ((tile_block, ab), hb) in
        w.chunks_exact(ROW_TILE * NATIVE_BLOCK_BYTES).zip(act.chunks_exact(NATIVE_BLOCK)).zip(scales.chunks_exact(16))
    {
        for (r, wb) in tile_block.chunks_exact(NATIVE_BLOCK_BYTES).enumerate() {
            for p in 0..4 {
                let d: i32 = wb
                    .iter()
                    .zip(&ab[64 * p..64 * p + 64])
                    .map(|(&byte, &a)| (((byte >> (2 * p)) & 3) as i32 - 1) * a as i32)
                    .sum();
                acc[r][p] += d as f32 * hb[4 * r + p];
            }
        }
    }
    acc.map(|a| (a[0] + a[1]) + (a[2] + a[3]))
}

/// [`dot4`] on the five-trit layout: `sum_k c[r, k] * a[k]` for the four rows of one interleaved tile of
/// `blocks` 320-weight blocks (block `b` of row `r` at byte `(4b + r) * 64`, byte `j` holding the codes of
/// weights `64p + j`, p = 0..5). The same integers as the 2-bit layout's sums of the same codes.
///
/// # Safety
/// `w` is valid for `blocks * 256` bytes and `act` for `blocks * 320` bytes.
pub(crate) unsafe fn dot4_trits5(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    // SAFETY: lengths guaranteed by the caller.
    let (w, act) = unsafe {
        (
            std::slice::from_raw_parts(w, blocks * ROW_TILE * NATIVE_BLOCK_BYTES),
            std::slice::from_raw_parts(act, blocks * TRITS5_BLOCK),
        )
    };
    let mut acc = [0i32; 4];
    for (tile_block, ab) in w.chunks_exact(ROW_TILE * NATIVE_BLOCK_BYTES).zip(act.chunks_exact(TRITS5_BLOCK)) {
        for (r, wb) in tile_block.chunks_exact(NATIVE_BLOCK_BYTES).enumerate() {
            for (j, &byte) in wb.iter().enumerate() {
                for p in 0..5 {
                    acc[r] += decode_trit(byte, p) as i32 * ab[64 * p + j] as i32;
                }
            }
        }
    }
    acc
}
