//! Every SIMD kernel equals the scalar reference bit for bit on the integer accumulators, and the f32
//! outputs equal a naive dequantized reference.

use bitnet_kernels::block_format::{block_gemv_with, block_sums};
use bitnet_kernels::int8::{int8_accumulators, int8_gemv_with, Int8Matrix, Int8View};
use bitnet_kernels::q4::Q4_SUPER_BLOCK_BYTES;
use bitnet_kernels::q6k::Q6K_BLOCK_BYTES;
use bitnet_kernels::{
    ternary_accumulators, ternary_matmul_with, BlockFormat, BlockMatrix, BlockView, Kernel, QuantizedActivations,
    TernaryCodes, TernaryMatrix, ThreadPool,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_codes(rng: &mut StdRng, rows: usize, cols: usize) -> TernaryCodes {
    TernaryCodes::new(rows, cols, (0..rows * cols).map(|_| rng.random_range(0..3u8)).collect()).unwrap()
}

fn random_acts(rng: &mut StdRng, rows: usize, cols: usize) -> QuantizedActivations {
    let codes: Vec<i8> = (0..rows * cols).map(|_| rng.random_range(-128..=127i8)).collect();
    let scales: Vec<f32> = (0..rows).map(|_| rng.random_range(1.0..200.0f32)).collect();
    QuantizedActivations::from_codes(&codes, &scales, rows, cols).unwrap()
}

/// `sum_k c[n,k] * q[k]` computed from the unpacked codes, independent of any kernel or layout.
fn naive_accumulators(codes: &TernaryCodes, act: &[i8]) -> Vec<i32> {
    (0..codes.rows()).map(|n| codes.row(n).iter().zip(act).map(|(&c, &q)| c as i32 * q as i32).sum()).collect()
}

fn check_all_kernels(codes: &TernaryCodes, x: &QuantizedActivations, label: &str) {
    let w = TernaryMatrix::from_codes_with_scale(codes, 1.0).unwrap();
    for token in 0..x.rows() {
        let expected = naive_accumulators(codes, x.row(token));
        for kernel in Kernel::available() {
            let mut acc = vec![0i32; w.rows()];
            ternary_accumulators(kernel, &w, x, token, &mut acc).unwrap();
            assert_eq!(acc, expected, "{label}: kernel {kernel}, token {token}, shape {}x{}", w.rows(), w.cols());
        }
    }
}

#[test]
fn kernels_list_includes_the_expected_simd_paths() {
    let available = Kernel::available();
    assert!(available.contains(&Kernel::Scalar));
    #[cfg(target_arch = "aarch64")]
    assert!(available.contains(&Kernel::Neon), "NEON must run on every aarch64 host");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        assert!(available.contains(&Kernel::Avx2));
    }
    eprintln!("testing kernels: {available:?}");
    // CI pins what detection must find on an emulated CPU (e.g. qemu's Cortex-A53 has no dotprod).
    if let Ok(expected) = std::env::var("BITNET_EXPECT_KERNELS") {
        let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
        assert_eq!(names.join(","), expected, "run-time feature detection");
    }
}

#[test]
fn random_shapes_match_exactly() {
    let mut rng = StdRng::seed_from_u64(7);
    let shapes = [
        (1, 1),
        (3, 5),
        (4, 256),
        (5, 255),
        (7, 257),
        (8, 300),
        (9, 512),
        (13, 1000),
        (16, 2560),
        (6, 6912 + 3),
        (33, 129),
        // Enough 4-row tiles that packing splits the matrix over threads (with a partial last tile).
        (1030, 300),
    ];
    for &(rows, cols) in &shapes {
        let codes = random_codes(&mut rng, rows, cols);
        let x = random_acts(&mut rng, 2, cols);
        check_all_kernels(&codes, &x, "random");
    }
}

