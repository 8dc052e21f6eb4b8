//! GGUF I2_S, the ternary type of bitnet.cpp (type id 36 in its llama.cpp fork; x86 layout).
//!
//! The row-major `[rows, cols]` tensor is read as one flat run of `n = rows * cols` codes in groups of
//! 128 consecutive elements. Each group takes 32 bytes: byte `j` holds elements `j`, `32 + j`, `64 + j`,
//! `96 + j` of the group in bits 7-6, 5-4, 3-2, 1-0. After the `n / 4` packed bytes comes a 32-byte tail
//! whose first 4 bytes are the tensor's f32 scale `g` (little-endian): `w = (c - 1) * g`.

use super::{code_at, ensure_finite, TernaryCodes};
use crate::error::{checked_elems, ensure_eq, ensure_multiple, Result};

const FORMAT: &str = "I2_S";
/// Elements per I2_S group.
pub const I2S_GROUP: usize = 128;
/// Bytes of the scale tail.
pub const I2S_TAIL: usize = 32;

/// Bytes an I2_S tensor of `n` elements takes: `n / 4 + 32`.
pub fn i2s_byte_len(n: usize) -> usize {
    n / 4 + I2S_TAIL
}

/// Packs `codes` with the per-tensor scale `g`. `rows * cols` must be a multiple of 128.
pub fn pack_i2s(codes: &TernaryCodes, scale: f32) -> Result<Vec<u8>> {
    ensure_finite("I2_S scale", scale)?;
    let flat = codes.codes();
    ensure_multiple(FORMAT, "element count", flat.len(), I2S_GROUP)?;
    let mut out = vec![0u8; i2s_byte_len(flat.len())];
    for (group, dst) in flat.chunks(I2S_GROUP).zip(out.chunks_mut(32)) {
        for (j, d) in dst.iter_mut().enumerate() {
            *d = (group[j] << 6) | (group[32 + j] << 4) | (group[64 + j] << 2) | group[96 + j];
        }
    }
    let tail = flat.len() / 4;
    out[tail..tail + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// Unpacks an I2_S tensor of logical shape `[rows, cols]`; returns the codes and the scale `g`.
pub fn unpack_i2s(bytes: &[u8], rows: usize, cols: usize) -> Result<(TernaryCodes, f32)> {
    let n = checked_elems(FORMAT, rows, cols)?;
    ensure_multiple(FORMAT, "element count", n, I2S_GROUP)?;
    ensure_eq("I2_S byte count", i2s_byte_len(n), bytes.len())?;
    let mut codes = vec![0u8; n];
    for (g, (src, dst)) in bytes[..n / 4].chunks(32).zip(codes.chunks_mut(I2S_GROUP)).enumerate() {
        for (j, &b) in src.iter().enumerate() {
            for (part, shift) in [6u32, 4, 2, 0].into_iter().enumerate() {
                dst[32 * part + j] = code_at(b, shift, g * I2S_GROUP + 32 * part + j)?;
            }
        }
    }
    let scale = f32::from_le_bytes([bytes[n / 4], bytes[n / 4 + 1], bytes[n / 4 + 2], bytes[n / 4 + 3]]);
    ensure_finite("I2_S scale", scale)?;
    Ok((TernaryCodes::new(rows, cols, codes)?, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_group() {
        let mut codes = vec![1u8; 128];
        codes[0] = 2; // byte 0 bits 7-6
        codes[32] = 0; // byte 0 bits 5-4
        codes[97] = 2; // byte 1 bits 1-0
        let t = TernaryCodes::new(1, 128, codes).unwrap();
        let bytes = pack_i2s(&t, 0.5).unwrap();
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes[0], 0b10_00_01_01);
        assert_eq!(bytes[1], 0b01_01_01_10);
        assert_eq!(&bytes[32..36], &0.5f32.to_le_bytes());
        let (back, g) = unpack_i2s(&bytes, 1, 128).unwrap();
        assert_eq!(back, t);
        assert_eq!(g, 0.5);
    }

    #[test]
    fn rejects_truncation_and_nan_scale() {
        let t = TernaryCodes::new(2, 64, vec![1; 128]).unwrap();
        let mut bytes = pack_i2s(&t, 1.0).unwrap();
        assert!(unpack_i2s(&bytes[..bytes.len() - 1], 2, 64).is_err());
        bytes[32..36].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(unpack_i2s(&bytes, 2, 64).is_err());
        assert!(unpack_i2s(&bytes, 1, 100).is_err());
    }
}
