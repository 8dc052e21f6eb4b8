//! ggml tensor types: id, name, block size and bytes per block, as ggml defines them.
//!
//! A tensor of `n` elements of a block type holds `n / block_elems` blocks of `block_bytes` bytes (`n` must be a
//! multiple of the block). BitNet models use the float types for embeddings and norms and the ternary types for
//! projections; the other quantized types are known by size so that a file holding them still parses (and
//! `bitnet inspect` can describe it) before the loader names the type it cannot use.
//!
//! Type ids are not globally unique: bitnet.cpp's llama.cpp fork gives id 36 to its I2_S type, which upstream
//! ggml used for something else. The reader therefore takes the architecture into account
//! ([`GgmlType::from_id`]). PrismML's fork uses private ids above upstream's range (142 PQ2_0, 143 PTQ1_0);
//! early Ternary-Bonsai files are said to have written their group-128 blocks under upstream's Q2_0 id 42,
//! which the reader catches by size (a tensor's bytes must fit before the next tensor).

/// A ggml tensor type this project knows the layout of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// 4-bit, blocks of 32 (f16 scale + 16 bytes).
    Q4_0,
    /// 4-bit with min, blocks of 32.
    Q4_1,
    /// 5-bit, blocks of 32.
    Q5_0,
    /// 5-bit with min, blocks of 32.
    Q5_1,
    /// 8-bit, blocks of 32: an f16 scale `d` and 32 signed bytes, value `q * d`.
    Q8_0,
    /// 8-bit with sum, blocks of 32.
    Q8_1,
    /// 2-bit k-quant, super-blocks of 256.
    Q2_K,
    /// 3-bit k-quant.
    Q3_K,
    /// 4-bit k-quant.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant (what llama.cpp and bitnet.cpp write for quantized embeddings and heads).
    Q6_K,
    /// 8-bit k-quant (intermediate type of ggml's dot products).
    Q8_K,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit float.
    F64,
    /// bfloat16.
    BF16,
    /// llama.cpp's base-3 ternary type: 1.6875 bits per weight, blocks of 256 (54 bytes).
    TQ1_0,
    /// llama.cpp's 2-bit ternary type: blocks of 256, 64 bytes of codes then an f16 scale (66 bytes).
    TQ2_0,
    /// bitnet.cpp's 2-bit ternary type (x86 layout): 2 bits per weight and one f32 scale per tensor in a
    /// 32-byte tail.
    I2_S,
    /// ggml's 1-bit type: blocks of 128, an f16 scale and 16 bytes of signs (binary, not ternary: not loadable).
    Q1_0,
    /// ggml's 2-bit type: blocks of 64, an f16 scale then 16 bytes of codes (18 bytes); ternary when no code is 3.
    Q2_0,
    /// PrismML's fork: Q2_0's codec at 128 weights per block (34 bytes).
    PQ2_0,
    /// PrismML's fork: TQ1_0's base-3 packing at 128 weights per block (28 bytes); known by size only.
    PTQ1_0,
}

/// Architectures of bitnet.cpp's llama.cpp fork (the 2B-4T block).
pub const FORK_ARCHITECTURES: [&str; 2] = ["bitnet-25", "bitnet-b1.58"];

/// Architectures whose files use type id 36 as I2_S: the fork's, and `qwen3` (bitnet.cpp's converter of the
/// BitNet embedding models writes I2_S under it; upstream's old id 36 was removed from ggml).
pub const I2S_ARCHITECTURES: [&str; 3] = ["bitnet-25", "bitnet-b1.58", "qwen3"];