#[test]
fn adversarial_inputs_match_exactly() {
    let (rows, cols) = (12, 4096 + 77);
    let extremes: [(&str, u8, i8); 6] = [
        ("codes 2, acts -128", 2, -128),
        ("codes 2, acts 127", 2, 127),
        ("codes 0, acts -128", 0, -128),
        ("codes 0, acts 127", 0, 127),
        ("zero weights", 1, -128),
        ("zero acts", 2, 0),
    ];
    for (label, code, act) in extremes {
        let codes = TernaryCodes::new(rows, cols, vec![code; rows * cols]).unwrap();
        let x = QuantizedActivations::from_codes(&vec![act; cols], &[1.0], 1, cols).unwrap();
        check_all_kernels(&codes, &x, label);
    }
    // Mixed: alternating extreme rows, one all-zero row in the middle of a 4-row tile.
    let mut rng = StdRng::seed_from_u64(3);
    let mut raw: Vec<u8> =
        (0..rows * cols).map(|i| if (i / cols) % 2 == 0 { 2 } else { rng.random_range(0..3) }).collect();
    raw[5 * cols..6 * cols].fill(1);
    let codes = TernaryCodes::new(rows, cols, raw).unwrap();
    let acts: Vec<i8> = (0..cols).map(|i| if i % 3 == 0 { -128 } else { 127 }).collect();
    let x = QuantizedActivations::from_codes(&acts, &[1.0], 1, cols).unwrap();
    check_all_kernels(&codes, &x, "mixed");
}

/// The largest sums a kernel may keep in 16-bit lanes: rows of all +1 and all -1 against activations of all -128
/// or all 127, over 14 blocks (two of the AVX2 GEMM's seven-block i16 groups), for every token count that runs
/// a GEMM group: every kernel gives the scalar kernel's output bit for bit.
#[test]
fn products_at_the_i16_bound_stay_exact() {
    let (rows, cols) = (4, 14 * 256);
    let weights: Vec<i8> = (0..rows * cols).map(|i| [1, -1, 1, 0][i / cols]).collect();
    let w =
        TernaryMatrix::from_codes_with_scale(&TernaryCodes::from_ternary(rows, cols, &weights).unwrap(), 1.0).unwrap();
    for tokens in 1..=5 {
        let codes: Vec<i8> = (0..tokens * cols).map(|i| if (i / cols) % 2 == 0 { -128 } else { 127 }).collect();
        let x = QuantizedActivations::from_codes(&codes, &vec![1.0; tokens], tokens, cols).unwrap();
        let pool = ThreadPool::new(1).unwrap();
        let mut want = vec![0f32; tokens * rows];
        ternary_matmul_with(Kernel::Scalar, &w, &x, &mut want, &pool).unwrap();
        assert_eq!(want[0], -128.0 * cols as f32, "the scalar sum of an all +1 row against all -128");
        for kernel in Kernel::available() {
            let mut y = vec![0f32; tokens * rows];
            ternary_matmul_with(kernel, &w, &x, &mut y, &pool).unwrap();
            assert_eq!(y, want, "{kernel}, {tokens} tokens");
        }
    }
}

/// Prefill-sized products (every token count up to 11, so each GEMM kernel's token groups and the leftover tokens
/// both run; partial tiles, padded widths and rows of several column chunks; extreme activations): every kernel
/// and thread count gives the scalar kernel's output bit for bit, and `ternary_matmul_many` gives each weight's
/// own product.
#[test]
fn multi_token_products_match_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(21);
    // 6915 and 8193 columns: rows the GEMM runs in two and three column chunks.
    for &(rows, cols) in &[(7, 300), (16, 512), (33, 2560), (9, 256), (5, 6915), (3, 8193)] {
        let w = TernaryMatrix::from_codes(
            &random_codes(&mut rng, rows, cols),
            (0..rows).map(|_| rng.random_range(0.01..2.0f32)).collect(),
        )
        .unwrap();
        let other = TernaryMatrix::from_codes_with_scale(&random_codes(&mut rng, 5, cols), 0.5).unwrap();
        for tokens in 1..=11 {
            let codes: Vec<i8> = (0..tokens * cols)
                .map(|i| {
                    if i % 97 == 0 {
                        -128
                    } else if i % 89 == 0 {
                        127
                    } else {
                        rng.random_range(-128..=127i8)
                    }
                })
                .collect();
            let scales: Vec<f32> = (0..tokens).map(|_| rng.random_range(1.0..100.0f32)).collect();
            let x = QuantizedActivations::from_codes(&codes, &scales, tokens, cols).unwrap();
            let pool1 = ThreadPool::new(1).unwrap();
            let mut want = vec![0f32; tokens * rows];
            ternary_matmul_with(Kernel::Scalar, &w, &x, &mut want, &pool1).unwrap();
            let mut want_other = vec![0f32; tokens * 5];
            ternary_matmul_with(Kernel::Scalar, &other, &x, &mut want_other, &pool1).unwrap();
            for threads in [1, 2] {
                let pool = ThreadPool::new(threads).unwrap();
                for kernel in Kernel::available() {
                    let mut y = vec![0f32; tokens * rows];
                    ternary_matmul_with(kernel, &w, &x, &mut y, &pool).unwrap();
                    assert_eq!(y, want, "{kernel}/{threads}t, {rows}x{cols}, {tokens} tokens");
                    let (mut a, mut b) = (vec![0f32; tokens * rows], vec![0f32; tokens * 5]);
                    bitnet_kernels::ternary_matmul_many_with(
                        kernel,
                        &[w.view(), other.view()],
                        &x,
                        &mut [&mut a, &mut b],
                        &pool,
                    )
                    .unwrap();
                    assert_eq!((a, b), (want.clone(), want_other.clone()), "{kernel}/{threads}t many, {tokens} tokens");
                }
            }
        }
    }
}

