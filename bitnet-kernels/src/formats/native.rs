//! The kernel-native ternary layout, shared by every CPU kernel (scalar, AVX2, AVX-512, NEON).
//!
//! Each row is padded to a multiple of 256 weights and cut into blocks of 256 weights stored in 64 bytes
//! (one cache line, 64-byte aligned). Inside a block, weight `e` lives in byte `e % 64` at bits
//! `2 * (e / 64)`:
//!
//! ```text
//! byte j (0..64):  bits 1-0 = w[j]   bits 3-2 = w[64 + j]   bits 5-4 = w[128 + j]   bits 7-6 = w[192 + j]
//! ```
//!
//! so one vector load of `L` bytes followed by `(v >> 2p) & 3` yields the codes of `L` consecutive
//! weights `64p + j` for every ISA width (`L` = 64 on AVX-512, 32 on AVX2, 16 on NEON), ready for an
//! unsigned-by-signed byte dot product against `L` consecutive activations.
//!
//! Rows are grouped in tiles of [`ROW_TILE`] = 4 (the row count is padded to a multiple of 4 with zero
//! rows) and the blocks of a tile are interleaved, block-major: tile `t` holds
//! `[b0 r0][b0 r1][b0 r2][b0 r3][b1 r0]...`. The 4-row kernels, which share each activation load between
//! four rows, therefore read ONE sequential stream of memory: the hardware prefetcher follows it from
//! the first cache line to the last (four separate row streams of a few hundred bytes each would not be
//! prefetched, and made an early version of the kernel 5x slower than the memory bandwidth allows).
//!
//! Padding weights hold code 1 (w = 0) and the matching activation padding is 0, so padding adds nothing.
//! Each row has its own f32 scale `g_n`: `W[n, k] = (c - 1) * g_n`.
//!
//! Grouped scales (GGUF Q2_0 / PQ2_0, and TQ2_0 / TQ1_0 files whose blocks disagree within a row) add one
//! f32 scale `h[n, k / 64]` per 64 weights: `W[n, k] = (c - 1) * g_n * h[n, k / 64]`. A group of 64 is one
//! bit plane `p` of a native block, so the kernels take a plane's integer sum, scale it, and accumulate in
//! f32. The group scales are stored in the kernels' reading order, 16 per tile and block:
//! `[tile][block][row in tile][plane]` ([`GROUP_SCALES_PER_TILE_BLOCK`]); padding rows and columns get 0.
//! A matrix's scale vector is its `rows` row scales, followed by the group scales when it has them.
//!
//! # Five trits per byte ([`TernaryLayout::Trits5`])
//!
//! The layout above spends 2 bits on a weight that carries log2(3) = 1.58. The five-trit layout stores five
//! codes in one byte, 1.6 bits per weight: decode reads every weight once per token, so 20% fewer bytes are a
//! 20% shorter read. Blocks hold 320 weights in 64 bytes, rows are padded to a multiple of 320 and tiles are
//! interleaved exactly as above; byte `j` of a block holds the codes `t_p` of weights `64p + j`, p = 0..5, as
//! the fixed-point fraction of their base-3 value (the byte GGUF TQ1_0 uses):
//!
//! ```text
//! v = 81 t_0 + 27 t_1 + 9 t_2 + 3 t_3 + t_4 < 243,   byte = ceil(256 v / 243)
//! y_0 = byte,   y_(p+1) = 3 y_p mod 256,   t_p = floor(3 y_p / 256) = (3 y_p - y_(p+1)) / 256
//! ```
//!
//! The last form is linear in `y`: `sum_j t_p[j] a[j] = (3 sum_j y_p[j] a[j] - sum_j y_(p+1)[j] a[j]) / 256`, so a
//! kernel multiplies the bytes `y_p` themselves (unsigned) with the activations and never extracts a trit: two
//! byte additions make `y_(p+1)` from `y_p`. Only row scales are supported (group scales stay in the 2-bit
//! layout), and of the CPU kernels only the scalar and AVX-512 VNNI ones read it (the others have no
//! unsigned-byte product that holds `255 * 127` per pair without saturating; bitnet-backend repacks five-trit
//! records into 2 bits for them at load). bitnet-backend's CubeCL kernels read it with the same recurrence.

use super::{hf_packed, i2s, q2_0, tq1_0, tq2_0, TernaryCodes};
use crate::aligned::AlignedBytes;
use crate::dispatch::Kernel;
use crate::error::{checked_elems, ensure_eq, KernelError, Result};
use crate::quant::{quantize_weights_absmean, ACT_PAD};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// How a matrix's codes sit in its 64-byte blocks (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TernaryLayout {
    /// Four codes per byte (2 bits each), 256 weights per block: every kernel, row or group scales.
    #[default]
    Bits2,
    /// Five codes per byte (1.6 bits each), 320 weights per block: row scales only, the scalar and AVX-512
    /// VNNI kernels.
    Trits5,
}

