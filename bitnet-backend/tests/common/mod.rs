//! Backend-generic checks shared by the per-backend test files: every backend's ops must equal the CPU
//! reference of `bitnet-kernels` (integer accumulators exact, f32 within 1e-6 relative).
#![allow(dead_code)]

use bitnet_backend::{
    quantize_activations, ternary_dequantize, ternary_linear, BitLinear, BitLinearConfig, TernaryBackend, TernaryWeight,
};
use bitnet_kernels::{ternary_matmul_with, Kernel, QuantizedActivations, TernaryCodes, TernaryMatrix, ThreadPool};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

pub fn random_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> TernaryMatrix {
    let codes = TernaryCodes::new(rows, cols, (0..rows * cols).map(|_| rng.random_range(0..3u8)).collect()).unwrap();
    let scales = (0..rows).map(|_| rng.random_range(0.05..1.5f32)).collect();
    TernaryMatrix::from_codes(&codes, scales).unwrap()
}

/// A matrix with group scales (one per `group` weights, `cols` a multiple of it) of varied magnitudes.
pub fn random_grouped_matrix(rng: &mut StdRng, rows: usize, cols: usize, group: usize) -> TernaryMatrix {
    let codes = TernaryCodes::new(rows, cols, (0..rows * cols).map(|_| rng.random_range(0..3u8)).collect()).unwrap();
    let scales: Vec<f32> = (0..rows * cols / group).map(|_| rng.random_range(0.05..1.5f32)).collect();
    let m = TernaryMatrix::from_codes_grouped(&codes, group, &scales).unwrap();
    assert!(m.group_scales().is_some());
    m
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Asserts `|got - want| <= 1e-6 * max(|want|, 1)` elementwise.
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
    }
}

/// `ternary_linear`, `quantize_activations` and `ternary_dequantize` against the host kernels, over shapes
/// that cover decode (M = 1), prefill (M > 1), K not a multiple of 256 and N not a multiple of 4.
pub fn ops_match_cpu_reference<B: TernaryBackend>(device: &B::Device) {
    let mut rng = StdRng::seed_from_u64(42);
    let pool = ThreadPool::new(1).unwrap();
    for &(m, n, k) in &[(1, 8, 256), (1, 37, 300), (5, 64, 1000), (3, 5, 17), (2, 640, 2560)] {
        let w = random_matrix(&mut rng, n, k);
        let xs = random_vec(&mut rng, m * k, 2.0);
        let q = QuantizedActivations::quantize(&xs, m, k).unwrap();
        let mut want = vec![0f32; m * n];
        ternary_matmul_with(Kernel::Scalar, &w, &q, &mut want, &pool).unwrap();

        let weight = TernaryWeight::<B>::from_matrix(&w, device);
        let x = Tensor::<B, 2>::from_data(TensorData::new(xs.clone(), [m, k]), device);
        let got = to_vec(ternary_linear(x.clone(), &weight));
        assert_close(&got, &want, &format!("ternary_linear {m}x{n}x{k}"));

        let (codes, scales) = quantize_activations(x);
        let codes = codes.into_data().convert::<i32>().to_vec::<i32>().unwrap();
        let want_codes: Vec<i32> =
            (0..m).flat_map(|r| q.row(r)[..k].iter().map(|&c| c as i32).collect::<Vec<_>>()).collect();
        assert_eq!(codes, want_codes, "activation codes {m}x{k}");
        assert_close(&to_vec(scales), q.scales(), "activation scales");

        let deq = to_vec(ternary_dequantize(&weight));
        let codes = w.to_codes();
        let want_deq: Vec<f32> = (0..n * k).map(|i| (codes.codes()[i] as f32 - 1.0) * w.row_scales()[i / k]).collect();
        assert_close(&deq, &want_deq, "dequantized weights");
        assert_eq!(weight.to_matrix().unwrap().to_codes(), codes, "weights round-trip through the device");
    }
}

/// Grouped weights (a scale per 64 or 128 weights, as GGUF Q2_0 / PQ2_0 carry): `ternary_linear` and
/// `ternary_dequantize` against the host kernels. Backends may sum the scaled groups in another order than
/// the CPU kernels, so outputs agree within 1e-5 of the largest output.
pub fn grouped_ops_match_cpu_reference<B: TernaryBackend>(device: &B::Device) {
    let mut rng = StdRng::seed_from_u64(64);
    let pool = ThreadPool::new(1).unwrap();
    for &(m, n, k, group) in
        &[(1, 8, 256, 64), (1, 37, 320, 64), (3, 5, 128, 64), (4, 70, 1024, 128), (2, 9, 2560, 128)]
    {
        let w = random_grouped_matrix(&mut rng, n, k, group);
        let xs = random_vec(&mut rng, m * k, 2.0);
        let q = QuantizedActivations::quantize(&xs, m, k).unwrap();
        let mut want = vec![0f32; m * n];
        ternary_matmul_with(Kernel::Scalar, &w, &q, &mut want, &pool).unwrap();
        let weight = TernaryWeight::<B>::from_matrix(&w, device);
        assert!(weight.is_grouped());
        let x = Tensor::<B, 2>::from_data(TensorData::new(xs, [m, k]), device);
        let got = to_vec(ternary_linear(x, &weight));
        let largest = want.iter().fold(1f32, |a, v| a.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * largest, "grouped ternary_linear {m}x{n}x{k}/{group} [{i}]: {g} vs {w}");
        }
        assert_close(&to_vec(ternary_dequantize(&weight)), &w.view().dequantize(), "grouped dequantized weights");
        let back = weight.to_matrix().unwrap();
        assert_eq!((back.to_codes(), back.scales()), (w.to_codes(), w.scales()), "grouped weights round-trip");
    }
    // `ternary_rows` (the ternary embedding lookup) equals rows of the dequantized matrix, grouped or not, for
    // repeated ids and the last row of a partial tile.
    for w in [random_grouped_matrix(&mut rng, 37, 320, 64), random_matrix(&mut rng, 37, 300)] {
        let weight = TernaryWeight::<B>::from_matrix(&w, device);
        let ids = [36i32, 0, 5, 5, 33];
        let got = to_vec(bitnet_backend::ternary_rows(
            &weight,
            Tensor::from_data(TensorData::new(ids.to_vec(), [5]), device),
        ));
        let all = w.view().dequantize();
        let want: Vec<f32> =
            ids.iter().flat_map(|&i| all[i as usize * w.cols()..(i as usize + 1) * w.cols()].to_vec()).collect();
        assert_close(&got, &want, "ternary_rows");
    }
}