/// Every output lands in its own place whatever the split: weights of 75 whole tiles and a partial one (the
/// threads' chunks begin and end at odd tiles), two weights in one dispatch (a weight boundary inside a chunk),
/// and token counts below, at and above the GEMM kernels' groups. Expected:
/// `(acc - sum_k q[k]) * (g_n * (1 / s_m))` from naive integer sums, for every kernel and 1-3 threads.
#[test]
fn outputs_land_in_place_for_every_chunk_split() {
    let mut rng = StdRng::seed_from_u64(23);
    let cols = 512;
    let shapes = [303usize, 41];
    let codes: Vec<TernaryCodes> = shapes.iter().map(|&rows| random_codes(&mut rng, rows, cols)).collect();
    let weights: Vec<TernaryMatrix> = codes
        .iter()
        .map(|c| TernaryMatrix::from_codes(c, (0..c.rows()).map(|_| rng.random_range(0.01..2.0f32)).collect()).unwrap())
        .collect();
    for tokens in [1usize, 2, 5, 9] {
        let x = random_acts(&mut rng, tokens, cols);
        let want: Vec<Vec<f32>> = codes
            .iter()
            .zip(&weights)
            .map(|(c, w)| {
                (0..tokens)
                    .flat_map(|m| {
                        let qsum: i32 = x.row(m).iter().map(|&q| q as i32).sum();
                        let inv_s = 1.0 / x.scales()[m];
                        naive_accumulators(c, x.row(m))
                            .into_iter()
                            .zip(w.row_scales())
                            .map(move |(acc, &g)| (acc - qsum) as f32 * (g * inv_s))
                    })
                    .collect()
            })
            .collect();
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads).unwrap();
            for kernel in Kernel::available() {
                let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&rows| vec![f32::NAN; tokens * rows]).collect();
                let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
                let views: Vec<_> = weights.iter().map(|w| w.view()).collect();
                bitnet_kernels::ternary_matmul_many_with(kernel, &views, &x, &mut outs, &pool).unwrap();
                for (j, (y, want)) in ys.iter().zip(&want).enumerate() {
                    let same = y.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kernel}/{threads}t, weight {j}, {tokens} tokens");
                }
            }
        }
    }
}

#[test]
fn f32_output_matches_dequantized_reference_for_every_kernel_and_thread_count() {
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, cols, tokens) = (37, 700, 3);
    let codes = random_codes(&mut rng, rows, cols);
    let scales: Vec<f32> = (0..rows).map(|_| rng.random_range(0.01..2.0f32)).collect();
    let w = TernaryMatrix::from_codes(&codes, scales.clone()).unwrap();
    let xf: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-3.0..3.0f32)).collect();
    let x = QuantizedActivations::quantize(&xf, tokens, cols).unwrap();
    // Reference: dequantized weights times dequantized activations, in f64.
    let mut reference = vec![0f64; tokens * rows];
    for m in 0..tokens {
        for n in 0..rows {
            let mut s = 0f64;
            for k in 0..cols {
                let wv = (codes.row(n)[k] as f64 - 1.0) * scales[n] as f64;
                s += wv * x.row(m)[k] as f64 / x.scales()[m] as f64;
            }
            reference[m * rows + n] = s;
        }
    }
    let mut first: Option<Vec<f32>> = None;
    for threads in 1..=3 {
        let pool = ThreadPool::new(threads).unwrap();
        for kernel in Kernel::available() {
            let mut y = vec![0f32; tokens * rows];
            ternary_matmul_with(kernel, &w, &x, &mut y, &pool).unwrap();
            for (i, (&got, &want)) in y.iter().zip(&reference).enumerate() {
                let tol = 1e-5 * want.abs().max(1.0);
                assert!((got as f64 - want).abs() <= tol, "{kernel}/{threads}t at {i}: {got} vs {want}");
            }
            match &first {
                None => first = Some(y),
                Some(f) => assert_eq!(&y, f, "output differs for kernel {kernel} with {threads} threads"),
            }
        }
    }
}

