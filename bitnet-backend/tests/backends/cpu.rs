//! The extension on burn's CPU backend (Flex) and on `Autodiff<Flex>`.

use crate::common;

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
fn rotary_gradient_matches_its_definition() {
    common::rotary_gradient_matches_its_definition::<AB>(&Default::default());
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
    let (words, scales) = (w.words().clone(), w.scales().clone());
    assert!(TernaryWeight::<B>::from_tensors(words.clone(), scales.clone(), 8, 300).is_ok());
    assert!(TernaryWeight::<B>::from_tensors(words.clone(), scales.clone(), 8, 600).is_err());
    assert!(TernaryWeight::<B>::from_tensors(words, scales, 7, 300).is_err());
    assert!(TernaryWeight::<B>::quantize_absmean(&[0.5; 10], 8, 300, &device).is_err());
    let bias = Tensor::<B, 1>::zeros([9], &device);
    assert!(BitLinear::from_packed(w.clone(), Some(bias), None).is_err());
    let norm = burn::nn::RmsNormConfig::new(299).init(&device);
    assert!(BitLinear::from_packed(w, None, Some(norm)).is_err());
}

#[test]
fn five_trit_ops_match_2_bit_ops() {
    common::five_trit_ops_match_2_bit_ops::<B>(&Default::default());
    common::five_trit_ops_match_2_bit_ops::<AB>(&Default::default());
}

#[test]
fn flex_packs_in_the_selected_layout() {
    use bitnet_backend::TernaryBackend;
    assert_eq!(B::preferred_ternary_layout(), bitnet_kernels::TernaryLayout::selected());
    assert_eq!(AB::preferred_ternary_layout(), B::preferred_ternary_layout());
}

#[test]
fn packed_records_name_their_layout() {
    common::packed_records_name_their_layout::<B>(&Default::default());
}

#[test]
fn packed_record_round_trips() {
    common::packed_record_round_trips::<B>(&Default::default());
}

#[test]
fn shared_forward_equals_separate_forwards() {
    common::shared_forward_equals_separate_forwards::<B>(&Default::default());
    common::shared_forward_equals_separate_forwards::<AB>(&Default::default());
}

#[test]
fn bitlinear_display_names_the_state() {
    let layer: BitLinear<B> = BitLinearConfig::new(64, 32).with_bias(false).init(&Default::default());
    let text = format!("{layer}");
    assert!(text.contains("d_input: 64") && text.contains("state: latent"), "{text}");
    let text = format!("{}", layer.pack().unwrap());
    assert!(text.contains("state: packed"), "{text}");
}

#[test]
fn linear_many_matches_separate_calls() {
    common::linear_many_matches_separate_calls::<B>(&Default::default());
}

#[test]
fn lambda_zero_is_plain_linear() {
    common::lambda_zero_is_plain_linear::<B>(&Default::default());
}

#[test]
fn dense_linear_gemv_matches_matmul_in_f32_bf16_and_f16() {
    use burn::tensor::{DType, Distribution, FloatDType, TensorData};
    let device = Default::default();
    // The weights stored in `dtype` (16-bit types from the f32 values' little-endian bits).
    let stored = |w: &Tensor<Flex, 2>, dtype: DType| -> Tensor<Flex, 2> {
        let values = w.clone().into_data().to_vec::<f32>().unwrap();
        let bits: Vec<u8> = match dtype {
            DType::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            _ => return w.clone(),
        };
        Tensor::from_data(TensorData::from_bytes_vec(bits, w.dims(), dtype), (&device, dtype))
    };
    // 1 and 3 tokens take the GEMV, 12 burn's matmul (a 16-bit weight widened 1024 rows at a time: 2500 rows
    // make three blocks, the last one short).
    let n = 2500;
    for m in [1usize, 3, 12] {
        let x = Tensor::<Flex, 2>::random([m, 70], Distribution::Uniform(-1.0, 1.0), &device);
        let w = Tensor::<Flex, 2>::random([n, 70], Distribution::Uniform(-1.0, 1.0), &device);
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let w = stored(&w, dtype);
            // The reference multiplies the same stored values, widened to f32.
            let wide = w.clone().cast(FloatDType::F32);
            let reference = x.clone().matmul(wide.transpose()).into_data().to_vec::<f32>().unwrap();
            let got = bitnet_backend::dense_linear(x.clone(), &w).into_data().to_vec::<f32>().unwrap();
            assert_eq!(got.len(), m * n);
            for (a, b) in got.iter().zip(&reference) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{dtype:?}, {m} tokens: {a} vs {b}");
            }
        }
    }
}

