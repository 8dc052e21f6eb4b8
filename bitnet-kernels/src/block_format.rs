//! [`BlockFormat`]: the block-quantized formats of the output head, behind one interface, so the backend and
//! the model carry "blocks of some format" rather than one code path per format.
//!
//! | format | weights per block | bytes per block | bits per weight | module |
//! |---|---:|---:|---:|---|
//! | Q6_K (ggml) | 256 | 210 | 6.5625 | [`crate::q6k`] |
//! | Q4 (ggml Q4_0's numbers, our layout) | 256 | 144 | 4.5 | [`crate::q4`] |
//!
//! Both take rows whose width is a multiple of 256, and both multiply against per-token int8 activations with
//! exact integer block sums.

use crate::dispatch::Kernel;
use crate::error::{checked_elems, ensure_eq, ensure_len, KernelError, Result};
use crate::gemv::OutPtr;
use crate::pool::{chunk_count, split_range, ThreadPool};
use crate::{q4, q6k, QuantizedActivations};

/// Weights per block, in both formats.
const BLOCK: usize = 256;
/// Rows below which a product runs on the calling thread alone.
const MIN_PARALLEL_ROWS: usize = 256;

/// A block-quantized matrix format (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// ggml's Q6_K.
    Q6K,
    /// [`crate::q4`]: an f16 scale per 32 weights, 4-bit codes.
    Q4,
}

impl BlockFormat {
    /// The format's short name (`q6k`, `q4`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q6K => "q6k",
            Self::Q4 => "q4",
        }
    }

    /// Bytes of a row of `cols` weights (an error unless `cols` is a multiple of 256).
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(KernelError::ShapeMismatch {
                what: "block-quantized row length (a multiple of 256)",
                expected: cols.div_ceil(BLOCK) * BLOCK,
                got: cols,
            });
        }
        checked_elems("block-quantized row", cols / BLOCK, self.block_bytes())
    }

    /// Bytes of one block of 256 weights (Q6_K's block, Q4's super-block).
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q6K => q6k::Q6K_BLOCK_BYTES,
            Self::Q4 => q4::Q4_SUPER_BLOCK_BYTES,
        }
    }

    /// `y = x W^T` for `rows` rows of `cols` weights in `bytes`: `y` is `[x.rows(), rows]`.
    pub fn gemv(
        self,
        bytes: &[u8],
        [rows, cols]: [usize; 2],
        x: &QuantizedActivations,
        y: &mut [f32],
        pool: &ThreadPool,
    ) -> Result<()> {
        block_gemv(BlockView::new(self, bytes, rows, cols)?, x, y, pool)
    }

    /// The `rows` rows of `cols` weights in `bytes` as f32 (`out` holds `rows * cols` values).
    pub fn dequantize(self, bytes: &[u8], [rows, cols]: [usize; 2], out: &mut [f32]) -> Result<()> {
        ensure_len("dequantized rows", rows.saturating_mul(cols), out.len())?;
        let w = BlockView::new(self, bytes, rows, cols)?;
        out.chunks_exact_mut(cols.max(1)).enumerate().try_for_each(|(n, row)| w.dequantize_row(n, row))
    }

    /// The first element whose scale is not finite (an f16 scale with all exponent bits set), if any: such a
    /// scale turns every logit into NaN, so loaders refuse it.
    pub fn first_non_finite(self, bytes: &[u8]) -> Option<usize> {
        let infinite = |lo: u8, hi: u8| u16::from_le_bytes([lo, hi]) & 0x7c00 == 0x7c00;
        match self {
            Self::Q6K => bytes
                .chunks_exact(q6k::Q6K_BLOCK_BYTES)
                .position(|b| infinite(b[q6k::Q6K_BLOCK_BYTES - 2], b[q6k::Q6K_BLOCK_BYTES - 1]))
                .map(|block| block * q6k::Q6K_BLOCK),
            Self::Q4 => bytes.chunks_exact(q4::Q4_SUPER_BLOCK_BYTES).enumerate().find_map(|(b, block)| {
                (0..8)
                    .find(|&g| infinite(block[2 * g], block[2 * g + 1]))
                    .map(|g| b * q4::Q4_SUPER_BLOCK + g * q4::Q4_GROUP)
            }),
        }
    }

    /// Weights per exact integer sum of the product (each sum is multiplied by its own scale): 256 for Q6_K's
    /// blocks, 32 for Q4's groups.
    pub fn sum_width(self) -> usize {
        match self {
            Self::Q6K => q6k::Q6K_BLOCK,
            Self::Q4 => q4::Q4_GROUP,
        }
    }

    /// Quantizes one row of f32 (`w.len()` a multiple of 256) into `out` (`row_bytes(w.len())` bytes).
    pub fn quantize_row(self, w: &[f32], out: &mut [u8]) -> Result<()> {
        ensure_eq("quantized row bytes", self.row_bytes(w.len())?, out.len())?;
        match self {
            Self::Q6K => q6k::quantize_row(w, out),
            Self::Q4 => q4::quantize_row(w, out),
        }
    }
}

/// Weights `[rows, cols]` in a block format, in memory this crate owns (quantized from f32, or repacked).
#[derive(Debug, Clone)]
pub struct BlockMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl BlockMatrix {
    /// Quantizes f32 `[rows, cols]` row-major (`cols` a multiple of 256) into `format`.
    pub fn quantize(format: BlockFormat, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        ensure_eq("weight element count", checked_elems("block weights", rows, cols)?, w.len())?;
        let row_bytes = format.row_bytes(cols)?;
        let mut bytes = vec![0u8; checked_elems("block weights", rows, row_bytes)?];
        for (x, out) in w.chunks_exact(cols.max(1)).zip(bytes.chunks_exact_mut(row_bytes.max(1))) {
            format.quantize_row(x, out)?;
        }
        Ok(Self { format, rows, cols, bytes })
    }