impl GgmlType {
    /// Every known type.
    pub const ALL: [GgmlType; 27] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F64,
        Self::BF16,
        Self::TQ1_0,
        Self::TQ2_0,
        Self::I2_S,
        Self::Q1_0,
        Self::Q2_0,
        Self::PQ2_0,
        Self::PTQ1_0,
    ];

    /// `(id, name, elements per block, bytes per block)`; I2_S's per-tensor tail is added by
    /// [`GgmlType::tensor_bytes`].
    const fn layout(self) -> (u32, &'static str, u64, u64) {
        match self {
            Self::F32 => (0, "F32", 1, 4),
            Self::F16 => (1, "F16", 1, 2),
            Self::Q4_0 => (2, "Q4_0", 32, 18),
            Self::Q4_1 => (3, "Q4_1", 32, 20),
            Self::Q5_0 => (6, "Q5_0", 32, 22),
            Self::Q5_1 => (7, "Q5_1", 32, 24),
            Self::Q8_0 => (8, "Q8_0", 32, 34),
            Self::Q8_1 => (9, "Q8_1", 32, 36),
            Self::Q2_K => (10, "Q2_K", 256, 84),
            Self::Q3_K => (11, "Q3_K", 256, 110),
            Self::Q4_K => (12, "Q4_K", 256, 144),
            Self::Q5_K => (13, "Q5_K", 256, 176),
            Self::Q6_K => (14, "Q6_K", 256, 210),
            Self::Q8_K => (15, "Q8_K", 256, 292),
            Self::I8 => (24, "I8", 1, 1),
            Self::I16 => (25, "I16", 1, 2),
            Self::I32 => (26, "I32", 1, 4),
            Self::I64 => (27, "I64", 1, 8),
            Self::F64 => (28, "F64", 1, 8),
            Self::BF16 => (30, "BF16", 1, 2),
            Self::TQ1_0 => (34, "TQ1_0", 256, 54),
            Self::TQ2_0 => (35, "TQ2_0", 256, 66),
            Self::I2_S => (36, "I2_S", 128, 32),
            Self::Q1_0 => (41, "Q1_0", 128, 18),
            Self::Q2_0 => (42, "Q2_0", 64, 18),
            Self::PQ2_0 => (142, "PQ2_0", 128, 34),
            Self::PTQ1_0 => (143, "PTQ1_0", 128, 28),
        }
    }

    /// The type id written in GGUF tensor headers.
    pub const fn id(self) -> u32 {
        self.layout().0
    }

    /// ggml's name of the type.
    pub const fn name(self) -> &'static str {
        self.layout().1
    }

    /// Elements per block.
    pub const fn block_elems(self) -> u64 {
        self.layout().2
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> u64 {
        self.layout().3
    }

    /// The type of `id` in a file of architecture `architecture` (id 36 is I2_S only in `I2S_ARCHITECTURES`).
    pub fn from_id(id: u32, architecture: &str) -> Option<Self> {
        let fork = I2S_ARCHITECTURES.contains(&architecture);
        Self::ALL.into_iter().find(|t| t.id() == id && (*t != Self::I2_S || fork))
    }

    /// The name of any type id, for messages: the known name, else `type N`.
    pub fn describe_id(id: u32, architecture: &str) -> String {
        Self::from_id(id, architecture).map_or_else(|| format!("type {id}"), |t| t.name().to_string())
    }

    /// Bytes of a tensor of `n` elements, or `None` when `n` is not a whole number of blocks (or overflows).
    pub fn tensor_bytes(self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        let body = (n / self.block_elems()).checked_mul(self.block_bytes())?;
        match self {
            Self::I2_S => body.checked_add(32),
            _ => Some(body),
        }
    }

    /// Whether the type stores ternary weights.
    pub fn is_ternary(self) -> bool {
        matches!(self, Self::TQ1_0 | Self::TQ2_0 | Self::I2_S | Self::Q2_0 | Self::PQ2_0 | Self::PTQ1_0)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id(), "bitnet-b1.58"), Some(t));
            assert_eq!(GgmlType::ALL.iter().filter(|u| u.id() == t.id()).count(), 1, "{t}");
        }
        assert_eq!(GgmlType::from_id(36, "bitnet"), None, "36 is I2_S only in the fork");
        assert_eq!(GgmlType::describe_id(99, "bitnet"), "type 99");
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(512), Some(132));
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(300), None);
        assert_eq!(GgmlType::I2_S.tensor_bytes(256), Some(64 + 32));
        assert_eq!(GgmlType::F16.tensor_bytes(7), Some(14));
        assert_eq!(GgmlType::Q8_0.tensor_bytes(64), Some(68));
        assert_eq!(GgmlType::F32.tensor_bytes(u64::MAX), None, "overflow");
        assert_eq!(GgmlType::Q2_0.tensor_bytes(128), Some(36));
        assert_eq!(GgmlType::PQ2_0.tensor_bytes(256), Some(68));
        assert_eq!(GgmlType::from_id(142, "qwen3"), Some(GgmlType::PQ2_0));
    }
}
