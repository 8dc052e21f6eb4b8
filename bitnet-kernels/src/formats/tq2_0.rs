//! GGUF TQ2_0 (llama.cpp type 35): 2.0625 bits per weight.
//!
//! Each row is cut into blocks of 256 weights along K. A block is 66 bytes: 64 bytes of codes, then an
//! f16 scale `d`. Byte `m` of each 32-byte half `h` holds elements `128h + m`, `+32`, `+64`, `+96` at bits
//! 1-0, 3-2, 5-4, 7-6. Dequantized weight: `(c - 1) * d`. llama.cpp's reference quantizer sets `d` to the
//! block's absmax, which for ternary weights with scale `g` is `g` in every block.

use super::{code_at, ensure_finite, TernaryCodes};
use crate::error::{checked_elems, ensure_eq, ensure_multiple, Result};
use half::f16;

const FORMAT: &str = "TQ2_0";
/// Weights per block.
pub const TQ2_0_BLOCK: usize = 256;
/// Bytes per block.
pub const TQ2_0_BLOCK_BYTES: usize = 66;

/// Packs `codes` (`cols` a multiple of 256) with one scale per block (`rows * cols / 256` of them,
/// row-major), stored as f16.
pub fn pack_tq2_0(codes: &TernaryCodes, block_scales: &[f32]) -> Result<Vec<u8>> {
    ensure_multiple(FORMAT, "cols", codes.cols(), TQ2_0_BLOCK)?;
    let blocks = codes.codes().len() / TQ2_0_BLOCK;
    ensure_eq("TQ2_0 block scale count", blocks, block_scales.len())?;
    let mut out = vec![0u8; blocks * TQ2_0_BLOCK_BYTES];
    for ((src, dst), &d) in codes.codes().chunks(TQ2_0_BLOCK).zip(out.chunks_mut(TQ2_0_BLOCK_BYTES)).zip(block_scales) {
        ensure_finite("TQ2_0 block scale", d)?;
        for half in 0..2 {
            for m in 0..32 {
                let base = 128 * half + m;
                dst[32 * half + m] = (0..4).fold(0u8, |b, n| b | (src[base + 32 * n] << (2 * n)));
            }
        }
        dst[64..66].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }
    Ok(out)
}

/// Unpacks `[rows, cols]` TQ2_0 data; returns the codes and the per-block scales (row-major).
pub fn unpack_tq2_0(bytes: &[u8], rows: usize, cols: usize) -> Result<(TernaryCodes, Vec<f32>)> {
    ensure_multiple(FORMAT, "cols", cols, TQ2_0_BLOCK)?;
    let n = checked_elems(FORMAT, rows, cols)?;
    let blocks = n / TQ2_0_BLOCK;
    ensure_eq("TQ2_0 byte count", checked_elems(FORMAT, blocks, TQ2_0_BLOCK_BYTES)?, bytes.len())?;
    let mut codes = vec![0u8; n];
    let mut scales = Vec::with_capacity(blocks);
    for (b, (src, dst)) in bytes.chunks(TQ2_0_BLOCK_BYTES).zip(codes.chunks_mut(TQ2_0_BLOCK)).enumerate() {
        for half in 0..2 {
            for m in 0..32 {
                let byte = src[32 * half + m];
                for n in 0..4 {
                    let e = 128 * half + m + 32 * n;
                    dst[e] = code_at(byte, 2 * n as u32, b * TQ2_0_BLOCK + e)?;
                }
            }
        }
        let d = f16::from_le_bytes([src[64], src[65]]).to_f32();
        ensure_finite("TQ2_0 block scale", d)?;
        scales.push(d);
    }
    Ok((TernaryCodes::new(rows, cols, codes)?, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_block() {
        let mut codes = vec![1u8; 256];
        codes[0] = 2; // byte 0, bits 1-0
        codes[96] = 0; // byte 0, bits 7-6
        codes[128 + 33] = 2; // byte 32 + 1, bits 3-2
        let t = TernaryCodes::new(1, 256, codes).unwrap();
        let bytes = pack_tq2_0(&t, &[0.25]).unwrap();
        assert_eq!(bytes.len(), 66);
        assert_eq!(bytes[0], 0b00_01_01_10);
        assert_eq!(bytes[33], 0b01_01_10_01);
        assert_eq!(f16::from_le_bytes([bytes[64], bytes[65]]).to_f32(), 0.25);
        let (back, scales) = unpack_tq2_0(&bytes, 1, 256).unwrap();
        assert_eq!(back, t);
        assert_eq!(scales, vec![0.25]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(unpack_tq2_0(&[0; 66], 1, 128).is_err());
        assert!(unpack_tq2_0(&[0; 65], 1, 256).is_err());
        let mut inf = vec![0x55u8; 66];
        inf[64..66].copy_from_slice(&f16::INFINITY.to_le_bytes());
        assert!(unpack_tq2_0(&inf, 1, 256).is_err());
    }
}