#[test]
fn int8_dense_kernels_match_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(5);
    // (300, 200): split across the pool's threads (the VNNI copy then prefetches at its shared distance).
    for &(rows, cols) in &[(1, 1), (5, 300), (17, 2560), (3, 1000), (8, 64), (9, 127), (300, 200)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let m = Int8Matrix::quantize(&w, rows, cols).unwrap();
        let xf: Vec<f32> = (0..3 * cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let x = QuantizedActivations::quantize(&xf, 3, cols).unwrap();
        // The same codes unpadded (as a tensor holds them), and with extreme values: +-127 against -128.
        let mut codes: Vec<i8> = (0..rows).flat_map(|n| m.view().row(n).to_vec()).collect();
        let scales = m.view().row_scales().to_vec();
        for views in [false, true] {
            if views {
                codes.iter_mut().step_by(7).for_each(|c| *c = if *c >= 0 { 127 } else { -127 });
            }
            let view = Int8View::new(&codes, rows, cols, cols, &scales).unwrap();
            for token in 0..3 {
                let mut expected = vec![0i32; rows];
                int8_accumulators(Kernel::Scalar, view, &x, token, &mut expected).unwrap();
                let act = &x.row(token)[..cols];
                let naive: Vec<i32> =
                    (0..rows).map(|n| view.row(n).iter().zip(act).map(|(&a, &b)| a as i32 * b as i32).sum()).collect();
                assert_eq!(expected, naive);
                for kernel in Kernel::available() {
                    let mut acc = vec![0i32; rows];
                    int8_accumulators(kernel, view, &x, token, &mut acc).unwrap();
                    assert_eq!(acc, expected, "int8 kernel {kernel}, {rows}x{cols}");
                }
            }
            // The GEMV over all tokens, any thread count, equals the scalar accumulators scaled.
            let pool = ThreadPool::new(2).unwrap();
            let mut want = vec![0f32; 3 * rows];
            int8_gemv_with(Kernel::Scalar, view, &x, &mut want, &pool).unwrap();
            for kernel in Kernel::available() {
                let mut y = vec![0f32; 3 * rows];
                int8_gemv_with(kernel, view, &x, &mut y, &pool).unwrap();
                assert_eq!(y, want, "int8 GEMV {kernel}");
            }
        }
    }
}

/// Random Q6_K blocks: every code, scale and sign pattern (scales include -128), with a finite f16 block scale.
fn random_q6k(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..rows * cols / 256 * Q6K_BLOCK_BYTES).map(|_| rng.random()).collect();
    for block in bytes.chunks_exact_mut(Q6K_BLOCK_BYTES) {
        let d = half::f16::from_f32(rng.random_range(-0.01..0.01f32));
        block[208..].copy_from_slice(&d.to_bits().to_le_bytes());
    }
    bytes
}

/// Random Q4 super-blocks: every code, finite f16 scales of both signs (subnormal ones included).
fn random_q4(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..rows * cols / 256 * Q4_SUPER_BLOCK_BYTES).map(|_| rng.random()).collect();
    for block in bytes.chunks_exact_mut(Q4_SUPER_BLOCK_BYTES) {
        for g in 0..8 {
            let d = match rng.random_range(0..4) {
                0 => half::f16::from_bits(rng.random_range(1..0x400u16) | rng.random_range(0..2u16) << 15),
                _ => half::f16::from_f32(rng.random_range(-0.05..0.05f32)),
            };
            block[2 * g..2 * g + 2].copy_from_slice(&d.to_bits().to_le_bytes());
        }
    }
    bytes
}

/// A generator of random blocks `(rng, rows, cols)`.
type RandomBlocks = fn(&mut StdRng, usize, usize) -> Vec<u8>;

/// The scale that multiplies the `i`-th exact sum of a row: Q6_K's block scale `d` (its sub-block scales are
/// inside the integer sum), Q4's group scale.
fn sum_scale(format: BlockFormat, row: &[u8], i: usize) -> f64 {
    let at = match format {
        BlockFormat::Q6K => i * Q6K_BLOCK_BYTES + 208,
        BlockFormat::Q4 => i / 8 * Q4_SUPER_BLOCK_BYTES + 2 * (i % 8),
    };
    half::f16::from_le_bytes([row[at], row[at + 1]]).to_f32() as f64
}

