//! CubeCL kernels of the ternary ops (wgpu: WGSL/SPIR-V/Metal, cuda). This module imports only the cubecl
//! prelude, whose `Tensor`/`Int`/`Float` differ from burn's.
//!
//! Weights arrive in the kernel-native layout of `bitnet-kernels` as i32 words: for output row `n`
//! (tile `n / 4`, slot `r = n % 4`) and 256-weight block `b`, the 16 words at
//! `(n / 4) * 4 * W + (4b + r) * 16` (`W` = words per row) hold 64 bytes; byte `j` holds weights
//! `256b + 64p + j` at bits `2p` (p = 0..4). Codes are unpacked in registers with an arithmetic shift and a
//! mask, which is exact for negative words too, and multiplied with the int8 activation codes in i32.
//!
//! The five-trit layout (`bitnet_kernels::TernaryLayout::Trits5`) has the same tiles, words and bytes, but a
//! block holds 320 weights and byte `j` holds the codes `t_p` of weights `320b + 64p + j`, p = 0..5, as the
//! fixed-point fraction `y_0` of their base-3 value: `t_p = floor(3 y_p / 256)`, `y_(p+1) = 3 y_p mod 256`. The
//! kernels take the layout as a comptime flag and step through a byte's five codes with that recurrence (integer
//! only, so exact everywhere); group scales exist in the 2-bit layout only.

// The `#[cube(launch)]` macro generates undocumented launch modules and structs.
#![allow(missing_docs)]
// Kernel code is translated by the `#[cube]` macro, which supports plain arithmetic, not `div_ceil` or
// `is_multiple_of`.
#![allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)]

use cubecl::prelude::*;

/// Units per cube of the activation-quantization kernel (one cube per token).
pub const QUANT_CUBE_DIM: u32 = 64;
/// Units per cube side of the dequantization kernel (one unit per weight).
pub const TILE_CUBE_DIM: u32 = 16;

/// `round(v)` with ties to even, written out so every backend agrees (WGSL, SPIR-V and CUDA differ on
/// `round`). Exact for |v| < 2^22.
#[cube]
fn round_half_even<F: Float>(v: F) -> F {
    let r = F::floor(v + F::new(0.5));
    let halfway = r - v == F::new(0.5);
    let odd = F::floor(r * F::new(0.5)) * F::new(2.0) != r;
    select(halfway && odd, r - F::new(1.0), r)
}

/// Index of the first of the 16 words holding block `b` of weight row `n` (the tile-interleaved native layout:
/// tile `n / 4`, slot `n % 4`; 256 weights a block in 2 bits, 320 in five trits); the layout's one definition on
/// the GPU side.
#[cube]
fn block_word_base(n: usize, b: usize, words_per_row: usize) -> usize {
    (n / 4) * 4 * words_per_row + (b * 4 + n % 4) * 16
}

/// The code of five-trit plane `p` in byte `byte` (0..256): `floor(3 y_p / 256)` with `y_p = 3^p byte mod 256`.
#[cube]
fn trit_of_byte(byte: i32, p: usize) -> i32 {
    let mut y = byte;
    for _ in 0..p {
        y = (y * 3i32) & 255i32;
    }
    (y * 3i32) >> 8
}

/// Per-token absmax int8 quantization: cube `m` handles row `m` of `x` (`[M, K]`).
/// `s = 127 / max(max|x|, 1e-5)`, `codes = clamp(round(x * s), -128, 127)`.
#[cube(launch)]
pub fn quantize_activations_kernel<F: Float, I: Int>(
    x: &Tensor<F>,
    codes: &mut Tensor<I>,
    scales: &mut Tensor<F>,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let m = CUBE_POS_X as usize;
    let lane = UNIT_POS_X as usize;
    let width = CUBE_DIM_X as usize;
    let k = x.shape(1);
    let steps = (k + width - 1) / width;

    let mut local = F::new(0.0);
    for t in 0..steps {
        let i = t * width + lane;
        if i < k {
            local = F::max(local, F::abs(x[m * k + i]));
        }
    }
    let mut shared = SharedMemory::<F>::new(QUANT_CUBE_DIM as usize);
    shared[lane] = local;
    sync_cube();
    let mut stride = width / 2;
    while stride > 0 {
        if lane < stride {
            shared[lane] = F::max(shared[lane], shared[lane + stride]);
        }
        sync_cube();
        stride /= 2;
    }
    let s = F::new(127.0) / F::max(shared[0], F::new(1e-5));
    for t in 0..steps {
        let i = t * width + lane;
        if i < k {
            let q = F::clamp(round_half_even::<F>(x[m * k + i] * s), F::new(-128.0), F::new(127.0));
            codes[m * k + i] = I::cast_from(q);
        }
    }
    if lane == 0 {
        scales[m] = s;
    }
}

/// Lanes of one row tile in [`ternary_matmul_kernel`]: one plane (warp) on GPUs whose planes are 32 wide.
pub const TILE_LANES: u32 = 32;
/// Row tiles (of 4 rows) per cube of [`ternary_matmul_kernel`].
pub const TILES_PER_CUBE: u32 = 4;

