//! Tokenizers carried inside GGUF files (`tokenizer.ggml.*`): read from a file gguf-py wrote the way llama.cpp's
//! converter does, written by our GGUF writer and read back, and malformed or unsupported ones refused.

use bitnet_models::chat::{ChatTemplate, Message};
use bitnet_models::export::{random_model, write_gguf_model, TernaryGgufType};
use bitnet_models::gguf::{write_gguf, GgufArray, GgufFile, GgufValue, GgufVocab};
use bitnet_models::tokenizer::{llama3_tokenizer_json, Tokenizer, LLAMA3_TOKENIZER_CONFIG};
use bitnet_models::BitNetConfig;
use burn::backend::Flex;
use burn::tensor::DType;
use std::path::{Path, PathBuf};

/// The tokenizer a file carries, if any.
fn embedded(file: &GgufFile) -> Option<Tokenizer> {
    GgufVocab::from_file(file).unwrap().map(|v| v.to_tokenizer().unwrap())
}

/// A random tiny model with `config`'s shapes written as an I2_S GGUF file at `path` with `vocab`.
fn write_random_gguf(path: &Path, config: &BitNetConfig, vocab: Option<&GgufVocab>) {
    let model = random_model::<Flex>(config, DType::F16, 1, &Default::default()).unwrap();
    write_gguf_model(&model, path, TernaryGgufType::I2s, "tokenizer test", vocab).unwrap();
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

const TEXTS: [&str; 5] = [
    "ROMEO:\nBut, soft! what light through yonder window breaks?",
    "  Leading spaces, trailing spaces   \n\n\tand tabs.\r\n",
    "Numbers 1234567 and 3.14159; punctuation!?... (brackets) [and] {braces}",
    "Unicode: café, naïve, Ærø, 東京, emoji 🙂",
    "<|begin_of_text|>system<|eot_id|>don't won't it's I'm you're we've they'll he'd",
];

fn assert_same_tokenization(a: &Tokenizer, b: &Tokenizer) {
    assert_eq!(a.vocab_size(), b.vocab_size());
    for text in TEXTS {
        let ids = a.encode(text).unwrap();
        assert_eq!(b.encode(text).unwrap(), ids, "{text:?}");
        for skip in [false, true] {
            assert_eq!(b.decode(&ids, skip).unwrap(), a.decode(&ids, skip).unwrap(), "{text:?}");
        }
    }
}

#[test]
fn a_llama_cpp_style_gguf_tokenizer_reproduces_hugging_face_ids() {
    let file = GgufFile::open(&fixtures().join("tokenizer-gpt2.gguf")).unwrap();
    let tokenizer = embedded(&file).expect("the fixture carries a tokenizer");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer-gpt2.json")).unwrap()).unwrap();
    for case in expected.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tokenizer.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    }
    assert_eq!(tokenizer.token_id("<|endoftext|>"), Some(0));
}

#[test]
fn llama3_tokenizer_survives_the_gguf_form() {
    let vocab = GgufVocab::from_tokenizer_json(&llama3_tokenizer_json()).unwrap();
    assert_eq!(vocab.tokens.len(), 128_256);
    assert!(
        matches!(vocab.model, bitnet_models::gguf::VocabModel::ByteLevelBpe { pre, .. } if pre.gguf_name() == "llama-bpe")
    );
    let control = vocab.token_types.iter().filter(|&&t| t == 3).count();
    assert_eq!(control, 256, "the 256 special tokens are control tokens");
    let rebuilt = Tokenizer::from_bytes(&vocab.to_tokenizer_json()).unwrap();
    assert_same_tokenization(&Tokenizer::llama3(), &rebuilt);
    // Built through the API from the same parts (what a model file's tokenizer is), without the JSON.
    assert_same_tokenization(&Tokenizer::llama3(), &vocab.to_tokenizer().unwrap());
    // A merge that is not two tokens is an error there too (the GGUF reader refuses it earlier).
    let mut bad = vocab.clone();
    if let bitnet_models::gguf::VocabModel::ByteLevelBpe { merges, .. } = &mut bad.model {
        merges[7] = "a b c".into();
    }
    assert!(bad.to_tokenizer().unwrap_err().contains("merge 7 (\"a b c\") is not two tokens"));
    // And back to the same GGUF form.
    assert_eq!(GgufVocab::from_tokenizer_json(&vocab.to_tokenizer_json()).unwrap(), vocab);
}

