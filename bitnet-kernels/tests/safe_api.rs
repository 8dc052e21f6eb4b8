//! The safe API rejects mismatched shapes, short buffers and unavailable kernels with typed errors.

use bitnet_kernels::dense::f32_gemv;
use bitnet_kernels::int8::{int8_gemv, Int8Matrix, Int8View};
use bitnet_kernels::{
    bf16_gemv, ternary_accumulators, ternary_gemv, ternary_matmul, Kernel, KernelError, QuantizedActivations,
    TernaryCodes, TernaryMatrix, ThreadPool,
};

fn layer(rows: usize, cols: usize) -> TernaryMatrix {
    TernaryMatrix::from_codes_with_scale(&TernaryCodes::new(rows, cols, vec![2; rows * cols]).unwrap(), 1.0).unwrap()
}

#[test]
fn wrong_activation_width_is_a_shape_error() {
    let pool = ThreadPool::new(2).unwrap();
    let w = layer(8, 300);
    let x = QuantizedActivations::quantize(&[1.0; 299], 1, 299).unwrap();
    let mut y = vec![0.0; 8];
    let err = ternary_gemv(&w, &x, &mut y, &pool).unwrap_err();
    assert_eq!(err, KernelError::ShapeMismatch { what: "activation width (K)", expected: 300, got: 299 });
}

#[test]
fn short_output_is_rejected() {
    let pool = ThreadPool::new(1).unwrap();
    let w = layer(8, 64);
    let x = QuantizedActivations::quantize(&[1.0; 128], 2, 64).unwrap();
    let mut y = vec![0.0; 15];
    assert!(matches!(ternary_matmul(&w, &x, &mut y, &pool), Err(KernelError::BufferTooShort { needed: 16, .. })));
    let mut acc = vec![0; 7];
    assert!(ternary_accumulators(Kernel::Scalar, &w, &x, 0, &mut acc).is_err());
    let mut acc = vec![0; 8];
    assert!(ternary_accumulators(Kernel::Scalar, &w, &x, 2, &mut acc).is_err());
}

#[test]
fn gemv_needs_exactly_one_token() {
    let pool = ThreadPool::new(1).unwrap();
    let w = layer(4, 64);
    let x = QuantizedActivations::quantize(&[1.0; 128], 2, 64).unwrap();
    let mut y = vec![0.0; 8];
    assert!(ternary_gemv(&w, &x, &mut y, &pool).is_err());
}

#[test]
fn unavailable_kernel_is_an_error_not_ub() {
    let pool = ThreadPool::new(1).unwrap();
    let w = layer(4, 64);
    let x = QuantizedActivations::quantize(&[1.0; 64], 1, 64).unwrap();
    let mut y = vec![0.0; 4];
    for kernel in Kernel::ALL.into_iter().filter(|k| !k.is_available()) {
        let err = bitnet_kernels::ternary_matmul_with(kernel, &w, &x, &mut y, &pool).unwrap_err();
        assert_eq!(err, KernelError::KernelUnavailable(kernel.name()));
    }
}

#[test]
fn dense_gemv_shape_errors() {
    let pool = ThreadPool::new(1).unwrap();
    let mut y = vec![0.0; 3];
    assert!(f32_gemv(&[0.0; 11], 3, 4, &[0.0; 4], &mut y, &pool).is_err());
    assert!(f32_gemv(&[0.0; 12], 3, 4, &[0.0; 5], &mut y, &pool).is_err());
    assert!(f32_gemv(&[0.0; 12], 3, 4, &[0.0; 4], &mut y[..2], &pool).is_err());
    assert!(bf16_gemv(&[0; 12], 3, 4, &[0.0; 3], &mut y, &pool).is_err());
    assert!(Int8Matrix::quantize(&[0.0; 5], 2, 3).is_err());
    let m = Int8Matrix::quantize(&[0.5; 12], 3, 4).unwrap();
    let x = QuantizedActivations::quantize(&[1.0; 5], 1, 5).unwrap();
    assert!(int8_gemv(m.view(), &x, &mut y, &pool).is_err());
    assert!(Int8View::new(&[0; 11], 3, 4, 4, &[1.0; 3]).is_err(), "too few codes");
    assert!(Int8View::new(&[0; 12], 3, 4, 3, &[1.0; 3]).is_err(), "stride below the width");
    assert!(Int8View::new(&[0; 12], 3, 4, 4, &[1.0; 2]).is_err(), "scale count");
}

#[test]
fn invalid_codes_and_scales_are_rejected() {
    assert!(matches!(TernaryCodes::new(1, 2, vec![1, 3]), Err(KernelError::InvalidCode { code: 3, index: 1 })));
    assert!(TernaryCodes::new(2, 2, vec![1; 3]).is_err());
    assert!(TernaryCodes::from_ternary(1, 2, &[1, 2]).is_err());
    let codes = TernaryCodes::new(1, 2, vec![1, 1]).unwrap();
    assert!(TernaryMatrix::from_codes(&codes, vec![f32::NAN]).is_err());
    assert!(TernaryMatrix::from_codes(&codes, vec![1.0, 1.0]).is_err());
    assert!(TernaryMatrix::quantize_absmean(&[0.0; 3], 2, 2).is_err());
    assert!(TernaryMatrix::quantize_absmean(&[0.5, f32::NAN, -1.0, 0.25], 2, 2).is_err(), "NaN weight");
    assert!(TernaryMatrix::quantize_absmean(&[0.5, f32::INFINITY, -1.0, 0.25], 2, 2).is_err(), "inf weight");
}

#[test]
fn non_finite_activations_give_nan_outputs_not_quantized_zeros() {
    let w = layer(8, 300);
    let pool = ThreadPool::new(1).unwrap();
    let mut x = vec![0.5f32; 2 * 300];
    x[300 + 17] = f32::NAN;
    let q = QuantizedActivations::quantize(&x, 2, 300).unwrap();
    let mut y = vec![0.0f32; 2 * 8];
    ternary_matmul(&w, &q, &mut y, &pool).unwrap();
    assert!(y[..8].iter().all(|v| v.is_finite()), "the finite row stays finite: {y:?}");
    assert!(y[8..].iter().all(|v| v.is_nan()), "the row holding a NaN gives NaN: {y:?}");
}

#[test]
fn absurd_sizes_do_not_overflow_or_allocate() {
    assert!(TernaryMatrix::from_hf_packed(&[0; 4], usize::MAX / 2, 8, 1.0).is_err());
    assert!(bitnet_kernels::formats::i2s::unpack_i2s(&[0; 64], usize::MAX / 64, 128).is_err());
    assert!(bitnet_kernels::formats::tq2_0::unpack_tq2_0(&[0; 66], usize::MAX / 256, 256).is_err());
}

#[test]
fn too_wide_matrix_is_rejected() {
    let cols = bitnet_kernels::formats::native::MAX_COLS + 1;
    let codes = TernaryCodes::new(1, cols, vec![1; cols]).unwrap();
    assert!(matches!(TernaryMatrix::from_codes_with_scale(&codes, 1.0), Err(KernelError::TooLarge { .. })));
}