impl TernaryLayout {
    /// Weights per 64-byte block.
    pub const fn block_weights(self) -> usize {
        match self {
            TernaryLayout::Bits2 => NATIVE_BLOCK,
            TernaryLayout::Trits5 => TRITS5_BLOCK,
        }
    }
    /// `cols` rounded up to whole blocks: a row's width in the matrix.
    pub const fn cols_padded(self, cols: usize) -> usize {
        cols.div_ceil(self.block_weights()) * self.block_weights()
    }
    /// The padded width of the activations that multiply a matrix of `cols` columns
    /// ([`crate::QuantizedActivations::zeros_for`]): [`Self::cols_padded`] rounded up to whole 256-weight blocks,
    /// which the prefill GEMM reads (five-trit tiles are unpacked into its 2-bit-shaped buffer).
    pub const fn act_cols_padded(self, cols: usize) -> usize {
        self.cols_padded(cols).div_ceil(NATIVE_BLOCK) * NATIVE_BLOCK
    }
    /// The layout decode reads fastest on `kernel`: five trits per byte where the AVX-512 VNNI kernel reads them
    /// (docs/PERFORMANCE.md, "On AVX-512 VNNI: no trit extraction"), 2 bits elsewhere.
    pub fn preferred_for(kernel: Kernel) -> Self {
        if kernel == Kernel::Avx512Vnni {
            TernaryLayout::Trits5
        } else {
            TernaryLayout::Bits2
        }
    }

    /// Whether `kernel` reads this layout (every kernel reads 2-bit codes; five-trit codes the scalar and AVX-512
    /// VNNI kernels).
    pub fn is_read_by(self, kernel: Kernel) -> bool {
        match self {
            TernaryLayout::Bits2 => true,
            TernaryLayout::Trits5 => matches!(kernel, Kernel::Scalar | Kernel::Avx512Vnni),
        }
    }

    /// Parses a `BITNET_TERNARY_LAYOUT` name: `2bit` or `trits5`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "2bit" | "bits2" => Ok(TernaryLayout::Bits2),
            "trits5" | "5trit" => Ok(TernaryLayout::Trits5),
            _ => Err(KernelError::UnknownLayout(name.to_string())),
        }
    }

    /// The process-wide layout that the CPU backend packs weights in: `BITNET_TERNARY_LAYOUT` if set, valid and
    /// read by [`Kernel::selected`] (resolved once; an invalid override is reported once on stderr and ignored),
    /// else what [`Self::select`] chose, else [`Self::preferred_for`] the selected kernel (five-trit with AVX-512
    /// VNNI, 2-bit elsewhere). Module records of packed weights name their layout, and a five-trit record loaded
    /// where the kernel cannot read it is repacked into 2 bits (bitnet-backend's `PackedTernary`), so the choice
    /// does not tie a saved model to the machine that saved it.
    pub fn selected() -> Self {
        static OVERRIDE: OnceLock<Option<TernaryLayout>> = OnceLock::new();
        let overridden = *OVERRIDE.get_or_init(|| {
            let kernel = Kernel::selected();
            let layout = Self::requested()?;
            if layout.is_read_by(kernel) {
                return Some(layout);
            }
            eprintln!("warning: ignoring {LAYOUT_ENV}: kernel {kernel} does not read the {} layout", layout.name());
            None
        });
        overridden.unwrap_or(match CHOSEN.load(Ordering::Relaxed) {
            CHOSEN_TRITS5 => TernaryLayout::Trits5,
            CHOSEN_BITS2 => TernaryLayout::Bits2,
            _ => Self::preferred_for(Kernel::selected()),
        })
    }

    /// The layout `BITNET_TERNARY_LAYOUT` names, if it is set to a valid name (resolved once; an invalid name is
    /// reported once on stderr and ignored), whichever kernel runs: the CPU backend takes it through
    /// [`Self::selected`] where its kernel reads it, and the GPU backends, whose kernels read both layouts, as is.
    pub fn requested() -> Option<Self> {
        static REQUESTED: OnceLock<Option<TernaryLayout>> = OnceLock::new();
        *REQUESTED.get_or_init(|| {
            let name = std::env::var(LAYOUT_ENV).ok()?;
            Self::parse(&name).map_err(|e| eprintln!("warning: ignoring {LAYOUT_ENV}: {e}")).ok()
        })
    }

    /// Makes `layout` the process-wide choice of [`Self::selected`] (below `BITNET_TERNARY_LAYOUT`), in place of the
    /// default [`Self::preferred_for`]`(`[`Kernel::selected`]`)`, which decodes fastest. Fails when the selected
    /// kernel does not read `layout`.
    pub fn select(layout: TernaryLayout) -> Result<()> {
        let kernel = Kernel::selected();
        if !layout.is_read_by(kernel) {
            return Err(KernelError::LayoutUnsupported { layout: layout.name(), what: kernel.name() });
        }
        let value = if layout == TernaryLayout::Trits5 { CHOSEN_TRITS5 } else { CHOSEN_BITS2 };
        CHOSEN.store(value, Ordering::Relaxed);
        Ok(())
    }

    /// The layout's name in messages.
    pub const fn name(self) -> &'static str {
        match self {
            TernaryLayout::Bits2 => "2-bit",
            TernaryLayout::Trits5 => "five-trit",
        }
    }
    /// Bytes of one row of `cols_padded` weights.
    const fn row_bytes(self, cols_padded: usize) -> usize {
        cols_padded / self.block_weights() * NATIVE_BLOCK_BYTES
    }
}

/// The environment variable that overrides [`TernaryLayout::selected`].
pub const LAYOUT_ENV: &str = "BITNET_TERNARY_LAYOUT";

/// [`TernaryLayout::select`]'s choice: none yet (the kernel's preferred layout), 2-bit, or five-trit.
static CHOSEN: AtomicU8 = AtomicU8::new(0);
const CHOSEN_BITS2: u8 = 1;
const CHOSEN_TRITS5: u8 = 2;