/// The latent (fake-quantized) and packed forward passes of BitLinear compute the same function.
pub fn bitlinear_latent_matches_packed<B: TernaryBackend>(device: &B::Device) {
    B::seed(device, 7);
    for bias in [false, true] {
        let layer: BitLinear<B> = BitLinearConfig::new(300, 70).with_bias(bias).init(device);
        let mut rng = StdRng::seed_from_u64(bias as u64);
        let x = Tensor::<B, 3>::from_data(TensorData::new(random_vec(&mut rng, 2 * 3 * 300, 2.0), [2, 3, 300]), device);
        let latent = to_vec(layer.forward(x.clone()));
        let packed = layer.clone().pack().unwrap();
        assert!(packed.is_packed() && packed.latent_weight().is_none() && !layer.is_packed());
        let fast = to_vec(packed.forward(x));
        for (i, (a, b)) in latent.iter().zip(&fast).enumerate() {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "bias={bias} [{i}]: latent {a} vs packed {b}");
        }
        assert!(packed.clone().pack().unwrap().is_packed(), "packing a packed layer keeps it");
    }
}

/// Straight-through backward of the packed op: `dL/dx = dL/dy · W_deq`.
pub fn packed_op_gradient_is_ste<B: AutodiffBackend + TernaryBackend>(device: &B::Device)
where
    B::InnerBackend: TernaryBackend,
{
    let mut rng = StdRng::seed_from_u64(3);
    let (m, n, k) = (3, 9, 270);
    let w = random_matrix(&mut rng, n, k);
    let weight = TernaryWeight::<B>::from_matrix(&w, device);
    let x = Tensor::<B, 2>::from_data(TensorData::new(random_vec(&mut rng, m * k, 1.0), [m, k]), device).require_grad();
    let r = random_vec(&mut rng, m * n, 1.0);
    let rt = Tensor::<B, 2>::from_data(TensorData::new(r.clone(), [m, n]), device);
    let loss = (ternary_linear(x.clone(), &weight) * rt).sum();
    let grads = loss.backward();
    let gx = to_vec(x.grad(&grads).expect("x has a gradient"));
    let codes = w.to_codes();
    let mut want = vec![0f32; m * k];
    for i in 0..m {
        for kk in 0..k {
            let mut s = 0f64;
            for j in 0..n {
                s += r[i * n + j] as f64 * (codes.row(j)[kk] as f64 - 1.0) * w.row_scales()[j] as f64;
            }
            want[i * k + kk] = s as f32;
        }
    }
    for (i, (g, w)) in gx.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "grad[{i}]: {g} vs {w}");
    }
}

/// Gradients of the latent BitLinear follow the fake-quant function's definition: identity through both
/// quantizers, so `dL/dW = x_q^T r` and `dL/dx = r W_q^T` with the fake-quantized `x_q`, `W_q`.
pub fn latent_bitlinear_gradients_are_ste<B: AutodiffBackend + TernaryBackend>(device: &B::Device) {
    B::seed(device, 7);
    use bitnet_backend::quant::{activation_quant_dequant, weight_quant_dequant};
    let layer: BitLinear<B> = BitLinearConfig::new(40, 12).with_bias(false).init(device);
    let x = Tensor::<B, 2>::random([4, 40], burn::tensor::Distribution::Normal(0.0, 1.0), device).require_grad();
    let r = Tensor::<B, 2>::random([4, 12], burn::tensor::Distribution::Normal(0.0, 1.0), device);
    let loss = (layer.forward(x.clone()) * r.clone()).sum();
    let grads = loss.backward();
    let w = layer.latent_weight().unwrap();
    let gw = to_vec(w.grad(&grads).expect("latent weight has a gradient"));
    let gx = to_vec(x.grad(&grads).expect("input has a gradient"));
    let xq = activation_quant_dequant(x.clone().inner());
    let wq = weight_quant_dequant(w.val().inner());
    let r = r.inner();
    let want_gw = to_vec(xq.transpose().matmul(r.clone()));
    let want_gx = to_vec(r.matmul(wq.transpose()));
    for (what, got, want) in [("dW", gw, want_gw), ("dx", gx, want_gx)] {
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
        }
    }
}

