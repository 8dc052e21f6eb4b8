//! Ternary x int8 matrix-vector (decode) and matrix-matrix (prefill) products producing f32.
//!
//! For weight row `n` (codes `c`, scale `g_n`) and token `m` (int8 codes `q`, scale `s_m`):
//!
//! ```text
//! y[m, n] = (sum_k c[n,k] * q[m,k]  -  sum_k q[m,k]) * g_n / s_m
//! ```
//!
//! since `sum_k (c - 1) * q = sum_k c*q - sum_k q`. The first sum is an unsigned-by-signed byte dot product
//! accumulated exactly in i32 by every kernel ([`Kernel`]); the activation sum comes precomputed with the
//! quantized activations.
//!
//! A matrix with group scales `h[n, j]` (one per 64 weights, see [`crate::formats::native`]) needs one
//! integer sum per group instead: `y[m, n] = g_n / s_m * sum_j h[n, j] * sum_{k in group j} (c[n,k] - 1) *
//! q[m,k]`, where the group sums are exact and the outer sum runs in f32 in one fixed order (four partial
//! sums per row, one per bit plane, added across blocks, then paired), the same in every kernel.

mod gemm;
mod scalar;

// The SIMD kernels index small arrays of registers by row and sub-block on purpose.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx512;
#[cfg(target_arch = "aarch64")]
#[allow(clippy::needless_range_loop)]
pub(crate) mod neon;

use crate::dispatch::Kernel;
use crate::error::{ensure_eq, ensure_len, KernelError, Result};
use crate::formats::native::{TernaryLayout, TernaryView};
use crate::pool::{chunk_count, split_range, ThreadPool};
#[cfg(target_arch = "x86_64")]
use crate::prefetch::{AHEAD_AVX512_ALONE, AHEAD_AVX512_SHARED};
use crate::quant::QuantizedActivations;

pub use crate::formats::native::ROW_TILE;

/// Tiles (x tokens) below which a product runs on the calling thread alone.
const MIN_PARALLEL_TILES: usize = 64;

/// A kernel's entry point: the four sums of one interleaved tile.
type Dot4 = unsafe fn(*const u8, *const i8, usize) -> [i32; 4];

/// A kernel's grouped-scale entry point: the four f32 sums of one interleaved tile.
type Dot4Grouped = unsafe fn(*const u8, *const i8, *const f32, usize) -> [f32; 4];

/// The grouped-scale tile function of `kernel` (checked as [`dot4_fn`] checks) for a product `streams` threads
/// read at once.
fn dot4_grouped_fn(kernel: Kernel, streams: usize) -> Result<Dot4Grouped> {
    let _ = streams; // only the AVX-512 copies depend on it
    Ok(match kernel.checked()? {
        Kernel::Scalar => scalar::dot4_grouped,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => avx2::dot4_grouped,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bw | Kernel::Avx512Vnni if streams > 1 => avx512::dot4_grouped::<AHEAD_AVX512_SHARED>,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bw | Kernel::Avx512Vnni => avx512::dot4_grouped::<AHEAD_AVX512_ALONE>,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon | Kernel::NeonDotprod => neon::dot4_grouped,
        #[allow(unreachable_patterns)]
        _ => return Err(KernelError::KernelUnavailable(kernel.name())),
    })
}

/// The tile function of `kernel` for `layout` and a product `streams` threads read at once (the AVX-512 copies
/// prefetch further ahead when one thread streams alone: [`crate::prefetch::ahead_avx512`]), or an error if this
/// CPU cannot run it or the kernel cannot read the layout. Checking availability here is what makes calling the
/// `unsafe` target-feature functions sound.
fn dot4_fn(kernel: Kernel, streams: usize, layout: TernaryLayout) -> Result<Dot4> {
    let _ = streams; // only the AVX-512 copies depend on it
    let kernel = kernel.checked()?;
    if layout == TernaryLayout::Trits5 {
        return Ok(match kernel {
            Kernel::Scalar => scalar::dot4_trits5,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni if streams > 1 => avx512::dot4_trits5_vnni::<AHEAD_AVX512_SHARED>,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => avx512::dot4_trits5_vnni::<AHEAD_AVX512_ALONE>,
            _ => return Err(KernelError::LayoutUnsupported { layout: layout.name(), what: kernel.name() }),
        });
    }
    Ok(match kernel {
        Kernel::Scalar => scalar::dot4,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => avx2::dot4,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bw if streams > 1 => avx512::dot4_bw::<AHEAD_AVX512_SHARED>,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bw => avx512::dot4_bw::<AHEAD_AVX512_ALONE>,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni if streams > 1 => avx512::dot4_vnni::<AHEAD_AVX512_SHARED>,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => avx512::dot4_vnni::<AHEAD_AVX512_ALONE>,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => neon::dot4_plain,
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonDotprod => neon::dot4_dotprod,
        #[allow(unreachable_patterns)]
        _ => return Err(KernelError::KernelUnavailable(kernel.name())),
    })
}

