//! GGUF loading (TQ2_0, TQ1_0, I2_S; fixtures made by `fixtures/make_gguf_fixtures.py` from the transformers
//! model `tiny-bitlinear-256`) against that model's reference logits, and malformed GGUF files.

use crate::common;

use bitnet_models::gguf::{GgmlType, GgufFile};
use bitnet_models::load_gguf;
use burn::backend::Flex;
use std::path::PathBuf;

type B = Flex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn hf_source_model_matches_transformers() {
    common::check_logits::<B>("tiny-bitlinear-256", &Default::default());
}

#[test]
fn qwen3_ternary_models_match_transformers() {
    common::qwen3_fixtures_match_transformers::<B>(&Default::default());
}

#[test]
fn ternary_gguf_types_match_transformers() {
    common::gguf_types_match_transformers::<B>(&Default::default());
}

/// A GGUF file whose `token_embd` is Q6_K (made by `fixtures/make_gguf_fixtures.py`, which also stores the
/// embedding as gguf-py's reference dequantizer reads it) loads with the blocks in place: the embedding lookup
/// returns ggml's values, and the Q6_K head's logits stay close to those of the same file read with an f32 head.
#[test]
fn q6k_token_embedding_reads_as_ggml_dequantizes() {
    block_token_embedding_reads_as_ggml_dequantizes("tiny-q6k-embd.gguf", "q6k", GgmlType::Q6_K, 210, 0.05);
}

/// The same for a Q4_0 `token_embd` (gguf-py's own Q4_0 quantizer): repacked into Q4, the lookup returns
/// gguf-py's dequantization exactly, and a model written back stores Q4_0 again.
#[test]
fn q4_0_token_embedding_reads_as_ggml_dequantizes() {
    block_token_embedding_reads_as_ggml_dequantizes("tiny-q4_0-embd.gguf", "q4", GgmlType::Q4_0, 144, 0.05);
    // A block scale that is not finite is refused while repacking, naming the tensor.
    let path = fixtures().join("tiny-q4_0-embd.gguf");
    let start = GgufFile::open(&path).unwrap().tensor("token_embd.weight").unwrap().start;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[start + 18..start + 20].copy_from_slice(&0x7c00u16.to_le_bytes());
    let err = load_error("q4-inf", &bytes);
    assert!(err.contains("token_embd") && err.contains("Q4_0"), "{err}");
}

/// `fixture`'s block-quantized `token_embd` (`bytes_per_256` bytes per 256 weights in memory) reads as
/// `test.token_embd_f32`, its logits stay within `bound` of its f32 dequantization, and writing the model back
/// keeps the type and the logits.
fn block_token_embedding_reads_as_ggml_dequantizes(
    fixture: &str,
    format: &str,
    ggml_type: GgmlType,
    bytes_per_256: usize,
    bound: f32,
) {
    use bitnet_models::{build_model, HeadFormat, LoadOptions};
    use burn::tensor::{Int, Tensor};
    let device = Default::default();
    let path = fixtures().join(fixture);
    let file = GgufFile::open(&path).unwrap();
    let info = file.tensor("test.token_embd_f32").unwrap();
    let want: Vec<f32> =
        file.data(info).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let config = bitnet_models::gguf::config_from_metadata(&file).unwrap();
    let load = |format| build_model::<B>(&config, &file, LoadOptions::packed().with_head(format), &device).unwrap();
    let model = load(HeadFormat::Stored);
    assert_eq!(model.embedding().format_name(), format);
    assert_eq!(model.head().bytes(), (config.vocab_size * config.hidden_size / 256 * bytes_per_256) as u64);
    let [v, _] = model.embedding().dims();
    let rows = common::to_vec(model.embedding().rows(Tensor::<B, 1, Int>::arange(0..v as i64, &device)));
    assert_eq!(rows, want, "the lookup dequantizes as ggml does");
    let reference = common::expected("tiny-bitlinear-256");
    let blocks = common::prompt_logits(&model, &reference.prompt);
    let dense = common::prompt_logits(&load(HeadFormat::F32), &reference.prompt);
    let diff = common::max_diff(&blocks, &dense);
    eprintln!("{format} head vs its f32 dequantization: max |logit difference| = {diff}");
    assert!(diff < bound, "{diff}");
    // Written back (TQ2_0 projections), the file keeps its blocks and gives the same logits.
    let out = std::env::temp_dir().join(format!("bitnet-{format}-roundtrip-{}.gguf", std::process::id()));
    bitnet_models::export::write_gguf_model(&model, &out, bitnet_models::export::TernaryGgufType::Tq2_0, "t", None)
        .unwrap();
    let reread = GgufFile::open(&out).unwrap();
    assert_eq!(reread.tensor("token_embd.weight").unwrap().ggml_type, ggml_type);
    let again = bitnet_models::load_gguf::<B>(&out, &device).unwrap();
    assert_eq!(common::prompt_logits(&again, &reference.prompt), blocks);
    std::fs::remove_file(&out).ok();
}

