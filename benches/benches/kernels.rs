//! Criterion benchmarks of the compute core on the BitNet b1.58 2B-4T shapes.
//!
//! Every weight benchmark reports throughput as bytes of weights read per second (criterion's
//! `Throughput::Bytes`), so its ratio to `bandwidth/read` is the fraction of the memory roofline reached.
//!
//! Run: `cargo bench -p bitnet-benches --bench kernels` (filter with e.g. `-- ternary_gemv/6912x2560`).

use bitnet_benches::{read_bandwidth, ModelLaidTernary, Rotation, WORKING_SET_BYTES};
use bitnet_kernels::dense::{bf16_gemv_with, f16_gemv_with, f32_gemv_with};
use bitnet_kernels::int8::{int8_gemv_with, Int8Matrix};
use bitnet_kernels::quant::quantize_row_absmax_with;
use bitnet_kernels::transformer::{causal_attention, rms_norm, KvLayout};
use bitnet_kernels::{block_gemv_with, BlockFormat, BlockMatrix, BlockView};
use bitnet_kernels::{
    ternary_matmul_many_with, ternary_matmul_with, Kernel, QuantizedActivations, TernaryCodes, TernaryLayout,
    TernaryMatrix, ThreadPool,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// (rows, cols) of the 2B-4T BitLinear layers: q/o, k/v, gate/up, down.
const SHAPES: [(usize, usize); 4] = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)];
/// The tied output embedding of 2B-4T.
const LM_HEAD: (usize, usize) = (128_256, 2560);

/// Deterministic pseudo-random values (splitmix64), so runs are comparable without a rand dependency.
fn pseudo_random(n: usize, seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    (0..n).map(move |_| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    pseudo_random(n, seed).map(|v| (v >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0).collect()
}

/// Random ternary matrices of `rows[i] x cols` (seeded by their row count), one scale each, in huge pages like
/// a loaded model's.
fn random_ternary_set(rows: &[usize], cols: usize) -> Vec<ModelLaidTernary> {
    rows.iter()
        .map(|&r| {
            let codes: Vec<u8> = pseudo_random(r * cols, r as u64).map(|v| (v % 3) as u8).collect();
            let codes = TernaryCodes::new(r, cols, codes).expect("codes");
            ModelLaidTernary::new(&TernaryMatrix::from_codes_with_scale(&codes, 0.7).expect("matrix"))
        })
        .collect()
}

fn pools() -> Vec<ThreadPool> {
    let max = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    (1..=max).map(|t| ThreadPool::new(t).expect("thread pool")).collect()
}

fn bench_bandwidth(c: &mut Criterion) {
    // In huge pages, like the model's weights (bitnet_kernels::huge_pages).
    let mut buf = bitnet_kernels::huge_pages::huge_page_vec(0u64, WORKING_SET_BYTES * 2 / 8);
    for (b, v) in buf.iter_mut().zip(pseudo_random(WORKING_SET_BYTES * 2 / 8, 1)) {
        *b = v;
    }
    let mut group = c.benchmark_group("bandwidth");
    group.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for pool in pools() {
        group.bench_function(BenchmarkId::new("read", format!("{}t", pool.threads())), |b| {
            b.iter(|| black_box(read_bandwidth(&buf, &pool)))
        });
    }
    group.finish();
}

fn bench_ternary_gemv(c: &mut Criterion) {
    let mut group = c.benchmark_group("ternary_gemv");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let pools = pools();
    for (rows, cols) in SHAPES {
        let codes: Vec<u8> = pseudo_random(rows * cols, 2).map(|v| (v % 3) as u8).collect();
        let codes = TernaryCodes::new(rows, cols, codes).expect("codes");
        let matrix = TernaryMatrix::from_codes_with_scale(&codes, 0.7).expect("matrix");
        let w = ModelLaidTernary::new(&matrix);
        let bytes = w.bytes();
        let mut weights = Rotation::new(w, bytes);
        let x = QuantizedActivations::quantize(&random_f32(cols, 3), 1, cols).expect("activations");
        let mut y = vec![0f32; rows];
        group.throughput(Throughput::Bytes(bytes as u64));
        for kernel in Kernel::available() {
            for pool in &pools {
                let id = BenchmarkId::new(format!("{rows}x{cols}"), format!("{kernel}/{}t", pool.threads()));
                group.bench_function(id, |b| {
                    b.iter(|| ternary_matmul_with(kernel, weights.next_item().view(), &x, &mut y, pool).expect("gemv"))
                });
            }
        }
        // The same weights in the five-trit layout (0.8x the bytes), on the SIMD kernel that reads it. Throughput
        // stays in the 2-bit matrix's bytes, so that the two cases' figures compare products, not byte rates.
        if let Some(kernel) = trits5_kernel() {
            let w5 = ModelLaidTernary::new(&matrix.to_layout(TernaryLayout::Trits5).expect("five-trit matrix"));
            let bytes5 = w5.bytes();
            let mut weights5 = Rotation::new(w5, bytes5);
            let x5 = QuantizedActivations::quantize_for(TernaryLayout::Trits5, &random_f32(cols, 3), 1, cols)
                .expect("activations");
            for pool in &pools {
                let id = BenchmarkId::new(format!("{rows}x{cols}"), format!("trits5/{kernel}/{}t", pool.threads()));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        ternary_matmul_with(kernel, weights5.next_item().view(), &x5, &mut y, pool).expect("gemv")
                    })
                });
            }
        }
    }
    group.finish();
}

