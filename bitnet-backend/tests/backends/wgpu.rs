//! The CubeCL kernels through burn-wgpu (lavapipe in CI: `mesa-vulkan-drivers`), both as the `Fusion`-wrapped
//! `burn::backend::Wgpu` users get and as the raw `CubeBackend`, and through `Autodiff<Wgpu>`.
#![cfg(feature = "wgpu")]

use crate::common;

use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, Wgpu};

type Raw = bitnet_backend::cube::CubeBackend<WgpuRuntime, f32, i32, u32>;

fn device() -> WgpuDevice {
    WgpuDevice::default()
}

#[test]
fn fusion_ops_match_cpu_reference() {
    common::ops_match_cpu_reference::<Wgpu>(&device());
}

#[test]
fn raw_cube_ops_match_cpu_reference() {
    common::ops_match_cpu_reference::<Raw>(&device());
}

#[test]
fn bitlinear_latent_matches_packed() {
    common::bitlinear_latent_matches_packed::<Wgpu>(&device());
}

#[test]
fn packed_op_gradient_is_ste() {
    common::packed_op_gradient_is_ste::<Autodiff<Wgpu>>(&device());
}

#[test]
fn latent_bitlinear_gradients_are_ste() {
    common::latent_bitlinear_gradients_are_ste::<Autodiff<Wgpu>>(&device());
}

#[test]
fn rotary_gradient_matches_its_definition() {
    common::rotary_gradient_matches_its_definition::<Autodiff<Wgpu>>(&device());
}

#[test]
fn two_layer_bitlinear_model_lowers_its_loss() {
    let (first, last) = common::two_layer_model_trains::<Autodiff<Wgpu>>(&device(), 300);
    eprintln!("toy regression MSE on wgpu: {first} -> {last}");
    assert!(last < 0.25 * first, "loss went from {first} to {last}");
}

#[test]
fn linear_many_matches_separate_calls() {
    common::linear_many_matches_separate_calls::<Wgpu>(&device());
}

#[test]
fn lambda_zero_is_plain_linear() {
    common::lambda_zero_is_plain_linear::<Wgpu>(&device());
}

#[test]
fn packed_record_round_trips() {
    common::packed_record_round_trips::<Wgpu>(&device());
}

#[test]
fn shared_forward_equals_separate_forwards() {
    common::shared_forward_equals_separate_forwards::<Wgpu>(&device());
    common::shared_forward_equals_separate_forwards::<Autodiff<Wgpu>>(&device());
}

#[test]
fn dense_and_cache_ops_match_burn() {
    common::dense_and_cache_ops_match_burn::<Wgpu>(&device());
    common::dense_and_cache_ops_match_burn::<Autodiff<Wgpu>>(&device());
}

#[test]
fn fusion_grouped_ops_match_cpu_reference() {
    common::grouped_ops_match_cpu_reference::<Wgpu>(&device());
}

#[test]
fn raw_cube_grouped_ops_match_cpu_reference() {
    common::grouped_ops_match_cpu_reference::<Raw>(&device());
}

#[test]
fn fake_quantized_activations_match_their_definition() {
    common::fake_quantized_activations_match_their_definition::<Autodiff<Wgpu>>(&device());
}

#[test]
fn causal_attention_gradients_match_burn_ops() {
    common::causal_attention_gradients_match_burn_ops::<Autodiff<Wgpu>>(&device());
}

#[test]
fn rms_norm_gradients_match_burn_ops() {
    common::rms_norm_gradients_match_burn_ops::<Autodiff<Wgpu>>(&device());
}

#[test]
fn gated_activation_gradients_match_burn_ops() {
    common::gated_activation_gradients_match_burn_ops::<Autodiff<Wgpu>>(&device());
}

#[test]
fn cross_entropy_matches_burn_ops() {
    common::cross_entropy_matches_burn_ops::<Autodiff<Wgpu>>(&device());
}

#[test]
fn swap_tokens_and_heads_matches_swap_dims() {
    common::swap_tokens_and_heads_matches_swap_dims::<Autodiff<Wgpu>>(&device());
}

#[test]
fn fake_quantized_weights_match_the_packed_export() {
    common::fake_quantized_weights_match_the_packed_export::<Autodiff<Wgpu>>(&device());
}

#[test]
fn five_trit_ops_match_2_bit_ops() {
    common::five_trit_ops_match_2_bit_ops::<Wgpu>(&device());
    common::five_trit_ops_match_2_bit_ops::<Raw>(&device());
}

#[test]
fn packed_records_name_their_layout() {
    common::packed_records_name_their_layout::<Wgpu>(&device());
}
