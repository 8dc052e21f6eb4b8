//! Backend-generic fidelity checks against transformers (fixtures made by `fixtures/make_hf_fixtures.py` and
//! `make_family_fixtures.py`): logits within 0.05 of the reference (one int8 rounding flip moves a logit by
//! ~1e-2; more is a bug), the same argmax wherever the reference's top-2 margin exceeds 0.05, every block's
//! output within 0.05 of the layer's largest magnitude, and the same greedy continuation decoded token by token
//! through the KV cache. `hf_reference` runs them on the CPU, `wgpu` on burn-wgpu.
#![allow(dead_code)]

use bitnet_models::backend::BitNetBackend;
use bitnet_models::{load_hf_dir, BitNetModel};
use burn::tensor::Tensor;
use std::path::PathBuf;

/// Every transformers-made family fixture.
pub const FAMILY_FIXTURES: [&str; 8] = [
    "tiny-bitlinear",
    "tiny-autobitlinear",
    "tiny-bf16-master",
    "tiny-bitlinear-256",
    "tiny-llama-bitnet-rmsnorm",
    "tiny-llama-bitnet-online",
    "tiny-1bitllm",
    "tiny-bitlinear",
];

pub struct Expected {
    pub prompt: Vec<u32>,
    pub logits: Vec<f32>,
    pub vocab: usize,
    pub greedy: Vec<u32>,
    pub layer_outputs: Vec<Vec<f32>>,
}

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |key: &str| v[key].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    Expected {
        prompt: ids("prompt"),
        logits: v["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        vocab: v["vocab_size"].as_u64().unwrap() as usize,
        greedy: ids("greedy"),
        layer_outputs: v["layer_outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
            .collect(),
    }
}

pub fn fixture<B: BitNetBackend>(name: &str, device: &B::Device) -> (BitNetModel<B>, Expected) {
    let model = load_hf_dir::<B>(&fixture_dir(name), device).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    (model, expected(name))
}

pub fn to_vec<B: BitNetBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best })
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
}

pub fn check_logits<B: BitNetBackend>(name: &str, device: &B::Device) {
    let (model, expected) = fixture::<B>(name, device);
    let mut cache = model.new_cache(1, 64).unwrap();
    let got = to_vec(model.forward_ids(&expected.prompt, &mut cache).unwrap());
    let diff = max_diff(&got, &expected.logits);
    eprintln!("{name}: max |logit difference| = {diff}");
    assert!(diff <= 0.05, "{name}: max |logit difference| {diff} > 0.05");
    for (t, (g, e)) in got.chunks(expected.vocab).zip(expected.logits.chunks(expected.vocab)).enumerate() {
        let top = argmax(e);
        let runner_up = e.iter().enumerate().filter(|&(i, _)| i != top).map(|(_, &x)| x).fold(f32::MIN, f32::max);
        if e[top] - runner_up > 0.05 {
            assert_eq!(argmax(g), top, "{name}: argmax differs at position {t}");
        }
    }
}

pub fn check_layers<B: BitNetBackend>(name: &str, device: &B::Device) {
    let (model, expected) = fixture::<B>(name, device);
    let mut cache = model.new_cache(1, 64).unwrap();
    let (_, layers) = model.forward_traced(&expected.prompt, &mut cache).unwrap();
    assert_eq!(layers.len(), expected.layer_outputs.len());
    for (i, (got, want)) in layers.into_iter().zip(&expected.layer_outputs).enumerate() {
        let got = to_vec(got);
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let diff = max_diff(&got, want);
        assert!(diff <= 0.05 * scale, "{name}: layer {i} differs by {diff} (scale {scale})");
    }
}

pub fn check_greedy<B: BitNetBackend>(name: &str, device: &B::Device) {
    use bitnet_models::{generate, Sampler, SamplingConfig};
    let (model, expected) = fixture::<B>(name, device);
    let mut cache = model.new_cache(1, 64).unwrap();
    let mut sampler = Sampler::new(SamplingConfig::default());
    let out =
        generate(&model, &mut cache, &expected.prompt, expected.greedy.len(), &mut sampler, &[], |_| true).unwrap();
    assert_eq!(out.tokens, expected.greedy, "{name}: greedy continuation");
}