#[derive(Module, Debug)]
pub struct TwoLayer<B: Backend> {
    pub l1: BitLinear<B>,
    pub l2: BitLinear<B>,
}

impl<B: TernaryBackend> TwoLayer<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.l2.forward(burn::tensor::activation::relu(self.l1.forward(x)))
    }
}

/// A two-layer BitLinear network learns a toy regression (targets from a fixed random teacher): the loss
/// after `steps` Adam steps is well below the initial loss, and the packed model keeps it.
pub fn two_layer_model_trains<B: AutodiffBackend + TernaryBackend>(device: &B::Device, steps: usize) -> (f32, f32)
where
    B::InnerBackend: TernaryBackend,
{
    B::seed(device, 17);
    let mut rng = StdRng::seed_from_u64(17);
    let (n, d_in, d_hidden, d_out) = (64, 16, 32, 4);
    let xs = random_vec(&mut rng, n * d_in, 1.0);
    let teacher = random_vec(&mut rng, d_in * d_out, 1.0);
    let ys: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..d_out)
                .map(|o| (0..d_in).map(|j| xs[i * d_in + j] * teacher[j * d_out + o]).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(xs, [n, d_in]), device);
    let y = Tensor::<B, 2>::from_data(TensorData::new(ys, [n, d_out]), device);
    let mut model = TwoLayer::<B> {
        l1: BitLinearConfig::new(d_in, d_hidden).init(device),
        l2: BitLinearConfig::new(d_hidden, d_out).init(device),
    };
    let mut optim = AdamConfig::new().init();
    let mse = |model: &TwoLayer<B>| (model.forward(x.clone()) - y.clone()).powi_scalar(2).mean();
    let first = mse(&model).into_scalar().elem_f32();
    for _ in 0..steps {
        let loss = mse(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(5e-3, model, grads);
    }
    let last = mse(&model).into_scalar().elem_f32();
    // The packed inference model computes the same loss.
    let packed =
        TwoLayer::<B::InnerBackend> { l1: model.l1.valid().pack().unwrap(), l2: model.l2.valid().pack().unwrap() };
    // ... and so does the packed model after a save and a load into a packed skeleton.
    let recorder = burn::record::BinBytesRecorder::<burn::record::FullPrecisionSettings>::default();
    let bytes = burn::record::Recorder::<B::InnerBackend>::record(&recorder, packed.clone().into_record(), ()).unwrap();
    let record = burn::record::Recorder::<B::InnerBackend>::load(&recorder, bytes, &x.device()).unwrap();
    let skeleton = TwoLayer::<B::InnerBackend> {
        l1: BitLinearConfig::new(d_in, d_hidden).init_packed(&x.device()),
        l2: BitLinearConfig::new(d_hidden, d_out).init_packed(&x.device()),
    };
    let reloaded = skeleton.load_record(record);
    assert_eq!(to_vec(reloaded.forward(x.clone().inner())), to_vec(packed.forward(x.clone().inner())), "reloaded");
    let packed_loss = (packed.forward(x.inner()) - y.inner()).powi_scalar(2).mean().into_scalar().elem_f32();
    assert!((packed_loss - last).abs() <= 1e-3 * last.max(1.0), "packed loss {packed_loss} vs trained {last}");
    (first, last)
}

trait ElemF32 {
    fn elem_f32(self) -> f32;
}
impl<E: burn::tensor::ElementConversion> ElemF32 for E {
    fn elem_f32(self) -> f32 {
        self.elem::<f32>()
    }
}

/// The shared-quantization op equals separate `ternary_linear` calls.
pub fn linear_many_matches_separate_calls<B: TernaryBackend>(device: &B::Device) {
    let mut rng = StdRng::seed_from_u64(8);
    let (m, k) = (2, 300);
    let ws: Vec<TernaryWeight<B>> =
        [64, 16, 16].iter().map(|&n| TernaryWeight::from_matrix(&random_matrix(&mut rng, n, k), device)).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(random_vec(&mut rng, m * k, 1.0), [m, k]), device);
    let refs: Vec<&TernaryWeight<B>> = ws.iter().collect();
    let many = bitnet_backend::ternary_linear_many(x.clone(), &refs);
    assert_eq!(many.len(), 3);
    for (w, y) in ws.iter().zip(many) {
        assert_eq!(to_vec(y), to_vec(ternary_linear(x.clone(), w)), "shared quantization changes nothing");
    }
}

/// With `λ = 0` the latent BitLinear is exactly a float linear layer (warm-up start).
pub fn lambda_zero_is_plain_linear<B: TernaryBackend>(device: &B::Device) {
    B::seed(device, 7);
    let layer: BitLinear<B> = BitLinearConfig::new(32, 8).init(device).with_lambda(0.0);
    let x = Tensor::<B, 2>::random([3, 32], burn::tensor::Distribution::Normal(0.0, 1.0), device);
    let w = layer.latent_weight().unwrap().val();
    let b = layer.bias().unwrap().val();
    let want = to_vec(burn::tensor::module::linear(x.clone(), w, Some(b)));
    assert_close(&to_vec(layer.forward(x)), &want, "lambda = 0");
}