/// Weights per native block.
pub const NATIVE_BLOCK: usize = ACT_PAD;
/// Weights per five-trit block (64 bytes of five codes each).
pub const TRITS5_BLOCK: usize = 320;
/// Bytes per native block.
pub const NATIVE_BLOCK_BYTES: usize = NATIVE_BLOCK / 4;
/// Largest supported `K`: every kernel's i32 lanes stay exact up to `2^23` (see the VNNI kernel's
/// accumulator bound); `2^22` leaves a factor two of margin and exceeds every known model by far.
pub const MAX_COLS: usize = 1 << 22;
/// Rows per interleaved tile.
pub const ROW_TILE: usize = 4;
/// Weights per group scale (one bit plane of a native block).
pub const SCALE_GROUP: usize = 64;
/// Group scales per tile and block: four rows, four planes.
pub const GROUP_SCALES_PER_TILE_BLOCK: usize = ROW_TILE * NATIVE_BLOCK / SCALE_GROUP;

/// Number of group scales of a grouped `[rows, cols]` matrix (after its `rows` row scales).
pub fn group_scale_count(rows: usize, cols: usize) -> Result<usize> {
    let tiles = rows.div_ceil(ROW_TILE);
    let blocks = cols.div_ceil(NATIVE_BLOCK);
    checked_elems("group scales", tiles, blocks * GROUP_SCALES_PER_TILE_BLOCK)
}

/// A ternary weight matrix `[rows, cols]` in the kernel-native layout, with one scale per row and, when
/// grouped, one more per 64 weights.
#[derive(Debug, Clone)]
pub struct TernaryMatrix {
    layout: TernaryLayout,
    rows: usize,
    cols: usize,
    cols_padded: usize,
    data: AlignedBytes,
    /// `rows` row scales, then the group scales of a grouped matrix.
    scales: Vec<f32>,
}

impl TernaryMatrix {
    /// Packs unpacked codes with one scale per row, in the 2-bit layout.
    pub fn from_codes(codes: &TernaryCodes, row_scales: Vec<f32>) -> Result<Self> {
        Self::from_codes_in(TernaryLayout::Bits2, codes, row_scales)
    }

    /// Packs unpacked codes with one scale per row in `layout`.
    pub fn from_codes_in(layout: TernaryLayout, codes: &TernaryCodes, row_scales: Vec<f32>) -> Result<Self> {
        Self::pack_rows(layout, RowCodes::Codes(codes), row_scales)
    }

