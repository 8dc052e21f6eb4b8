//! Training on burn-wgpu (run on lavapipe, Mesa's Vulkan software driver, in CI): the same tiny run as on the
//! CPU lowers the validation loss and exports a model the CPU loader scores like training did.
#![cfg(feature = "wgpu")]

use bitnet_train::data::{read_text, TokenWindows};
use bitnet_train::export::export_hf_packed;
use bitnet_train::models::perplexity::perplexity;
use bitnet_train::models::tokenizer::Tokenizer;
use bitnet_train::models::zoo::arch_config;
use bitnet_train::tokenizer::train_bpe;
use bitnet_train::{evaluate, train, TrainConfig};
use burn::backend::wgpu::WgpuRuntime;
use burn::backend::{Autodiff, Flex};

/// The raw CubeCL backend: burn 0.21's `Fusion` wrapper loses tensor handles when burn-train's asynchronous
/// checkpointer reads the records ("Should have handle for tensor"), so training on wgpu uses `CubeBackend`.
type Wgpu = bitnet_train::models::backend::cube::CubeBackend<WgpuRuntime, f32, i32, u32>;
use std::path::Path;
use std::sync::Arc;

#[test]
fn trains_on_wgpu_and_exports() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/shakespeare/valid.txt.gz");
    let json = train_bpe(&[corpus.as_path()], 300).unwrap();
    let tokenizer = Tokenizer::from_bytes(json.as_bytes()).unwrap();
    let text = read_text(&corpus).unwrap();
    let train_tokens = tokenizer.encode(&text[..30_000]).unwrap();
    let valid_tokens = tokenizer.encode(&text[30_000..32_000]).unwrap();
    let mut model = arch_config("tiny").unwrap();
    model.vocab_size = tokenizer.vocab_size();
    let config = TrainConfig {
        model,
        full_precision: false,
        context: 17,
        batch_size: 4,
        steps: 6,
        checkpoint_every: 3,
        lr: 5e-3,
        stage_two_lr: 5e-4,
        stage_one_fraction: 0.5,
        warmup_steps: 1,
        weight_decay: 0.1,
        grad_clip: Some(1.0),
        lambda_warmup_steps: 0,
        seed: 1,
        init_from: None,
        data_parallel: None,
        dashboard: false,
    };
    let train_data = Arc::new(TokenWindows::new(train_tokens, 17));
    let valid = Arc::new(TokenWindows::new(valid_tokens.clone(), 17));
    let dir = std::env::temp_dir().join(format!("bitnet-train-wgpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Default::default();
    let untrained = bitnet_train::LanguageModel::<Wgpu>::new(&config.model, true, 0, &device).unwrap();
    let (before, _) = evaluate(&untrained, &valid, 4, &device).unwrap();
    let (model, report) = train::<Autodiff<Wgpu>>(&config, train_data, valid.clone(), &dir, false, &device).unwrap();
    assert!(report.valid_loss < before - 0.1, "validation loss {before} -> {}", report.valid_loss);
    export_hf_packed(&model, None, &dir.join("model")).unwrap();
    let loaded = bitnet_train::models::load_hf_dir::<Flex>(&dir.join("model"), &Default::default()).unwrap();
    let score = perplexity(&loaded, &valid_tokens, 17, |_, _| {}).unwrap();
    assert!(
        (score.nll - report.valid_loss).abs() < 1e-3,
        "CPU nll {} vs wgpu training {}",
        score.nll,
        report.valid_loss
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
