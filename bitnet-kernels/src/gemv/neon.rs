//! AArch64 NEON ternary dot products on the native layout: `sdot` (dot-product extension) and plain NEON
//! (`smlal` into i16, `sadalp` into i32).
//!
//! A native block is 64 bytes; each 16-byte quarter `i` gives, after `(v >> 2p) & 3`, the codes of weights
//! `64p + 16i .. 64p + 16i + 16`. Codes (<= 2) are valid signed bytes, so the signed `sdot` applies.
//! Plain NEON sums eight products (|.| <= 256 each) per i16 lane before widening: exact.

use core::arch::aarch64::*;

/// Codes of the four sub-blocks of one 16-byte load, as signed bytes.
#[inline(always)]
unsafe fn codes4(v: uint8x16_t) -> [int8x16_t; 4] {
    unsafe {
        let mask = vdupq_n_u8(3);
        [
            vreinterpretq_s8_u8(vandq_u8(v, mask)),
            vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(v), mask)),
            vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(v), mask)),
            vreinterpretq_s8_u8(vshrq_n_u8::<6>(v)),
        ]
    }
}

/// Activations of quarter `i` of a block: offsets `64p + 16i`.
#[inline(always)]
unsafe fn act_quarter(a: *const i8, i: usize) -> [int8x16_t; 4] {
    // Closures would not inherit the target features and are not inlined here: no `map`.
    unsafe {
        [
            vld1q_s8(a.add(16 * i)),
            vld1q_s8(a.add(64 + 16 * i)),
            vld1q_s8(a.add(128 + 16 * i)),
            vld1q_s8(a.add(192 + 16 * i)),
        ]
    }
}

/// `acc += sum_4 (a[i] * b[i])` per i32 lane, with the `sdot` instruction.
#[inline(always)]
pub(crate) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; the caller's target_feature guarantees dotprod.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Dotprod: sums for the four rows of one interleaved tile (block `b` of row `r` at byte `(4b + r) * 64`).
///
/// # Safety
/// The CPU has neon + dotprod; `w` and `act` are valid for `blocks * 256` bytes.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot4_dotprod(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    unsafe {
        let mut acc = [vdupq_n_s32(0); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            for i in 0..4 {
                let x = act_quarter(a, i);
                for r in 0..4 {
                    let c = codes4(vld1q_u8(w.add((4 * b + r) * 64 + 16 * i)));
                    for p in 0..4 {
                        acc[r] = sdot(acc[r], c[p], x[p]);
                    }
                }
            }
        }
        [vaddvq_s32(acc[0]), vaddvq_s32(acc[1]), vaddvq_s32(acc[2]), vaddvq_s32(acc[3])]
    }
}

/// Plain NEON: i32 lanes of one 16-byte load's products (eight per i16 lane, then pairwise widened).
#[inline(always)]
unsafe fn mul_quarter(acc: int32x4_t, c: [int8x16_t; 4], x: [int8x16_t; 4]) -> int32x4_t {
    unsafe {
        let mut s = vmull_s8(vget_low_s8(c[0]), vget_low_s8(x[0]));
        s = vmlal_high_s8(s, c[0], x[0]);
        for p in 1..4 {
            s = vmlal_s8(s, vget_low_s8(c[p]), vget_low_s8(x[p]));
            s = vmlal_high_s8(s, c[p], x[p]);
        }
        vpadalq_s16(acc, s)
    }
}

/// Plain NEON: sums for the four rows of one interleaved tile.
///
/// # Safety
/// The CPU has neon; pointers as in [`dot4_dotprod`].
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot4_plain(w: *const u8, act: *const i8, blocks: usize) -> [i32; 4] {
    unsafe {
        let mut acc = [vdupq_n_s32(0); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            for i in 0..4 {
                let x = act_quarter(a, i);
                for r in 0..4 {
                    acc[r] = mul_quarter(acc[r], codes4(vld1q_u8(w.add((4 * b + r) * 64 + 16 * i))), x);
                }
            }
        }
        [vaddvq_s32(acc[0]), vaddvq_s32(acc[1]), vaddvq_s32(acc[2]), vaddvq_s32(acc[3])]
    }
}

/// Grouped scales (see the scalar twin): codes minus one as signed bytes, products widened to i16 and
/// summed over the four quarters of a block (eight per lane, |lane| <= 1024), widened, reduced pairwise to
/// one vector of four plane sums per row, converted and scaled into four f32 accumulators per row.
///
/// # Safety
/// The CPU has neon; `w` and `act` are valid for `blocks * 256` bytes, `scales` for `blocks * 16` values.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot4_grouped(w: *const u8, act: *const i8, scales: *const f32, blocks: usize) -> [f32; 4] {
    unsafe {
        let one = vdupq_n_s8(1);
        let mut acc = [vdupq_n_f32(0.0); 4];
        for b in 0..blocks {
            let a = act.add(b * 256);
            let mut e = [[vdupq_n_s16(0); 4]; 4];
            for i in 0..4 {
                let x = act_quarter(a, i);
                for r in 0..4 {
                    let c = codes4(vld1q_u8(w.add((4 * b + r) * 64 + 16 * i)));
                    for p in 0..4 {
                        let signed = vsubq_s8(c[p], one);
                        e[r][p] = vmlal_s8(e[r][p], vget_low_s8(signed), vget_low_s8(x[p]));
                        e[r][p] = vmlal_high_s8(e[r][p], signed, x[p]);
                    }
                }
            }
            for r in 0..4 {
                let d = [vpaddlq_s16(e[r][0]), vpaddlq_s16(e[r][1]), vpaddlq_s16(e[r][2]), vpaddlq_s16(e[r][3])];
                let sums = vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]));
                let h = vld1q_f32(scales.add(16 * b + 4 * r));
                acc[r] = vaddq_f32(acc[r], vmulq_f32(vcvtq_f32_s32(sums), h));
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            let l = [
                vgetq_lane_f32::<0>(acc[r]),
                vgetq_lane_f32::<1>(acc[r]),
                vgetq_lane_f32::<2>(acc[r]),
                vgetq_lane_f32::<3>(acc[r]),
            ];
            out[r] = (l[0] + l[1]) + (l[2] + l[3]);
        }
        out
    }
}
