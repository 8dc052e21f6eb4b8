//! A chat template (Jinja source from a model file) rendered for a short conversation, with the fuel and
//! output limits `ChatTemplate::render` applies.
#![no_main]

use bitnet_models::chat::{ChatTemplate, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    let template = ChatTemplate::Jinja { source: source.into(), bos_token: "<s>".into(), eos_token: "</s>".into() };
    let messages =
        [Message::new("system", "Be brief."), Message::new("user", "Hi"), Message::new("assistant", "Hello.")];
    let _ = template.render(&messages);
});
