//! Ternary weight layouts: the on-disk formats (HF packed, GGUF I2_S / TQ2_0 / TQ1_0) and the kernel-native layout.
//!
//! Every format stores the 2-bit code `c = w + 1` (`w` in {-1, 0, +1}); they differ in how codes are
//! ordered inside bytes and where scales live. All of them convert to and from [`TernaryCodes`], the
//! unpacked row-major `[rows, cols]` code matrix, and repack into the kernel-native [`TernaryMatrix`].
//!
//! | format | module | bytes | scale |
//! |---|---|---|---|
//! | HF packed (2B-4T safetensors) | [`hf_packed`] | `rows/4 * cols` | separate `weight_scale` tensor |
//! | GGUF I2_S (bitnet.cpp) | [`i2s`] | `rows*cols/4 + 32` | one f32 per tensor, in the tail |
//! | GGUF TQ2_0 (llama.cpp) | [`tq2_0`] | 66 per 256 weights | f16 per block |
//! | GGUF TQ1_0 (llama.cpp) | [`tq1_0`] | 54 per 256 weights | f16 per block |
//! | GGUF Q2_0 / PQ2_0 (ggml / PrismML) | [`q2_0`] | 18 per 64 / 34 per 128 weights | f16 per group |
//! | native (ours) | [`native`] | `rows * ceil(cols/256) * 64` | f32 per row, optionally f32 per 64 weights |

pub mod hf_packed;
pub mod i2s;
pub mod native;
pub mod q2_0;
pub mod tq1_0;
pub mod tq2_0;

use crate::error::{checked_elems, ensure_eq, KernelError, Result};

pub use native::TernaryMatrix;

/// An unpacked ternary matrix: row-major `[rows, cols]` codes in {0, 1, 2} (`w = c - 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TernaryCodes {
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
}

impl TernaryCodes {
    /// Wraps `codes` after checking the length and that every code is 0, 1 or 2.
    pub fn new(rows: usize, cols: usize, codes: Vec<u8>) -> Result<Self> {
        ensure_eq("ternary code count", checked_elems("ternary codes", rows, cols)?, codes.len())?;
        check_codes(&codes, 0)?;
        Ok(Self { rows, cols, codes })
    }

    /// Codes from ternary values in {-1, 0, +1}.
    pub fn from_ternary(rows: usize, cols: usize, values: &[i8]) -> Result<Self> {
        let codes = values.iter().map(|&v| (v as i16 + 1).clamp(0, 3) as u8).collect::<Vec<_>>();
        if let Some(index) = values.iter().position(|&v| !(-1..=1).contains(&v)) {
            return Err(KernelError::InvalidCode { code: codes[index], index });
        }
        Self::new(rows, cols, codes)
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns (input features, `K`).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The codes, row-major.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    /// The codes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.codes[r * self.cols..(r + 1) * self.cols]
    }
    /// Consumes self and returns the code vector.
    pub fn into_codes(self) -> Vec<u8> {
        self.codes
    }
}

/// Rejects a scale that is NaN or infinite.
pub(crate) fn ensure_finite(what: &'static str, value: f32) -> Result<()> {
    if !value.is_finite() {
        return Err(KernelError::NonFiniteScale { what, value });
    }
    Ok(())
}

/// Fails on the first code above 2 in `codes`, naming it and its index (`first_index` plus its position): a
/// branch-free maximum first (it vectorizes), the position only when some code is bad.
pub(crate) fn check_codes(codes: &[u8], first_index: usize) -> Result<()> {
    if codes.iter().fold(0u8, |m, &c| m.max(c)) > 2 {
        let k = codes.iter().position(|&c| c > 2).unwrap_or_default();
        return Err(KernelError::InvalidCode { code: codes[k], index: first_index + k });
    }
    Ok(())
}

/// Decodes the 2-bit code of `byte` at bit offset `shift` and rejects code 3.
#[inline]
pub(crate) fn code_at(byte: u8, shift: u32, index: usize) -> Result<u8> {
    let code = (byte >> shift) & 3;
    if code == 3 {
        return Err(KernelError::InvalidCode { code, index });
    }
    Ok(code)
}
