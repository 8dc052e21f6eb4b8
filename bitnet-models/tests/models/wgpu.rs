//! The model on burn-wgpu (lavapipe in CI): every transformers fixture with the CPU's tolerances, batched and
//! cached decoding, and packed-model records.
#![cfg(feature = "wgpu")]

use crate::common;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::Wgpu;

#[test]
fn every_family_fixture_matches_transformers_on_wgpu() {
    common::all_fixtures_match_transformers::<Wgpu>(&WgpuDevice::default());
}

#[test]
fn ternary_gguf_types_match_transformers_on_wgpu() {
    common::gguf_types_match_transformers::<Wgpu>(&WgpuDevice::default());
}

#[test]
fn incremental_and_batched_decode_equal_the_full_forward_on_wgpu() {
    common::incremental_and_batched_decode_equal_the_full_forward::<Wgpu>(&WgpuDevice::default());
}

#[test]
fn packed_model_record_round_trips_on_wgpu() {
    common::packed_model_record_round_trips::<Wgpu>(&WgpuDevice::default());
}

#[test]
fn head_formats_stay_close() {
    common::head_formats_stay_close::<Wgpu>(&WgpuDevice::default());
}

#[test]
fn batched_generation_equals_single_generation_on_wgpu() {
    common::batched_generation_equals_single_generation::<Wgpu>(&WgpuDevice::default());
}

#[test]
fn qwen3_ternary_models_match_transformers_on_wgpu() {
    common::qwen3_fixtures_match_transformers::<Wgpu>(&WgpuDevice::default());
}
