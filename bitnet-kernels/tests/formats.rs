//! Round trips of every ternary format, and repacking each disk layout into the native one.

use bitnet_kernels::formats::{hf_packed, i2s, tq1_0, tq2_0};
use bitnet_kernels::{KernelError, TernaryCodes, TernaryMatrix};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_codes(seed: u64, rows: usize, cols: usize) -> TernaryCodes {
    let mut rng = StdRng::seed_from_u64(seed);
    TernaryCodes::new(rows, cols, (0..rows * cols).map(|_| rng.random_range(0..3u8)).collect()).unwrap()
}

#[test]
fn hf_packed_round_trip_and_repack() {
    for (rows, cols) in [(4, 1), (8, 3), (640, 33), (12, 2560)] {
        let codes = random_codes(rows as u64, rows, cols);
        let bytes = hf_packed::pack_hf_packed(&codes).unwrap();
        assert_eq!(bytes.len(), rows / 4 * cols);
        assert_eq!(hf_packed::unpack_hf_packed(&bytes, rows, cols).unwrap(), codes);
        let m = TernaryMatrix::from_hf_packed(&bytes, rows, cols, 0.3).unwrap();
        assert_eq!(m.to_codes(), codes);
        assert!(m.row_scales().iter().all(|&s| s == 0.3));
    }
}

#[test]
fn i2s_round_trip_and_repack() {
    // 2 x 64 = 128 elements: a group spans two rows, as the flat layout allows.
    for (rows, cols) in [(2, 64), (1, 128), (5, 256), (7, 640)] {
        let codes = random_codes(cols as u64, rows, cols);
        let bytes = i2s::pack_i2s(&codes, 1.5).unwrap();
        assert_eq!(bytes.len(), rows * cols / 4 + 32);
        assert_eq!(i2s::unpack_i2s(&bytes, rows, cols).unwrap(), (codes.clone(), 1.5));
        let m = TernaryMatrix::from_i2s(&bytes, rows, cols).unwrap();
        assert_eq!(m.to_codes(), codes);
        assert!(m.row_scales().iter().all(|&s| s == 1.5));
    }
}

#[test]
fn tq_round_trips_and_repack() {
    for (rows, cols) in [(1, 256), (3, 512), (9, 2560)] {
        let codes = random_codes(7 + rows as u64, rows, cols);
        let blocks = rows * cols / 256;
        let scales: Vec<f32> = (0..blocks).map(|b| 0.25 * (1 + b / (cols / 256)) as f32).collect();
        let t2 = tq2_0::pack_tq2_0(&codes, &scales).unwrap();
        assert_eq!(t2.len(), blocks * 66);
        assert_eq!(tq2_0::unpack_tq2_0(&t2, rows, cols).unwrap(), (codes.clone(), scales.clone()));
        let t1 = tq1_0::pack_tq1_0(&codes, &scales).unwrap();
        assert_eq!(t1.len(), blocks * 54);
        assert_eq!(tq1_0::unpack_tq1_0(&t1, rows, cols).unwrap(), (codes.clone(), scales.clone()));
        let per_row: Vec<f32> = (0..rows).map(|r| 0.25 * (1 + r) as f32).collect();
        for m in
            [TernaryMatrix::from_tq2_0(&t2, rows, cols).unwrap(), TernaryMatrix::from_tq1_0(&t1, rows, cols).unwrap()]
        {
            assert_eq!(m.to_codes(), codes);
            assert_eq!(m.row_scales(), &per_row[..]);
        }
    }
}

#[test]
fn native_round_trip_for_awkward_shapes() {
    for (rows, cols) in [(1, 1), (3, 255), (5, 257), (4, 256), (13, 1000)] {
        let codes = random_codes(99, rows, cols);
        let m = TernaryMatrix::from_codes_with_scale(&codes, 2.0).unwrap();
        assert_eq!(m.to_codes(), codes);
        assert_eq!(m.rows_padded() % 4, 0);
        assert_eq!(m.cols_padded() % 256, 0);
    }
}

#[test]
fn absmean_quantization_feeds_the_native_layout() {
    let w = [0.9f32, -0.1, -1.2, 0.4, 0.0, 2.0, -0.7, 0.05];
    let m = TernaryMatrix::quantize_absmean(&w, 2, 4).unwrap();
    // g = mean|w| = 5.35 / 8 = 0.66875
    assert!((m.row_scales()[0] - 0.66875).abs() < 1e-6);
    assert_eq!(m.to_codes().codes(), &[2, 1, 0, 2, 1, 2, 0, 1]);
}

#[test]
fn wrong_sizes_are_typed_errors() {
    assert!(matches!(hf_packed::unpack_hf_packed(&[0; 8], 6, 4), Err(KernelError::NotAMultiple { .. })));
    assert!(matches!(hf_packed::unpack_hf_packed(&[0; 7], 8, 4), Err(KernelError::ShapeMismatch { .. })));
    assert!(matches!(i2s::unpack_i2s(&[0; 63], 1, 128), Err(KernelError::ShapeMismatch { .. })));
    assert!(matches!(i2s::pack_i2s(&random_codes(1, 1, 100), 1.0), Err(KernelError::NotAMultiple { .. })));
    assert!(matches!(tq2_0::unpack_tq2_0(&[0; 66], 1, 255), Err(KernelError::NotAMultiple { .. })));
    assert!(matches!(tq1_0::unpack_tq1_0(&[0; 53], 1, 256), Err(KernelError::ShapeMismatch { .. })));
    assert!(tq2_0::pack_tq2_0(&random_codes(1, 1, 256), &[1.0, 2.0]).is_err());
}