#[test]
fn block_kernels_match_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(11);
    let pool = ThreadPool::new(2).unwrap();
    // (format, random blocks, how far a quantized weight may land from its original in [-1, 1]: about half a
    // step, 1/32 of the largest for Q6_K and 1/16 of the group's largest for Q4).
    let formats: [(BlockFormat, RandomBlocks, f32); 2] =
        [(BlockFormat::Q6K, random_q6k, 1.0 / 40.0), (BlockFormat::Q4, random_q4, 1.0 / 7.0)];
    for (format, random, tolerance) in formats {
        let width = format.sum_width();
        for &(rows, cols) in &[(1, 256), (5, 512), (17, 2560), (300, 256)] {
            let bytes = random(&mut rng, rows, cols);
            let w = BlockView::new(format, &bytes, rows, cols).unwrap();
            let xf: Vec<f32> = (0..3 * cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
            let mut x = QuantizedActivations::quantize(&xf, 3, cols).unwrap();
            if rows == 5 {
                // Extreme activations: every code -128 or 127.
                let codes: Vec<i8> = (0..3 * cols).map(|i| if i % 3 == 0 { -128 } else { 127 }).collect();
                x = QuantizedActivations::from_codes(&codes, &[1.0, 2.0, 3.0], 3, cols).unwrap();
            }
            // The exact integer sums equal a naive sum over the dequantized weights divided by their scale.
            let mut dense = vec![0f32; cols];
            for n in 0..rows {
                w.dequantize_row(n, &mut dense).unwrap();
                for token in 0..3 {
                    let mut sums = vec![0i32; cols / width];
                    block_sums(w, &x, token, n, &mut sums).unwrap();
                    for (i, &sum) in sums.iter().enumerate() {
                        let d = sum_scale(format, w.row(n), i);
                        let range = i * width..(i + 1) * width;
                        let naive: f64 = range.map(|e| dense[e] as f64 * x.row(token)[e] as f64).sum();
                        if d != 0.0 {
                            assert!((naive / d - sum as f64).abs() < 1e-3 * (1.0 + sum.abs() as f64), "{format:?} {i}");
                        }
                    }
                }
            }
            let mut want = vec![0f32; 3 * rows];
            block_gemv_with(Kernel::Scalar, w, &x, &mut want, &pool).unwrap();
            for kernel in Kernel::available() {
                let mut y = vec![0f32; 3 * rows];
                block_gemv_with(kernel, w, &x, &mut y, &pool).unwrap();
                assert_eq!(y, want, "{format:?} GEMV {kernel}, {rows}x{cols}");
            }
        }
        // A quantized matrix: the product equals the f32 product of the dequantized weights and activations, and
        // the weights are within `tolerance` of the originals.
        let wf: Vec<f32> = (0..8 * 512).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let m = BlockMatrix::quantize(format, &wf, 8, 512).unwrap();
        let xf: Vec<f32> = (0..512).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let x = QuantizedActivations::quantize(&xf, 1, 512).unwrap();
        let mut y = vec![0f32; 8];
        block_gemv_with(Kernel::selected(), m.view(), &x, &mut y, &pool).unwrap();
        let mut dense = vec![0f32; 512];
        for n in 0..8 {
            m.view().dequantize_row(n, &mut dense).unwrap();
            for (a, b) in wf[n * 512..(n + 1) * 512].iter().zip(&dense) {
                assert!((a - b).abs() <= tolerance, "{format:?}: {a} quantized to {b}");
            }
            let exact: f32 =
                dense.iter().zip(&x.row(0)[..512]).map(|(a, &q)| a * q as f32).sum::<f32>() / x.scales()[0];
            assert!((y[n] - exact).abs() < 1e-4 * (1.0 + exact.abs()), "{format:?} row {n}: {} vs {exact}", y[n]);
        }
    }
}