/// Every fidelity check on every family fixture.
pub fn all_fixtures_match_transformers<B: BitNetBackend>(device: &B::Device) {
    for name in &FAMILY_FIXTURES[..7] {
        check_logits::<B>(name, device);
        check_layers::<B>(name, device);
        check_greedy::<B>(name, device);
    }
}

/// Decoding token by token through the cache equals one full forward pass, and a batch of two sequences gives
/// each sequence's own logits.
pub fn incremental_and_batched_decode_equal_the_full_forward<B: BitNetBackend>(device: &B::Device) {
    let (model, expected) = fixture::<B>("tiny-autobitlinear", device);
    let mut full_cache = model.new_cache(1, 64).unwrap();
    let full = to_vec(model.forward_ids(&expected.prompt, &mut full_cache).unwrap());
    let mut cache = model.new_cache(1, 64).unwrap();
    let (head, tail) = expected.prompt.split_at(3);
    let mut incremental = to_vec(model.forward_ids(head, &mut cache).unwrap());
    for &t in tail {
        incremental.extend(to_vec(model.forward_ids(&[t], &mut cache).unwrap()));
    }
    let diff = max_diff(&full, &incremental);
    assert!(diff < 1e-4, "cached decode differs from the full forward by {diff}");
    assert_eq!(cache.len(), expected.prompt.len());

    // A batch of the prompt and its reversal: each row equals that sequence run alone.
    let reversed: Vec<u32> = expected.prompt.iter().rev().copied().collect();
    let mut batch_cache = model.new_cache(2, 64).unwrap();
    let both = model.forward_cached(&[&expected.prompt, &reversed], &mut batch_cache).unwrap();
    let [b, t, v] = both.dims();
    assert_eq!((b, t, v), (2, expected.prompt.len(), expected.vocab));
    let both = to_vec(both);
    let mut alone_cache = model.new_cache(1, 64).unwrap();
    let alone = to_vec(model.forward_ids(&reversed, &mut alone_cache).unwrap());
    assert!(max_diff(&both[..t * v], &full) < 1e-4, "first sequence of the batch");
    assert!(max_diff(&both[t * v..], &alone) < 1e-4, "second sequence of the batch");
    // The training forward (no cache) computes the same logits.
    let tokens = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(expected.prompt.iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, t]),
        device,
    );
    assert!(max_diff(&to_vec(model.forward(tokens)), &full) < 1e-4, "uncached forward");
}

