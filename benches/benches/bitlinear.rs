//! BitLinear on burn's CPU backend against the raw `bitnet-kernels` call and burn's f32 `Linear`, at decode
//! shape (batch 1, 2560 -> 6912, the FFN gate/up projection of 2B-4T), on the process-wide thread pool.
//!
//! Each variant rotates through copies of its weights totalling more than 512 MiB, so every call reads its
//! weights from DRAM as decode does. Throughput is bytes of weights read per second.
//!
//! Run: `cargo bench -p bitnet-benches --bench bitlinear`.

use bitnet_backend::{BitLinear, TernaryWeight};
use bitnet_benches::WORKING_SET_BYTES;
use bitnet_kernels::{global_pool, ternary_matmul, QuantizedActivations, TernaryCodes, TernaryMatrix};
use burn::backend::Flex;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const D_IN: usize = 2560;
const D_OUT: usize = 6912;

fn copies(bytes: usize) -> usize {
    (WORKING_SET_BYTES / bytes + 1).max(2)
}

fn bench_bitlinear(c: &mut Criterion) {
    let device = Default::default();
    let codes: Vec<u8> = (0..D_OUT * D_IN).map(|i| ((i * 2654435761usize) >> 7) as u8 % 3).collect();
    let matrix = TernaryMatrix::from_codes_with_scale(&TernaryCodes::new(D_OUT, D_IN, codes).expect("codes"), 0.7)
        .expect("pack");
    let packed_bytes = matrix.data().len();
    let x_host: Vec<f32> = (0..D_IN).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();

    let mut group = c.benchmark_group("bitlinear_2560x6912_batch1");
    group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(packed_bytes as u64));

    let n = copies(packed_bytes);
    let matrices = vec![matrix.clone(); n];
    let mut y = vec![0f32; D_OUT];
    let mut i = 0;
    group.bench_function("raw_kernel_quantize_and_gemv", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let q = QuantizedActivations::quantize(&x_host, 1, D_IN).expect("quantize");
            ternary_matmul(&matrices[i], &q, &mut y, global_pool()).expect("gemv");
            black_box(&y);
        })
    });
    drop(matrices);

    let layers: Vec<BitLinear<Flex>> = (0..n)
        .map(|_| BitLinear::from_packed(TernaryWeight::from_matrix(&matrix, &device), None, None).expect("layer"))
        .collect();
    let x = Tensor::<Flex, 2>::from_floats(burn::tensor::TensorData::new(x_host.clone(), [1, D_IN]), &device);
    group.bench_function("bitlinear_packed_flex", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(layers[i].forward(x.clone()).into_data());
        })
    });
    drop(layers);

    let f32_bytes = D_IN * D_OUT * 4;
    group.throughput(Throughput::Bytes(f32_bytes as u64));
    let n = copies(f32_bytes);
    let linears: Vec<Linear<Flex>> =
        (0..n).map(|_| LinearConfig::new(D_IN, D_OUT).with_bias(false).init(&device)).collect();
    let x = Tensor::<Flex, 2>::random([1, D_IN], Distribution::Normal(0.0, 1.0), &device);
    group.bench_function("linear_f32_flex", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(linears[i].forward(x.clone()).into_data());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_bitlinear);
criterion_main!(benches);
