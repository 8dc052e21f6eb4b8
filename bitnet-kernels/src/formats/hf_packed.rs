//! The Hugging Face packed layout of `microsoft/bitnet-b1.58-2B-4T` (uint8 `[rows/4, cols]`).
//!
//! Packing runs along the OUTPUT dimension: with `R = rows / 4`, byte `[r, c]` holds the codes of weight
//! rows `r` (bits 1-0), `r + R` (bits 3-2), `r + 2R` (bits 5-4) and `r + 3R` (bits 7-6) at column `c`.
//! The scale lives in a separate `weight_scale` tensor whose meaning depends on the checkpoint's
//! `linear_class` (see `bitnet_models::source::hf`); this module only moves codes.

use super::{code_at, TernaryCodes};
use crate::error::{checked_elems, ensure_eq, ensure_multiple, KernelError, Result};

const FORMAT: &str = "HF packed";

/// Packs `codes` (`rows` a multiple of 4) into `rows/4 * cols` bytes.
pub fn pack_hf_packed(codes: &TernaryCodes) -> Result<Vec<u8>> {
    ensure_multiple(FORMAT, "rows", codes.rows(), 4)?;
    let (quarter, cols) = (codes.rows() / 4, codes.cols());
    let mut out = vec![0u8; quarter * cols];
    for (r, dst) in out.chunks_mut(cols.max(1)).enumerate().take(quarter) {
        for part in 0..4 {
            let src = codes.row(r + part * quarter);
            for (d, &c) in dst.iter_mut().zip(src) {
                *d |= c << (2 * part);
            }
        }
    }
    Ok(out)
}

/// Unpacks `rows/4 * cols` bytes into a `[rows, cols]` code matrix (`rows` is the logical row count).
pub fn unpack_hf_packed(bytes: &[u8], rows: usize, cols: usize) -> Result<TernaryCodes> {
    ensure_multiple(FORMAT, "rows", rows, 4)?;
    let quarter = rows / 4;
    ensure_eq("HF packed byte count", checked_elems(FORMAT, quarter, cols)?, bytes.len())?;
    // A 2-bit field holds 3 (invalid) iff both its bits are set (a branch-free OR over all bytes vectorizes).
    if bytes.iter().fold(0u8, |any, &b| any | (b & (b >> 1) & 0x55)) != 0 {
        return Err(first_invalid_code(bytes, quarter, cols));
    }
    let mut codes = vec![0u8; rows * cols];
    for part in 0..4 {
        let shift = 2 * part;
        let dst = &mut codes[part * quarter * cols..(part + 1) * quarter * cols];
        for (d, &b) in dst.iter_mut().zip(bytes) {
            *d = (b >> shift) & 3;
        }
    }
    TernaryCodes::new(rows, cols, codes)
}

/// The error naming the first invalid code (in unpacked row-major order) of HF packed `bytes`.
fn first_invalid_code(bytes: &[u8], quarter: usize, cols: usize) -> KernelError {
    (0..quarter * 4 * cols)
        .find_map(|index| {
            let (row, c) = (index / cols, index % cols);
            let (r, part) = (row % quarter, row / quarter);
            code_at(bytes[r * cols + c], 2 * part as u32, index).err()
        })
        .unwrap_or_else(|| unreachable!("the caller found an invalid field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_follow_the_reference() {
        // rows 0..8, one column: row i has code i % 3. R = 2.
        let codes = TernaryCodes::new(8, 1, (0..8).map(|i| (i % 3) as u8).collect()).unwrap();
        let bytes = pack_hf_packed(&codes).unwrap();
        // byte 0: rows 0,2,4,6 -> codes 0,2,1,0 ; byte 1: rows 1,3,5,7 -> 1,0,2,1
        assert_eq!(bytes, vec![0b00_01_10_00, 0b01_10_00_01]);
        assert_eq!(unpack_hf_packed(&bytes, 8, 1).unwrap(), codes);
    }

    #[test]
    fn rejects_bad_shapes_and_code_3() {
        assert!(unpack_hf_packed(&[0; 3], 8, 1).is_err());
        assert!(unpack_hf_packed(&[0; 3], 6, 1).is_err());
        assert!(unpack_hf_packed(&[0b11], 4, 1).is_err());
    }
}
