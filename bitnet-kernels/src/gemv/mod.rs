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

mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use crate::dispatch::Kernel;
use crate::error::{ensure_eq, ensure_len, KernelError, Result};
use crate::formats::native::NATIVE_BLOCK;
use crate::formats::TernaryMatrix;
use crate::pool::{split_range, ThreadPool};
use crate::quant::QuantizedActivations;

/// Rows one kernel call handles together (they share every activation load).
pub const ROW_TILE: usize = 4;

type Dot4 = unsafe fn(*const u8, usize, *const i8, usize) -> [i32; 4];
type Dot1 = unsafe fn(*const u8, *const i8, usize) -> i32;

/// The two entry points of one kernel.
#[derive(Clone, Copy)]
struct DotFns {
    dot4: Dot4,
    dot1: Dot1,
}

/// The functions of `kernel`, or an error if this CPU cannot run it. Checking availability here is what
/// makes calling the `unsafe` target-feature functions sound.
fn dot_fns(kernel: Kernel) -> Result<DotFns> {
    if !kernel.is_available() {
        return Err(KernelError::KernelUnavailable(kernel.name()));
    }
    Ok(match kernel {
        Kernel::Scalar => DotFns {
            dot4: scalar::dot4,
            dot1: scalar::dot1,
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => DotFns {
            dot4: avx2::dot4,
            dot1: avx2::dot1,
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bw => DotFns {
            dot4: avx512::dot4_bw,
            dot1: avx512::dot1_bw,
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => DotFns {
            dot4: avx512::dot4_vnni,
            dot1: avx512::dot1_vnni,
        },
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => DotFns {
            dot4: neon::dot4_plain,
            dot1: neon::dot1_plain,
        },
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonDotprod => DotFns {
            dot4: neon::dot4_dotprod,
            dot1: neon::dot1_dotprod,
        },
        #[allow(unreachable_patterns)]
        _ => return Err(KernelError::KernelUnavailable(kernel.name())),
    })
}

/// Checks that `x` can multiply `w` (same `K`, same padding) and that `y` holds `rows(x) * rows(w)`.
fn check_shapes(w: &TernaryMatrix, x: &QuantizedActivations, y_len: usize) -> Result<()> {
    ensure_eq("activation width (K)", w.cols(), x.cols())?;
    ensure_eq("activation padded width", w.cols_padded(), x.cols_padded())?;
    ensure_len("output", x.rows() * w.rows(), y_len)
}

/// Raw accumulators `acc[n] = sum_k c[n,k] * q[token,k]` of every weight row for one token, with an
/// explicit kernel. This is the integer core that every kernel must compute bit for bit identically.
pub fn ternary_accumulators(
    kernel: Kernel,
    w: &TernaryMatrix,
    x: &QuantizedActivations,
    token: usize,
    acc: &mut [i32],
) -> Result<()> {
    check_shapes(w, x, x.rows() * w.rows())?;
    ensure_len("accumulators", w.rows(), acc.len())?;
    if token >= x.rows() {
        return Err(KernelError::ShapeMismatch {
            what: "token index",
            expected: x.rows(),
            got: token,
        });
    }
    let fns = dot_fns(kernel)?;
    let act = x.row(token);
    let blocks = w.cols_padded() / NATIVE_BLOCK;
    let stride = w.bytes_per_row();
    let mut n = 0;
    while n < w.rows() {
        // SAFETY: shapes checked above: rows n..n+4 (or n) lie inside `w.data()`, `act` holds
        // `blocks * 256` codes, and `dot_fns` verified the CPU features.
        unsafe {
            if n + ROW_TILE <= w.rows() {
                let tile = (fns.dot4)(
                    w.data().as_ptr().add(n * stride),
                    stride,
                    act.as_ptr(),
                    blocks,
                );
                acc[n..n + ROW_TILE].copy_from_slice(&tile);
                n += ROW_TILE;
            } else {
                acc[n] = (fns.dot1)(w.data().as_ptr().add(n * stride), act.as_ptr(), blocks);
                n += 1;
            }
        }
    }
    Ok(())
}

/// `y[m, n]` for every token `m` of `x` and every weight row `n`, row-major `[x.rows(), w.rows()]`,
/// with the process-wide kernel ([`Kernel::selected`]). Decode is the case `x.rows() == 1`.
pub fn ternary_matmul(
    w: &TernaryMatrix,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ternary_matmul_with(Kernel::selected(), w, x, y, pool)
}

/// GEMV: `y[n]` for the single token of `x` (which must have one row).
pub fn ternary_gemv(
    w: &TernaryMatrix,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    ensure_eq("GEMV token count", 1, x.rows())?;
    ternary_matmul(w, x, y, pool)
}

/// [`ternary_matmul`] with an explicit kernel.
///
/// Work split: the weight rows are cut into one contiguous, tile-aligned range per pool thread; each
/// thread runs all tokens over its rows, so a 4-row weight tile is read from memory once and reused from L1
/// for every token (GEMM), and each output is written by exactly one thread.
pub fn ternary_matmul_with(
    kernel: Kernel,
    w: &TernaryMatrix,
    x: &QuantizedActivations,
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    check_shapes(w, x, y.len())?;
    let fns = dot_fns(kernel)?;
    let (rows, tokens) = (w.rows(), x.rows());
    let blocks = w.cols_padded() / NATIVE_BLOCK;
    let stride = w.bytes_per_row();
    let out = OutPtr(y.as_mut_ptr());
    let threads = pool.threads().min(rows.div_ceil(ROW_TILE)).max(1);
    let work = |t: usize| {
        if t >= threads {
            return;
        }
        let range = split_range(rows, threads, t, ROW_TILE);
        let mut n = range.start;
        while n < range.end {
            let width = if n + ROW_TILE <= range.end {
                ROW_TILE
            } else {
                1
            };
            let wp = w.data()[n * stride..].as_ptr();
            for m in 0..tokens {
                let act = x.row(m);
                // SAFETY: shapes were checked by `check_shapes`; `dot_fns` verified the CPU features.
                let sums = unsafe {
                    if width == ROW_TILE {
                        (fns.dot4)(wp, stride, act.as_ptr(), blocks)
                    } else {
                        [(fns.dot1)(wp, act.as_ptr(), blocks), 0, 0, 0]
                    }
                };
                let inv_s = 1.0 / x.scales()[m];
                let qsum = x.sums()[m];
                for (i, &acc) in sums.iter().enumerate().take(width) {
                    let value = (acc - qsum) as f32 * (w.row_scales()[n + i] * inv_s);
                    // SAFETY: `m * rows + n + i < tokens * rows <= y.len()`; rows `n..n+width` belong to
                    // this thread alone, so no two threads write the same element.
                    unsafe { out.write(m * rows + n + i, value) };
                }
            }
            n += width;
        }
    };
    pool.run(&work);
    Ok(())
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
}