/// A packed BitLinear saved with burn's recorders and loaded into a packed skeleton built from the same config
/// gives identical outputs; the latent skeleton is the other state, so the record does not fit it.
pub fn packed_record_round_trips<B: TernaryBackend>(device: &B::Device) {
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    B::seed(device, 11);
    for (bias, norm) in [(false, None), (true, None), (false, Some(1e-6)), (true, Some(1e-6))] {
        let config = BitLinearConfig::new(300, 70).with_bias(bias).with_input_norm_eps(norm);
        let packed = config.init::<B>(device).pack().unwrap();
        let x = Tensor::<B, 2>::random([3, 300], burn::tensor::Distribution::Normal(0.0, 1.0), device);
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<B>::record(&recorder, packed.clone().into_record(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, device).unwrap();
        let skeleton = config.init_packed::<B>(device);
        assert_ne!(to_vec(skeleton.forward(x.clone())), to_vec(packed.forward(x.clone())), "a skeleton is blank");
        let reloaded = skeleton.load_record(record);
        assert!(reloaded.is_packed());
        assert_eq!(to_vec(reloaded.forward(x.clone())), to_vec(packed.forward(x)), "bias={bias} norm={norm:?}");
    }
    // A grouped weight's record (more scales than rows) loads into the same per-row skeleton.
    let mut rng = StdRng::seed_from_u64(12);
    let weight = TernaryWeight::<B>::from_matrix(&random_grouped_matrix(&mut rng, 70, 320, 64), device);
    let packed = BitLinear::from_packed(weight, None, None).unwrap();
    let x = Tensor::<B, 2>::random([3, 320], burn::tensor::Distribution::Normal(0.0, 1.0), device);
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = Recorder::<B>::record(&recorder, packed.clone().into_record(), ()).unwrap();
    let record = Recorder::<B>::load(&recorder, bytes, device).unwrap();
    let reloaded = BitLinearConfig::new(320, 70).with_bias(false).init_packed::<B>(device).load_record(record);
    assert!(reloaded.packed_weight().unwrap().unwrap().is_grouped());
    assert_eq!(to_vec(reloaded.forward(x.clone())), to_vec(packed.forward(x)), "grouped record");
}

/// A packed record carries its words' layout: a five-trit record loads into a 2-bit skeleton and a 2-bit record
/// into a five-trit one with the outputs of the 2-bit layer, at 256 columns too, where both layouts' word tensors
/// have the same shape and nothing else tells them apart. Where the CPU kernel cannot read five-trit words, a
/// five-trit record loads repacked into 2 bits (so it runs on every backend there; saving needs no kernel). A
/// record written before the layout was named (its layout entry nil) loads as 2-bit, and one naming a layout this
/// build does not know is refused by name.
pub fn packed_records_name_their_layout<B: TernaryBackend>(device: &B::Device) {
    use bitnet_kernels::TernaryLayout;
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    let loads_as = |saved: TernaryLayout| {
        if saved.is_read_by(Kernel::selected()) {
            saved
        } else {
            TernaryLayout::Bits2
        }
    };
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let save = |layer: &BitLinear<B>| Recorder::<B>::record(&recorder, layer.clone().into_record(), ()).unwrap();
    let load = |bytes: Vec<u8>| Recorder::<B>::load(&recorder, bytes, device).unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    for cols in [256, 300] {
        let matrix = random_matrix(&mut rng, 24, cols);
        let x = Tensor::<B, 2>::from_data(TensorData::new(random_vec(&mut rng, 3 * cols, 1.0), [3, cols]), device);
        let config = BitLinearConfig::new(cols, 24).with_bias(false);
        let two_bit = BitLinear::from_packed(TernaryWeight::<B>::from_matrix(&matrix, device), None, None).unwrap();
        let want = to_vec(two_bit.forward(x.clone()));
        for (saved, skeleton) in
            [(TernaryLayout::Trits5, TernaryLayout::Bits2), (TernaryLayout::Bits2, TernaryLayout::Trits5)]
        {
            let weight = TernaryWeight::<B>::from_matrix(&matrix.to_layout(saved).unwrap(), device);
            let layer = BitLinear::from_packed(weight, None, None).unwrap();
            let reloaded = config.init_packed_in::<B>(skeleton, device).load_record(load(save(&layer)));
            assert_eq!(reloaded.packed_weight().unwrap().unwrap().layout(), loads_as(saved), "{cols} columns");
            assert_eq!(
                to_vec(reloaded.forward(x.clone())),
                want.clone(),
                "{} record, {} skeleton, {cols} columns",
                saved.name(),
                skeleton.name()
            );
        }
        // An older record: the same bytes with the layout entry nil (msgpack 0xc0 for the fixstr "2bit").
        let layer = BitLinear::from_packed(TernaryWeight::<B>::from_matrix(&matrix, device), None, None).unwrap();
        let bytes = save(&layer);
        let named = [&[0xa4u8][..], b"2bit"].concat();
        let at =
            bytes.windows(named.len()).position(|w| w == named.as_slice()).expect("the layout's name in the record");
        let old = [&bytes[..at], &[0xc0u8][..], &bytes[at + named.len()..]].concat();
        let reloaded = config.init_packed_in::<B>(TernaryLayout::Trits5, device).load_record(load(old));
        assert_eq!(reloaded.packed_weight().unwrap().unwrap().layout(), TernaryLayout::Bits2);
        assert_eq!(to_vec(reloaded.forward(x.clone())), to_vec(layer.forward(x.clone())), "old record, {cols} columns");
        // A layout name this build does not know: the weight is refused, naming it.
        let bytes = save(&layer);
        let at = bytes.windows(4).position(|w| w == b"2bit").expect("the layout's name in the record");
        let mut unknown = bytes.clone();
        unknown[at..at + 4].copy_from_slice(b"9bit");
        let reloaded = config.init_packed::<B>(device).load_record(load(unknown));
        let err = reloaded.packed_weight().unwrap().expect_err("an unknown layout");
        assert!(err.to_string().contains("9bit"), "{err}");
    }
}

/// `BitLinear::forward_shared` (one activation quantization for q/k/v-like layers) equals separate forwards,
/// packed and latent, with and without input norms.
pub fn shared_forward_equals_separate_forwards<B: TernaryBackend>(device: &B::Device) {
    B::seed(device, 5);
    let x = Tensor::<B, 3>::random([2, 3, 300], burn::tensor::Distribution::Normal(0.0, 1.0), device);
    for norm in [None, Some(1e-5)] {
        let layers: Vec<BitLinear<B>> = [64, 16, 16]
            .iter()
            .map(|&o| BitLinearConfig::new(300, o).with_bias(false).with_input_norm_eps(norm).init(device))
            .collect();
        let packed: Vec<BitLinear<B>> = layers.iter().map(|l| l.clone().pack().unwrap()).collect();
        for set in [&layers, &packed] {
            let refs: Vec<&BitLinear<B>> = set.iter().collect();
            let shared = BitLinear::forward_shared(&refs, x.clone());
            for (layer, y) in set.iter().zip(shared) {
                assert_eq!(y.dims(), [2, 3, layer.d_output()]);
                assert_eq!(to_vec(y), to_vec(layer.forward(x.clone())), "norm {norm:?}");
            }
        }
    }
}

/// `dense_linear` equals burn's matmul with the weight widened to f32, and `cache_write` equals
/// `slice_assign`, on any backend (with and without autodiff tracking).
pub fn dense_and_cache_ops_match_burn<B: bitnet_backend::BitNetBackend>(device: &B::Device) {
    use burn::tensor::Distribution;
    B::seed(device, 9);
    for m in [1usize, 3, 12] {
        let x = Tensor::<B, 2>::random([m, 70], Distribution::Uniform(-1.0, 1.0), device);
        let w = Tensor::<B, 2>::random([37, 70], Distribution::Uniform(-1.0, 1.0), device);
        let want = to_vec(x.clone().matmul(w.clone().transpose()));
        let got = to_vec(bitnet_backend::dense_linear(x, &w));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "dense_linear {m} tokens: {a} vs {b}");
        }
    }
    let mut cache = Tensor::<B, 3>::zeros([3, 10, 4], device);
    let mut reference = cache.clone();
    let mut start = 0;
    for t in [4usize, 1, 3] {
        let values = Tensor::<B, 3>::random([3, t, 4], Distribution::Uniform(-1.0, 1.0), device);
        reference = reference.slice_assign([0..3, start..start + t, 0..4], values.clone());
        cache = bitnet_backend::cache_write(cache, start, values);
        start += t;
        assert_eq!(to_vec(cache.clone()), to_vec(reference.clone()), "cache after {start} positions");
    }
}

