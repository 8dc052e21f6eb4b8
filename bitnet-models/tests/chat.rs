//! A chat turn that reuses the KV cache gives exactly the reply of a fresh run over the same conversation.

use bitnet_models::chat::{ChatSession, ChatTemplate, Message};
use bitnet_models::load::write::write_random_hf_packed;
use bitnet_models::tokenizer::{Tokenizer, LLAMA3_TOKENIZER_CONFIG};
use bitnet_models::zoo::arch_config_json;
use bitnet_models::{load_hf_dir, BitNetConfig, Sampler, SamplingConfig};
use burn::backend::Flex;

#[test]
fn cached_turn_equals_fresh_run() {
    let text = arch_config_json("tiny").unwrap().replace("\"vocab_size\": 300", "\"vocab_size\": 128256");
    let config = BitNetConfig::from_json(&text).unwrap();
    let dir = std::env::temp_dir().join(format!("bitnet-models-chat-{}", std::process::id()));
    write_random_hf_packed(&dir, &text, &config, 11).unwrap();
    let model = load_hf_dir::<Flex>(&dir, &Default::default()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let tokenizer = Tokenizer::llama3();
    let template = ChatTemplate::from_tokenizer_config(LLAMA3_TOKENIZER_CONFIG).unwrap();
    let greedy = || Sampler::new(SamplingConfig::default());
    let stops = [128_009];

    let mut session = ChatSession::new(&model, &tokenizer, template.clone(), None, 128);
    let first = session.turn("Hello there", 5, &mut greedy(), &stops, |_| {}).unwrap();
    let second = session.turn("And again", 5, &mut greedy(), &stops, |_| {}).unwrap();
    assert!(second.reused_tokens > 10, "reused {}", second.reused_tokens);

    // A fresh session that is handed the same history replies the same.
    let mut fresh = ChatSession::new(&model, &tokenizer, template, None, 128);
    let history = [Message::new("user", "Hello there"), Message::new("assistant", &first.reply)];
    fresh.load_history(&history);
    let again = fresh.turn("And again", 5, &mut greedy(), &stops, |_| {}).unwrap();
    assert_eq!(again.reused_tokens, 0);
    assert_eq!(again.generation.tokens, second.generation.tokens);
}
