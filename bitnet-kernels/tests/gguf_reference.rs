//! TQ1_0 and TQ2_0 agree byte for byte with llama.cpp's reference quantizers (fixtures made by
//! `fixtures/make_gguf_ternary_fixtures.py` with gguf-py).

use bitnet_kernels::formats::{tq1_0, tq2_0};
use bitnet_kernels::{TernaryCodes, TernaryMatrix};

const ROWS: usize = 3;
const COLS: usize = 512;
const SCALES: [f32; 3] = [0.5, 0.75, 1.25];
const CODES: &[u8] = include_bytes!("fixtures/ternary_codes.bin");
const TQ1_0: &[u8] = include_bytes!("fixtures/ternary_tq1_0.bin");
const TQ2_0: &[u8] = include_bytes!("fixtures/ternary_tq2_0.bin");

fn block_scales() -> Vec<f32> {
    SCALES.iter().flat_map(|&s| [s, s]).collect()
}

fn codes() -> TernaryCodes {
    TernaryCodes::new(ROWS, COLS, CODES.to_vec()).unwrap()
}

#[test]
fn tq1_0_matches_llama_cpp() {
    let (codes, scales) = tq1_0::unpack_tq1_0(TQ1_0, ROWS, COLS).unwrap();
    assert_eq!(codes, self::codes());
    assert_eq!(scales, block_scales());
    assert_eq!(tq1_0::pack_tq1_0(&codes, &scales).unwrap(), TQ1_0);
    let m = TernaryMatrix::from_tq1_0(TQ1_0, ROWS, COLS).unwrap();
    assert_eq!(m.to_codes(), codes);
    assert_eq!(m.row_scales(), &SCALES);
}

#[test]
fn tq2_0_matches_llama_cpp() {
    let (codes, scales) = tq2_0::unpack_tq2_0(TQ2_0, ROWS, COLS).unwrap();
    assert_eq!(codes, self::codes());
    assert_eq!(scales, block_scales());
    assert_eq!(tq2_0::pack_tq2_0(&codes, &scales).unwrap(), TQ2_0);
    let m = TernaryMatrix::from_tq2_0(TQ2_0, ROWS, COLS).unwrap();
    assert_eq!(m.to_codes(), codes);
    assert_eq!(m.row_scales(), &SCALES);
}

const Q2_0_INPUT: &[u8] = include_bytes!("fixtures/q2_0_input.f32");
const Q2_0_GGML: &[u8] = include_bytes!("fixtures/q2_0_ggml.bin");
const Q2_0_GGML_DEQUANT: &[u8] = include_bytes!("fixtures/q2_0_ggml_dequant.f32");

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Q2_0 agrees byte for byte with ggml's C reference (`fixtures/make_q2_0_fixture.py`, which calls
/// `quantize_row_q2_0_ref` / `dequantize_row_q2_0` in libggml-base).
#[test]
fn q2_0_matches_ggml() {
    use bitnet_kernels::formats::q2_0::{dequantize_q2_0, quantize_q2_0, unpack_q2_0, Q2Group};
    let input = f32s(Q2_0_INPUT);
    assert_eq!(quantize_q2_0(&input, Q2Group::G64).unwrap(), Q2_0_GGML);
    let ours = dequantize_q2_0(Q2_0_GGML, Q2Group::G64).unwrap();
    let theirs = f32s(Q2_0_GGML_DEQUANT);
    assert!(ours.iter().zip(&theirs).all(|(a, b)| a.to_bits() == b.to_bits()), "dequantized values differ");
    // The reference quantizer never writes code 3, so the bytes unpack as ternary and repack identically;
    // the native matrix dequantizes to ggml's values.
    let groups = input.len() / 64;
    let (rows, cols) = (groups / 4, 256);
    let (codes, scales) = unpack_q2_0(Q2_0_GGML, rows, cols, Q2Group::G64).unwrap();
    assert_eq!(bitnet_kernels::formats::q2_0::pack_q2_0(&codes, &scales, Q2Group::G64).unwrap(), Q2_0_GGML);
    let m = TernaryMatrix::from_q2_0(Q2_0_GGML, rows, cols, Q2Group::G64).unwrap();
    assert!(m.group_scales().is_some());
    assert_eq!(m.view().dequantize(), theirs);
}