/// The SIMD kernel that reads the five-trit layout on this CPU, if any (AVX-512 VNNI).
fn trits5_kernel() -> Option<Kernel> {
    Kernel::available().into_iter().find(|&k| k == Kernel::Avx512Vnni)
}

/// q/k/v (2560 + 640 + 640 rows) and gate/up (2 x 6912 rows) of one 2B-4T block against one activation
/// quantization: one product per weight (`separate`) vs one dispatch over all of them (`one_dispatch`,
/// `ternary_matmul_many`), weights from DRAM.
fn bench_ternary_many(c: &mut Criterion) {
    let mut group = c.benchmark_group("ternary_many");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let pools = pools();
    let kernel = Kernel::best();
    for (name, rows) in [("qkv", &[2560usize, 640, 640][..]), ("gate_up", &[6912usize, 6912][..])] {
        let cols = 2560;
        let set = random_ternary_set(rows, cols);
        let bytes: usize = set.iter().map(|w| w.bytes()).sum();
        let mut sets = Rotation::new(set, bytes);
        let x = QuantizedActivations::quantize(&random_f32(cols, 3), 1, cols).expect("activations");
        let mut outs: Vec<Vec<f32>> = rows.iter().map(|&r| vec![0f32; r]).collect();
        group.throughput(Throughput::Bytes(bytes as u64));
        for pool in &pools {
            let t = pool.threads();
            group.bench_function(BenchmarkId::new(name, format!("separate/{kernel}/{t}t")), |b| {
                b.iter(|| {
                    let set = sets.next_item();
                    for (w, y) in set.iter().zip(outs.iter_mut()) {
                        ternary_matmul_with(kernel, w.view(), &x, y, pool).expect("product");
                    }
                })
            });
            group.bench_function(BenchmarkId::new(name, format!("one_dispatch/{kernel}/{t}t")), |b| {
                b.iter(|| {
                    let views: Vec<_> = sets.next_item().iter().map(|w| w.view()).collect();
                    let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| y.as_mut_slice()).collect();
                    ternary_matmul_many_with(kernel, &views, &x, &mut ys, pool).expect("products")
                })
            });
        }
        // The five-trit layout (throughput in the 2-bit bytes, as in `ternary_gemv`).
        if let Some(kernel) = trits5_kernel() {
            let set5: Vec<ModelLaidTernary> = random_ternary_set(rows, cols)
                .iter()
                .map(|w| {
                    let m = TernaryMatrix::from_view(&w.view()).to_layout(TernaryLayout::Trits5).expect("five-trit");
                    ModelLaidTernary::new(&m)
                })
                .collect();
            let bytes5: usize = set5.iter().map(|w| w.bytes()).sum();
            let mut sets5 = Rotation::new(set5, bytes5);
            let x5 = QuantizedActivations::quantize_for(TernaryLayout::Trits5, &random_f32(cols, 3), 1, cols)
                .expect("activations");
            for pool in &pools {
                let t = pool.threads();
                group.bench_function(BenchmarkId::new(name, format!("one_dispatch/trits5/{kernel}/{t}t")), |b| {
                    b.iter(|| {
                        let views: Vec<_> = sets5.next_item().iter().map(|w| w.view()).collect();
                        let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| y.as_mut_slice()).collect();
                        ternary_matmul_many_with(kernel, &views, &x5, &mut ys, pool).expect("products")
                    })
                });
            }
        }
    }
    group.finish();
}

