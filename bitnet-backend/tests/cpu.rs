//! The extension on burn's CPU backend (Flex) and on `Autodiff<Flex>`.

mod common;

use bitnet_backend::{BitLinear, BitLinearConfig, TernaryWeight};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;

type B = Flex;
type AB = Autodiff<Flex>;

#[test]
fn ops_match_cpu_reference() {
    common::ops_match_cpu_reference::<B>(&Default::default());
}

#[test]
fn ops_match_cpu_reference_through_autodiff() {
    common::ops_match_cpu_reference::<AB>(&Default::default());
}

#[test]
fn bitlinear_latent_matches_packed() {
    common::bitlinear_latent_matches_packed::<B>(&Default::default());
}

#[test]
fn packed_op_gradient_is_ste() {
    common::packed_op_gradient_is_ste::<AB>(&Default::default());
}

#[test]
fn latent_bitlinear_gradients_are_ste() {
    common::latent_bitlinear_gradients_are_ste::<AB>(&Default::default());
}

#[test]
fn two_layer_bitlinear_model_lowers_its_loss() {
    let (first, last) = common::two_layer_model_trains::<AB>(&Default::default(), 300);
    eprintln!("toy regression MSE: {first} -> {last}");
    assert!(last < 0.25 * first, "loss went from {first} to {last}");
}

#[test]
#[should_panic(expected = "input of shape [2, 7, 65] does not match a BitLinear of shape [64, 32]")]
fn wrong_input_width_names_both_shapes() {
    let layer: BitLinear<B> = BitLinearConfig::new(64, 32).init(&Default::default());
    let _ = layer.forward(Tensor::<B, 3>::zeros([2, 7, 65], &Default::default()));
}

#[test]
#[should_panic(expected = "input of shape [2, 65] does not match a BitLinear of shape [64, 32]")]
fn wrong_input_width_names_both_shapes_when_packed() {
    let layer: BitLinear<B> = BitLinearConfig::new(64, 32).init(&Default::default());
    let _ = layer.pack().unwrap().forward(Tensor::<B, 2>::zeros([2, 65], &Default::default()));
}

#[test]
fn malformed_packed_tensors_are_typed_errors() {
    let device = Default::default();
    let w = TernaryWeight::<B>::quantize_absmean(&[0.5; 8 * 300], 8, 300, &device).unwrap();
    assert!(TernaryWeight::<B>::from_tensors(w.words.clone(), w.scales.clone(), 8, 300).is_ok());
    assert!(TernaryWeight::<B>::from_tensors(w.words.clone(), w.scales.clone(), 8, 600).is_err());
    assert!(TernaryWeight::<B>::from_tensors(w.words.clone(), w.scales.clone(), 7, 300).is_err());
    assert!(TernaryWeight::<B>::quantize_absmean(&[0.5; 10], 8, 300, &device).is_err());
    let bias = Tensor::<B, 1>::zeros([9], &device);
    assert!(BitLinear::from_packed(w, Some(bias)).is_err());
}

#[test]
fn linear_many_matches_separate_calls() {
    common::linear_many_matches_separate_calls::<B>(&Default::default());
}

#[test]
fn lambda_zero_is_plain_linear() {
    common::lambda_zero_is_plain_linear::<B>(&Default::default());
}