#[test]
fn float_dense_kernels_agree_and_match_f64() {
    use bitnet_kernels::dense::{bf16_gemv_with, f32_gemv_with};
    let mut rng = StdRng::seed_from_u64(9);
    let pool = ThreadPool::new(2).unwrap();
    // (300, 130): split across the pool's threads (the AVX-512 copies then prefetch at their shared distance),
    // with a 2-value tail per row.
    for &(rows, cols) in &[(1, 1), (7, 63), (33, 2560), (5, 1000), (300, 130)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let wb: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let reference = |bf16: bool| -> Vec<f64> {
            (0..rows)
                .map(|n| {
                    (0..cols)
                        .map(|k| {
                            let wv =
                                if bf16 { f32::from_bits((wb[n * cols + k] as u32) << 16) } else { w[n * cols + k] };
                            wv as f64 * x[k] as f64
                        })
                        .sum()
                })
                .collect()
        };
        let (ref_f32, ref_bf16) = (reference(false), reference(true));
        let (mut scalar_f32, mut scalar_bf16) = (vec![0f32; rows], vec![0f32; rows]);
        f32_gemv_with(Kernel::Scalar, &w, rows, cols, &x, &mut scalar_f32, &pool).unwrap();
        bf16_gemv_with(Kernel::Scalar, &wb, rows, cols, &x, &mut scalar_bf16, &pool).unwrap();
        for (got, want) in scalar_f32.iter().zip(&ref_f32).chain(scalar_bf16.iter().zip(&ref_bf16)) {
            assert!((*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()), "{got} vs {want}");
        }
        for kernel in Kernel::available() {
            let (mut y32, mut y16) = (vec![0f32; rows], vec![0f32; rows]);
            f32_gemv_with(kernel, &w, rows, cols, &x, &mut y32, &pool).unwrap();
            bf16_gemv_with(kernel, &wb, rows, cols, &x, &mut y16, &pool).unwrap();
            assert_eq!(y32, scalar_f32, "f32 GEMV, kernel {kernel}");
            assert_eq!(y16, scalar_bf16, "bf16 GEMV, kernel {kernel}");
        }
        // Several tokens in one call: `y[t]` is the single-token result of `x[t]`, bit for bit.
        let tokens = 3;
        let xs: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        for kernel in Kernel::available() {
            let (mut y32, mut y16) = (vec![0f32; tokens * rows], vec![0f32; tokens * rows]);
            f32_gemv_with(kernel, &w, rows, cols, &xs, &mut y32, &pool).unwrap();
            bf16_gemv_with(kernel, &wb, rows, cols, &xs, &mut y16, &pool).unwrap();
            for t in 0..tokens {
                let (mut one32, mut one16) = (vec![0f32; rows], vec![0f32; rows]);
                let xt = &xs[t * cols..(t + 1) * cols];
                f32_gemv_with(kernel, &w, rows, cols, xt, &mut one32, &pool).unwrap();
                bf16_gemv_with(kernel, &wb, rows, cols, xt, &mut one16, &pool).unwrap();
                assert_eq!(&y32[t * rows..(t + 1) * rows], &one32[..], "f32 token {t}, kernel {kernel}");
                assert_eq!(&y16[t * rows..(t + 1) * rows], &one16[..], "bf16 token {t}, kernel {kernel}");
            }
        }
        let err = f32_gemv_with(Kernel::Scalar, &w, rows, cols, &xs[..cols + 1], &mut vec![0f32; 2 * rows], &pool);
        assert!(err.is_err() || cols == 1, "a partial token is a shape error");
    }
}

/// The activation quantizer written as plainly as possible: sequential absmax, then each value on its own.
fn naive_quantize(x: &[f32]) -> (f32, Vec<i8>, i32) {
    if x.iter().any(|v| !v.is_finite()) {
        return (f32::NAN, vec![0; x.len()], 0);
    }
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = 127.0 / absmax.max(1e-5);
    let codes: Vec<i8> = x.iter().map(|&v| (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8).collect();
    let sum = codes.iter().map(|&c| c as i32).sum();
    (scale, codes, sum)
}

#[test]
fn activation_quantization_copies_match_the_naive_quantizer() {
    use bitnet_kernels::quant::quantize_row_absmax_with;
    let mut rng = StdRng::seed_from_u64(11);
    let mut inputs: Vec<Vec<f32>> = [1usize, 5, 15, 16, 17, 255, 2560, 6913]
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(-3.0..3.0f32)).collect())
        .collect();
    // Ties at every position of a lane (scale exactly 1: round half to even decides), zeros, extremes, NaN, inf.
    inputs.push((0..40).map(|i| if i == 7 { 127.0 } else { (i as f32 - 20.0) + 0.5 }).collect());
    inputs.push(vec![0.0; 33]);
    inputs.push(vec![-1e30, 1e-30, 3.0, -0.0]);
    inputs.push(vec![1.0, f32::NAN, -2.0, 0.25]);
    inputs.push(vec![1.0, f32::INFINITY, -2.0, 0.25]);
    inputs.push((0..40).map(|i| if i == 33 { f32::NEG_INFINITY } else { i as f32 }).collect());
    for x in &inputs {
        let (scale, codes, sum) = naive_quantize(x);
        for kernel in Kernel::available() {
            let mut got = vec![0i8; x.len()];
            let (s, total) = quantize_row_absmax_with(kernel, x, &mut got);
            assert_eq!(s.to_bits(), scale.to_bits(), "scale, kernel {kernel}, {} values", x.len());
            assert_eq!(got, codes, "codes, kernel {kernel}, {} values", x.len());
            assert_eq!(total, sum, "sum, kernel {kernel}, {} values", x.len());
        }
    }
}