/// The same kernels on weights that stay in cache (one copy, no rotation): the compute ceiling of each
/// path, and how the pool scales when memory bandwidth is not the limit.
fn bench_ternary_gemv_cached(c: &mut Criterion) {
    let mut group = c.benchmark_group("ternary_gemv_cached");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1));
    let pools = pools();
    for (rows, cols) in [(640, 2560), (2560, 2560)] {
        let codes: Vec<u8> = pseudo_random(rows * cols, 2).map(|v| (v % 3) as u8).collect();
        let w = TernaryMatrix::from_codes_with_scale(&TernaryCodes::new(rows, cols, codes).expect("codes"), 0.7)
            .expect("matrix");
        let x = QuantizedActivations::quantize(&random_f32(cols, 3), 1, cols).expect("activations");
        let mut y = vec![0f32; rows];
        group.throughput(Throughput::Bytes(w.data().len() as u64));
        for kernel in Kernel::available().into_iter().filter(|&k| k != Kernel::Scalar) {
            for pool in &pools {
                let id = BenchmarkId::new(format!("{rows}x{cols}"), format!("{kernel}/{}t", pool.threads()));
                group.bench_function(id, |b| {
                    b.iter(|| ternary_matmul_with(kernel, &w, &x, &mut y, pool).expect("gemv"))
                });
            }
        }
    }
    group.finish();
}

/// The prefill product: a 128-token prompt's activations against the gate/up pair (2 x 6912 x 2560) and the
/// down projection (2560 x 6912) of one 2B-4T block, through `ternary_matmul_many` (the GEMM path where the
/// kernel has one). Throughput counts multiply-accumulates (criterion's "elements"), so a ratio to the CPU's
/// peak is direct; the weights (4.4-8.8 MB) stay mostly in cache, so this is the compute ceiling of prefill.
/// Where the AVX-512 VNNI kernel runs, the same products with five-trit weights (`trits5/`) follow.
fn bench_ternary_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("ternary_gemm");
    group.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    let pools = pools();
    let kernel = Kernel::best();
    let tokens = 128;
    // The five-trit layout where the kernel reads it (its tiles are unpacked into the same GEMM blocks).
    let layouts: Vec<TernaryLayout> = [TernaryLayout::Bits2, TernaryLayout::Trits5]
        .into_iter()
        .filter(|&layout| layout == TernaryLayout::Bits2 || trits5_kernel() == Some(kernel))
        .collect();
    for (name, rows, cols) in [("gate_up", &[6912usize, 6912][..], 2560usize), ("down", &[2560usize][..], 6912)] {
        let x_f32 = random_f32(tokens * cols, 5);
        let mut outs: Vec<Vec<f32>> = rows.iter().map(|&r| vec![0f32; r * tokens]).collect();
        group.throughput(Throughput::Elements((rows.iter().sum::<usize>() * cols * tokens) as u64));
        for &layout in &layouts {
            let set: Vec<ModelLaidTernary> = random_ternary_set(rows, cols)
                .iter()
                .map(|w| {
                    let m = TernaryMatrix::from_view(&w.view()).to_layout(layout).expect("layout");
                    ModelLaidTernary::new(&m)
                })
                .collect();
            let views: Vec<_> = set.iter().map(|w| w.view()).collect();
            let x = QuantizedActivations::quantize_for(layout, &x_f32, tokens, cols).expect("activations");
            let prefix = if layout == TernaryLayout::Trits5 { "trits5/" } else { "" };
            for pool in &pools {
                let id =
                    BenchmarkId::new(format!("{name}/{tokens}tok"), format!("{prefix}{kernel}/{}t", pool.threads()));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| y.as_mut_slice()).collect();
                        ternary_matmul_many_with(kernel, &views, &x, &mut ys, pool).expect("products")
                    })
                });
            }
        }
    }
    group.finish();
}

/// The AVX2 instruction-mix ceiling of the prefill GEMM (`bitnet_benches::avx2_peak`): multiply-accumulates per
/// second of `vpmaddubsw` + `vpaddw` loops on one core, with register operands and with one L1 load per multiply.
#[cfg(target_arch = "x86_64")]
fn bench_avx2_peak(c: &mut Criterion) {
    use bitnet_benches::avx2_peak::{maddubs_add, maddubs_load_add, MACS_PER_MADDUBS, MADDUBS_PER_ITERATION};
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    const ITERATIONS: u64 = 1 << 20;
    let mut group = c.benchmark_group("avx2_peak");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(ITERATIONS * MADDUBS_PER_ITERATION * MACS_PER_MADDUBS));
    group.bench_function("maddubs_add", |b| b.iter(|| maddubs_add(black_box(ITERATIONS))));
    group.bench_function("maddubs_load_add", |b| b.iter(|| maddubs_load_add(black_box(ITERATIONS))));
    group.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn bench_avx2_peak(_: &mut Criterion) {}

