//! `export::convert` round trips: every format to every format keeps the logits (bit for bit between GGUF
//! types, within float rounding through the HF packed layout, whose `weight_scale` stores `1 / g`), targets that
//! cannot hold a model's scales are refused with the reason, and the tokenizer and chat template travel along.

use crate::common;

use bitnet_models::export::{convert, random_model, write_gguf_model, ConvertFormat, TernaryGgufType};
use bitnet_models::{BitNetConfig, Checkpoint, HeadFormat, ModelBundle, ModelSpec};
use burn::backend::Flex;
use burn::tensor::DType;
use std::path::{Path, PathBuf};

type B = Flex;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bitnet-convert-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(&ModelSpec::parse(Some(path)).unwrap()).unwrap()
}

fn logits(path: &Path, prompt: &[u32]) -> Vec<f32> {
    let bundle = ModelBundle::<B>::load(&open(path), &Default::default()).unwrap();
    common::prompt_logits(bundle.model(), prompt)
}

/// Where format `f` is written inside `dir`.
fn target(dir: &Path, tag: &str, f: ConvertFormat) -> PathBuf {
    match f {
        ConvertFormat::Hf => dir.join(format!("{tag}-hf")),
        f => dir.join(format!("{tag}.{}.gguf", f.name())),
    }
}

fn assert_same(got: &[f32], want: &[f32], exact: bool, what: &str) {
    let diff = common::max_diff(got, want);
    let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
    if exact {
        assert_eq!(got, want, "{what}: logits differ (max {diff})");
    } else {
        assert!(diff <= 1e-4 * scale, "{what}: max |logit difference| {diff}");
    }
}

#[test]
fn every_format_converts_to_every_format_keeping_the_logits() {
    // The 2B-4T block at widths every type can hold (multiples of 256), with one scale per tensor.
    let config = BitNetConfig::from_json(
        r#"{"model_type":"bitnet","hidden_size":256,"intermediate_size":512,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":300,"max_position_embeddings":64,
            "tie_word_embeddings":true,"rope_theta":10000.0}"#,
    )
    .unwrap();
    let scratch = Scratch::new("pairs");
    let device = Default::default();
    // The source: a random model written as Q2_0, so its scales are f16 values every format holds.
    let source = scratch.0.join("source.gguf");
    let model = random_model::<B>(&config, DType::F16, 7, &device).unwrap();
    write_gguf_model(&model, &source, TernaryGgufType::Q2_0, "source", None).unwrap();
    let prompt = [5u32, 17, 250, 3, 99];
    let want = logits(&source, &prompt);
    for (a, a_name) in ConvertFormat::ALL {
        let first = target(&scratch.0, "first", a);
        convert::<B>(&open(&source), &first, a, HeadFormat::Stored, &device).unwrap();
        assert_same(&logits(&first, &prompt), &want, a != ConvertFormat::Hf, &format!("q2_0 -> {a_name}"));
        for (b, b_name) in ConvertFormat::ALL {
            let second = target(&scratch.0, &format!("{a_name}-then"), b);
            convert::<B>(&open(&first), &second, b, HeadFormat::Stored, &device).unwrap();
            let exact = a != ConvertFormat::Hf && b != ConvertFormat::Hf;
            assert_same(&logits(&second, &prompt), &want, exact, &format!("q2_0 -> {a_name} -> {b_name}"));
        }
    }
}

#[test]
fn qwen3_models_convert_where_their_scales_fit() {
    let scratch = Scratch::new("qwen3");
    let device = Default::default();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let prompt = common::expected("tiny-qwen3-pq2_0").prompt;
    // Group-128 scales: PQ2_0, Q2_0 (two groups of 64 share a scale) and HF hold them; coarser types do not.
    let source = fixtures.join("tiny-qwen3-pq2_0/model.gguf");
    let want = logits(&source, &prompt);
    for f in ["hf", "q2_0", "pq2_0"] {
        let f: ConvertFormat = f.parse().unwrap();
        let out = target(&scratch.0, "pq", f);
        convert::<B>(&open(&source), &out, f, HeadFormat::Stored, &device).unwrap();
        assert_same(&logits(&out, &prompt), &want, true, &format!("pq2_0 -> {}", f.name()));
    }
    for f in ["i2s", "tq2_0"] {
        let f: ConvertFormat = f.parse().unwrap();
        let err = convert::<B>(&open(&source), &target(&scratch.0, "pq", f), f, HeadFormat::Stored, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scale") || err.contains("multiple"), "pq2_0 -> {}: {err}", f.name());
    }
    // Group-64 scales: PQ2_0 cannot hold them, and says which tensor and row.
    let source = fixtures.join("tiny-qwen3-q2_0/model.gguf");
    let err =
        convert::<B>(&open(&source), &scratch.0.join("x.gguf"), "pq2_0".parse().unwrap(), HeadFormat::Stored, &device)
            .unwrap_err()
            .to_string();
    assert!(err.contains("PQ2_0") && err.contains("row"), "{err}");
    // The HF directory it writes is the transformers layout: loading it gives the GGUF's logits.
    let hf = target(&scratch.0, "q", ConvertFormat::Hf);
    convert::<B>(&open(&source), &hf, ConvertFormat::Hf, HeadFormat::Stored, &device).unwrap();
    assert_same(&logits(&hf, &prompt), &logits(&source, &prompt), true, "q2_0 -> hf");
    let config = std::fs::read_to_string(hf.join("config.json")).unwrap();
    assert!(config.contains("\"qwen3\"") && !config.contains("quantization_config"), "{config}");
}

#[test]
fn the_tokenizer_and_chat_template_travel_along() {
    let scratch = Scratch::new("tokenizer");
    let device = Default::default();
    let default = Checkpoint::open(&ModelSpec::Default).unwrap();
    let text = "To be, or not to be";
    let ids = ModelBundle::<B>::load(&default, &device).unwrap().encode_prompt(text).unwrap();
    // The default model (hidden 256, FFN 704): Q2_0 and I2_S hold it; its byte-level BPE goes inside the file.
    let gguf = scratch.0.join("default.q2_0.gguf");
    let report = convert::<B>(&default, &gguf, "q2_0".parse().unwrap(), HeadFormat::Stored, &device).unwrap();
    assert_eq!(report.tokenizer, "embedded");
    let bundle = ModelBundle::<B>::load(&open(&gguf), &device).unwrap();
    assert_eq!(bundle.encode_prompt(text).unwrap(), ids);
    // Back to HF from the GGUF file alone: tokenizer.json is the embedded vocabulary converted.
    let hf = scratch.0.join("default-hf");
    let report = convert::<B>(&open(&gguf), &hf, ConvertFormat::Hf, HeadFormat::Stored, &device).unwrap();
    assert_eq!(report.tokenizer, "beside");
    assert!(hf.join("tokenizer.json").is_file());
    assert_eq!(ModelBundle::<B>::load(&open(&hf), &device).unwrap().encode_prompt(text).unwrap(), ids);
    // A model without the shapes a type needs is refused before anything is written.
    let tq = scratch.0.join("default.tq2_0.gguf");
    let err = convert::<B>(&default, &tq, "tq2_0".parse().unwrap(), HeadFormat::Stored, &device).unwrap_err();
    assert!(err.to_string().contains("multiples of 256"), "{err}");
    assert!(!tq.exists());
}