/// Sum of `v` over the 16 lanes of the half tile `lane / 16` belongs to: plane sums when `use_plane`, else
/// [`half_plane_sum`]. Integer sums (i32) are exact; float sums (grouped weights) run in the tree's order.
#[cube]
fn row_sum<N: Numeric>(v: N, y: usize, lane: usize, #[comptime] use_plane: bool) -> N {
    if use_plane {
        let low = lane < 16;
        let zero = N::from_int(0);
        let sum_low = plane_sum(select(low, v, zero));
        let sum_high = plane_sum(select(low, zero, v));
        select(low, sum_low, sum_high)
    } else {
        let mut shared = SharedMemory::<N>::new((TILE_LANES * TILES_PER_CUBE) as usize);
        half_plane_sum::<N>(v, &mut shared, y, lane)
    }
}

/// Sum of `v` over the 16 lanes of a half plane (`lane / 16` picks the half), in `shared` (`TILE_LANES` slots
/// per tile, tile `y`): a tree reduction, every unit of the cube reaching each barrier.
#[cube]
fn half_plane_sum<N: Numeric>(v: N, shared: &mut SharedMemory<N>, y: usize, lane: usize) -> N {
    let base = y * TILE_LANES as usize;
    shared[base + lane] = v;
    sync_cube();
    let mut stride = 8usize;
    while stride > 0 {
        if lane % 16 < stride {
            let other = shared[base + lane + stride];
            shared[base + lane] += other;
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[base + (lane / 16) * 16];
    sync_cube();
    total
}

/// `out[m, n] = (sum_k (c[n,k] - 1) q[m,k]) * g_n * (1 / s_m)`, exact in i32 before the scaling.
///
/// Coalesced: the 32 lanes of a row tile (4 rows) walk its blocks together. A block of a tile is 64
/// consecutive words (16 per row), so lane `l` reads words `l` and `l + 32`: one coalesced 128-byte load per
/// half. Word `jw` of row slot `r` holds weights `256b + 64p + 4jw + i` at bits `8i + 2p` (2-bit layout), or
/// the five codes of weights `320b + 64p + 4jw + i` in byte `i` (`trits5`). Each lane accumulates
/// two rows (`l / 16` and `2 + l / 16`); the 16 lanes of each row are summed at the end, with plane sums where
/// the device's planes are exactly 32 lanes (`use_plane`) and through shared memory otherwise.
/// Cube `(x, m)` covers tiles `x * TILES_PER_CUBE ..` of token `m`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn ternary_matmul_kernel<F: Float, I: Int>(
    codes: &Tensor<I>,
    act_scales: &Tensor<F>,
    words: &Tensor<I>,
    weight_scales: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] use_plane: bool,
    #[comptime] trits5: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let y = UNIT_POS_Y as usize;
    let tile = CUBE_POS_X as usize * TILES_PER_CUBE as usize + y;
    let m = CUBE_POS_Y as usize;
    let rows = out.shape(1);
    let k = codes.shape(1);
    let words_per_row = words.shape(1);
    let tiles = (rows + 3) / 4;
    let blocks = words_per_row / 16;
    let mut acc_a = 0i32;
    let mut acc_b = 0i32;
    if tile < tiles {
        let base = tile * 4 * words_per_row;
        let jw = lane % 16;
        let block = comptime![if trits5 { 320usize } else { 256usize }];
        for b in 0..blocks {
            let word_a = i32::cast_from(words[base + b * 64 + lane]);
            let word_b = i32::cast_from(words[base + b * 64 + lane + 32]);
            for i in 0..4usize {
                if trits5 {
                    let shift = i32::cast_from(8 * i);
                    let mut y_a = (word_a >> shift) & 255i32;
                    let mut y_b = (word_b >> shift) & 255i32;
                    for p in 0..5usize {
                        let kk = b * block + p * 64 + jw * 4 + i;
                        if kk < k {
                            let q = i32::cast_from(codes[m * k + kk]);
                            acc_a += (((y_a * 3i32) >> 8) - 1i32) * q;
                            acc_b += (((y_b * 3i32) >> 8) - 1i32) * q;
                        }
                        y_a = (y_a * 3i32) & 255i32;
                        y_b = (y_b * 3i32) & 255i32;
                    }
                } else {
                    for p in 0..4usize {
                        let kk = b * block + p * 64 + jw * 4 + i;
                        if kk < k {
                            let q = i32::cast_from(codes[m * k + kk]);
                            let shift = i32::cast_from(8 * i + 2 * p);
                            acc_a += (((word_a >> shift) & 3i32) - 1i32) * q;
                            acc_b += (((word_b >> shift) & 3i32) - 1i32) * q;
                        }
                    }
                }
            }
        }
    }
    let row_a = row_sum::<i32>(acc_a, y, lane, use_plane);
    let row_b = row_sum::<i32>(acc_b, y, lane, use_plane);
    write_tile_rows::<F>(out, act_scales, weight_scales, F::cast_from(row_a), F::cast_from(row_b), m, tile, lane);
}