#[test]
fn one_dispatch_over_several_weights_equals_one_product_per_weight() {
    use bitnet_kernels::{ternary_matmul_many_with, KernelError};
    let mut rng = StdRng::seed_from_u64(13);
    let cols = 300;
    // Row counts that end mid-tile, so a thread's range crosses weights at odd places.
    let weights: Vec<TernaryMatrix> = [9usize, 4, 1, 22]
        .iter()
        .map(|&rows| {
            let scales = (0..rows).map(|_| rng.random_range(0.01..2.0f32)).collect();
            TernaryMatrix::from_codes(&random_codes(&mut rng, rows, cols), scales).unwrap()
        })
        .collect();
    let views: Vec<_> = weights.iter().map(|w| w.view()).collect();
    for tokens in [1usize, 3] {
        let xf: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-3.0..3.0f32)).collect();
        let x = QuantizedActivations::quantize(&xf, tokens, cols).unwrap();
        for threads in 1..=3 {
            let pool = ThreadPool::new(threads).unwrap();
            for kernel in Kernel::available() {
                let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![f32::NAN; tokens * w.rows()]).collect();
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                ternary_matmul_many_with(kernel, &views, &x, &mut ys, &pool).unwrap();
                for (w, got) in weights.iter().zip(&outs) {
                    let mut alone = vec![0f32; tokens * w.rows()];
                    ternary_matmul_with(kernel, w, &x, &mut alone, &pool).unwrap();
                    assert_eq!(got, &alone, "{kernel}/{threads}t, {tokens} tokens, {} rows", w.rows());
                }
            }
        }
    }
    // Shape errors are reported, not written past.
    let x = QuantizedActivations::quantize(&[1.0; 300], 1, 300).unwrap();
    let mut one = vec![0f32; 9];
    let err = ternary_matmul_many_with(Kernel::Scalar, &views, &x, &mut [&mut one], &ThreadPool::new(1).unwrap());
    assert!(matches!(err, Err(KernelError::ShapeMismatch { .. })), "{err:?}");
    let mut short = vec![0f32; 8];
    let err =
        ternary_matmul_many_with(Kernel::Scalar, &views[..1], &x, &mut [&mut short], &ThreadPool::new(1).unwrap());
    assert!(err.is_err());
}

#[test]
fn f16_widening_is_exact_for_every_bit_pattern() {
    use bitnet_kernels::dense::f16_to_f32;
    for bits in 0..=u16::MAX {
        let (got, want) = (f16_to_f32(bits), half::f16::from_bits(bits).to_f32());
        if want.is_nan() {
            assert!(got.is_nan() && got.is_sign_negative() == want.is_sign_negative(), "{bits:#06x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}: {got} vs {want}");
        }
    }
}

#[test]
fn f16_gemv_matches_f64_and_agrees_across_kernels() {
    use bitnet_kernels::dense::f16_gemv_with;
    let mut rng = StdRng::seed_from_u64(21);
    let pool = ThreadPool::new(2).unwrap();
    for &(rows, cols, tokens) in &[(1, 1, 1), (7, 63, 1), (33, 2560, 1), (5, 1000, 3), (300, 130, 1)] {
        // Include subnormal halves (|w| < 6.1e-5) next to ordinary ones.
        let w: Vec<u16> = (0..rows * cols)
            .map(|i| {
                let v = if i % 7 == 0 { rng.random_range(-6e-5..6e-5f32) } else { rng.random_range(-1.0..1.0f32) };
                half::f16::from_f32(v).to_bits()
            })
            .collect();
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let mut first: Option<Vec<f32>> = None;
        for kernel in Kernel::available() {
            let mut y = vec![0f32; tokens * rows];
            f16_gemv_with(kernel, &w, rows, cols, &x, &mut y, &pool).unwrap();
            for t in 0..tokens {
                for n in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|k| half::f16::from_bits(w[n * cols + k]).to_f64() * x[t * cols + k] as f64)
                        .sum();
                    let got = y[t * rows + n] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{kernel}: {got} vs {want}");
                }
            }
            match &first {
                None => first = Some(y),
                Some(f) => assert_eq!(&y, f, "f16 GEMV, kernel {kernel}"),
            }
        }
    }
}