#[test]
fn written_gguf_files_carry_their_tokenizer() {
    // A small model with the LLaMA-3 vocabulary, written by our GGUF writer and read back.
    let mut config = BitNetConfig::from_json(&bitnet_models::zoo::arch_config_json("tiny").unwrap()).unwrap();
    config.vocab_size = 128_256;
    let vocab = GgufVocab::from_tokenizer_json(&llama3_tokenizer_json())
        .unwrap()
        .with_chat_template_of(LLAMA3_TOKENIZER_CONFIG)
        .unwrap();
    assert!(vocab.chat_template.is_some());
    let path = std::env::temp_dir().join(format!("bitnet-gguf-tokenizer-{}.gguf", std::process::id()));
    write_random_gguf(&path, &config, Some(&vocab));
    let file = GgufFile::open(&path).unwrap();
    assert_same_tokenization(&Tokenizer::llama3(), &embedded(&file).unwrap());
    // The chat template travels too, with the BOS/EOS strings of the file's token ids.
    let messages = [Message::new("system", "Be brief."), Message::new("user", "Hello!")];
    let from_file = ChatTemplate::from_gguf(&file).expect("a template").render(&messages).unwrap();
    let from_config = ChatTemplate::from_tokenizer_config(LLAMA3_TOKENIZER_CONFIG).unwrap().render(&messages).unwrap();
    assert_eq!(from_file, from_config);
    assert!(from_file.starts_with("<|begin_of_text|>"), "{from_file}");
    // Without a vocabulary there is no tokenizer, and that is not an error.
    write_random_gguf(&path, &config, None);
    let file = GgufFile::open(&path).unwrap();
    assert!(embedded(&file).is_none() && ChatTemplate::from_gguf(&file).is_none());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unsupported_or_malformed_embedded_tokenizers_are_named() {
    let file = GgufFile::open(&fixtures().join("tokenizer-gpt2.gguf")).unwrap();
    // The fixture's metadata with `key` replaced by `value` (or removed), as a file of its own.
    let rewritten = |tag: &str, keep: &dyn Fn(&str) -> bool, extra: Option<(&str, GgufValue)>| {
        let mut meta: Vec<(String, GgufValue)> =
            file.metadata().iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        meta.extend(extra.map(|(k, v)| (k.to_string(), v)));
        let path = std::env::temp_dir().join(format!("bitnet-gguf-vocab-{tag}-{}.gguf", std::process::id()));
        write_gguf(&path, &meta, vec![]).unwrap();
        let result = GgufVocab::from_file(&GgufFile::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        result
    };
    let edit = |key: &str, value: GgufValue| rewritten("edit", &|k| k != key, Some((key, value))).unwrap_err();
    let s = |v: &str| GgufValue::String(v.into());
    assert!(edit("tokenizer.ggml.model", s("bert")).contains("\"bert\""));
    assert!(edit("tokenizer.ggml.model", s("llama")).contains("no tokenizer.ggml.scores"));
    assert!(edit("tokenizer.ggml.pre", s("falcon")).contains("\"falcon\" is not supported"));
    let merges = GgufValue::Array(GgufArray::from_strings(&["a b c"]));
    assert!(edit("tokenizer.ggml.merges", merges).contains("is not two tokens"));
    let types = GgufValue::Array(GgufArray::from_i32s(&[1]));
    assert!(edit("tokenizer.ggml.token_type", types).contains("1 token types"));
    assert!(edit("tokenizer.ggml.tokens", s("x")).contains("not an array"));
    // No tokenizer keys at all: nothing to convert.
    assert!(matches!(rewritten("bare", &|k| !k.starts_with("tokenizer."), None), Ok(None)));
    // A tokenizer.json that is not byte-level BPE cannot be embedded.
    let wordlevel = br#"{"model": {"type": "WordLevel", "vocab": {}}, "decoder": null, "pre_tokenizer": null}"#;
    assert!(GgufVocab::from_tokenizer_json(wordlevel).unwrap_err().contains("byte-level BPE"));
}

#[test]
fn a_gguf_whose_vocabulary_cannot_be_converted_still_runs_token_ids() {
    use bitnet_models::gguf::GgufTensorSpec;
    use bitnet_models::{generate, Checkpoint, ModelBundle, ModelSpec, Sampler, SamplingConfig};
    // The TQ2_0 fixture with a malformed SentencePiece vocabulary (no scores, which it needs) added.
    let source = GgufFile::open(&fixtures().join("tiny-tq2_0.gguf")).unwrap();
    let mut meta: Vec<(String, GgufValue)> = source.metadata().to_vec();
    let tokens: Vec<String> = (0..300).map(|i| format!("<tok{i}>")).collect();
    meta.push(("tokenizer.ggml.model".into(), GgufValue::String("llama".into())));
    meta.push(("tokenizer.ggml.tokens".into(), GgufValue::Array(GgufArray::from_strings(&tokens))));
    let tensors = source
        .tensors()
        .iter()
        .map(|t| GgufTensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
            data: Box::new(|| Ok(source.data(t).to_vec())),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("bitnet-gguf-spm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spm.gguf");
    write_gguf(&path, &meta, tensors).unwrap();
    let checkpoint = Checkpoint::open(&ModelSpec::Gguf(path.clone())).unwrap();
    let bundle = ModelBundle::<Flex>::load(&checkpoint, &Default::default()).unwrap();
    // Text needs the tokenizer, and the error names why there is none ...
    let err = bundle.tokenizer().unwrap_err().to_string();
    assert!(err.contains("no tokenizer.ggml.scores"), "{err}");
    // ... but token ids run.
    let mut cache = bundle.model().new_cache(1, 16).unwrap();
    let mut sampler = Sampler::new(SamplingConfig::default());
    let out = generate(bundle.model(), &mut cache, &[5, 6, 7], 4, &mut sampler, bundle.stop_ids(), |_| true).unwrap();
    assert_eq!(out.tokens.len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model` "llama", made by `fixtures/make_gguf_spm_fixture.py`
/// from a sentencepiece BPE model the way llama.cpp's converter lays it out) tokenizes exactly as the
/// `tokenizers` conversion of the same vocabulary does (transformers' LlamaConverter: merges from the scores,
/// byte fallback, `▁` normalization), on the recorded texts and on every text of this file; decoding gives the
/// same strings; and the vocabulary survives our GGUF writer.
#[test]
fn a_sentencepiece_gguf_vocabulary_tokenizes_as_its_tokenizers_conversion() {
    let file = GgufFile::open(&fixtures().join("tokenizer-spm.gguf")).unwrap();
    let vocab = GgufVocab::from_file(&file).unwrap().expect("the fixture carries a tokenizer");
    assert!(matches!(vocab.model, bitnet_models::gguf::VocabModel::SentencePiece { add_space_prefix: true, .. }));
    let ours = vocab.to_tokenizer().unwrap();
    let reference = Tokenizer::from_file(&fixtures().join("tokenizer-spm.tokenizer.json")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer-spm.json")).unwrap()).unwrap();
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ours.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(ours.decode(&ids, false).unwrap(), case["decoded"].as_str().unwrap(), "{text:?}");
    }
    assert_same_tokenization(&reference, &ours);
    assert_same_tokenization(&reference, &Tokenizer::from_bytes(&vocab.to_tokenizer_json()).unwrap());
    assert_eq!((ours.token_id("<s>"), ours.token_id("<unk>")), (Some(1), Some(0)));
    // Written by our GGUF writer and read back: the same vocabulary.
    let path = std::env::temp_dir().join(format!("bitnet-gguf-spm-roundtrip-{}.gguf", std::process::id()));
    let mut meta = vec![("general.architecture".to_string(), GgufValue::String("llama".into()))];
    meta.extend(vocab.metadata());
    write_gguf(&path, &meta, vec![]).unwrap();
    let again = GgufVocab::from_file(&GgufFile::open(&path).unwrap()).unwrap().unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(again, vocab);
}
