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