/// The gradient of the rotary embedding with respect to `x` (strided, as attention hands it over) is its
/// definition: `y = x cos + R(x) sin` with `R([a, b]) = [-b, a]` gives `dL/dx = g cos + R^T(g sin)`,
/// `R^T([a, b]) = [b, -a]`, computed here on the host.
pub fn rotary_gradient_matches_its_definition<B: AutodiffBackend + bitnet_backend::TransformerBackend>(
    device: &B::Device,
) {
    let mut rng = StdRng::seed_from_u64(5);
    let (b, h, t, d) = (2, 3, 5, 8);
    let half = d / 2;
    // Tables as models build them: the same angles in both halves.
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for _ in 0..t {
        let angles = random_vec(&mut rng, half, 3.0);
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    let table = |v: &Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v.clone(), [t, d]), device);
    // x is [b, t, h, d] swapped to [b, h, t, d].
    let x = Tensor::<B, 4>::from_data(TensorData::new(random_vec(&mut rng, b * t * h * d, 1.0), [b, t, h, d]), device)
        .require_grad();
    let r = random_vec(&mut rng, b * h * t * d, 1.0);
    let rt = Tensor::<B, 4>::from_data(TensorData::new(r.clone(), [b, h, t, d]), device);
    let y = bitnet_backend::rotary(x.clone().swap_dims(1, 2), &table(&cos), &table(&sin));
    let grads = (y * rt).sum().backward();
    let got = to_vec(x.grad(&grads).expect("x has a gradient").swap_dims(1, 2));
    let mut want = vec![0f32; r.len()];
    for row in 0..b * h * t {
        let p = row % t;
        let g = &r[row * d..(row + 1) * d];
        for i in 0..d {
            let partner =
                if i < half { g[i + half] * sin[p * d + i + half] } else { -g[i - half] * sin[p * d + i - half] };
            want[row * d + i] = g[i] * cos[p * d + i] + partner;
        }
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "grad[{i}]: {g} vs {w}");
    }
}

