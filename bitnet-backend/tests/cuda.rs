//! The CubeCL kernels on burn-cuda. These need an NVIDIA GPU with a driver and NVRTC, so they are ignored by
//! default; build once and run on a GPU host (no Rust toolchain needed there):
//!
//! ```sh
//! cargo test -p bitnet-backend --release --features cuda --test cuda --no-run   # prints the binary path
//! ./target/release/deps/cuda-<hash> --ignored --test-threads 1                   # on the GPU host
//! ```
#![cfg(feature = "cuda")]

mod common;

use bitnet_backend::cube::CubeBackend;
use burn::backend::cuda::CudaDevice;
use burn::backend::{Autodiff, Cuda};
use cubecl::cuda::CudaRuntime;

type Raw = CubeBackend<CudaRuntime, f32, i32, u8>;

fn device() -> CudaDevice {
    CudaDevice::default()
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn fusion_ops_match_cpu_reference() {
    common::ops_match_cpu_reference::<Cuda>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn raw_cube_ops_match_cpu_reference() {
    common::ops_match_cpu_reference::<Raw>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn bitlinear_latent_matches_packed() {
    common::bitlinear_latent_matches_packed::<Cuda>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn packed_op_gradient_is_ste() {
    common::packed_op_gradient_is_ste::<Autodiff<Cuda>>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn two_layer_bitlinear_model_lowers_its_loss() {
    let (first, last) = common::two_layer_model_trains::<Autodiff<Cuda>>(&device(), 300);
    assert!(last < 0.25 * first, "loss went from {first} to {last}");
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn packed_record_round_trips() {
    common::packed_record_round_trips::<Cuda>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn shared_forward_equals_separate_forwards() {
    common::shared_forward_equals_separate_forwards::<Cuda>(&device());
    common::shared_forward_equals_separate_forwards::<Autodiff<Cuda>>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn dense_and_cache_ops_match_burn() {
    common::dense_and_cache_ops_match_burn::<Cuda>(&device());
    common::dense_and_cache_ops_match_burn::<Autodiff<Cuda>>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn fusion_grouped_ops_match_cpu_reference() {
    common::grouped_ops_match_cpu_reference::<Cuda>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn raw_cube_grouped_ops_match_cpu_reference() {
    common::grouped_ops_match_cpu_reference::<Raw>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn five_trit_ops_match_2_bit_ops() {
    common::five_trit_ops_match_2_bit_ops::<Cuda>(&device());
    common::five_trit_ops_match_2_bit_ops::<Raw>(&device());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored"]
fn packed_records_name_their_layout() {
    common::packed_records_name_their_layout::<Cuda>(&device());
}