/// Checks that `x` can multiply `w` (same `K`, same padding: [`TernaryLayout::act_cols_padded`]) and that `y`
/// holds `rows(x) * rows(w)`.
fn check_shapes(w: &TernaryView<'_>, x: &QuantizedActivations, y_len: usize) -> Result<()> {
    ensure_eq("activation width (K)", w.cols(), x.cols())?;
    ensure_eq("activation padded width", w.layout().act_cols_padded(w.cols()), x.cols_padded())?;
    ensure_len("output", x.rows() * w.rows(), y_len)
}

/// Runs `dot4` on tile `t` of `w` against activation row `act` (both checked by the caller).
///
/// # Safety
/// `dot4` comes from [`dot4_fn`], `t < w.tiles()`, and `act` passed [`check_shapes`] with `w`.
#[inline(always)]
unsafe fn tile_sums(dot4: Dot4, w: &TernaryView<'_>, t: usize, act: &[i8]) -> [i32; 4] {
    let tile = w.tile_bytes(t);
    debug_assert!(act.len() >= w.cols_padded() && tile.len() == w.blocks_per_row() * 256);
    // SAFETY: a tile holds `blocks * 256` bytes and an activation row at least `cols_padded` = `blocks * 256`
    // (2-bit) or `blocks * 320` (five-trit) bytes, what the layout's kernels read; CPU features checked.
    unsafe { dot4(tile.as_ptr(), act.as_ptr(), w.blocks_per_row()) }
}

/// Raw accumulators `acc[n] = sum_k c[n,k] * q[token,k]` of every weight row for one token, with an
/// explicit kernel. This is the integer core that every kernel must compute bit for bit identically. A
/// matrix with group scales has no such single sum; it is refused.
pub fn ternary_accumulators<'a>(
    kernel: Kernel,
    w: impl Into<TernaryView<'a>>,
    x: &QuantizedActivations,
    token: usize,
    acc: &mut [i32],
) -> Result<()> {
    let w = &w.into();
    check_shapes(w, x, x.rows() * w.rows())?;
    ensure_len("accumulators", w.rows(), acc.len())?;
    if w.group_scales().is_some() {
        return Err(KernelError::ShapeMismatch { what: "row scales of a grouped matrix", expected: 0, got: 1 });
    }
    if token >= x.rows() {
        return Err(KernelError::ShapeMismatch { what: "token index", expected: x.rows(), got: token });
    }
    let dot4 = dot4_fn(kernel, 1, w.layout())?;
    for t in 0..w.tiles() {
        // SAFETY: shapes checked above, `t < tiles`, kernel checked by `dot4_fn`.
        let sums = unsafe { tile_sums(dot4, w, t, x.row(token)) };
        let n = t * ROW_TILE;
        let width = ROW_TILE.min(w.rows() - n);
        acc[n..n + width].copy_from_slice(&sums[..width]);
    }
    Ok(())
}

/// `y[m, n]` for every token `m` of `x` and every weight row `n`, row-major `[x.rows(), w.rows()]`,
/// with the process-wide kernel ([`Kernel::selected`]). Decode is the case `x.rows() == 1`.
pub fn ternary_matmul<'a>(
    w: impl Into<TernaryView<'a>>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ternary_matmul_with(Kernel::selected(), w, x, y, pool)
}

/// GEMV: `y[n]` for the single token of `x` (which must have one row).
pub fn ternary_gemv<'a>(
    w: impl Into<TernaryView<'a>>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ensure_eq("GEMV token count", 1, x.rows())?;
    ternary_matmul(w, x, y, pool)
}

/// [`ternary_matmul`] with an explicit kernel.
pub fn ternary_matmul_with<'a>(
    kernel: Kernel,
    w: impl Into<TernaryView<'a>>,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ternary_matmul_many_with(kernel, &[w.into()], x, &mut [y], pool)
}

