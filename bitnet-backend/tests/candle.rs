//! The extension on burn-candle's CPU device (host-side implementation, see `bitnet_backend::candle`).
#![cfg(feature = "candle")]
#![allow(deprecated)]

mod common;

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