    /// Takes `bytes` holding `rows` rows of `cols` weights in `format`.
    pub fn from_bytes(format: BlockFormat, bytes: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        BlockView::new(format, &bytes, rows, cols)?;
        Ok(Self { format, rows, cols, bytes })
    }

    /// The view the kernels take.
    pub fn view(&self) -> BlockView<'_> {
        BlockView {
            format: self.format,
            bytes: &self.bytes,
            rows: self.rows,
            cols: self.cols,
            row_bytes: self.bytes.len() / self.rows.max(1),
        }
    }

    /// The blocks, row after row (what a GGUF file stores for Q6_K).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The blocks, taken.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Weights `[rows, cols]` in a block format, in memory someone else owns (a GGUF mapping, a tensor): row `n` is
/// `bytes[n * row_bytes..][..row_bytes]`.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    format: BlockFormat,
    bytes: &'a [u8],
    rows: usize,
    cols: usize,
    row_bytes: usize,
}

impl<'a> BlockView<'a> {
    /// A view of `rows` rows of `cols` weights (a multiple of 256) in `format`; `bytes` must hold them all.
    pub fn new(format: BlockFormat, bytes: &'a [u8], rows: usize, cols: usize) -> Result<Self> {
        let row_bytes = format.row_bytes(cols)?;
        ensure_len("block bytes", checked_elems("block weights", rows, row_bytes)?, bytes.len())?;
        Ok(Self { format, bytes, rows, cols, row_bytes })
    }

    /// The format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The blocks of row `n`.
    pub fn row(&self, n: usize) -> &'a [u8] {
        &self.bytes[n * self.row_bytes..(n + 1) * self.row_bytes]
    }

    /// Every row's blocks, row after row.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Row `n` as f32 (`out` holds `cols` values).
    pub fn dequantize_row(&self, n: usize, out: &mut [f32]) -> Result<()> {
        ensure_eq("dequantized row", self.cols, out.len())?;
        match self.format {
            BlockFormat::Q6K => q6k::dequantize_row(self.row(n), out),
            BlockFormat::Q4 => q4::dequantize_row(self.row(n), out),
        }
        Ok(())
    }
}

/// The product every block format shares: `y[m, n] = dot(row n, token m) / s_m`. `prepare` builds once per token
/// what the format's row kernel needs besides the activation codes (sub-block sums, a permuted copy); the rows
/// are split over the pool, each chunk writing its own rows of every token. `dot`'s last argument is how many
/// threads read the matrix at once (it sets the AVX-512 prefetch distance, [`crate::prefetch::ahead_avx512`]).
pub(crate) fn gemv_rows<P: Sync>(
    w: BlockView<'_>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
    prepare: impl Fn(&[i8]) -> P,
    dot: impl Fn(&[u8], &[i8], &P, usize) -> f32 + Sync,
) -> Result<()> {
    ensure_eq("activation width (K)", w.cols, x.cols())?;
    let (rows, tokens) = (w.rows, x.rows());
    ensure_len("output", checked_elems("output", tokens, rows)?, y.len())?;
    let prepared: Vec<P> = (0..tokens).map(|m| prepare(&x.row(m)[..w.cols])).collect();
    let chunks = chunk_count(pool, rows, MIN_PARALLEL_ROWS);
    let streams = pool.streams(chunks);
    let out = OutPtr(y.as_mut_ptr());
    pool.run(chunks, &|chunk| {
        for n in split_range(rows, chunks, chunk, 1) {
            let row = w.row(n);
            for (m, p) in prepared.iter().enumerate() {
                let value = dot(row, &x.row(m)[..w.cols], p, streams) * x.inv_scales()[m];
                // SAFETY: `m * rows + n < tokens * rows == y.len()`; row `n` belongs to this chunk alone.
                unsafe { out.write(m * rows + n, value) };
            }
        }
    });
    Ok(())
}

/// `y = x W^T` for every token of `x` (`y` is `[x.rows(), w.rows()]`), each format's product (see its module)
/// with the selected kernel.
pub fn block_gemv(w: BlockView<'_>, x: &QuantizedActivations, y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    block_gemv_with(Kernel::selected(), w, x, y, pool)
}

/// [`block_gemv`] with an explicit kernel.
pub fn block_gemv_with(
    kernel: Kernel,
    w: BlockView<'_>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let kernel = kernel.checked()?;
    match w.format {
        BlockFormat::Q6K => q6k::gemv(kernel, w, x, y, pool),
        BlockFormat::Q4 => q4::gemv(kernel, w, x, y, pool),
    }
}

/// The exact integer sums of row `n` against token `token` of `x`, one per [`BlockFormat::sum_width`] weights
/// (what every kernel must agree on; for tests): `out` holds `cols / sum_width` values.
pub fn block_sums(w: BlockView<'_>, x: &QuantizedActivations, token: usize, n: usize, out: &mut [i32]) -> Result<()> {
    ensure_eq("activation width (K)", w.cols, x.cols())?;
    ensure_len("block sums", w.cols / w.format.sum_width(), out.len())?;
    if token >= x.rows() || n >= w.rows {
        return Err(KernelError::ShapeMismatch { what: "token or row index", expected: x.rows(), got: token });
    }
    let act = &x.row(token)[..w.cols];
    match w.format {
        BlockFormat::Q6K => q6k::row_sums(w.row(n), act, out),
        BlockFormat::Q4 => q4::row_sums(w.row(n), act, out),
    }
    Ok(())
}