fn bench_f32_gemv(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32_gemv");
    group.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let kernel = Kernel::selected();
    for (rows, cols) in SHAPES {
        let w = random_f32(rows * cols, 4);
        let bytes = w.len() * 4;
        let mut weights = Rotation::new(w, bytes);
        let x = random_f32(cols, 5);
        let mut y = vec![0f32; rows];
        group.throughput(Throughput::Bytes(bytes as u64));
        for pool in &pools() {
            let id = BenchmarkId::new(format!("{rows}x{cols}"), format!("{kernel}/{}t", pool.threads()));
            group.bench_function(id, |b| {
                b.iter(|| f32_gemv_with(kernel, weights.next_item(), rows, cols, &x, &mut y, pool).expect("gemv"))
            });
        }
    }
    group.finish();
}

fn bench_lm_head(c: &mut Criterion) {
    let (rows, cols) = LM_HEAD;
    let mut group = c.benchmark_group("lm_head");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    let kernel = Kernel::selected();
    let wf = random_f32(rows * cols, 6);
    let x = random_f32(cols, 7);
    let mut y = vec![0f32; rows];
    let pools = pools();
    group.throughput(Throughput::Bytes((rows * cols * 4) as u64));
    for pool in &pools {
        group.bench_function(BenchmarkId::new("f32", format!("{kernel}/{}t", pool.threads())), |b| {
            b.iter(|| f32_gemv_with(kernel, &wf, rows, cols, &x, &mut y, pool).expect("gemv"))
        });
    }
    // In huge pages, like the model's head (bitnet_kernels::huge_pages).
    let half_bits = |convert: &dyn Fn(f32) -> u16| {
        let mut bits = bitnet_kernels::huge_pages::huge_page_vec(0u16, wf.len());
        for (b, &v) in bits.iter_mut().zip(&wf) {
            *b = convert(v);
        }
        bits
    };
    let wb = half_bits(&|v| (v.to_bits() >> 16) as u16);
    let wh = half_bits(&|v| half::f16::from_f32(v).to_bits());
    let wi = Int8Matrix::quantize(&wf, rows, cols).expect("int8");
    let in_huge_pages = |bytes: Vec<u8>| {
        let mut out = bitnet_kernels::huge_pages::huge_page_vec(0u8, bytes.len());
        out.copy_from_slice(&bytes);
        out
    };
    let w6 = in_huge_pages(BlockMatrix::quantize(BlockFormat::Q6K, &wf, rows, cols).expect("q6k").into_bytes());
    let w4 = in_huge_pages(BlockMatrix::quantize(BlockFormat::Q4, &wf, rows, cols).expect("q4").into_bytes());
    drop(wf);
    group.throughput(Throughput::Bytes((rows * cols * 2) as u64));
    for pool in &pools {
        group.bench_function(BenchmarkId::new("bf16", format!("{kernel}/{}t", pool.threads())), |b| {
            b.iter(|| bf16_gemv_with(kernel, &wb, rows, cols, &x, &mut y, pool).expect("gemv"))
        });
    }
    drop(wb);
    for pool in &pools {
        group.bench_function(BenchmarkId::new("f16", format!("{kernel}/{}t", pool.threads())), |b| {
            b.iter(|| f16_gemv_with(kernel, &wh, rows, cols, &x, &mut y, pool).expect("gemv"))
        });
    }
    drop(wh);
    let xq = QuantizedActivations::quantize(&x, 1, cols).expect("activations");
    group.throughput(Throughput::Bytes(wi.packed_bytes() as u64));
    for pool in &pools {
        group.bench_function(BenchmarkId::new("int8", format!("{kernel}/{}t", pool.threads())), |b| {
            b.iter(|| int8_gemv_with(kernel, wi.view(), &xq, &mut y, pool).expect("gemv"))
        });
    }
    drop(wi);
    let q6k = BlockView::new(BlockFormat::Q6K, &w6, rows, cols).expect("q6k view");
    group.throughput(Throughput::Bytes(w6.len() as u64));
    for pool in &pools {
        group.bench_function(BenchmarkId::new("q6k", format!("{kernel}/{}t", pool.threads())), |b| {
            b.iter(|| block_gemv_with(kernel, q6k, &xq, &mut y, pool).expect("gemv"))
        });
    }
    let q4 = BlockView::new(BlockFormat::Q4, &w4, rows, cols).expect("q4 view");
    group.throughput(Throughput::Bytes(w4.len() as u64));
    for pool in &pools {
        group.bench_function(BenchmarkId::new("q4", format!("{kernel}/{}t", pool.threads())), |b| {
            b.iter(|| block_gemv_with(kernel, q4, &xq, &mut y, pool).expect("gemv"))
        });
    }
    group.finish();
}