    /// Packs the rows of `source` with one scale per row in `layout`, 4-row tiles in parallel. A source matrix
    /// is decoded a row at a time into a buffer of each packing thread: repacking never holds the whole matrix
    /// as one byte per weight.
    fn pack_rows(layout: TernaryLayout, source: RowCodes<'_>, row_scales: Vec<f32>) -> Result<Self> {
        let (rows, cols) = source.shape();
        if cols > MAX_COLS {
            return Err(KernelError::TooLarge { what: "ternary matrix width (K)", got: cols, max: MAX_COLS });
        }
        ensure_eq("row scale count", rows, row_scales.len())?;
        for &s in &row_scales {
            super::ensure_finite("row scale", s)?;
        }
        let cols_padded = layout.cols_padded(cols);
        let rows_padded = rows.div_ceil(ROW_TILE) * ROW_TILE;
        let (blocks, row_bytes) = (cols_padded / layout.block_weights(), layout.row_bytes(cols_padded));
        // Every row (padding rows included) takes `row_bytes`.
        let mut data = AlignedBytes::zeroed(checked_elems("native ternary matrix", rows_padded, row_bytes)?);
        // A 4-row tile is contiguous: tiles are packed in parallel, in contiguous groups.
        let tile_bytes = ROW_TILE * row_bytes;
        let tiles = rows_padded / ROW_TILE;
        let threads = crate::pool::global_pool().threads().min(tiles.div_ceil(PACK_TILES_PER_THREAD)).max(1);
        let per_thread = tiles.div_ceil(threads).max(1);
        let pack_tiles = |first_tile: usize, out: &mut [u8]| -> Result<()> {
            let mut buffer = Vec::new();
            for (i, tile) in out.chunks_mut(tile_bytes).enumerate() {
                for lane in 0..ROW_TILE {
                    let r = (first_tile + i) * ROW_TILE + lane;
                    let src = if r < rows { source.row(r, &mut buffer)? } else { &[] };
                    for block in 0..blocks {
                        let at = block_offset(tile_bytes, lane, block);
                        let out = &mut tile[at..at + NATIVE_BLOCK_BYTES];
                        match layout {
                            TernaryLayout::Bits2 => pack_block(src, block * NATIVE_BLOCK, out),
                            TernaryLayout::Trits5 => pack_block_trits5(src, block * TRITS5_BLOCK, out),
                        }
                    }
                }
            }
            Ok(())
        };
        std::thread::scope(|scope| {
            let mut groups = data.as_mut_slice().chunks_mut(per_thread * tile_bytes).enumerate();
            let first = groups.next();
            let spawned: Vec<_> = groups.map(|(g, out)| scope.spawn(move || pack_tiles(g * per_thread, out))).collect();
            let own = first.map_or(Ok(()), |(_, out)| pack_tiles(0, out));
            spawned.into_iter().try_for_each(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))?;
            own
        })?;
        Ok(Self { layout, rows, cols, cols_padded, data, scales: row_scales })
    }

    /// The same matrix in `layout` (a copy, repacked when the layout differs, a row at a time). A matrix with
    /// group scales has no five-trit form; a matrix whose bytes hold code 3 (a foreign 2-bit view) is refused.
    pub fn to_layout(&self, layout: TernaryLayout) -> Result<Self> {
        if layout == self.layout {
            return Ok(self.clone());
        }
        if self.group_scales().is_some() {
            return Err(KernelError::LayoutUnsupported { layout: layout.name(), what: "group scales" });
        }
        Self::pack_rows(layout, RowCodes::Packed(self.view()), self.row_scales().to_vec())
    }

    /// Packs unpacked codes with one scale per `group` weights of each row (`rows * cols / group` scales,
    /// row-major; `group` is 64, 128, 256, or `cols` itself (one scale per row), and divides `cols`). Rows whose groups all agree make a
    /// matrix with row scales only (the faster kernels); otherwise the matrix keeps group scales.
    pub fn from_codes_grouped(codes: &TernaryCodes, group: usize, group_scales: &[f32]) -> Result<Self> {
        let (rows, cols) = (codes.rows(), codes.cols());
        if !matches!(group, 64 | 128 | 256) && group != cols {
            return Err(KernelError::ShapeMismatch {
                what: "scale group size (64, 128 or 256)",
                expected: 64,
                got: group,
            });
        }
        crate::error::ensure_multiple("grouped ternary matrix", "cols", cols, group)?;
        let per_row = cols / group;
        ensure_eq("group scale count", checked_elems("group scales", rows, per_row)?, group_scales.len())?;
        for &s in group_scales {
            super::ensure_finite("group scale", s)?;
        }
        let uniform = group_scales.chunks(per_row.max(1)).all(|row| row.iter().all(|&s| s == row[0]));
        if uniform {
            let row_scales = group_scales.chunks(per_row.max(1)).map(|row| row[0]).take(rows).collect::<Vec<_>>();
            let row_scales = if per_row == 0 { vec![1.0; rows] } else { row_scales };
            return Self::from_codes(codes, row_scales);
        }
        let mut matrix = Self::from_codes(codes, vec![1.0; rows])?;
        let blocks = matrix.view().blocks_per_row();
        let mut grouped = vec![0f32; group_scale_count(rows, cols)?];
        for r in 0..rows {
            for plane in 0..cols.div_ceil(SCALE_GROUP) {
                let (block, p) = (plane / 4, plane % 4);
                let at = ((r / ROW_TILE) * blocks + block) * GROUP_SCALES_PER_TILE_BLOCK + (r % ROW_TILE) * 4 + p;
                grouped[at] = group_scales[r * per_row + plane * SCALE_GROUP / group];
            }
        }
        matrix.scales.extend_from_slice(&grouped);
        Ok(matrix)
    }

    /// Recognizes float weights `[rows, cols]` that are ternary values times a scale, as converters and
    /// unpacked checkpoints store them: one scale per row, or (when `cols` is a multiple of 64) one per 64
    /// weights, each group's nonzero weights sharing one magnitude. `None` for any other weights (latent
    /// master weights). A group of zeros takes its row's first scale (so uniform rows stay per-row).
    pub fn from_scaled_ternary(values: &[f32], rows: usize, cols: usize) -> Result<Option<Self>> {
        ensure_eq("weight count", checked_elems("weights", rows, cols)?, values.len())?;
        let group = if cols.is_multiple_of(SCALE_GROUP) { SCALE_GROUP } else { cols.max(1) };
        let mut scales = Vec::with_capacity(values.len() / group);
        let mut codes = Vec::with_capacity(values.len());
        for row in values.chunks(cols.max(1)) {
            let first = scales.len();
            for g in row.chunks(group) {
                let magnitude = g.iter().map(|v| v.abs()).find(|&a| a != 0.0).unwrap_or(0.0);
                if !magnitude.is_finite() || g.iter().any(|&v| v != 0.0 && v.abs() != magnitude) {
                    return Ok(None);
                }
                codes.extend(g.iter().map(|&v| (v > 0.0) as u8 + (v >= 0.0) as u8));
                scales.push(magnitude);
            }
            let row_scale = scales[first..].iter().copied().find(|&s| s != 0.0).unwrap_or(0.0);
            scales[first..].iter_mut().filter(|s| **s == 0.0).for_each(|s| *s = row_scale);
        }
        if rows == 0 || cols == 0 {
            return Ok(None);
        }
        Self::from_codes_grouped(&TernaryCodes::new(rows, cols, codes)?, group, &scales).map(Some)
    }

    /// Packs unpacked codes with one scale `g` for the whole tensor.
    pub fn from_codes_with_scale(codes: &TernaryCodes, scale: f32) -> Result<Self> {
        Self::from_codes(codes, vec![scale; codes.rows()])
    }

    /// Quantizes f32 latent weights `[rows, cols]` per tensor with absmean ([`crate::quant`]).
    pub fn quantize_absmean(weights: &[f32], rows: usize, cols: usize) -> Result<Self> {
        ensure_eq("weight count", checked_elems("weights", rows, cols)?, weights.len())?;
        // A NaN would vanish in the absmean's floor (`max` skips it) and leave a silently wrong projection.
        if let Some(&value) = weights.iter().find(|w| !w.is_finite()) {
            return Err(KernelError::NonFiniteScale { what: "a weight", value });
        }
        let (codes, g) = quantize_weights_absmean(weights);
        Self::from_codes_with_scale(&TernaryCodes::new(rows, cols, codes)?, g)
    }

    /// Repacks HF packed bytes (`[rows/4, cols]`) with the weight multiplier `g` (already converted from
    /// the checkpoint's `weight_scale` according to its `linear_class`).
    pub fn from_hf_packed(bytes: &[u8], rows: usize, cols: usize, scale: f32) -> Result<Self> {
        Self::from_codes_with_scale(&hf_packed::unpack_hf_packed(bytes, rows, cols)?, scale)
    }

    /// Repacks a GGUF I2_S tensor (scale from its tail).
    pub fn from_i2s(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let (codes, scale) = i2s::unpack_i2s(bytes, rows, cols)?;
        Self::from_codes_with_scale(&codes, scale)
    }

    /// Repacks a GGUF TQ2_0 tensor (grouped when a row's blocks carry different scales).
    pub fn from_tq2_0(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let (codes, blocks) = tq2_0::unpack_tq2_0(bytes, rows, cols)?;
        Self::from_codes_grouped(&codes, tq2_0::TQ2_0_BLOCK, &blocks)
    }

    /// Repacks a GGUF TQ1_0 tensor (grouped when a row's blocks carry different scales).
    pub fn from_tq1_0(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let (codes, blocks) = tq1_0::unpack_tq1_0(bytes, rows, cols)?;
        Self::from_codes_grouped(&codes, tq1_0::TQ1_0_BLOCK, &blocks)
    }

    /// Repacks a GGUF Q2_0 (group 64) or PQ2_0 (group 128) tensor.
    pub fn from_q2_0(bytes: &[u8], rows: usize, cols: usize, group: q2_0::Q2Group) -> Result<Self> {
        let (codes, scales) = q2_0::unpack_q2_0(bytes, rows, cols, group)?;
        Self::from_codes_grouped(&codes, group.weights(), &scales)
    }

    /// Copies a view (bytes checked by [`TernaryView::new`]) into an owned matrix, scales included.
    pub fn from_view(view: &TernaryView<'_>) -> Self {
        let mut data = AlignedBytes::zeroed(view.data.len());
        data.as_mut_slice().copy_from_slice(view.data);
        let mut scales = view.row_scales.to_vec();
        scales.extend_from_slice(view.group_scales.unwrap_or_default());
        Self { layout: view.layout, rows: view.rows, cols: view.cols, cols_padded: view.cols_padded, data, scales }
    }

    /// Unpacks back to row-major codes (padding dropped).
    pub fn to_codes(&self) -> TernaryCodes {
        self.view().to_codes().expect("a TernaryMatrix is built from validated codes")
    }

    /// Number of rows (output features `N`).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns (input features `K`).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `K` rounded up to whole blocks of the layout (a multiple of 256 or 320).
    pub fn cols_padded(&self) -> usize {
        self.cols_padded
    }
    /// How the codes are stored.
    pub fn layout(&self) -> TernaryLayout {
        self.layout
    }
    /// Rows rounded up to a multiple of [`ROW_TILE`] (the extra rows are zero).
    pub fn rows_padded(&self) -> usize {
        self.rows.div_ceil(ROW_TILE) * ROW_TILE
    }
    /// The interleaved bytes of tile `t` (see [`TernaryView::tile_bytes`]).
    pub fn tile_bytes(&self, t: usize) -> &[u8] {
        self.view().tile_bytes(t)
    }
    /// The borrowed view the kernels take.
    pub fn view(&self) -> TernaryView<'_> {
        self.into()
    }
    /// All packed bytes.
    pub fn data(&self) -> &[u8] {
        self.data.as_slice()
    }
    /// Per-row weight scales `g_n` (all 1 in a grouped matrix, whose group scales carry the magnitudes).
    pub fn row_scales(&self) -> &[f32] {
        &self.scales[..self.rows]
    }
    /// The group scales in kernel order, if the matrix has them (see the module docs).
    pub fn group_scales(&self) -> Option<&[f32]> {
        (self.scales.len() > self.rows).then(|| &self.scales[self.rows..])
    }
    /// Every scale: the row scales, then the group scales if any (what [`TernaryView::new`] takes back).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
}

