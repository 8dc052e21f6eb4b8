//! Fidelity against transformers' `BitNetForCausalLM` and the family layouts on the CPU backend (Flex), the
//! module's batch and cache semantics, and packed-model records (see `common.rs` for the bars).

use crate::common;

use bitnet_models::perplexity::{perplexity, token_nll};
use burn::backend::Flex;

type B = Flex;

#[test]
fn packed_bitlinear_tied_gqa_matches_transformers() {
    common::check_logits::<B>("tiny-bitlinear", &Default::default());
    common::check_layers::<B>("tiny-bitlinear", &Default::default());
    common::check_greedy::<B>("tiny-bitlinear", &Default::default());
}

#[test]
fn dense_autobitlinear_untied_mqa_matches_transformers() {
    common::check_logits::<B>("tiny-autobitlinear", &Default::default());
    common::check_layers::<B>("tiny-autobitlinear", &Default::default());
    common::check_greedy::<B>("tiny-autobitlinear", &Default::default());
}

#[test]
fn bf16_master_weights_quantized_at_load_match_transformers() {
    common::check_logits::<B>("tiny-bf16-master", &Default::default());
    common::check_layers::<B>("tiny-bf16-master", &Default::default());
    common::check_greedy::<B>("tiny-bf16-master", &Default::default());
}

#[test]
fn wide_packed_model_matches_transformers() {
    common::check_logits::<B>("tiny-bitlinear-256", &Default::default());
    common::check_layers::<B>("tiny-bitlinear-256", &Default::default());
    common::check_greedy::<B>("tiny-bitlinear-256", &Default::default());
}

#[test]
fn llama_with_bitnet_quantization_and_rms_norm_in_bitlinear_matches_transformers() {
    // HF1BitLLM / Falcon-Edge style: LLaMA blocks, packed BitLinear, RMSNorm inside every BitLinear, untied.
    common::check_logits::<B>("tiny-llama-bitnet-rmsnorm", &Default::default());
    common::check_layers::<B>("tiny-llama-bitnet-rmsnorm", &Default::default());
    common::check_greedy::<B>("tiny-llama-bitnet-rmsnorm", &Default::default());
}

#[test]
fn llama_with_online_bitnet_quantization_matches_transformers() {
    common::check_logits::<B>("tiny-llama-bitnet-online", &Default::default());
    common::check_layers::<B>("tiny-llama-bitnet-online", &Default::default());
    common::check_greedy::<B>("tiny-llama-bitnet-online", &Default::default());
}

#[test]
fn one_bit_llm_layout_matches_the_reference() {
    // 1bitLLM/bitnet_b1_58: fp16 latent weights, inner_attn_ln / ffn_layernorm sub-norms, SiLU.
    common::check_logits::<B>("tiny-1bitllm", &Default::default());
    common::check_layers::<B>("tiny-1bitllm", &Default::default());
    common::check_greedy::<B>("tiny-1bitllm", &Default::default());
}

#[test]
fn incremental_and_batched_decode_equal_the_full_forward() {
    common::incremental_and_batched_decode_equal_the_full_forward::<B>(&Default::default());
}

#[test]
fn packed_model_record_round_trips() {
    common::packed_model_record_round_trips::<B>(&Default::default());
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let (model, _) = common::fixture::<B>("tiny-bitlinear", &Default::default());
    let mut cache = model.new_cache(1, 4).unwrap();
    assert!(model.forward_ids(&[300], &mut cache).is_err(), "token outside the vocabulary");
    assert!(model.forward_ids(&[], &mut cache).is_err(), "no tokens");
    assert!(model.forward_ids(&[1, 2, 3, 4, 5], &mut cache).is_err(), "context full");
    assert!(model.forward_cached(&[&[1], &[2]], &mut cache).is_err(), "two sequences for a cache of one");
    assert_eq!(cache.len(), 0, "a failed call leaves the cache untouched");
    model.forward_ids(&[1, 2, 3, 4], &mut cache).unwrap();
    assert!(model.forward_ids(&[1], &mut cache).is_err(), "context full after filling");
    let mut batch = model.new_cache(2, 4).unwrap();
    assert!(model.forward_cached(&[&[1, 2], &[3]], &mut batch).is_err(), "ragged batch");
    assert!(model.new_cache(1, 0).is_err() && model.new_cache(1, 1 << 20).is_err(), "impossible caches");
}

#[test]
fn perplexity_matches_the_reference_logits() {
    let (model, expected) = common::fixture::<B>("tiny-bitlinear", &Default::default());
    // The reference's own mean NLL over the prompt, from its logits.
    let v = expected.vocab;
    let t = expected.prompt.len();
    let want: f64 = (0..t - 1)
        .map(|p| token_nll(&expected.logits[p * v..(p + 1) * v], expected.prompt[p + 1] as usize))
        .sum::<f64>()
        / (t - 1) as f64;
    let got = perplexity(&model, &expected.prompt, 64, |_, _| {}).unwrap();
    assert_eq!(got.tokens, t - 1);
    assert!((got.nll - want).abs() < 1e-4, "nll {} vs reference {want}", got.nll);
    // Two windows score two fewer tokens.
    let windowed = perplexity(&model, &expected.prompt, 4, |_, _| {}).unwrap();
    assert_eq!(windowed.tokens, 3 + 2);
    assert!(perplexity(&model, &expected.prompt, 1, |_, _| {}).is_err());
}

#[test]
fn head_formats_stay_close() {
    common::head_formats_stay_close::<B>(&Default::default());
}

#[test]
fn batched_generation_equals_single_generation() {
    common::batched_generation_equals_single_generation::<B>(&Default::default());
}
