//! `BITNET_WEIGHT_SCALE` overrides the checkpoint's weight_scale convention. A test binary of its own: the
//! environment is process-wide.

use bitnet_models::load_hf_dir;
use burn::backend::Flex;
use std::path::PathBuf;

type B = Flex;

#[test]
fn weight_scale_override_flips_the_convention() {
    // The same packed file read with the opposite convention gives other logits; an invalid value is an error.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bitlinear");
    std::env::set_var("BITNET_WEIGHT_SCALE", "multiply");
    let flipped = load_hf_dir::<B>(&dir, &Default::default()).unwrap();
    std::env::set_var("BITNET_WEIGHT_SCALE", "sideways");
    let err = load_hf_dir::<B>(&dir, &Default::default()).unwrap_err().to_string();
    std::env::remove_var("BITNET_WEIGHT_SCALE");
    assert!(err.contains("sideways"), "{err}");
    assert_eq!(flipped.config().scale_convention, bitnet_models::config::ScaleConvention::Multiply);
}
