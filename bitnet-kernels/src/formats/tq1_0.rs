//! GGUF TQ1_0 (llama.cpp type 34): base-3 packing, 1.6875 bits per weight.
//!
//! Blocks of 256 weights along K, 54 bytes each: `qs[48]`, `qh[4]`, then an f16 scale `d`.
//! Five trits `t0..t4` (codes in {0, 1, 2}) form `v = t0*81 + t1*27 + t2*9 + t3*3 + t4 < 243`, stored as the
//! fixed-point fraction `ceil(v * 256 / 243)`, so trit `n` is read back as `((byte * 3^n mod 256) * 3) >> 8`.
//! * `qs[0..32]`: byte `m` holds elements `m + 32n`, n = 0..5 (elements 0..160);
//! * `qs[32..48]`: byte `m` holds elements `160 + m + 16n`, n = 0..5 (elements 160..240);
//! * `qh[0..4]`: byte `j` holds elements `240 + j + 4n`, n = 0..4, as the top four trits (elements 240..256).
//!
//! Dequantized weight: `(c - 1) * d`.

use super::{ensure_finite, TernaryCodes};
use crate::error::{checked_elems, ensure_eq, ensure_multiple, Result};
use half::f16;

const FORMAT: &str = "TQ1_0";
/// Weights per block.
pub const TQ1_0_BLOCK: usize = 256;
/// Bytes per block.
pub const TQ1_0_BLOCK_BYTES: usize = 54;

/// `(first element, stride, trits per byte)` of the byte groups of a block, in byte order:
/// 32 bytes of 5 trits at stride 32, 16 bytes of 5 at stride 16, 4 bytes of 4 at stride 4.
const GROUPS: [(usize, usize, usize, usize); 3] = [
    // (first byte, byte count, first element, element stride)
    (0, 32, 0, 32),
    (32, 16, 160, 16),
    (48, 4, 240, 4),
];

/// Encodes up to five trits, most significant first, as `ceil(v * 256 / 243)` (also the byte of the native
/// five-trit layout, [`super::native::TernaryLayout::Trits5`]).
pub(crate) fn encode_trits(trits: impl Iterator<Item = u8>, count: usize) -> u8 {
    let mut v: u16 = 0;
    for t in trits {
        v = v * 3 + t as u16;
    }
    for _ in count..5 {
        v *= 3;
    }
    (v * 256).div_ceil(243) as u8
}

/// Trit `n` (0 = most significant) of an encoded byte.
#[inline]
pub(crate) fn decode_trit(byte: u8, n: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = byte.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as u8
}

/// Packs `codes` (`cols` a multiple of 256) with one scale per block (row-major), stored as f16.
pub fn pack_tq1_0(codes: &TernaryCodes, block_scales: &[f32]) -> Result<Vec<u8>> {
    ensure_multiple(FORMAT, "cols", codes.cols(), TQ1_0_BLOCK)?;
    let blocks = codes.codes().len() / TQ1_0_BLOCK;
    ensure_eq("TQ1_0 block scale count", blocks, block_scales.len())?;
    let mut out = vec![0u8; blocks * TQ1_0_BLOCK_BYTES];
    for ((src, dst), &d) in codes.codes().chunks(TQ1_0_BLOCK).zip(out.chunks_mut(TQ1_0_BLOCK_BYTES)).zip(block_scales) {
        ensure_finite("TQ1_0 block scale", d)?;
        for (first_byte, count, first_elem, stride) in GROUPS {
            let trits = if first_byte == 48 { 4 } else { 5 };
            for m in 0..count {
                let elems = (0..trits).map(|n| src[first_elem + m + stride * n]);
                dst[first_byte + m] = encode_trits(elems, trits);
            }
        }
        dst[52..54].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }
    Ok(out)
}

/// Unpacks `[rows, cols]` TQ1_0 data; returns the codes and the per-block scales (row-major).
pub fn unpack_tq1_0(bytes: &[u8], rows: usize, cols: usize) -> Result<(TernaryCodes, Vec<f32>)> {
    ensure_multiple(FORMAT, "cols", cols, TQ1_0_BLOCK)?;
    let n = checked_elems(FORMAT, rows, cols)?;
    let blocks = n / TQ1_0_BLOCK;
    ensure_eq("TQ1_0 byte count", checked_elems(FORMAT, blocks, TQ1_0_BLOCK_BYTES)?, bytes.len())?;
    let mut codes = vec![0u8; n];
    let mut scales = Vec::with_capacity(blocks);
    for (src, dst) in bytes.chunks(TQ1_0_BLOCK_BYTES).zip(codes.chunks_mut(TQ1_0_BLOCK)) {
        for (first_byte, count, first_elem, stride) in GROUPS {
            let trits = if first_byte == 48 { 4 } else { 5 };
            for m in 0..count {
                for t in 0..trits {
                    dst[first_elem + m + stride * t] = decode_trit(src[first_byte + m], t);
                }
            }
        }
        let d = f16::from_le_bytes([src[52], src[53]]).to_f32();
        ensure_finite("TQ1_0 block scale", d)?;
        scales.push(d);
    }
    Ok((TernaryCodes::new(rows, cols, codes)?, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_five_trit_value_round_trips() {
        for v in 0u16..243 {
            let trits: Vec<u8> = (0..5).rev().map(|i| ((v / 3u16.pow(i)) % 3) as u8).collect();
            let byte = encode_trits(trits.iter().copied(), 5);
            let back: Vec<u8> = (0..5).map(|n| decode_trit(byte, n)).collect();
            assert_eq!(back, trits, "v = {v}");
        }
    }

    #[test]
    fn block_round_trip_and_size() {
        let codes: Vec<u8> = (0..512).map(|i| ((i * 7 + i / 5) % 3) as u8).collect();
        let t = TernaryCodes::new(2, 256, codes).unwrap();
        let bytes = pack_tq1_0(&t, &[0.5, 1.5]).unwrap();
        assert_eq!(bytes.len(), 108);
        let (back, scales) = unpack_tq1_0(&bytes, 2, 256).unwrap();
        assert_eq!(back, t);
        assert_eq!(scales, vec![0.5, 1.5]);
        assert!(unpack_tq1_0(&bytes[..107], 2, 256).is_err());
    }
}