/// Writes the two rows lane `lane` of tile `tile` summed (`row_a` for slot `lane / 16`, `row_b` for slot
/// `2 + lane / 16`) as `row * (g_n / s_m)`: lane 0 writes rows 0 and 2 of the tile, lane 16 rows 1 and 3.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_tile_rows<F: Float>(
    out: &mut Tensor<F>,
    act_scales: &Tensor<F>,
    weight_scales: &Tensor<F>,
    row_a: F,
    row_b: F,
    m: usize,
    tile: usize,
    lane: usize,
) {
    let rows = out.shape(1);
    if tile < (rows + 3) / 4 && lane % 16 == 0 {
        let inv_s = F::new(1.0) / act_scales[m];
        let n_a = tile * 4 + lane / 16;
        let n_b = n_a + 2;
        if n_a < rows {
            out[m * rows + n_a] = row_a * (weight_scales[n_a] * inv_s);
        }
        if n_b < rows {
            out[m * rows + n_b] = row_b * (weight_scales[n_b] * inv_s);
        }
    }
}

/// Grouped weights: `out[m, n] = g_n / s_m * sum_j h[n, j] * sum_{k in group j} (c[n,k] - 1) q[m,k]`, the
/// group sums exact in i32 and the outer sum in float. Same walk as [`ternary_matmul_kernel`], but a lane
/// keeps each bit plane (one 64-weight group) of a block apart, scales it by its group scale
/// (`weight_scales[rows + (tile * blocks + b) * 16 + 4 * slot + p]`, after the `rows` row scales) and
/// accumulates in float; the 16 lanes of a row are summed at the end.
#[cube(launch)]
pub fn ternary_matmul_grouped_kernel<F: Float, I: Int>(
    codes: &Tensor<I>,
    act_scales: &Tensor<F>,
    words: &Tensor<I>,
    weight_scales: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] use_plane: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let y = UNIT_POS_Y as usize;
    let tile = CUBE_POS_X as usize * TILES_PER_CUBE as usize + y;
    let m = CUBE_POS_Y as usize;
    let rows = out.shape(1);
    let k = codes.shape(1);
    let words_per_row = words.shape(1);
    let tiles = (rows + 3) / 4;
    let blocks = words_per_row / 16;
    let mut acc_a = F::new(0.0);
    let mut acc_b = F::new(0.0);
    if tile < tiles {
        let base = tile * 4 * words_per_row;
        let jw = lane % 16;
        let slot_a = lane / 16;
        for b in 0..blocks {
            let word_a = i32::cast_from(words[base + b * 64 + lane]);
            let word_b = i32::cast_from(words[base + b * 64 + lane + 32]);
            let scales_base = rows + (tile * blocks + b) * 16;
            for p in 0..4usize {
                let mut sum_a = 0i32;
                let mut sum_b = 0i32;
                for i in 0..4usize {
                    let kk = b * 256 + p * 64 + jw * 4 + i;
                    if kk < k {
                        let q = i32::cast_from(codes[m * k + kk]);
                        let shift = i32::cast_from(8 * i + 2 * p);
                        sum_a += (((word_a >> shift) & 3i32) - 1i32) * q;
                        sum_b += (((word_b >> shift) & 3i32) - 1i32) * q;
                    }
                }
                acc_a += F::cast_from(sum_a) * weight_scales[scales_base + 4 * slot_a + p];
                acc_b += F::cast_from(sum_b) * weight_scales[scales_base + 4 * (slot_a + 2) + p];
            }
        }
    }
    let row_a = row_sum::<F>(acc_a, y, lane, use_plane);
    let row_b = row_sum::<F>(acc_b, y, lane, use_plane);
    write_tile_rows::<F>(out, act_scales, weight_scales, row_a, row_b, m, tile, lane);
}

/// `out[n, k] = (c[n,k] - 1) * g_n`, times the group scale `h[n, k / 64]` when `grouped` (2-bit layout only):
/// one unit per weight.
#[cube(launch)]
pub fn ternary_dequantize_kernel<F: Float, I: Int>(
    words: &Tensor<I>,
    weight_scales: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] grouped: bool,
    #[comptime] trits5: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let kk = ABSOLUTE_POS_X as usize;
    let n = ABSOLUTE_POS_Y as usize;
    let rows = out.shape(0);
    let k = out.shape(1);
    if n >= rows || kk >= k {
        terminate!();
    }
    let words_per_row = words.shape(1);
    let block = comptime![if trits5 { 320usize } else { 256usize }];
    let (b, e) = (kk / block, kk % block);
    let (p, j) = (e / 64, e % 64);
    let index = block_word_base(n, b, words_per_row) + j / 4;
    let word = i32::cast_from(words[index]);
    let c = if trits5 {
        trit_of_byte((word >> i32::cast_from(8 * (j % 4))) & 255i32, p)
    } else {
        (word >> i32::cast_from(8 * (j % 4) + 2 * p)) & 3i32
    };
    let mut scale = weight_scales[n];
    if grouped {
        scale *= weight_scales[rows + ((n / 4) * (words_per_row / 16) + b) * 16 + (n % 4) * 4 + p];
    }
    out[n * k + kk] = F::cast_from(c - 1i32) * scale;
}
