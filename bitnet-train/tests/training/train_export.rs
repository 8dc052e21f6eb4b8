//! Training end to end on a tiny model: the loss falls, the exported packed model scores the validation text
//! exactly as training measured it, and the full-precision baseline trains but cannot be packed.

use bitnet_train::data::{read_text, TokenWindows};
use bitnet_train::export::export_hf_packed;
use bitnet_train::models::perplexity::perplexity;
use bitnet_train::models::tokenizer::Tokenizer;
use bitnet_train::models::zoo::arch_config;
use bitnet_train::tokenizer::train_bpe;
use bitnet_train::{evaluate, train, TrainConfig};
use burn::backend::{Autodiff, Flex};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type B = Autodiff<Flex>;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/shakespeare/valid.txt.gz")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-train-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Setup {
    tokenizer_json: String,
    train: Arc<TokenWindows>,
    valid: Arc<TokenWindows>,
    valid_tokens: Vec<u32>,
    config: TrainConfig,
}

fn setup(context: usize) -> Setup {
    let tokenizer_json = train_bpe(&[corpus().as_path()], 300).unwrap();
    let tokenizer = Tokenizer::from_bytes(tokenizer_json.as_bytes()).unwrap();
    let text = read_text(&corpus()).unwrap();
    let (train_text, valid_text) = text.split_at(60_000);
    let valid_text = &valid_text[..4_000];
    let train_tokens = tokenizer.encode(train_text).unwrap();
    let valid_tokens = tokenizer.encode(valid_text).unwrap();
    let mut model = arch_config("tiny").unwrap();
    model.vocab_size = tokenizer.vocab_size();
    let config = TrainConfig {
        model,
        full_precision: false,
        context,
        batch_size: 4,
        steps: 8,
        checkpoint_every: 4,
        lr: 5e-3,
        stage_two_lr: 5e-4,
        stage_one_fraction: 0.5,
        warmup_steps: 2,
        weight_decay: 0.1,
        grad_clip: Some(1.0),
        lambda_warmup_steps: 0,
        seed: 7,
        init_from: None,
        data_parallel: None,
        dashboard: false,
    };
    Setup {
        tokenizer_json,
        train: Arc::new(TokenWindows::new(train_tokens, context)),
        valid: Arc::new(TokenWindows::new(valid_tokens.clone(), context)),
        valid_tokens,
        config,
    }
}

#[test]
fn trains_exports_and_the_export_scores_like_training() {
    let s = setup(33);
    let dir = tmp("export");
    let device = Default::default();
    let untrained = bitnet_train::LanguageModel::<Flex>::new(&s.config.model, true, 0, &device).unwrap();
    let (before, _) = evaluate(&untrained, &s.valid, 4, &device).unwrap();
    let (model, report) = train::<B>(&s.config, s.train.clone(), s.valid.clone(), &dir, false, &device).unwrap();
    assert!(report.valid_loss < before - 0.3, "validation loss {before} -> {}", report.valid_loss);
    assert_eq!(report.valid_tokens, s.valid.scored_tokens());
    assert!(report.valid_tokens > 100 && s.valid.tail().is_some(), "the tail window is part of the check");
    // The curves beside the summary: a training loss and a learning rate per step, a validation loss per
    // checkpoint (2 of them), rewritten after each validation.
    let svg = std::fs::read_to_string(dir.join("training.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 3, "train loss, validation loss, learning rate");
    assert_eq!(svg.matches("<circle").count(), 2 * s.config.total_steps() + 2, "{svg}");
    // Every checkpoint record is complete and no temporary file is left behind.
    assert_eq!(bitnet_train::checkpoint::latest_complete_checkpoint(&dir), Some(2));
    for entry in std::fs::read_dir(dir.join("checkpoint")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".mpk"), "{name}");
    }

    let out = dir.join("model");
    export_hf_packed(&model, Some(s.tokenizer_json.as_bytes()), &out).unwrap();
    let loaded = bitnet_train::models::load_hf_dir::<Flex>(&out, &device).unwrap();
    let score = perplexity(&loaded, &s.valid_tokens, s.config.context, |_, _| {}).unwrap();
    assert_eq!(score.tokens, report.valid_tokens);
    assert!(
        (score.nll - report.valid_loss).abs() < 1e-4,
        "exported model nll {} vs training-time validation loss {}",
        score.nll,
        report.valid_loss
    );
    // The bf16 master checkpoint (transformers' online quantization) loads back, quantized at load, and scores
    // the text as the packed export does up to bf16 rounding of the masters; its config says online.
    let master = dir.join("master");
    bitnet_train::export::export_hf_master(&model, Some(s.tokenizer_json.as_bytes()), &master).unwrap();
    let config = std::fs::read_to_string(master.join("config.json")).unwrap();
    assert!(config.contains("\"online\"") && config.contains("\"bfloat16\""), "{config}");
    let reloaded = bitnet_train::models::load_hf_dir::<Flex>(&master, &device).unwrap();
    let master_score = perplexity(&reloaded, &s.valid_tokens, s.config.context, |_, _| {}).unwrap();
    eprintln!("packed export nll {}, bf16 master nll {}", score.nll, master_score.nll);
    assert!((master_score.nll - score.nll).abs() < 0.02, "{} vs {}", master_score.nll, score.nll);
    // A second run into the same directory must not silently overwrite it.
    let err = train::<B>(&s.config, s.train.clone(), s.valid.clone(), &dir, false, &device).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_full_precision_baseline_trains_and_refuses_to_pack() {
    let mut s = setup(17);
    s.config.full_precision = true;
    s.config.steps = 4;
    let dir = tmp("fp");
    let device = Default::default();
    let (model, report) = train::<B>(&s.config, s.train.clone(), s.valid.clone(), &dir, false, &device).unwrap();
    assert!(report.valid_loss.is_finite() && report.valid_loss < (300f64).ln() + 0.5);
    assert_eq!(model.lambda(), 0.0, "the baseline never quantizes");
    assert!(!model.decoder().is_packed());
    let err = export_hf_packed(&model, None, &dir.join("model")).unwrap_err();
    assert!(err.to_string().contains("full-precision"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_trained_tokenizer_round_trips_text() {
    let json = train_bpe(&[corpus().as_path()], 400).unwrap();
    let t = Tokenizer::from_bytes(json.as_bytes()).unwrap();
    assert_eq!(t.vocab_size(), 400);
    let text = "To be, or not to be: that is the question. — Ünïcödé ✓";
    let ids = t.encode(text).unwrap();
    assert!(ids.len() < text.len());
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    let err = train_bpe(&[Path::new("/nonexistent/file.txt")], 400).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/file.txt"), "{err}");
}