/// The backend's fake quantization of activations is the tensor-op definition bit for bit (ties to even, an
/// all-zero row, λ < 1), and its gradient is the identity.
pub fn fake_quantized_activations_match_their_definition<B: AutodiffBackend + TernaryBackend>(device: &B::Device) {
    let mut rng = StdRng::seed_from_u64(8);
    let (m, k) = (6, 37);
    let mut x = random_vec(&mut rng, m * k, 2.0);
    x[k..2 * k].fill(0.0);
    // A row whose absmax is 127 (scale 1): halves are ties, rounded to even.
    for (i, v) in x[2 * k..3 * k].iter_mut().enumerate() {
        *v = [127.0, 2.5, -3.5, 0.5, -0.5, 1.5][i % 6];
    }
    for lambda in [1.0, 0.3] {
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [m, k]), device).require_grad();
        let fused = bitnet_backend::fake_quantize_activations(xt.clone(), lambda);
        let reference = bitnet_backend::quant::activation_fake_quant(xt.clone().detach(), lambda);
        let (got, want) = (to_vec(fused.clone()), to_vec(reference));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "λ {lambda}, value {i}: {g} vs {w}");
        }
        if lambda == 1.0 {
            assert_eq!(&got[2 * k..2 * k + 6], &[127.0, 2.0, -4.0, 0.0, -0.0, 2.0]);
        }
        let r = random_vec(&mut rng, m * k, 1.0);
        let rt = Tensor::<B, 2>::from_data(TensorData::new(r.clone(), [m, k]), device);
        let grads = (fused * rt).sum().backward();
        assert_eq!(to_vec(xt.grad(&grads).expect("x has a gradient")), r, "straight-through gradient");
    }
}

/// The gradients of the fused causal attention (grouped queries, a prefix of cached positions) equal those of
/// its definition written as plain burn ops, `softmax(q k^T · scale + mask) v`, through autodiff.
pub fn causal_attention_gradients_match_burn_ops<B: AutodiffBackend + bitnet_backend::TransformerBackend>(
    device: &B::Device,
) {
    use burn::tensor::activation::softmax;
    let mut rng = StdRng::seed_from_u64(9);
    for (t, start) in [(5, 0), (3, 2)] {
        let (g, heads, d, len) = (2, 2, 8, start + t);
        let rows = heads * t;
        let tensor = |rng: &mut StdRng, dims: [usize; 3]| {
            let n = dims.iter().product();
            Tensor::<B, 3>::from_data(TensorData::new(random_vec(rng, n, 1.0), dims), device).require_grad()
        };
        let (q, k, v) = (tensor(&mut rng, [g, rows, d]), tensor(&mut rng, [g, len, d]), tensor(&mut rng, [g, len, d]));
        let r =
            Tensor::<B, 3>::from_data(TensorData::new(random_vec(&mut rng, g * rows * d, 1.0), [g, rows, d]), device);
        let scale = 0.35;
        let fused = bitnet_backend::causal_attention(q.clone(), k.clone(), v.clone(), t, start, scale);
        let grads = (fused * r.clone()).sum().backward();
        let got: Vec<Vec<f32>> = [&q, &k, &v].iter().map(|x| to_vec(x.grad(&grads).expect("a gradient"))).collect();
        // The definition: row i of a group sees keys ..= start + i % t.
        let mut mask = vec![0f32; rows * len];
        for i in 0..rows {
            for j in start + i % t + 1..len {
                mask[i * len + j] = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [rows, len]), device).unsqueeze::<3>();
        let scores = q.clone().matmul(k.clone().swap_dims(1, 2)) * scale + mask;
        let reference = softmax(scores, 2).matmul(v.clone());
        let grads = (reference * r).sum().backward();
        for (x, (name, got)) in [&q, &k, &v].iter().zip(["q", "k", "v"].iter().zip(&got)) {
            let want = to_vec(x.grad(&grads).expect("a gradient"));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "t {t}, start {start}: d{name}[{i}] {a} vs {b}");
            }
        }
    }
}

/// The fused RMSNorm and its gradients equal its definition as plain burn ops, through autodiff (on a
/// prompt-sized input: 36864 values, which the CPU backend splits over its threads).
pub fn rms_norm_gradients_match_burn_ops<B: AutodiffBackend + bitnet_backend::TransformerBackend>(device: &B::Device) {
    let mut rng = StdRng::seed_from_u64(10);
    let (rows, d, eps) = (2 * 96, 192, 1e-5);
    let x = Tensor::<B, 3>::from_data(TensorData::new(random_vec(&mut rng, rows * d, 2.0), [2, 96, d]), device)
        .require_grad();
    let gamma = Tensor::<B, 1>::from_data(TensorData::new(random_vec(&mut rng, d, 1.5), [d]), device).require_grad();
    let r = Tensor::<B, 3>::from_data(TensorData::new(random_vec(&mut rng, rows * d, 1.0), [2, 96, d]), device);
    let fused = bitnet_backend::rms_norm(x.clone(), &gamma, eps);
    let reference = x.clone() / (x.clone().square().mean_dim(2) + eps).sqrt() * gamma.clone().unsqueeze::<3>();
    for (i, (a, b)) in to_vec(fused.clone()).iter().zip(&to_vec(reference.clone())).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "rms_norm[{i}]: {a} vs {b}");
    }
    let grads = (fused * r.clone()).sum().backward();
    let got = [to_vec(x.grad(&grads).expect("dx")), to_vec(gamma.grad(&grads).expect("dgamma"))];
    let grads = (reference * r).sum().backward();
    let want = [to_vec(x.grad(&grads).expect("dx")), to_vec(gamma.grad(&grads).expect("dgamma"))];
    for (name, (got, want)) in ["x", "gamma"].iter().zip(got.iter().zip(&want)) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "d{name}[{i}]: {a} vs {b}");
        }
    }
}