/// A packed model saved with burn's recorders and loaded into a packed skeleton of its config gives identical
/// logits.
pub fn packed_model_record_round_trips<B: BitNetBackend>(device: &B::Device) {
    use burn::module::Module;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    for name in ["tiny-bitlinear", "tiny-llama-bitnet-rmsnorm", "tiny-1bitllm"] {
        let (model, expected) = fixture::<B>(name, device);
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<B>::record(&recorder, model.clone().into_record(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, device).unwrap();
        let skeleton = model.config().init_packed::<B>(device).unwrap();
        let reloaded = skeleton.load_record(record);
        let logits = |m: &BitNetModel<B>| {
            let mut cache = m.new_cache(1, 64).unwrap();
            to_vec(m.forward_ids(&expected.prompt, &mut cache).unwrap())
        };
        assert_eq!(logits(&reloaded), logits(&model), "{name}: reloaded packed model");
    }
}

/// The GGUF fixtures (TQ2_0, TQ1_0, I2_S, written by `fixtures/make_gguf_fixtures.py` from `tiny-bitlinear-256`)
/// against that model's reference logits.
pub fn gguf_types_match_transformers<B: BitNetBackend>(device: &B::Device) {
    let reference = expected("tiny-bitlinear-256");
    for kind in ["tq2_0", "tq1_0", "i2_s"] {
        let path = fixture_dir(&format!("tiny-{kind}.gguf"));
        let model = bitnet_models::load_gguf::<B>(&path, device).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(model.config().num_key_value_heads, 2);
        assert!(model.config().tie_word_embeddings);
        let mut cache = model.new_cache(1, 16).unwrap();
        let got = to_vec(model.forward_ids(&reference.prompt, &mut cache).unwrap());
        let diff = max_diff(&got, &reference.logits);
        eprintln!("{kind}: max |logit difference| = {diff}");
        // TQ types store the scale in f16, I2_S in f32.
        assert!(diff <= 0.05, "{kind}: max |logit difference| {diff}");
    }
}

/// The Qwen3-family ternary fixtures (`fixtures/make_qwen3_fixtures.py`), each loaded from its HF directory
/// (f16 ternary values times group scales, recognized as ternary at load) and from its GGUF file (Q2_0 at
/// group 64, tied; PQ2_0 at group 128, untied; every matrix ternary, embedding and head included), against
/// transformers' Qwen3ForCausalLM: the same bars as the BitNet fixtures (logits within 0.05, the same argmax
/// where the margin is clear, every layer within 5%, the same greedy continuation through the cache). The
/// reference computes activations in f32, ours are int8 per token, as in every member.
pub fn qwen3_fixtures_match_transformers<B: BitNetBackend>(device: &B::Device) {
    for (name, group, tied) in [("tiny-qwen3-q2_0", 64, true), ("tiny-qwen3-pq2_0", 128, false)] {
        let expected = expected(name);
        let dir = fixture_dir(name);
        let hf = load_hf_dir::<B>(&dir, device).unwrap_or_else(|e| panic!("{name} (HF): {e}"));
        let gguf = bitnet_models::load_gguf::<B>(&dir.join("model.gguf"), device)
            .unwrap_or_else(|e| panic!("{name} (GGUF): {e}"));
        for (source, model) in [("HF", &hf), ("GGUF", &gguf)] {
            let label = format!("{name} ({source})");
            let c = model.config();
            assert_eq!((c.family, c.head_dim, c.tie_word_embeddings), (bitnet_models::config::Family::Qwen3, 64, tied));
            assert_eq!(model.embedding().format_name(), "ternary", "{label}: the embedding stays ternary");
            assert_eq!(model.head().format_name(), "ternary", "{label}: the head stays ternary");
            check_model(&label, model, &expected);
        }
        // The two sources hold the same weights: the same logits, bit for bit.
        assert_eq!(prompt_logits(&hf, &expected.prompt), prompt_logits(&gguf, &expected.prompt), "{name}");
        let _ = group;
    }
}

/// The logits, per-layer and greedy checks of one loaded model against `expected`.
pub fn check_model<B: BitNetBackend>(label: &str, model: &BitNetModel<B>, expected: &Expected) {
    use bitnet_models::{generate, Sampler, SamplingConfig};
    let got = prompt_logits(model, &expected.prompt);
    let diff = max_diff(&got, &expected.logits);
    eprintln!("{label}: max |logit difference| = {diff}");
    assert!(diff <= 0.05, "{label}: max |logit difference| {diff} > 0.05");
    for (t, (g, e)) in got.chunks(expected.vocab).zip(expected.logits.chunks(expected.vocab)).enumerate() {
        let top = argmax(e);
        let runner_up = e.iter().enumerate().filter(|&(i, _)| i != top).map(|(_, &x)| x).fold(f32::MIN, f32::max);
        if e[top] - runner_up > 0.05 {
            assert_eq!(argmax(g), top, "{label}: argmax differs at position {t}");
        }
    }
    let mut cache = model.new_cache(1, 64).unwrap();
    let (_, layers) = model.forward_traced(&expected.prompt, &mut cache).unwrap();
    for (i, (got, want)) in layers.into_iter().zip(&expected.layer_outputs).enumerate() {
        let got = to_vec(got);
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let diff = max_diff(&got, want);
        assert!(diff <= 0.05 * scale, "{label}: layer {i} differs by {diff} (scale {scale})");
    }
    let mut cache = model.new_cache(1, 64).unwrap();
    let mut sampler = Sampler::new(SamplingConfig::default());
    let out =
        generate(model, &mut cache, &expected.prompt, expected.greedy.len(), &mut sampler, &[], |_| true).unwrap();
    assert_eq!(out.tokens, expected.greedy, "{label}: greedy continuation");
}

/// Logits of `expected.prompt` through a fresh cache.
pub fn prompt_logits<B: BitNetBackend>(model: &BitNetModel<B>, prompt: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(1, 64).unwrap();
    to_vec(model.forward_ids(prompt, &mut cache).unwrap())
}

/// Every head format on a tied (256 wide) and an untied fixture: 16/32-bit heads stay within the transformers
/// tolerance, int8 and Q6_K (which also round the activations to 8 bits) within 0.1 and Q4 within 0.3, with the
/// same argmax where the reference's margin is clear; converting after loading equals converting at load; a
/// block-quantized head (Q6_K, Q4) is refused where blocks are not native or the width is not whole blocks (and
/// a 16-bit or int8 one where the device does not store the dtype), and where it loads, the tied model's
/// embedding lookup reads the same rows.
pub fn head_formats_stay_close<B: BitNetBackend>(device: &B::Device) {
    use bitnet_models::{build_model, Checkpoint, HeadFormat, LoadOptions, ModelSpec};
    for name in ["tiny-bitlinear-256", "tiny-autobitlinear"] {
        let expected = expected(name);
        let checkpoint = Checkpoint::open(&ModelSpec::parse(Some(&fixture_dir(name))).unwrap()).unwrap();
        let config = checkpoint.config().unwrap();
        let load = |format: HeadFormat| {
            build_model::<B>(&config, checkpoint.source(), LoadOptions::packed().with_head(format), device)
        };
        let stored = load(HeadFormat::Stored).unwrap();
        for (format, _) in HeadFormat::ALL {
            let wide = config.hidden_size.is_multiple_of(256);
            if format.block_format().is_some() && !(wide && B::has_native_blocks(device)) {
                let err = load(format).expect_err("blocks need a native backend and whole blocks").to_string();
                assert!(err.contains(format.name()), "{name}: {err}");
                continue;
            }
            let needs = match format {
                HeadFormat::F16 => Some(burn::tensor::DType::F16),
                HeadFormat::Bf16 => Some(burn::tensor::DType::BF16),
                HeadFormat::Int8 => Some(burn::tensor::DType::I8),
                _ => None,
            };
            if needs.is_some_and(|dtype| !B::supports_dtype(device, dtype)) {
                let err = load(format).expect_err("a dtype the device does not store").to_string();
                assert!(err.contains("store"), "{name} {format:?}: {err}");
                continue;
            }
            let model = load(format).unwrap_or_else(|e| panic!("{name} {format:?}: {e}"));
            let got = prompt_logits(&model, &expected.prompt);
            let diff = max_diff(&got, &expected.logits);
            let bound = match format {
                HeadFormat::Int8 | HeadFormat::Q6K => 0.1,
                HeadFormat::Q4 => 0.3,
                _ => 0.05,
            };
            eprintln!("{name} head {}: {} bytes, max |logit difference| = {diff}", format.name(), model.head().bytes());
            assert!(diff <= bound, "{name} head {format:?}: max |logit difference| {diff} > {bound}");
            for (t, (g, e)) in got.chunks(expected.vocab).zip(expected.logits.chunks(expected.vocab)).enumerate() {
                let top = argmax(e);
                let runner_up =
                    e.iter().enumerate().filter(|&(i, _)| i != top).map(|(_, &x)| x).fold(f32::MIN, f32::max);
                if e[top] - runner_up > 2.0 * bound {
                    assert_eq!(argmax(g), top, "{name} head {format:?}: argmax differs at position {t}");
                }
            }
            // The same conversion after loading.
            let converted = stored.clone().with_head(format).unwrap();
            assert_eq!(prompt_logits(&converted, &expected.prompt), got, "{name}: with_head({format:?})");
            if config.tie_word_embeddings && format != HeadFormat::Stored {
                assert_eq!(model.embedding().format_name(), model.head().format_name(), "{name}: one tied matrix");
            }
        }
    }
}

/// Continuous batching: sequences of different prompt lengths, admitted at different steps into fewer slots
/// than requests, with prompts read in chunks, produce exactly the greedy tokens each produces alone through
/// `generate`; a cancelled sequence frees its slot for the next request.
pub fn batched_generation_equals_single_generation<B: BitNetBackend>(device: &B::Device) {
    use bitnet_models::batch::{BatchConfig, BatchEngine, SequenceEvent, SequenceRequest};
    use bitnet_models::{generate, FinishReason, Sampler, SamplingConfig};
    use std::sync::{Arc, Mutex};

    let (model, _) = fixture::<B>("tiny-bitlinear-256", device);
    let vocab = model.config().vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..5u32)
        .map(|s| (0..[3u32, 11, 1, 17, 6][s as usize]).map(|i| (i * 37 + s * 101 + 5) % vocab).collect())
        .collect();
    let max_new = [9usize, 4, 12, 7, 10];
    let context = 40;
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .zip(max_new)
        .map(|(p, n)| {
            let mut cache = model.new_cache(1, context).unwrap();
            let mut sampler = Sampler::new(SamplingConfig::default());
            generate(&model, &mut cache, p, n, &mut sampler, &[], |_| true).unwrap().tokens
        })
        .collect();

    let config = BatchConfig { slots: 3, context, prefill_chunk: 8 };
    let mut engine = BatchEngine::new(&model, config).unwrap();
    type Output = Arc<Mutex<(Vec<u32>, Option<FinishReason>)>>;
    let outputs: Vec<Output> = prompts.iter().map(|_| Arc::new(Mutex::new((Vec::new(), None)))).collect();
    let request = |i: usize| SequenceRequest {
        prompt: prompts[i].clone(),
        max_new_tokens: max_new[i],
        sampling: SamplingConfig::default(),
        stop_tokens: vec![],
    };
    let sink = |out: Output| {
        Box::new(move |event: SequenceEvent| {
            let mut out = out.lock().unwrap();
            match event {
                SequenceEvent::Token(t) => out.0.push(t),
                SequenceEvent::Finished(end) => out.1 = Some(end.finish),
            }
            true
        })
    };
    // Three slots, five requests: two wait and join between steps as slots free up.
    let mut waiting: Vec<usize> = (0..prompts.len()).rev().collect();
    let mut steps = 0;
    while !waiting.is_empty() || !engine.is_idle() {
        while engine.free_slots() > 0 {
            let Some(i) = waiting.pop() else { break };
            assert!(engine.admit(request(i), sink(outputs[i].clone())).unwrap().is_ok());
        }
        engine.step().unwrap();
        steps += 1;
        assert!(steps < 200, "the engine does not finish");
    }
    for (i, out) in outputs.iter().enumerate() {
        let out = out.lock().unwrap();
        assert_eq!(out.0, expected[i], "sequence {i}: batched tokens differ from generate's");
        assert_eq!(out.1, Some(FinishReason::Length), "sequence {i}");
    }

    // A sink that refuses the second token ends its sequence and frees the slot; a full engine gives the
    // request back.
    let config = BatchConfig { slots: 1, context, prefill_chunk: 4 };
    let mut engine = BatchEngine::new(&model, config).unwrap();
    let mut seen = 0;
    let refusing = Box::new(move |_event: SequenceEvent| {
        seen += 1;
        seen < 2
    });
    assert!(engine.admit(request(1), refusing).unwrap().is_ok());
    assert!(engine.admit(request(2), sink(outputs[2].clone())).unwrap().is_err(), "no free slot");
    engine.run_to_completion().unwrap();
    assert_eq!(engine.free_slots(), 1);
    // Requests the engine cannot run are refused with the numbers.
    let long = SequenceRequest { prompt: vec![1; context], ..request(0) };
    let err = engine.admit(long, sink(outputs[0].clone())).err().expect("too long").to_string();
    assert!(err.contains(&context.to_string()) && err.contains("context"), "{err}");
    let bad = SequenceRequest { prompt: vec![vocab], ..request(0) };
    assert!(engine.admit(bad, sink(outputs[0].clone())).is_err());
}
