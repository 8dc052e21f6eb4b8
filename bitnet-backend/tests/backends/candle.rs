//! The extension on burn-candle's CPU device (host-side implementation, see `bitnet_backend::candle`).
#![cfg(feature = "candle")]
#![allow(deprecated)]

use crate::common;

use burn::backend::candle::CandleDevice;
use burn::backend::{Autodiff, Candle};

fn device() -> CandleDevice {
    CandleDevice::Cpu
}

#[test]
fn ops_match_cpu_reference() {
    common::ops_match_cpu_reference::<Candle>(&device());
}

#[test]
fn bitlinear_latent_matches_packed() {
    common::bitlinear_latent_matches_packed::<Candle>(&device());
}

#[test]
fn packed_op_gradient_is_ste() {
    common::packed_op_gradient_is_ste::<Autodiff<Candle>>(&device());
}

#[test]
fn five_trit_ops_match_2_bit_ops() {
    common::five_trit_ops_match_2_bit_ops::<Candle>(&device());
}

#[test]
fn packed_records_name_their_layout() {
    common::packed_records_name_their_layout::<Candle>(&device());
}

#[test]
fn packed_record_round_trips() {
    common::packed_record_round_trips::<Candle>(&device());
}

#[test]
fn shared_forward_equals_separate_forwards() {
    common::shared_forward_equals_separate_forwards::<Candle>(&device());
    common::shared_forward_equals_separate_forwards::<Autodiff<Candle>>(&device());
}

#[test]
fn dense_and_cache_ops_match_burn() {
    common::dense_and_cache_ops_match_burn::<Candle>(&device());
    common::dense_and_cache_ops_match_burn::<Autodiff<Candle>>(&device());
}

#[test]
fn grouped_ops_match_cpu_reference() {
    common::grouped_ops_match_cpu_reference::<Candle>(&device());
}

#[test]
fn cross_entropy_matches_burn_ops() {
    common::cross_entropy_matches_burn_ops::<Autodiff<Candle>>(&device());
}