/// A borrowed ternary matrix in the native layout: what the kernels read. It lets callers that own the
/// bytes elsewhere (a burn tensor, a memory map) run the kernels without copying.
#[derive(Debug, Clone, Copy)]
pub struct TernaryView<'a> {
    layout: TernaryLayout,
    rows: usize,
    cols: usize,
    cols_padded: usize,
    data: &'a [u8],
    row_scales: &'a [f32],
    group_scales: Option<&'a [f32]>,
}

impl<'a> TernaryView<'a> {
    /// Wraps 2-bit native bytes (as produced by [`TernaryMatrix::data`]) of a `[rows, cols]` matrix and its
    /// scales (as [`TernaryMatrix::scales`]: `rows` row scales, or those followed by the group scales) after
    /// checking every length.
    pub fn new(rows: usize, cols: usize, data: &'a [u8], scales: &'a [f32]) -> Result<Self> {
        Self::new_in(TernaryLayout::Bits2, rows, cols, data, scales)
    }

    /// [`TernaryView::new`] for bytes in `layout`.
    pub fn new_in(layout: TernaryLayout, rows: usize, cols: usize, data: &'a [u8], scales: &'a [f32]) -> Result<Self> {
        if cols > MAX_COLS {
            return Err(KernelError::TooLarge { what: "ternary matrix width (K)", got: cols, max: MAX_COLS });
        }
        let cols_padded = layout.cols_padded(cols);
        let rows_padded = rows.div_ceil(ROW_TILE) * ROW_TILE;
        ensure_eq(
            "native ternary byte count",
            checked_elems("native ternary matrix", rows_padded, layout.row_bytes(cols_padded))?,
            data.len(),
        )?;
        let grouped = rows + group_scale_count(rows, cols)?;
        let (row_scales, group_scales) = match scales.len() {
            n if n == rows => (scales, None),
            n if n == grouped && layout == TernaryLayout::Bits2 => (&scales[..rows], Some(&scales[rows..])),
            n => return Err(KernelError::ShapeMismatch { what: "ternary scale count", expected: rows, got: n }),
        };
        Ok(Self { layout, rows, cols, cols_padded, data, row_scales, group_scales })
    }

