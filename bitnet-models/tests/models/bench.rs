//! The decode benchmark's accounting: the bytes a decode step streams, and runs through the generation loop.

use bitnet_models::bench::{bench_decode, DecodeBenchConfig};
use bitnet_models::load_hf_dir;
use burn::backend::Flex;
use std::path::PathBuf;

fn tiny(name: &str) -> bitnet_models::BitNetModel<Flex> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    load_hf_dir::<Flex>(&dir, &Default::default()).unwrap()
}

/// Bytes of one packed projection of `[rows, cols]`: 2-bit codes of rows padded to 4-row tiles and columns to
/// 256-weight blocks, plus one f32 scale per row.
fn packed(rows: usize, cols: usize) -> u64 {
    (rows.div_ceil(4) * 4 * cols.div_ceil(256) * 256 / 4 + rows * 4) as u64
}

#[test]
fn decode_weight_bytes_count_every_streamed_weight_once() {
    // tiny-bitlinear: hidden 64, FFN 160, 4 heads / 2 KV heads of 16, vocab 300, 2 layers, tied f32 embedding.
    let model = tiny("tiny-bitlinear");
    let (h, i, q, kv) = (64, 160, 64, 32);
    let projections = packed(q, h) + 2 * packed(kv, h) + packed(h, q) + 2 * packed(i, h) + packed(h, i);
    let norms = (2 * h + q + i) as u64 * 4;
    let expected = 2 * (projections + norms) + h as u64 * 4 + 300 * 64 * 4;
    assert_eq!(model.decode_weight_bytes(), expected);

    // Untied: the head is counted, the embedding (one row per token) is not.
    let untied = tiny("tiny-autobitlinear");
    let c = untied.config();
    assert!(!c.tie_word_embeddings);
    assert_eq!(untied.head().dims(), [c.vocab_size, c.hidden_size]);
    let without_head = untied.decode_weight_bytes() - (c.vocab_size * c.hidden_size * 4) as u64;
    assert!(without_head > 0 && without_head < untied.decode_weight_bytes());
}

#[test]
fn bench_runs_the_requested_tokens_and_rejects_bad_requests() {
    let model = tiny("tiny-bitlinear");
    let config = DecodeBenchConfig { prompt_tokens: 5, decode_tokens: 9, runs: 3, warmup_runs: 1 };
    let mut seen = vec![];
    let bench = bench_decode(&model, config, |i, _| seen.push(i)).unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(bench.runs.len(), 3);
    assert!(bench.runs.iter().all(|r| r.decode_tokens_per_s > 0.0 && r.prefill_tokens_per_s > 0.0));
    assert_eq!(bench.weight_bytes_per_token, model.decode_weight_bytes());
    assert!(bench.decode_bytes_per_s() > 0.0);
    // f32 keys and values of every layer's key/value heads, at 5 + 9 / 2 positions on average.
    let c = model.config();
    let per_position = (c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 4) as u64;
    assert_eq!(model.new_cache(1, 8).unwrap().bytes_per_position(), per_position);
    assert_eq!(bench.cache_bytes_per_token, per_position * 19 / 2);

    // The fixture's context is 128 positions.
    let too_long = DecodeBenchConfig { prompt_tokens: 100, decode_tokens: 29, runs: 1, warmup_runs: 0 };
    let err = bench_decode(&model, too_long, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("exceed the model's context of 128"), "{err}");
    let empty = DecodeBenchConfig { prompt_tokens: 0, ..config };
    assert!(bench_decode(&model, empty, |_, _| {}).is_err());
}