#[test]
fn cache_write_matches_slice_assign_and_writes_in_place() {
    use burn::tensor::{Distribution, TensorPrimitive};
    let device = Default::default();
    let buffer = |t: &Tensor<Flex, 3>| match t.clone().into_primitive() {
        TensorPrimitive::Float(p) => p.bytes().as_ptr() as usize,
        TensorPrimitive::QFloat(_) => unreachable!("a float tensor"),
    };
    let mut cache = Tensor::<Flex, 3>::zeros([3, 10, 4], &device);
    let mut reference = cache.clone();
    // Prefill 4 positions, then decode one at a time; the last write fills the final position.
    let mut start = 0;
    for t in [4usize, 1, 1, 3, 1] {
        let values = Tensor::<Flex, 3>::random([3, t, 4], Distribution::Uniform(-1.0, 1.0), &device);
        reference = reference.slice_assign([0..3, start..start + t, 0..4], values.clone());
        let before = buffer(&cache);
        cache = bitnet_backend::cache_write(cache, start, values);
        if start > 0 {
            // The buffer is the cache's only handle after the first write: no copy.
            assert_eq!(buffer(&cache), before, "write at {start} copied the cache");
        }
        start += t;
        assert_eq!(cache.to_data().to_vec::<f32>().unwrap(), reference.to_data().to_vec::<f32>().unwrap());
    }
    // A view still alive makes the write copy, and the view keeps its old contents.
    let view = cache.clone().slice([0..3, 0..2, 0..4]);
    let old = view.to_data();
    let cache = bitnet_backend::cache_write(cache, 0, Tensor::ones([3, 2, 4], &device));
    assert_eq!(view.to_data(), old);
    assert_eq!(cache.slice([0..3, 0..2, 0..4]).to_data().to_vec::<f32>().unwrap(), vec![1.0; 24]);
}

#[test]
#[should_panic(expected = "do not fit a cache of shape [2, 5, 4]")]
fn cache_write_past_the_capacity_panics_with_shapes() {
    let device = Default::default();
    let cache = Tensor::<Flex, 3>::zeros([2, 5, 4], &device);
    bitnet_backend::cache_write(cache, 4, Tensor::zeros([2, 2, 4], &device));
}

#[test]
fn dense_and_cache_ops_match_burn() {
    common::dense_and_cache_ops_match_burn::<B>(&Default::default());
    common::dense_and_cache_ops_match_burn::<AB>(&Default::default());
}

#[test]
fn grouped_ops_match_cpu_reference() {
    common::grouped_ops_match_cpu_reference::<B>(&Default::default());
}

#[test]
fn grouped_ops_match_cpu_reference_through_autodiff() {
    common::grouped_ops_match_cpu_reference::<AB>(&Default::default());
}

#[test]
fn fake_quantized_activations_match_their_definition() {
    common::fake_quantized_activations_match_their_definition::<AB>(&Default::default());
}

#[test]
fn causal_attention_gradients_match_burn_ops() {
    common::causal_attention_gradients_match_burn_ops::<AB>(&Default::default());
}

#[test]
fn rms_norm_gradients_match_burn_ops() {
    common::rms_norm_gradients_match_burn_ops::<AB>(&Default::default());
}

#[test]
fn gated_activation_gradients_match_burn_ops() {
    common::gated_activation_gradients_match_burn_ops::<AB>(&Default::default());
}

#[test]
fn cross_entropy_matches_burn_ops() {
    common::cross_entropy_matches_burn_ops::<AB>(&Default::default());
}

#[test]
fn swap_tokens_and_heads_matches_swap_dims() {
    common::swap_tokens_and_heads_matches_swap_dims::<AB>(&Default::default());
}

#[test]
fn fake_quantized_weights_match_the_packed_export() {
    common::fake_quantized_weights_match_the_packed_export::<AB>(&Default::default());
}
