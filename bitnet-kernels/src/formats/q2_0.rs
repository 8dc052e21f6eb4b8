//! GGUF Q2_0 (ggml type 42, 64 weights per group) and PQ2_0 (type 142 of PrismML's llama.cpp fork, 128
//! weights per group): 2-bit codes with one f16 scale per group.
//!
//! A block holds one group: the f16 scale `d` FIRST (2 bytes, little-endian), then `group / 4` bytes of
//! codes. Weight `j` of the group lives in byte `j / 4` at bits `2 * (j % 4)` (least significant first).
//! Dequantized weight: `(c - 1) * d`. The format has a fourth level: code 3 means `+2 * d`; it is part of
//! the dequantizer ([`dequantize_q2_0`]) but not ternary, so unpacking for the ternary kernels rejects it.
//!
//! ggml's reference quantizer, reproduced byte for byte by [`quantize_q2_0`]: per group, `amax = max |x|`
//! (f32), `d = f16(amax)` (round to nearest even), `id = 1 / amax` (from the f32 `amax`, 0 when it is 0),
//! `c = clamp(round_half_away(x * id) + 1, 0, 3)`. PQ2_0 uses the same codec at group 128; its layout is
//! the fork's `block_pq2_0 { ggml_half d; uint8_t qs[32]; }` ("same 2-bit codec as Q2_0, one fp16 scale
//! per 128 weights"). The fork's other private type, PTQ1_0 (143), is not read (see `gguf` types).

use super::{code_at, ensure_finite, TernaryCodes};
use crate::error::{checked_elems, ensure_eq, ensure_multiple, KernelError, Result};
use half::f16;

/// The two group sizes of the Q2_0 codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Q2Group {
    /// Upstream ggml Q2_0 (type 42): 64 weights, 18 bytes per block.
    G64,
    /// PrismML's PQ2_0 (type 142): 128 weights, 34 bytes per block.
    G128,
}

impl Q2Group {
    /// Weights per group.
    pub const fn weights(self) -> usize {
        match self {
            Q2Group::G64 => 64,
            Q2Group::G128 => 128,
        }
    }
    /// Bytes per block: the f16 scale and `weights / 4` code bytes.
    pub const fn block_bytes(self) -> usize {
        2 + self.weights() / 4
    }
    /// The format's name in errors and listings.
    pub const fn name(self) -> &'static str {
        match self {
            Q2Group::G64 => "Q2_0",
            Q2Group::G128 => "PQ2_0",
        }
    }
}

/// ggml's reference quantizer (`quantize_row_q2_0_ref`) over `x`, whose length must be a multiple of the
/// group. Fails on a non-finite value (C would hit undefined behaviour converting NaN to int) and on a
/// group whose absmax overflows f16 (ggml would write an infinite scale that no loader accepts).
pub fn quantize_q2_0(x: &[f32], group: Q2Group) -> Result<Vec<u8>> {
    let g = group.weights();
    ensure_multiple(group.name(), "values", x.len(), g)?;
    if let Some(&value) = x.iter().find(|v| !v.is_finite()) {
        return Err(KernelError::NonFiniteScale { what: "a weight", value });
    }
    let mut out = vec![0u8; x.len() / g * group.block_bytes()];
    for (src, dst) in x.chunks_exact(g).zip(out.chunks_exact_mut(group.block_bytes())) {
        let amax = src.iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        let d = f16::from_f32(amax);
        ensure_finite("Q2_0 group scale (as f16)", d.to_f32())?;
        dst[..2].copy_from_slice(&d.to_le_bytes());
        for (j, &v) in src.iter().enumerate() {
            // `f32::round` rounds half away from zero, as C's `roundf` does.
            let code = ((v * id).round() as i32 + 1).clamp(0, 3) as u8;
            dst[2 + j / 4] |= code << (2 * (j % 4));
        }
    }
    Ok(out)
}

/// ggml's dequantizer (`dequantize_row_q2_0`): `(c - 1) * d` for every weight, code 3 included (`+2d`).
pub fn dequantize_q2_0(bytes: &[u8], group: Q2Group) -> Result<Vec<f32>> {
    ensure_multiple(group.name(), "bytes", bytes.len(), group.block_bytes())?;
    let mut out = Vec::with_capacity(bytes.len() / group.block_bytes() * group.weights());
    for block in bytes.chunks_exact(group.block_bytes()) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        for j in 0..group.weights() {
            let code = (block[2 + j / 4] >> (2 * (j % 4))) & 3;
            out.push((code as i32 - 1) as f32 * d);
        }
    }
    Ok(out)
}