/// The fused gated activation and its gradients (the backend's own backward) equal the burn-op chain
/// `act(gate) * up` and what autodiff derives from it, for both activations (38400 values: the CPU backend
/// splits them over its threads).
pub fn gated_activation_gradients_match_burn_ops<B: AutodiffBackend + bitnet_backend::TransformerBackend>(
    device: &B::Device,
) {
    use bitnet_backend::GateActivation;
    use burn::tensor::activation::{relu, silu};
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, d) = (64, 600);
    let input = |rng: &mut StdRng| {
        Tensor::<B, 2>::from_data(TensorData::new(random_vec(rng, rows * d, 2.0), [rows, d]), device).require_grad()
    };
    let (gate, up) = (input(&mut rng), input(&mut rng));
    let r = Tensor::<B, 2>::from_data(TensorData::new(random_vec(&mut rng, rows * d, 1.0), [rows, d]), device);
    for act in [GateActivation::ReluSquared, GateActivation::Silu] {
        let fused = bitnet_backend::gated_activation(gate.clone(), up.clone(), act);
        let activated = match act {
            GateActivation::ReluSquared => relu(gate.clone()).powi_scalar(2),
            GateActivation::Silu => silu(gate.clone()),
        };
        let reference = activated * up.clone();
        for (i, (a, b)) in to_vec(fused.clone()).iter().zip(&to_vec(reference.clone())).enumerate() {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{act:?}[{i}]: {a} vs {b}");
        }
        let grads = (fused * r.clone()).sum().backward();
        let got = [to_vec(gate.grad(&grads).expect("dgate")), to_vec(up.grad(&grads).expect("dup"))];
        let grads = (reference * r.clone()).sum().backward();
        let want = [to_vec(gate.grad(&grads).expect("dgate")), to_vec(up.grad(&grads).expect("dup"))];
        for (name, (got, want)) in ["gate", "up"].iter().zip(got.iter().zip(&want)) {
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{act:?}: d{name}[{i}]: {a} vs {b}");
            }
        }
    }
}

/// The fused cross-entropy equals `-log softmax(logits)[target]` of burn's ops, and its gradient (the
/// backend's own backward) the one autodiff derives from those ops, under per-row loss weights.
pub fn cross_entropy_matches_burn_ops<B: AutodiffBackend + bitnet_backend::TransformerBackend>(device: &B::Device) {
    use burn::tensor::activation::log_softmax;
    use burn::tensor::Int;
    let mut rng = StdRng::seed_from_u64(12);
    let (rows, vocab) = (7, 33);
    let logits =
        Tensor::<B, 2>::from_data(TensorData::new(random_vec(&mut rng, rows * vocab, 6.0), [rows, vocab]), device)
            .require_grad();
    let classes: Vec<i64> = (0..rows).map(|_| rng.random_range(0..vocab as i64)).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(classes, [rows]), device);
    let weights = Tensor::<B, 1>::from_data(TensorData::new(random_vec(&mut rng, rows, 1.0), [rows]), device);
    let fused = bitnet_backend::cross_entropy(logits.clone(), targets.clone());
    let got_losses = to_vec(fused.clone());
    let grads = (fused * weights.clone()).sum().backward();
    let got = to_vec(logits.grad(&grads).expect("dlogits"));
    let reference = log_softmax(logits.clone(), 1).gather(1, targets.reshape([rows, 1])).neg().reshape([rows]);
    assert_close(&got_losses, &to_vec(reference.clone()), "cross-entropy losses");
    let grads = (reference * weights).sum().backward();
    let want = to_vec(logits.grad(&grads).expect("dlogits"));
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "dlogits[{i}]: {a} vs {b}");
    }
}