/// `y[m, n]` of a grouped matrix in f64 from the unpacked codes and row-major group scales.
fn naive_grouped(codes: &TernaryCodes, group: usize, scales: &[f32], x: &QuantizedActivations) -> Vec<f64> {
    let (rows, cols) = (codes.rows(), codes.cols());
    let mut out = Vec::with_capacity(x.rows() * rows);
    for m in 0..x.rows() {
        let act = x.row(m);
        for n in 0..rows {
            let s: f64 = (0..cols)
                .map(|k| (codes.row(n)[k] as f64 - 1.0) * act[k] as f64 * scales[n * cols / group + k / group] as f64)
                .sum();
            out.push(s / x.scales()[m] as f64);
        }
    }
    out
}

#[test]
fn grouped_scale_kernels_match_scalar_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(42);
    // (rows, cols, group): partial tiles, partial blocks (cols a multiple of the group, not of 256), and
    // enough tiles to split over threads.
    let shapes =
        [(1, 64, 64), (5, 192, 64), (7, 320, 64), (9, 384, 128), (4, 768, 256), (70, 2560, 128), (300, 1088, 64)];
    for &(rows, cols, group) in &shapes {
        let codes = random_codes(&mut rng, rows, cols);
        // Scales of very different magnitudes (and signs) make the f32 summation order visible.
        let scales: Vec<f32> = (0..rows * cols / group)
            .map(|_| rng.random_range(-3.0..3.0f32) * 10f32.powi(rng.random_range(-3..4)))
            .collect();
        let w = TernaryMatrix::from_codes_grouped(&codes, group, &scales).unwrap();
        // One group per row is a row scale; more make a grouped matrix.
        assert_eq!(w.group_scales().is_some(), cols > group, "{rows}x{cols}/{group}");
        let x = random_acts(&mut rng, 3, cols);
        let reference = naive_grouped(&codes, group, &scales, &x);
        let mut scalar = vec![0f32; 3 * rows];
        ternary_matmul_with(Kernel::Scalar, &w, &x, &mut scalar, &ThreadPool::new(1).unwrap()).unwrap();
        for (i, (&got, &want)) in scalar.iter().zip(&reference).enumerate() {
            let bound = 1e-5 * (1.0 + want.abs()) + 1e-3 * scales.iter().map(|s| s.abs() as f64).fold(0.0, f64::max);
            assert!((got as f64 - want).abs() <= bound, "{rows}x{cols}/{group} output {i}: {got} vs {want}");
        }
        for kernel in Kernel::available() {
            for threads in [1, 2, 3] {
                let mut y = vec![0f32; 3 * rows];
                ternary_matmul_with(kernel, &w, &x, &mut y, &ThreadPool::new(threads).unwrap()).unwrap();
                let same = y.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{rows}x{cols}/{group}: kernel {kernel} with {threads} threads differs from scalar");
            }
        }
        let mut acc = vec![0i32; rows];
        let refused = ternary_accumulators(Kernel::Scalar, &w, &x, 0, &mut acc).is_err();
        assert_eq!(refused, cols > group, "a grouped matrix has no single integer sum");
    }
}

#[test]
fn grouped_kernels_survive_extreme_activations() {
    // All activations at -128 and all codes 0 or 2: the largest plane sums the i16 stages must hold.
    for code in [0u8, 2] {
        let (rows, cols) = (4, 512);
        let codes = TernaryCodes::new(rows, cols, vec![code; rows * cols]).unwrap();
        let scales: Vec<f32> = (0..rows * cols / 64).map(|i| 1.0 + i as f32).collect();
        let w = TernaryMatrix::from_codes_grouped(&codes, 64, &scales).unwrap();
        let x = QuantizedActivations::from_codes(&vec![-128i8; cols], &[1.0], 1, cols).unwrap();
        let want = naive_grouped(&codes, 64, &scales, &x);
        for kernel in Kernel::available() {
            let mut y = vec![0f32; rows];
            ternary_matmul_with(kernel, &w, &x, &mut y, &ThreadPool::new(1).unwrap()).unwrap();
            for (got, want) in y.iter().zip(&want) {
                assert_eq!(*got as f64, *want, "kernel {kernel}, code {code}");
            }
        }
    }
}