    /// Number of rows (output features `N`).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns (input features `K`).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `K` rounded up to whole blocks of the layout (a multiple of 256 or 320).
    pub fn cols_padded(&self) -> usize {
        self.cols_padded
    }
    /// How the codes are stored.
    pub fn layout(&self) -> TernaryLayout {
        self.layout
    }
    /// Number of [`ROW_TILE`]-row tiles.
    pub fn tiles(&self) -> usize {
        self.rows.div_ceil(ROW_TILE)
    }
    /// Number of 64-byte blocks per row (256 or 320 weights each).
    pub fn blocks_per_row(&self) -> usize {
        self.cols_padded / self.layout.block_weights()
    }
    /// The interleaved bytes of tile `t` (rows `4t..4t+4`), `4 * 64 * blocks_per_row` bytes.
    pub fn tile_bytes(&self, t: usize) -> &'a [u8] {
        let len = ROW_TILE * self.layout.row_bytes(self.cols_padded);
        &self.data[t * len..(t + 1) * len]
    }
    /// Per-row weight scales.
    pub fn row_scales(&self) -> &'a [f32] {
        self.row_scales
    }
    /// The group scales in kernel order, if the matrix has them.
    pub fn group_scales(&self) -> Option<&'a [f32]> {
        self.group_scales
    }
    /// The group scales of tile `t`: [`GROUP_SCALES_PER_TILE_BLOCK`] per block.
    pub fn tile_group_scales(&self, t: usize) -> Option<&'a [f32]> {
        let per_tile = self.blocks_per_row() * GROUP_SCALES_PER_TILE_BLOCK;
        self.group_scales.map(|g| &g[t * per_tile..(t + 1) * per_tile])
    }
    /// The full scale of weight `[r, k]`: `g_r`, times its group scale when the matrix has them.
    pub fn weight_scale(&self, r: usize, k: usize) -> f32 {
        let g = self.row_scales[r];
        match self.group_scales {
            None => g,
            Some(h) => {
                let (block, p) = (k / NATIVE_BLOCK, (k % NATIVE_BLOCK) / SCALE_GROUP);
                let at = ((r / ROW_TILE) * self.blocks_per_row() + block) * GROUP_SCALES_PER_TILE_BLOCK
                    + (r % ROW_TILE) * 4
                    + p;
                g * h[at]
            }
        }
    }
    /// The code of weight `[r, k]`.
    pub fn code(&self, r: usize, k: usize) -> u8 {
        let (block, e) = (k / self.layout.block_weights(), k % self.layout.block_weights());
        let byte = self.data[block_offset(ROW_TILE * self.layout.row_bytes(self.cols_padded), r, block) + e % 64];
        match self.layout {
            TernaryLayout::Bits2 => (byte >> (2 * (e / 64))) & 3,
            TernaryLayout::Trits5 => tq1_0::decode_trit(byte, e / 64),
        }
    }
    /// One scale per `group` weights of each row, row-major (`rows * ceil(cols / group)` values): the full
    /// scale of the group's weights, for writers of coarser layouts (TQ2_0: 256, Q2_0: 64, PQ2_0: 128, one per
    /// row: `cols`). Fails when the weights of a group carry different scales. `group` is a multiple of 64 or
    /// at least `cols`.
    pub fn scales_per(&self, group: usize) -> Result<Vec<f32>> {
        if group == 0 || !(group.is_multiple_of(SCALE_GROUP) || group >= self.cols) {
            return Err(KernelError::ShapeMismatch {
                what: "scale group (a multiple of 64)",
                expected: 64,
                got: group,
            });
        }
        let per_row = self.cols.div_ceil(group);
        let mut out = Vec::with_capacity(self.rows * per_row);
        for r in 0..self.rows {
            for j in 0..per_row {
                let (begin, end) = (j * group, ((j + 1) * group).min(self.cols));
                let first = self.weight_scale(r, begin);
                if let Some(other) = (begin..end)
                    .step_by(SCALE_GROUP)
                    .map(|k| self.weight_scale(r, k))
                    .find(|s| s.to_bits() != first.to_bits())
                {
                    return Err(KernelError::NonUniformScales { row: r, group, first, other });
                }
                out.push(first);
            }
        }
        Ok(out)
    }

    /// The dequantized weights `(c - 1) * g_n` (times the group scale, if any), row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        self.dequantize_rows(0..self.rows)
    }

    /// [`TernaryView::dequantize`] of the rows `rows` only, row-major `[rows.len(), cols]`.
    ///
    /// # Panics
    /// If `rows` reaches past the matrix.
    pub fn dequantize_rows(&self, rows: std::ops::Range<usize>) -> Vec<f32> {
        assert!(rows.end <= self.rows, "rows {rows:?} of a {}-row matrix", self.rows);
        let mut out = Vec::with_capacity(rows.len() * self.cols);
        for r in rows {
            out.extend((0..self.cols).map(|k| (self.code(r, k) as f32 - 1.0) * self.weight_scale(r, k)));
        }
        out
    }
    /// Unpacks to row-major codes (padding dropped); fails on code 3, which foreign 2-bit bytes may hold (every
    /// five-trit byte decodes to codes 0-2, a byte above 242's value included).
    pub fn to_codes(&self) -> Result<TernaryCodes> {
        let mut codes = vec![0u8; checked_elems("ternary codes", self.rows, self.cols)?];
        for (r, row) in codes.chunks_exact_mut(self.cols.max(1)).enumerate().take(self.rows) {
            self.decode_row(r, row)?;
        }
        // Every row was checked as it was decoded.
        Ok(TernaryCodes { rows: self.rows, cols: self.cols, codes })
    }

    /// Row `r`'s `cols` codes into `out`, block by block (one 64-byte slice each, a plane of 64 codes at a time);
    /// fails on code 3 (see [`Self::to_codes`]).
    fn decode_row(&self, r: usize, out: &mut [u8]) -> Result<()> {
        let tile_len = ROW_TILE * self.layout.row_bytes(self.cols_padded);
        for (block, codes) in out[..self.cols].chunks_mut(self.layout.block_weights()).enumerate() {
            let at = block_offset(tile_len, r, block);
            let bytes = &self.data[at..at + NATIVE_BLOCK_BYTES];
            for (p, plane) in codes.chunks_mut(NATIVE_BLOCK_BYTES).enumerate() {
                match self.layout {
                    TernaryLayout::Bits2 => plane.iter_mut().zip(bytes).for_each(|(c, &b)| *c = (b >> (2 * p)) & 3),
                    TernaryLayout::Trits5 => {
                        plane.iter_mut().zip(bytes).for_each(|(c, &b)| *c = tq1_0::decode_trit(b, p))
                    }
                }
            }
        }
        super::check_codes(&out[..self.cols], r * self.cols)
    }
}