/// Causal attention of one 2B-4T layer (20 query heads in 5 key/value groups of 128 dimensions): a decode step
/// at two context lengths and a 128-token prefill. Throughput counts query-key scores.
fn bench_attention(c: &mut Criterion) {
    const GROUPS: usize = 5;
    const REP: usize = 4;
    const D: usize = 128;
    let mut group = c.benchmark_group("attention");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1));
    let pools = pools();
    for (t, len) in [(1usize, 128usize), (1, 1024), (128, 128)] {
        let keys = random_f32(GROUPS * len * D, 8);
        let values = random_f32(GROUPS * len * D, 9);
        let q = random_f32(GROUPS * REP * t * D, 10);
        let mut out = vec![0f32; q.len()];
        let layout = KvLayout { groups: GROUPS, len, offset: 0, group_stride: len * D };
        let scores: usize = (len - t + 1..=len).sum::<usize>() * GROUPS * REP;
        group.throughput(Throughput::Elements(scores as u64));
        for pool in &pools {
            let id = BenchmarkId::new(format!("t{t}_len{len}"), format!("{}t", pool.threads()));
            group.bench_function(id, |b| {
                b.iter(|| {
                    causal_attention(&q, &keys, &values, layout, D, t, len - t, 0.088, &mut out, pool)
                        .expect("attention")
                })
            });
        }
    }
    // A decode step's attention in all 30 layers at 1024 positions: 157 MB of keys and values, read from DRAM as
    // in a real step (compare with `bandwidth/read`).
    const LAYERS: usize = 30;
    let len = 1024;
    let layer = GROUPS * len * D;
    let keys = random_f32(LAYERS * layer, 11);
    let values = random_f32(LAYERS * layer, 12);
    let q = random_f32(GROUPS * REP * D, 13);
    let mut out = vec![0f32; q.len()];
    group.throughput(Throughput::Bytes((2 * LAYERS * layer * 4) as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for pool in &pools {
        let id = BenchmarkId::new("t1_len1024_30layers", format!("{}t", pool.threads()));
        group.bench_function(id, |b| {
            b.iter(|| {
                for l in 0..LAYERS {
                    let layout = KvLayout { groups: GROUPS, len, offset: l * layer, group_stride: len * D };
                    causal_attention(&q, &keys, &values, layout, D, 1, len - 1, 0.088, &mut out, pool)
                        .expect("attention");
                }
            })
        });
    }
    group.finish();
}

/// The per-token ops between the products of a decode step, on one thread with the selected kernel: RMSNorm and
/// the int8 activation quantization (absmax, then round) of a 2B-4T hidden row (2560) and FFN row (6912).
fn bench_activations(c: &mut Criterion) {
    let mut group = c.benchmark_group("activations");
    group.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1));
    let kernel = Kernel::selected();
    for width in [2560usize, 6912] {
        let x = random_f32(width, 11);
        let gamma = random_f32(width, 12);
        let (mut normed, mut codes) = (vec![0f32; width], vec![0i8; width]);
        group.throughput(Throughput::Elements(width as u64));
        group.bench_function(BenchmarkId::new("rms_norm", width), |b| {
            b.iter(|| rms_norm(black_box(&x), &gamma, 1e-5, &mut normed).expect("rms_norm"))
        });
        group.bench_function(BenchmarkId::new("quantize", width), |b| {
            b.iter(|| quantize_row_absmax_with(kernel, black_box(&x), &mut codes))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_bandwidth,
    bench_ternary_gemv,
    bench_ternary_many,
    bench_ternary_gemv_cached,
    bench_ternary_gemm,
    bench_avx2_peak,
    bench_f32_gemv,
    bench_lm_head,
    bench_attention,
    bench_activations
);
criterion_main!(benches);
