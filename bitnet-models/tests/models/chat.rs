//! A chat turn that reuses the KV cache gives exactly the reply of a fresh run over the same conversation.

use bitnet_models::chat::{ChatSession, ChatTemplate, Message};
use bitnet_models::export::random_model;
use bitnet_models::tokenizer::{Tokenizer, LLAMA3_TOKENIZER_CONFIG};
use bitnet_models::zoo::arch_config_json;
use bitnet_models::{BitNetConfig, Sampler, SamplingConfig};
use burn::backend::Flex;
use burn::tensor::DType;

#[test]
fn cached_turn_equals_fresh_run() {
    let text = arch_config_json("tiny").unwrap().replace("\"vocab_size\": 300", "\"vocab_size\": 128256");
    let config = BitNetConfig::from_json(&text).unwrap();
    let model = random_model::<Flex>(&config, DType::BF16, 11, &Default::default()).unwrap();
    let tokenizer = Tokenizer::llama3();
    let template = ChatTemplate::from_tokenizer_config(LLAMA3_TOKENIZER_CONFIG).unwrap();
    let greedy = || Sampler::new(SamplingConfig::default());
    let stops = [128_009];

    let mut session = ChatSession::new(&model, &tokenizer, template.clone(), None, 128).unwrap();
    let first = session.turn("Hello there", 5, &mut greedy(), &stops, |_| {}).unwrap();
    let second = session.turn("And again", 5, &mut greedy(), &stops, |_| {}).unwrap();
    assert!(second.reused_tokens > 10, "reused {}", second.reused_tokens);

    // A fresh session that is handed the same history replies the same.
    let mut fresh = ChatSession::new(&model, &tokenizer, template, None, 128).unwrap();
    let history = [Message::new("user", "Hello there"), Message::new("assistant", &first.reply)];
    fresh.load_history(&history);
    let again = fresh.turn("And again", 5, &mut greedy(), &stops, |_| {}).unwrap();
    assert_eq!(again.reused_tokens, 0);
    assert_eq!(again.generation.tokens, second.generation.tokens);
}