/// Where [`TernaryMatrix::pack_rows`] takes its rows from: unpacked codes, or another packed matrix decoded a
/// row at a time.
enum RowCodes<'a> {
    Codes(&'a TernaryCodes),
    Packed(TernaryView<'a>),
}

impl RowCodes<'_> {
    fn shape(&self) -> (usize, usize) {
        match self {
            RowCodes::Codes(codes) => (codes.rows(), codes.cols()),
            RowCodes::Packed(view) => (view.rows, view.cols),
        }
    }

    /// Row `r`'s codes: borrowed from unpacked codes, or decoded into `buffer`.
    fn row<'b>(&'b self, r: usize, buffer: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        match self {
            RowCodes::Codes(codes) => Ok(codes.row(r)),
            RowCodes::Packed(view) => {
                buffer.resize(view.cols, 0);
                view.decode_row(r, buffer)?;
                Ok(buffer)
            }
        }
    }
}

impl<'a> From<&'a TernaryMatrix> for TernaryView<'a> {
    fn from(m: &'a TernaryMatrix) -> Self {
        Self {
            layout: m.layout,
            rows: m.rows,
            cols: m.cols,
            cols_padded: m.cols_padded,
            data: m.data.as_slice(),
            row_scales: m.row_scales(),
            group_scales: m.group_scales(),
        }
    }
}

/// Packs the 256 codes of `src` from `start` (code 1, a zero weight, past its end) into one 64-byte block:
/// byte `i` holds codes `start + i + 64 p` in bits `2p..2p+2`.
#[inline]
fn pack_block(src: &[u8], start: usize, out: &mut [u8]) {
    if let Some(s) = src.get(start..start + NATIVE_BLOCK) {
        for i in 0..64 {
            out[i] = s[i] | s[64 + i] << 2 | s[128 + i] << 4 | s[192 + i] << 6;
        }
    } else {
        for e in 0..NATIVE_BLOCK {
            let code = src.get(start + e).copied().unwrap_or(1);
            out[e % 64] |= code << (2 * (e / 64));
        }
    }
}

/// Packs the 320 codes of `src` from `start` (code 1, a zero weight, past its end) into one five-trit block:
/// byte `i` holds codes `start + i + 64 p`, p = 0..5, most significant first (see the module docs).
#[inline]
fn pack_block_trits5(src: &[u8], start: usize, out: &mut [u8]) {
    if let Some(s) = src.get(start..start + TRITS5_BLOCK) {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = tq1_0::encode_trits([s[i], s[64 + i], s[128 + i], s[192 + i], s[256 + i]].into_iter(), 5);
        }
        return;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        let codes = (0..5).map(|p| src.get(start + i + 64 * p).copied().unwrap_or(1));
        *byte = tq1_0::encode_trits(codes, 5);
    }
}