/// Writes `bytes` to a scratch file and returns the load error's text.
fn load_error(tag: &str, bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("bitnet-gguf-{tag}-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let err = load_gguf::<B>(&path, &Default::default()).expect_err(tag).to_string();
    eprintln!("{tag}: {err}");
    std::fs::remove_file(&path).ok();
    assert!(err.contains(&format!("bitnet-gguf-{tag}")), "{tag}: the error names the file: {err}");
    assert_eq!(err.lines().count(), 1, "{tag}: one line: {err}");
    err
}

#[test]
fn malformed_gguf_files_are_one_line_errors() {
    let good = std::fs::read(fixtures().join("tiny-tq2_0.gguf")).unwrap();
    let info = GgufFile::open(&fixtures().join("tiny-tq2_0.gguf")).unwrap();
    assert_eq!(info.architecture(), "bitnet-25");
    let header_end = info.tensors().iter().map(|t| t.start).min().unwrap();

    assert!(load_error("truncated", &good[..good.len() - 100]).contains("past the end"));
    let cut = load_error("header-cut", &good[..200]);
    assert!(cut.contains("truncated") || cut.contains("impossible"), "{cut}");
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    assert!(load_error("magic", &bad_magic).contains("magic"));
    let mut version = good.clone();
    version[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(load_error("version", &version).contains("version"));
    let mut count = good.clone();
    count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_error("count", &count).contains("impossible"));
    let mut kv_count = good.clone();
    kv_count[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(load_error("kv-count", &kv_count).contains("impossible"));
    // The first metadata key's length: absurd.
    let mut key_len = good.clone();
    key_len[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(load_error("key-len", &key_len).contains("impossible"));
    // A tensor type this reader does not know: patch the type of the first TQ2_0 tensor header (35 -> 99).
    let header = &good[..header_end];
    let pos = header.windows(4).rposition(|w| w == 35u32.to_le_bytes()).unwrap();
    let mut unknown = good.clone();
    unknown[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(load_error("type", &unknown).contains("unknown ggml type 99"));
    // An I2_S type id in an upstream-llama.cpp architecture file is not I2_S.
    let mut arch = good.clone();
    let at = header.windows(9).position(|w| w == b"bitnet-25").unwrap();
    arch[at..at + 9].copy_from_slice(b"llama-xyz");
    assert!(load_error("arch", &arch).contains("llama-xyz"));
}

/// The BitNet embedding layout (`fixtures/make_qwen3_fixtures.py`: a bare Qwen3Model whose projections each
/// normalize their input, ternary weights with int8 activations, last-token pooling), from its HF directory
/// and from its GGUF file (I2_S projections under architecture `qwen3`, `*_norm_in` gains, pooling type 3):
/// every text's embedding within cosine 0.999 of the reference, unit length, and the two sources agree.
#[test]
fn bitnet_embedding_models_match_the_reference_embeddings() {
    use bitnet_models::embed::{embed, Pooling};
    use bitnet_models::{Checkpoint, ModelBundle, ModelSpec};
    let dir = fixtures().join("tiny-bitnet-embedding");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut by_source = Vec::new();
    for path in [dir.clone(), dir.join("model.gguf")] {
        let checkpoint = Checkpoint::open(&ModelSpec::parse(Some(&path)).unwrap()).unwrap();
        let pooling = Pooling::declared(&checkpoint).unwrap();
        assert_eq!(pooling, path.is_file().then_some(Pooling::Last), "GGUF files declare their pooling");
        let bundle = ModelBundle::<B>::load(&checkpoint, &Default::default()).unwrap();
        let config = bundle.model().config();
        let eps = config.linear_rms_norm_eps.expect("every projection normalizes its input");
        assert!(config.head_dim == 64 && (eps - 1e-6).abs() < 1e-12, "{}", path.display());
        let mut all = Vec::new();
        for (text, want) in expected["texts"].as_array().unwrap().iter().zip(expected["embeddings"].as_array().unwrap())
        {
            let ids: Vec<u32> = text.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let got = embed(bundle.model(), &ids, Pooling::Last).unwrap();
            let dot: f64 = got.iter().zip(&want).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm: f64 = got.iter().map(|a| *a as f64 * *a as f64).sum::<f64>().sqrt();
            eprintln!("{} {ids:?}: cosine {dot:.9}", path.display());
            assert!(dot >= 0.999, "{}: cosine {dot} for {ids:?}", path.display());
            assert!((norm - 1.0).abs() < 1e-5);
            all.push(got);
        }
        by_source.push(all);
    }
    assert_eq!(by_source[0], by_source[1], "HF and GGUF sources give the same embeddings");
    let model = load_gguf::<B>(&dir.join("model.gguf"), &Default::default()).unwrap();
    assert!(embed(&model, &[], Pooling::Last).is_err() && embed(&model, &[300], Pooling::Last).is_err());
}