/// Packs `codes` (`cols` a multiple of the group) with one scale per group (`rows * cols / group`,
/// row-major), stored as f16.
pub fn pack_q2_0(codes: &TernaryCodes, group_scales: &[f32], group: Q2Group) -> Result<Vec<u8>> {
    let g = group.weights();
    ensure_multiple(group.name(), "cols", codes.cols(), g)?;
    let groups = codes.codes().len() / g;
    ensure_eq("Q2_0 group scale count", groups, group_scales.len())?;
    let mut out = vec![0u8; groups * group.block_bytes()];
    for ((src, dst), &d) in
        codes.codes().chunks_exact(g).zip(out.chunks_exact_mut(group.block_bytes())).zip(group_scales)
    {
        let d = f16::from_f32(d);
        ensure_finite("Q2_0 group scale (as f16)", d.to_f32())?;
        dst[..2].copy_from_slice(&d.to_le_bytes());
        for (j, &c) in src.iter().enumerate() {
            dst[2 + j / 4] |= c << (2 * (j % 4));
        }
    }
    Ok(out)
}

/// Unpacks `[rows, cols]` Q2_0 / PQ2_0 data; returns the codes and the per-group scales (row-major).
/// Fails on code 3 (the non-ternary `+2` level) and on a non-finite scale.
pub fn unpack_q2_0(bytes: &[u8], rows: usize, cols: usize, group: Q2Group) -> Result<(TernaryCodes, Vec<f32>)> {
    let g = group.weights();
    ensure_multiple(group.name(), "cols", cols, g)?;
    let n = checked_elems(group.name(), rows, cols)?;
    let groups = n / g;
    ensure_eq("Q2_0 byte count", checked_elems(group.name(), groups, group.block_bytes())?, bytes.len())?;
    let mut codes = vec![0u8; n];
    let mut scales = Vec::with_capacity(groups);
    for (b, (src, dst)) in bytes.chunks_exact(group.block_bytes()).zip(codes.chunks_exact_mut(g)).enumerate() {
        let d = f16::from_le_bytes([src[0], src[1]]).to_f32();
        ensure_finite("Q2_0 group scale", d)?;
        for (j, out) in dst.iter_mut().enumerate() {
            *out = code_at(src[2 + j / 4], 2 * (j % 4) as u32, b * g + j)?;
        }
        scales.push(d);
    }
    Ok((TernaryCodes::new(rows, cols, codes)?, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_block() {
        let mut codes = vec![1u8; 64];
        codes[0] = 2; // byte 2, bits 1-0
        codes[7] = 0; // byte 3, bits 7-6
        let t = TernaryCodes::new(1, 64, codes).unwrap();
        let bytes = pack_q2_0(&t, &[0.5], Q2Group::G64).unwrap();
        assert_eq!(bytes.len(), 18);
        assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), 0.5);
        assert_eq!(bytes[2], 0b01_01_01_10);
        assert_eq!(bytes[3], 0b00_01_01_01);
        let (back, scales) = unpack_q2_0(&bytes, 1, 64, Q2Group::G64).unwrap();
        assert_eq!(back, t);
        assert_eq!(scales, vec![0.5]);
    }

    #[test]
    fn quantizer_takes_the_group_absmax() {
        let mut x = vec![0.0f32; 128];
        x[3] = -2.0;
        x[5] = 1.1;
        x[100] = 1.2;
        let bytes = quantize_q2_0(&x, Q2Group::G128).unwrap();
        assert_eq!(bytes.len(), 34);
        let back = dequantize_q2_0(&bytes, Q2Group::G128).unwrap();
        assert_eq!((back[3], back[5], back[100], back[0]), (-2.0, 2.0, 2.0, 0.0));
        // An all-zero group has d = 0 and zero codes.
        let zero = quantize_q2_0(&[0.0; 64], Q2Group::G64).unwrap();
        assert_eq!(&zero[..2], &[0, 0]);
        assert!(zero[2..].iter().all(|&b| b == 0x55));
        assert!(quantize_q2_0(&[f32::NAN; 64], Q2Group::G64).is_err());
        assert!(quantize_q2_0(&[1e5; 64], Q2Group::G64).is_err(), "absmax beyond the f16 range");
        let ones = TernaryCodes::new(1, 64, vec![2; 64]).unwrap();
        assert!(pack_q2_0(&ones, &[1e5], Q2Group::G64).is_err());
    }

    #[test]
    fn code_three_dequantizes_to_plus_two_but_is_not_ternary() {
        let mut bytes = vec![0x55u8; 18];
        bytes[..2].copy_from_slice(&f16::from_f32(1.5).to_le_bytes());
        bytes[2] = 0b01_01_01_11;
        assert_eq!(dequantize_q2_0(&bytes, Q2Group::G64).unwrap()[0], 3.0);
        assert!(unpack_q2_0(&bytes, 1, 64, Q2Group::G64).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(unpack_q2_0(&[0x55; 18], 1, 32, Q2Group::G64).is_err());
        assert!(unpack_q2_0(&[0x55; 17], 1, 64, Q2Group::G64).is_err());
        assert!(unpack_q2_0(&[0x55; 18], 1, 64, Q2Group::G128).is_err());
        let mut inf = vec![0x55u8; 34];
        inf[..2].copy_from_slice(&f16::INFINITY.to_le_bytes());
        assert!(unpack_q2_0(&inf, 1, 128, Q2Group::G128).is_err());
        assert!(dequantize_q2_0(&[0; 19], Q2Group::G64).is_err());
    }
}