/// Packing splits a matrix over threads only when each gets at least this many tiles.
const PACK_TILES_PER_THREAD: usize = 64;

/// Byte offset of block `block` of row `r` in a matrix whose 4-row tiles take `tile_bytes` bytes.
#[inline]
fn block_offset(tile_bytes: usize, r: usize, block: usize) -> usize {
    (r / ROW_TILE) * tile_bytes + (block * ROW_TILE + r % ROW_TILE) * NATIVE_BLOCK_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_places_weights_as_documented() {
        let mut codes = vec![1u8; 300];
        codes[0] = 2;
        codes[64] = 0;
        codes[255] = 2;
        codes[256] = 0;
        let m = TernaryMatrix::from_codes_with_scale(&TernaryCodes::new(1, 300, codes.clone()).unwrap(), 1.0).unwrap();
        assert_eq!(m.cols_padded(), 512);
        assert_eq!(m.rows_padded(), 4);
        let tile = m.tile_bytes(0);
        // Block 0 of rows 0..4, then block 1 of rows 0..4.
        let row: Vec<u8> = tile[..64].iter().chain(&tile[256..320]).copied().collect();
        assert_eq!(row[0], 0b01_01_00_10);
        assert_eq!(row[63], 0b10_01_01_01);
        assert_eq!(row[64], 0b01_01_01_00);
        // padding is code 1, padding rows are all zero weights
        assert_eq!(row[127], 0b01_01_01_01);
        assert!(tile[64..256].iter().all(|&b| b == 0b01_01_01_01));
        assert_eq!(m.to_codes().codes(), &codes[..]);
        assert_eq!(m.data().as_ptr() as usize % 64, 0);
    }

    #[test]
    fn non_uniform_tq2_0_scales_make_a_grouped_matrix() {
        let codes = TernaryCodes::new(1, 512, vec![2; 512]).unwrap();
        let bytes = tq2_0::pack_tq2_0(&codes, &[1.0, 2.0]).unwrap();
        let m = TernaryMatrix::from_tq2_0(&bytes, 1, 512).unwrap();
        let groups = m.group_scales().unwrap();
        assert_eq!(groups.len(), 2 * GROUP_SCALES_PER_TILE_BLOCK);
        // Row 0, block 0: four planes of scale 1; block 1: scale 2; padding rows 0.
        assert_eq!(&groups[..5], &[1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(&groups[16..20], &[2.0; 4]);
        let w = m.view().dequantize();
        assert_eq!((w[0], w[255], w[256], w[511]), (1.0, 1.0, 2.0, 2.0));
        let bytes = tq2_0::pack_tq2_0(&codes, &[2.0, 2.0]).unwrap();
        let m = TernaryMatrix::from_tq2_0(&bytes, 1, 512).unwrap();
        assert_eq!((m.row_scales(), m.group_scales()), (&[2.0][..], None));
    }

    #[test]
    fn scaled_ternary_floats_are_recognized_per_row_and_per_group() {
        // Per row (K = 3, not a multiple of 64): row 0 scale 0.5, row 1 all zero.
        let m = TernaryMatrix::from_scaled_ternary(&[0.5, -0.5, 0.0, 0.0, 0.0, 0.0], 2, 3).unwrap().unwrap();
        assert_eq!((m.row_scales(), m.group_scales()), (&[0.5, 0.0][..], None));
        assert_eq!(m.view().dequantize(), vec![0.5, -0.5, 0.0, 0.0, 0.0, 0.0]);
        // Per 64 weights, with a zero group in the middle of row 0.
        let mut w = vec![0f32; 192];
        w[0] = 2.0;
        w[130] = -3.0;
        let m = TernaryMatrix::from_scaled_ternary(&w, 1, 192).unwrap().unwrap();
        assert!(m.group_scales().is_some());
        assert_eq!(m.view().dequantize(), w);
        // Latent weights are not ternary.
        assert!(TernaryMatrix::from_scaled_ternary(&[0.5, 0.25, 0.0], 1, 3).unwrap().is_none());
        assert!(TernaryMatrix::from_scaled_ternary(&[f32::INFINITY, 0.0, 0.0], 1, 3).unwrap().is_none());
    }

    #[test]
    fn q2_0_groups_map_to_planes() {
        // Row 1 of a 2 x 128 matrix: groups of 64 with scales 3 and 5.
        let codes = TernaryCodes::new(2, 128, vec![2; 256]).unwrap();
        let m = TernaryMatrix::from_codes_grouped(&codes, 64, &[1.0, 1.0, 3.0, 5.0]).unwrap();
        let g = m.group_scales().unwrap();
        assert_eq!(&g[4..8], &[3.0, 5.0, 0.0, 0.0]);
        let view = m.view();
        assert_eq!((view.weight_scale(1, 63), view.weight_scale(1, 64)), (3.0, 5.0));
        assert_eq!(view.scales_per(64).unwrap(), vec![1.0, 1.0, 3.0, 5.0]);
        assert!(view.scales_per(128).is_err(), "row 1 has two scales per 128 weights");
        let again = TernaryView::new(2, 128, m.data(), m.scales()).unwrap();
        assert_eq!(again.dequantize(), view.dequantize());
        assert!(TernaryView::new(2, 128, m.data(), &m.scales()[1..]).is_err());
    }
}
