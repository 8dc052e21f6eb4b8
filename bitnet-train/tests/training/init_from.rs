//! `TrainConfig::init_from`: a run starting from a pretrained checkpoint of each family starts from that
//! checkpoint's function. At λ = 1 the latent model the checkpoint loads into scores a text as the packed model
//! loaded for inference does: to 1e-4 (float rounding) for the BitNet members (bf16 masters quantized at load,
//! packed ternary weights whose latent values quantize back to the same codes and scales; the 2B-4T block and
//! the LLaMA layout). A Qwen3 model with a scale per 128 weights starts within 1e-2: training's fake quantization
//! has one scale per tensor, so each tensor starts from its groups' mean scale (and the ternary head and
//! embedding train as dense f32 matrices).

use bitnet_train::data::TokenWindows;
use bitnet_train::models::perplexity::perplexity;
use bitnet_train::models::{load_model, Checkpoint, ModelSpec};
use bitnet_train::{evaluate, starting_model, TrainConfig};
use burn::backend::Flex;
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bitnet-models/tests/fixtures").join(name)
}

fn config(source: PathBuf, full_precision: bool) -> TrainConfig {
    let model = Checkpoint::open(&ModelSpec::parse(Some(&source)).unwrap()).unwrap().config().unwrap();
    TrainConfig {
        model,
        full_precision,
        context: 17,
        batch_size: 4,
        steps: 1,
        checkpoint_every: 1,
        lr: 1e-3,
        stage_two_lr: 1e-4,
        stage_one_fraction: 0.5,
        warmup_steps: 0,
        weight_decay: 0.0,
        grad_clip: None,
        lambda_warmup_steps: 0,
        seed: 1,
        init_from: Some(source),
        data_parallel: None,
        dashboard: false,
    }
}

#[test]
fn every_family_starts_from_its_checkpoint() {
    let device = Default::default();
    let tokens: Vec<u32> = (0..200u32).map(|i| (i * 37 + 11) % 300).collect();
    for (name, tolerance) in [
        ("tiny-bf16-master", 1e-4),
        ("tiny-bitlinear", 1e-4),
        ("tiny-llama-bitnet-online", 1e-4),
        ("tiny-qwen3-pq2_0/model.gguf", 1e-2),
    ] {
        let source = fixture(name);
        let config = config(source.clone(), false);
        let start = starting_model::<Flex>(&config, &device).unwrap();
        let windows = Arc::new(TokenWindows::new(tokens.clone(), config.context));
        let (latent, _) = evaluate(&start, &windows, 4, &device).unwrap();
        let packed = load_model::<Flex>(&source, &device).unwrap();
        let reference = perplexity(&packed, &tokens, config.context, |_, _| {}).unwrap();
        eprintln!("{name}: latent start {latent:.6}, packed {:.6}", reference.nll);
        assert!((latent - reference.nll).abs() < tolerance, "{name}: {latent} vs {}", reference.nll);
    }
    // Another architecture than the run's is refused.
    let mut other = config(fixture("tiny-bitlinear"), false);
    other.model.num_hidden_layers += 1;
    assert!(starting_model::<Flex>(&other, &device).is_err());
}

/// At λ = 0 (the full-precision run) a model started from latent LLaMA-layout weights is transformers' plain
/// LlamaForCausalLM on them: its validation loss equals the one `fixtures/make_fp_reference.py` recorded.
#[test]
fn a_full_precision_start_scores_as_the_float_reference() {
    let device = Default::default();
    let source = fixture("tiny-llama-bitnet-online");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("fp-reference.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = reference["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let mut config = config(source, true);
    config.context = reference["context"].as_u64().unwrap() as usize;
    let start = starting_model::<Flex>(&config, &device).unwrap();
    assert_eq!(start.lambda(), 0.0);
    let windows = Arc::new(TokenWindows::new(tokens, config.context));
    let (loss, scored) = evaluate(&start, &windows, 4, &device).unwrap();
    let want = reference["fp_loss"].as_f64().unwrap();
    eprintln!("full-precision start {loss:.6}, transformers {want:.6}");
    assert_eq!(scored as u64, reference["scored"].as_u64().unwrap());
    assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
}

/// The 1.58-bit fine-tuning recipe: from the full-precision LLaMA-layout weights, λ warms up from 0 to 1 over
/// 100 steps and training runs 200; the ternary model ends within 0.1 nats/token of the full-precision source's
/// own loss on the validation text (here below it: the text is learnable).
#[test]
fn fine_tuning_from_full_precision_ends_within_a_margin_of_the_source() {
    let device = Default::default();
    let source = fixture("tiny-llama-bitnet-online");
    let tokens: Vec<u32> = (0..1200u32).map(|i| (i * 37 + 11) % 300).collect();
    let (train_tokens, valid_tokens) = tokens.split_at(1000);
    let mut fp = config(source.clone(), true);
    let valid = Arc::new(TokenWindows::new(valid_tokens.to_vec(), fp.context));
    let (source_loss, _) = evaluate(&starting_model::<Flex>(&fp, &device).unwrap(), &valid, 4, &device).unwrap();
    fp.full_precision = false;
    let config = TrainConfig { steps: 200, checkpoint_every: 100, lambda_warmup_steps: 100, warmup_steps: 10, ..fp };
    let dir = std::env::temp_dir().join(format!("bitnet-train-recipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let train_windows = Arc::new(TokenWindows::new(train_tokens.to_vec(), config.context));
    let (_, report) =
        bitnet_train::train::<burn::backend::Autodiff<Flex>>(&config, train_windows, valid, &dir, false, &device)
            .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("source (full precision) {source_loss:.4}, ternary after 200 steps {:.4}", report.valid_loss);
    assert!(report.valid_loss <= source_loss + 0.1, "{} vs the source's {source_loss}", report.valid_loss);
}
