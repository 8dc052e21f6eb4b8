//! Scalar reference of the ternary dot product on the native layout; every SIMD kernel must match it
//! bit for bit.

use crate::formats::native::{NATIVE_BLOCK, NATIVE_BLOCK_BYTES};

/// `sum_k c[k] * a[k]` over `blocks` native blocks of one row.
///
/// # Safety
/// `w` is valid for `blocks * 64` bytes and `act` for `blocks * 256` bytes.
pub(crate) unsafe fn dot1(w: *const u8, act: *const i8, blocks: usize) -> i32 {
    // SAFETY: lengths guaranteed by the caller.
    let (w, act) = unsafe {
        (
            std::slice::from_raw_parts(w, blocks * NATIVE_BLOCK_BYTES),
            std::slice::from_raw_parts(act, blocks * NATIVE_BLOCK),
        )
    };
    let mut acc = 0i32;
    for (wb, ab) in w
        .chunks_exact(NATIVE_BLOCK_BYTES)
        .zip(act.chunks_exact(NATIVE_BLOCK))
    {
        for (j, &byte) in wb.iter().enumerate() {
            for p in 0..4 {
                let code = ((byte >> (2 * p)) & 3) as i32;
                acc += code * ab[64 * p + j] as i32;
            }
        }
    }
    acc
}

/// [`dot1`] for four rows `stride` bytes apart.
///
/// # Safety
/// `w` is valid for `3 * stride + blocks * 64` bytes and `act` for `blocks * 256` bytes.
pub(crate) unsafe fn dot4(w: *const u8, stride: usize, act: *const i8, blocks: usize) -> [i32; 4] {
    // SAFETY: each row lies inside the range the caller guarantees.
    unsafe { std::array::from_fn(|r| dot1(w.add(r * stride), act, blocks)) }
}