/// [`ternary_matmul`] of one input with several weights (q/k/v, or gate/up, of a BitNet block) in a single
/// dispatch on the pool: `ys[j]` gets `[x.rows(), weights[j].rows()]`. Each output equals what
/// [`ternary_matmul`] gives for that weight alone, bit for bit; one dispatch instead of one per weight lets
/// small matrices share the threads' streams (decode reads q, k and v, 2.5 MB in 2B-4T, at the rate of one
/// large matrix).
pub fn ternary_matmul_many(
    weights: &[TernaryView<'_>],
    x: &QuantizedActivations,
    ys: &mut [&mut [f32]],
    pool: &ThreadPool,
) -> Result<()> {
    ternary_matmul_many_with(Kernel::selected(), weights, x, ys, pool)
}

/// [`ternary_matmul_many`] with an explicit kernel.
///
/// Work split: the 4-row tiles of all weights, in order, are cut into contiguous chunks that the pool's threads take
/// one at a time, each starting on its own contiguous run of them (one chunk, on the caller, when the weights are too
/// small to be worth a dispatch); a chunk runs all tokens over its tiles, so a tile is read from memory once and reused
/// from L1 for every token (GEMM), and each output is written by exactly one chunk, in the same order for any thread
/// count.
pub fn ternary_matmul_many_with(
    kernel: Kernel,
    weights: &[TernaryView<'_>],
    x: &QuantizedActivations,
    ys: &mut [&mut [f32]],
    pool: &ThreadPool,
) -> Result<()> {
    ensure_eq("output count", weights.len(), ys.len())?;
    for (w, y) in weights.iter().zip(ys.iter()) {
        check_shapes(w, x, y.len())?;
    }
    let outs: Vec<OutPtr<f32>> = ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect();
    // First global tile of each weight, and the total.
    let mut first_tile = Vec::with_capacity(weights.len() + 1);
    first_tile.push(0);
    for w in weights {
        first_tile.push(first_tile.last().copied().unwrap_or(0) + w.tiles());
    }
    let tiles = first_tile[weights.len()];
    let tokens = x.rows();
    // A tile of a 2560-wide row is 2.5 KB: below ~64 tiles (160 KB) the caller does it faster alone.
    let chunks = chunk_count(pool, tiles, MIN_PARALLEL_TILES.div_ceil(tokens.max(1)));
    let streams = pool.streams(chunks);
    // One tile function per layout present (no allocation: this runs ~150 times a decoded token).
    let dot4_for = |layout: TernaryLayout| -> Result<Option<Dot4>> {
        weights.iter().any(|w| w.layout() == layout).then(|| dot4_fn(kernel, streams, layout)).transpose()
    };
    let (dot4_bits2, dot4_trits5) = (dot4_for(TernaryLayout::Bits2)?, dot4_for(TernaryLayout::Trits5)?);
    let dot4_grouped = dot4_grouped_fn(kernel, streams)?;
    // Prefill: a kernel with a GEMM path unpacks each tile once and runs groups of tokens against it.
    let gemm = gemm::gemm_fn(kernel).filter(|&(_, group)| tokens >= group);
    let inv_scales = x.inv_scales();
    let work = |chunk: usize| {
        let range = split_range(tiles, chunks, chunk, 1);
        let (mut unpacked, mut totals) = (Vec::new(), Vec::new());
        for (j, w) in weights.iter().enumerate() {
            let (begin, end) = (range.start.max(first_tile[j]), range.end.min(first_tile[j + 1]));
            let rows = w.rows();
            let blocks = w.blocks_per_row();
            let dot4 = match w.layout() {
                TernaryLayout::Bits2 => dot4_bits2,
                TernaryLayout::Trits5 => dot4_trits5,
            }
            .expect("resolved above for every layout present");
            let out = outs[j];
            // The GEMM runs over whole 256-weight blocks of unpacked codes (a five-trit row's 320-weight blocks
            // unpack into `act_cols_padded / 256` of them).
            let gemm_blocks = w.layout().act_cols_padded(w.cols()) / gemm::GEMM_BLOCK;
            for t in begin.saturating_sub(first_tile[j])..end.saturating_sub(first_tile[j]) {
                let n = t * ROW_TILE;
                let width = ROW_TILE.min(rows - n);
                // Whole tiles copy their scales and write their outputs as fixed-size arrays, and the last, partial
                // tile takes out-of-line paths: copies of `width` values inline, even in a separate branch, compile
                // to `memcpy` calls (two per tile and token, ~1.7% of a decoded token).
                let scales = match w.row_scales()[n..].first_chunk::<ROW_TILE>() {
                    Some(whole) => *whole,
                    None => padded_tile(&w.row_scales()[n..]),
                };
                // A tile's four outputs of one token are one 16-byte store (a store per element made prompts'
                // 6912-row products ~12% slower: their token rows are 27 KiB apart, 4 L1 sets for 128 tokens).
                let write_f32 = |m: usize, sums: [f32; 4]| {
                    let inv_s = inv_scales[m];
                    let values: [f32; ROW_TILE] = std::array::from_fn(|i| sums[i] * (scales[i] * inv_s));
                    // SAFETY: `m * rows + n + width <= tokens * rows <= ys[j].len()`; tile `t` of weight `j`
                    // belongs to this chunk alone, so no two threads write the same elements.
                    unsafe {
                        if width == ROW_TILE {
                            out.write_array(m * rows + n, values)
                        } else {
                            out.write_run(m * rows + n, &values[..width])
                        }
                    };
                };
                if let Some(group_scales) = w.tile_group_scales(t) {
                    for m in 0..tokens {
                        let (tile, act) = (w.tile_bytes(t), x.row(m));
                        // SAFETY: the tile and the activation row hold `blocks * 256` bytes (`check_shapes`), the
                        // tile's group scales `blocks * 16` values (`TernaryView::new`); kernel checked.
                        let sums = unsafe { dot4_grouped(tile.as_ptr(), act.as_ptr(), group_scales.as_ptr(), blocks) };
                        write_f32(m, sums);
                    }
                    continue;
                }
                let write = |m: usize, sums: [i32; 4]| {
                    let qsum = x.sums()[m];
                    write_f32(m, sums.map(|acc| (acc - qsum) as f32));
                };
                let mut m = 0;
                if let Some((kernel_fn, group)) = gemm {
                    unpacked.resize(gemm_blocks * gemm::UNPACKED_BLOCK, 0);
                    gemm::unpack_tile(kernel, w.layout(), w.tile_bytes(t), &mut unpacked);
                    // Long rows run in column chunks (`gemm::column_chunks`), every token group through one chunk
                    // before the next, the exact i32 sums added across chunks: the same sums in any order.
                    let grouped_tokens = tokens / group * group;
                    let chunks = gemm::column_chunks(gemm_blocks);
                    totals.clear();
                    totals.resize(grouped_tokens, [0i32; 4]);
                    let mut sums = [[0i32; 4]; gemm::MAX_GROUP];
                    for chunk in 0..chunks {
                        let blocks = split_range(gemm_blocks, chunks, chunk, 1);
                        let codes = unpacked[blocks.start * gemm::UNPACKED_BLOCK..].as_ptr();
                        for first in (0..grouped_tokens).step_by(group) {
                            let mut acts = [std::ptr::null::<i8>(); gemm::MAX_GROUP];
                            for (g, a) in acts.iter_mut().enumerate().take(group) {
                                *a = x.row(first + g)[blocks.start * gemm::GEMM_BLOCK..].as_ptr();
                            }
                            // SAFETY: the kernel is available (`dot4_fn` checked it); `unpacked` holds `gemm_blocks`
                            // unpacked blocks and each activation row `gemm_blocks * 256` bytes (`check_shapes`),
                            // so `codes` and each activation pointer have `blocks.len()` blocks behind them.
                            unsafe { kernel_fn(codes, &acts[..group], blocks.len(), &mut sums[..group]) };
                            for (g, s) in sums.iter().enumerate().take(group) {
                                let total = &mut totals[first + g];
                                *total = std::array::from_fn(|i| total[i] + s[i]);
                            }
                        }
                    }
                    for (m, &total) in totals.iter().enumerate() {
                        write(m, total);
                    }
                    m = grouped_tokens;
                }
                for m in m..tokens {
                    // SAFETY: shapes checked by `check_shapes`, `t < w.tiles()`, kernel checked by `dot4_fn`.
                    write(m, unsafe { tile_sums(dot4, w, t, x.row(m)) });
                }
            }
        }
    };
    pool.run(chunks, &work);
    Ok(())
}

/// The first values of `values` (fewer than a tile), zero-padded to a tile: the out-of-line path of a partial
/// tile (see `ternary_matmul_many_with`).
#[cold]
#[inline(never)]
fn padded_tile(values: &[f32]) -> [f32; ROW_TILE] {
    let mut tile = [0f32; ROW_TILE];
    let len = values.len().min(ROW_TILE);
    tile[..len].copy_from_slice(&values[..len]);
    tile
}

/// The output pointer shared by the pool threads, which write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr<T>(pub(crate) *mut T);
// SAFETY: threads write disjoint indices only (see each use).
unsafe impl<T: Send> Sync for OutPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// # Safety
    /// `index` is in bounds and no other thread accesses it concurrently.
    #[inline(always)]
    pub(crate) unsafe fn write(self, index: usize, value: T) {
        unsafe { self.0.add(index).write(value) }
    }

    /// Writes `values` at `index..index + N`: one store of known size.
    ///
    /// # Safety
    /// The range is in bounds and no other thread accesses it concurrently.
    #[inline(always)]
    pub(crate) unsafe fn write_array<const N: usize>(self, index: usize, values: [T; N]) {
        // `[T; N]` has `T`'s alignment, which the element pointer has.
        unsafe { self.0.add(index).cast::<[T; N]>().write(values) }
    }

    /// Writes `values` at `index..index + values.len()` (one copy, not one store per element). Out of line on
    /// purpose: for the rare short runs next to a [`Self::write_array`], which inlined copies of variable length
    /// in the other branch would turn into a `memcpy` call.
    ///
    /// # Safety
    /// The range is in bounds and no other thread accesses it concurrently.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn write_run(self, index: usize, values: &[T])
    where
        T: Copy,
    {
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.0.add(index), values.len()) }
    }
}