/// `swap_tokens_and_heads` holds the values of burn's `swap_dims(1, 2)` and passes its gradient back swapped;
/// a size-1 dimension makes it a reshape.
pub fn swap_tokens_and_heads_matches_swap_dims<B: AutodiffBackend + bitnet_backend::TransformerBackend>(
    device: &B::Device,
) {
    let mut rng = StdRng::seed_from_u64(13);
    for dims in [[2, 5, 3, 4], [1, 1, 6, 8], [3, 7, 1, 2]] {
        let n = dims.iter().product();
        let x = Tensor::<B, 4>::from_data(TensorData::new(random_vec(&mut rng, n, 1.0), dims), device).require_grad();
        let swapped = bitnet_backend::swap_tokens_and_heads(x.clone());
        let reference = x.clone().swap_dims(1, 2);
        assert_eq!(swapped.dims(), reference.dims());
        assert_eq!(to_vec(swapped.clone()), to_vec(reference.clone()), "{dims:?}");
        let weights =
            Tensor::<B, 4>::from_data(TensorData::new(random_vec(&mut rng, n, 1.0), reference.dims()), device);
        let got = to_vec(x.grad(&(swapped * weights.clone()).sum().backward()).expect("dx"));
        let want = to_vec(x.grad(&(reference * weights).sum().backward()).expect("dx"));
        assert_eq!(got, want, "{dims:?}");
    }
}

/// Weight fake quantization at `λ = 1` gives the weights the packed export stores (`quantize_absmean`, then
/// dequantized), at `λ = 0.3` the blend `w + 0.3 (dequant - w)`, both up to the rounding of that sum; its
/// gradient is the identity.
pub fn fake_quantized_weights_match_the_packed_export<B: AutodiffBackend + TernaryBackend>(device: &B::Device) {
    let mut rng = StdRng::seed_from_u64(14);
    let (d_input, d_output) = (48, 20);
    let values = random_vec(&mut rng, d_input * d_output, 0.8);
    let w = Tensor::<B, 2>::from_data(TensorData::new(values, [d_input, d_output]), device).require_grad();
    let rows = to_vec(w.clone().transpose());
    let packed = TernaryWeight::<B>::quantize_absmean(&rows, d_output, d_input, device).unwrap();
    let dequantized = to_vec(ternary_dequantize(&packed));
    let scale = rows.iter().fold(0f32, |m, v| m.max(v.abs()));
    for lambda in [1.0f32, 0.3] {
        let y = bitnet_backend::fake_quantize_weights(w.clone(), lambda);
        let got = to_vec(y.clone().transpose());
        for (i, ((g, d), w)) in got.iter().zip(&dequantized).zip(&rows).enumerate() {
            let want = w + lambda * (d - w);
            assert!((g - want).abs() <= 1e-6 * scale, "λ {lambda}, [{i}]: {g} vs {want}");
        }
        let r = Tensor::<B, 2>::from_data(
            TensorData::new(random_vec(&mut rng, d_input * d_output, 1.0), [d_input, d_output]),
            device,
        );
        let grad = to_vec(w.grad(&(y * r.clone()).sum().backward()).expect("dw"));
        assert_eq!(grad, to_vec(r), "straight-through gradient");
    }
}

/// Five-trit weights on a backend that reads them (CubeCL; the CPU ones where the selected kernel does):
/// `ternary_linear`, `ternary_linear_many`, `ternary_dequantize`, the embedding gather `ternary_rows` and the
/// download all equal the 2-bit weight's, bit for bit (the integer sums are the same). Returns without checking
/// where the backend cannot read the layout.
pub fn five_trit_ops_match_2_bit_ops<B: TernaryBackend>(device: &B::Device) {
    use bitnet_backend::{ternary_linear_many, ternary_rows};
    use bitnet_kernels::TernaryLayout;
    if !B::reads_ternary_layout(TernaryLayout::Trits5) {
        eprintln!("this backend does not read five-trit weights with kernel {}: skipped", Kernel::selected());
        return;
    }
    let mut rng = StdRng::seed_from_u64(5);
    for &(m, n, k) in &[(1, 8, 320), (1, 37, 300), (5, 64, 1000), (3, 5, 17), (7, 640, 2560)] {
        let w = random_matrix(&mut rng, n, k);
        let two_bit = TernaryWeight::<B>::from_matrix(&w, device);
        let five = TernaryWeight::<B>::from_matrix(&w.to_layout(TernaryLayout::Trits5).unwrap(), device);
        assert_eq!(five.layout(), TernaryLayout::Trits5);
        let x = Tensor::<B, 2>::from_data(TensorData::new(random_vec(&mut rng, m * k, 2.0), [m, k]), device);
        let what = format!("{m}x{n}x{k}");
        assert_eq!(to_vec(ternary_linear(x.clone(), &five)), to_vec(ternary_linear(x.clone(), &two_bit)), "{what}");
        let many = ternary_linear_many(x.clone(), &[&five, &five]);
        assert_eq!(to_vec(many[1].clone()), to_vec(ternary_linear(x, &two_bit)), "many {what}");
        assert_eq!(to_vec(ternary_dequantize(&five)), to_vec(ternary_dequantize(&two_bit)), "dequantized {what}");
        let ids: Vec<i64> = (0..4).map(|i| (i * 7 % n) as i64).collect();
        let ids = Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(ids, [4]), device);
        assert_eq!(to_vec(ternary_rows(&five, ids.clone())), to_vec(ternary_rows(&two_bit, ids)), "rows {what}");
        assert_eq!(five.to_matrix().unwrap().to_codes(), w.to_codes(), "download {what}");
    }
    // A grouped matrix keeps the 2-bit layout when packed for the backend's preference.
    let grouped = random_grouped_matrix(&mut rng, 8, 256, 64);
    assert_eq!(TernaryWeight::<B>::from_matrix_preferred(&grouped, device).unwrap().layout(), TernaryLayout::Bits2);
}
