//! The five-trit layout ([`TernaryLayout::Trits5`]): it holds the same codes as the 2-bit layout, and every
//! kernel that reads it gives the 2-bit layout's products bit for bit.

use bitnet_kernels::{
    ternary_accumulators, ternary_matmul_many_with, ternary_matmul_with, Kernel, KernelError, QuantizedActivations,
    TernaryCodes, TernaryLayout, TernaryMatrix, TernaryView, ThreadPool,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_codes(rng: &mut StdRng, rows: usize, cols: usize) -> TernaryCodes {
    TernaryCodes::new(rows, cols, (0..rows * cols).map(|_| rng.random_range(0..3u8)).collect()).unwrap()
}

/// The kernels of this CPU that read the five-trit layout (checked: on x86-64 with VNNI it must include VNNI).
fn trits5_kernels() -> Vec<Kernel> {
    let w = TernaryMatrix::from_codes_in(TernaryLayout::Trits5, &TernaryCodes::new(1, 1, vec![2]).unwrap(), vec![1.0])
        .unwrap();
    let x = QuantizedActivations::zeros_for(TernaryLayout::Trits5, 1, 1).unwrap();
    let kernels: Vec<Kernel> = Kernel::available()
        .into_iter()
        .filter(|&k| match ternary_matmul_with(k, &w, &x, &mut [0.0], &ThreadPool::new(1).unwrap()) {
            Ok(()) => true,
            Err(KernelError::LayoutUnsupported { .. }) => false,
            Err(e) => panic!("{k}: {e}"),
        })
        .collect();
    assert!(kernels.contains(&Kernel::Scalar), "{kernels:?}");
    if Kernel::available().contains(&Kernel::Avx512Vnni) {
        assert!(kernels.contains(&Kernel::Avx512Vnni), "{kernels:?}");
    }
    kernels
}

#[test]
fn five_trit_matrices_hold_the_same_codes() {
    let mut rng = StdRng::seed_from_u64(11);
    // Widths around the 320-weight block; 1030 rows make packing split over threads with a partial last tile.
    for (rows, cols) in [(1, 1), (3, 319), (4, 320), (5, 321), (9, 641), (6, 6912 + 3), (1030, 300)] {
        let codes = random_codes(&mut rng, rows, cols);
        let scales: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
        let two_bit = TernaryMatrix::from_codes(&codes, scales.clone()).unwrap();
        let five = two_bit.to_layout(TernaryLayout::Trits5).unwrap();
        assert_eq!(five.layout(), TernaryLayout::Trits5);
        assert_eq!(five.cols_padded(), cols.div_ceil(320) * 320);
        assert_eq!(five.data().len(), five.rows_padded() * five.cols_padded() / 5, "1.6 bits per weight");
        assert_eq!(five.to_codes(), codes, "{rows}x{cols}");
        assert_eq!(five.row_scales(), &scales[..]);
        let view = TernaryView::new_in(TernaryLayout::Trits5, rows, cols, five.data(), five.scales()).unwrap();
        assert_eq!(view.dequantize(), two_bit.view().dequantize());
        assert_eq!(five.to_layout(TernaryLayout::Bits2).unwrap().data(), two_bit.data(), "and back");
    }
}

#[test]
fn five_trit_bytes_sit_as_documented() {
    // Row 0, block 0: weights 0, 64, 128, 192, 256 carry codes 2, 1, 0, 2, 1: v = 162 + 27 + 0 + 6 + 1 = 196,
    // stored as ceil(196 * 256 / 243) = 207. Padding (code 1 everywhere) is v = 121, byte 128.
    let mut raw = vec![1u8; 330];
    raw[0] = 2;
    raw[128] = 0;
    raw[192] = 2;
    let m = TernaryMatrix::from_codes_in(TernaryLayout::Trits5, &TernaryCodes::new(1, 330, raw).unwrap(), vec![1.0])
        .unwrap();
    assert_eq!((m.cols_padded(), m.rows_padded()), (640, 4));
    let tile = m.tile_bytes(0);
    assert_eq!(tile.len(), 2 * 4 * 64);
    assert_eq!(tile[0], 207);
    assert!(tile[1..].iter().all(|&b| b == 128), "padding weights and rows are zeros");
    assert_eq!(m.data().as_ptr() as usize % 64, 0);
}

#[test]
fn five_trit_products_equal_the_2_bit_products() {
    let kernels = trits5_kernels();
    eprintln!("five-trit kernels: {kernels:?}");
    let mut rng = StdRng::seed_from_u64(5);
    for (rows, cols) in [(1, 1), (5, 319), (8, 320), (7, 1000), (16, 2560), (6, 6912 + 3), (300, 640)] {
        let codes = random_codes(&mut rng, rows, cols);
        let scales: Vec<f32> = (0..rows).map(|_| rng.random_range(0.01..2.0f32)).collect();
        let two_bit = TernaryMatrix::from_codes(&codes, scales).unwrap();
        let five = two_bit.to_layout(TernaryLayout::Trits5).unwrap();
        // Up to 11 tokens: every GEMM kernel's token groups and the leftover tokens both run.
        for tokens in [1, 2, 3, 5, 11] {
            let act_codes: Vec<i8> = (0..tokens * cols).map(|_| rng.random_range(-128..=127i8)).collect();
            let act_scales: Vec<f32> = (0..tokens).map(|_| rng.random_range(1.0..200.0f32)).collect();
            let x5 = acts(TernaryLayout::Trits5, &act_codes, &act_scales, tokens, cols);
            let x2 = acts(TernaryLayout::Bits2, &act_codes, &act_scales, tokens, cols);
            // Five-trit activations cover whole 320-weight blocks and whole 256-weight blocks (the GEMM's).
            assert_eq!(
                (x5.cols_padded(), x2.cols_padded()),
                ((cols.div_ceil(320) * 320).div_ceil(256) * 256, cols.div_ceil(256) * 256)
            );
            let mut want = vec![0f32; tokens * rows];
            ternary_matmul_with(Kernel::Scalar, &two_bit, &x2, &mut want, &ThreadPool::new(1).unwrap()).unwrap();
            for &kernel in &kernels {
                for token in 0..tokens {
                    let mut a2 = vec![0i32; rows];
                    let mut a5 = vec![0i32; rows];
                    ternary_accumulators(Kernel::Scalar, &two_bit, &x2, token, &mut a2).unwrap();
                    ternary_accumulators(kernel, &five, &x5, token, &mut a5).unwrap();
                    assert_eq!(a5, a2, "{kernel}, {rows}x{cols}, token {token}");
                }
                for threads in 1..=3 {
                    let mut y = vec![0f32; tokens * rows];
                    ternary_matmul_with(kernel, &five, &x5, &mut y, &ThreadPool::new(threads).unwrap()).unwrap();
                    assert_eq!(y, want, "{kernel}, {rows}x{cols}, {tokens} tokens, {threads} threads");
                }
            }
        }
    }
}

/// Activations of the given codes and scales, padded for `layout`.
fn acts(layout: TernaryLayout, codes: &[i8], scales: &[f32], tokens: usize, cols: usize) -> QuantizedActivations {
    QuantizedActivations::from_codes_for(layout, codes, scales, tokens, cols).unwrap()
}

/// The largest sums: rows of all +1 and all -1 against activations of all -128 or all 127, wide enough that the
/// VNNI kernel folds its accumulators more than once (every 1024 blocks).
#[test]
fn five_trit_sums_stay_exact_at_the_extremes() {
    let cols = 2100 * 320 + 7;
    let weights: Vec<i8> = (0..4 * cols).map(|i| [1, -1, 1, 0][i / cols]).collect();
    let codes = TernaryCodes::from_ternary(4, cols, &weights).unwrap();
    let five = TernaryMatrix::from_codes_in(TernaryLayout::Trits5, &codes, vec![1.0; 4]).unwrap();
    for act in [-128i8, 127] {
        let x5 = acts(TernaryLayout::Trits5, &vec![act; cols], &[1.0], 1, cols);
        for &kernel in &trits5_kernels() {
            let mut acc = vec![0i32; 4];
            ternary_accumulators(kernel, &five, &x5, 0, &mut acc).unwrap();
            let a = act as i32 * cols as i32;
            assert_eq!(acc, vec![2 * a, 0, 2 * a, a], "{kernel}, activations {act}");
        }
    }
}

#[test]
fn five_trit_misuse_is_refused() {
    let codes = TernaryCodes::new(2, 128, vec![2; 256]).unwrap();
    let grouped = TernaryMatrix::from_codes_grouped(&codes, 64, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!(matches!(grouped.to_layout(TernaryLayout::Trits5), Err(KernelError::LayoutUnsupported { .. })));
    // Foreign 2-bit bytes holding code 3 (row 1, weight 64 + 5: byte 5 of its block, bits 2-3) are refused by
    // name and place, not packed as some other trit.
    let mut bytes = TernaryMatrix::from_codes(&codes, vec![1.0; 2]).unwrap().data().to_vec();
    bytes[64 + 5] |= 0b1100;
    let foreign = TernaryMatrix::from_view(&TernaryView::new(2, 128, &bytes, &[1.0, 1.0]).unwrap());
    let err = foreign.to_layout(TernaryLayout::Trits5).unwrap_err();
    assert!(matches!(err, KernelError::InvalidCode { code: 3, index: 197 }), "{err:?}");
    let five = TernaryMatrix::from_codes_in(TernaryLayout::Trits5, &codes, vec![1.0; 2]).unwrap();
    assert!(TernaryView::new_in(TernaryLayout::Trits5, 2, 128, five.data(), grouped.scales()).is_err(), "group scales");
    // Wrong byte counts for a view: 600 weights take two five-trit blocks but three 2-bit ones.
    let wide = TernaryMatrix::from_codes_in(
        TernaryLayout::Trits5,
        &TernaryCodes::new(2, 600, vec![0; 1200]).unwrap(),
        vec![1.0; 2],
    )
    .unwrap();
    assert!(TernaryView::new_in(TernaryLayout::Trits5, 2, 600, &wide.data()[1..], wide.scales()).is_err());
    assert!(TernaryView::new(2, 600, wide.data(), wide.scales()).is_err(), "five-trit bytes as 2-bit bytes");
    // Activations padded for the 2-bit layout do not fit 700 weights (768 per row, against 960 rounded to 1024).
    let pool = ThreadPool::new(1).unwrap();
    let wider = TernaryMatrix::from_codes_in(
        TernaryLayout::Trits5,
        &TernaryCodes::new(1, 700, vec![0; 700]).unwrap(),
        vec![1.0],
    )
    .unwrap();
    let x2 = QuantizedActivations::zeros(1, 700).unwrap();
    assert!(matches!(
        ternary_matmul_with(Kernel::Scalar, &wider, &x2, &mut [0.0; 1], &pool),
        Err(KernelError::ShapeMismatch { .. })
    ));
    // A kernel that cannot read the layout says so.
    let x5 = QuantizedActivations::zeros_for(TernaryLayout::Trits5, 1, 128).unwrap();
    for kernel in Kernel::available() {
        if !trits5_kernels().contains(&kernel) {
            let err = ternary_matmul_many_with(kernel, &[five.view()], &x5, &mut [&mut [0.0; 2]], &pool).unwrap_err();
            assert!(err.to_string().contains("five-trit"), "{err}");
        }
    }
}
