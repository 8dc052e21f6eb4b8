//! Chat prompts: the model's Jinja `chat_template` (from `tokenizer_config.json`, rendered with minijinja), or
//! the BitNet b1.58 2B-4T chat format when a model ships none:
//! `<|begin_of_text|>System: {sys}<|eot_id|>User: {msg}<|eot_id|>Assistant: {reply}<|eot_id|>...Assistant: `.

use crate::error::{ModelError, Result};
use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Template VM instructions one rendering may run (real templates use a few per message and character of
/// control flow; a template that loops without end runs out and fails instead of hanging).
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// Most bytes a rendered prompt may have (far beyond any model's context).
pub const TEMPLATE_OUTPUT_CAP: usize = 16 << 20;

/// A writer that fails once it holds `cap` bytes.
struct CappedOutput {
    text: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.cap {
            self.text.extend_from_slice(&buf[..self.cap - self.text.len()]);
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses the `*` operator. `[x] * n` builds a lazy sequence of any length in one instruction, which printing,
/// `join`, `in` or `~` then walk item by item, beyond the reach of fuel (a 48-byte template ran for minutes);
/// `'s' * n` strings are capped only at 100 MB. Chat templates do not need either. The template's own lexer
/// finds the operator, so `*` inside strings, comments and raw blocks is not mistaken for it.
fn refuse_repetition(source: &str) -> Result<()> {
    use minijinja::machinery::{tokenize, Token};
    for token in tokenize(source, false, Default::default(), Default::default()) {
        match token {
            Ok((Token::Mul, span)) => {
                return Err(ModelError::Request(format!(
                    "chat template: the `*` operator (line {}) is not allowed: repetition in a template from a model \
                     file can run without bound",
                    span.start_line
                )))
            }
            Ok(_) => {}
            // Lexing errors are reported by the compiler, with its message.
            Err(_) => break,
        }
    }
    Ok(())
}

/// How a conversation becomes a prompt.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// A Jinja template with its special tokens.
    Jinja {
        /// The template source.
        source: String,
        /// `bos_token` as the template sees it.
        bos_token: String,
        /// `eos_token` as the template sees it.
        eos_token: String,
    },
    /// The BitNet b1.58 2B-4T format.
    BitNet2B4T,
}

impl ChatTemplate {
    /// The template of `tokenizer_config.json` text, falling back to 2B-4T's when it has none.
    pub fn from_tokenizer_config(text: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let special = |key: &str| match &v[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string(),
            _ => String::new(),
        };
        // A string, or (newer tokenizer configs) a list of named templates of which "default" is the chat one.
        let source = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(source)) => Some(source.clone()),
            Some(serde_json::Value::Array(named)) => {
                let by_name = |name: &str| {
                    named.iter().find(|t| t["name"] == name).and_then(|t| t["template"].as_str()).map(String::from)
                };
                Some(by_name("default").ok_or("chat_template is a list without a template named \"default\"")?)
            }
            Some(_) => return Err("chat_template must be a string or a list of {name, template}".into()),
        };
        Ok(match source {
            Some(source) => {
                ChatTemplate::Jinja { source, bos_token: special("bos_token"), eos_token: special("eos_token") }
            }
            None => ChatTemplate::BitNet2B4T,
        })
    }

    /// The template a GGUF file carries (`tokenizer.chat_template`, with its BOS/EOS token strings), if any.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Option<Self> {
        let source = file.get("tokenizer.chat_template")?.as_str()?;
        let token = |key: &str| -> String {
            let id = crate::gguf::token_id(file, key);
            let tokens = file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).and_then(|a| a.strings());
            match (id, tokens) {
                (Some(id), Some(mut tokens)) => tokens.nth(id as usize).unwrap_or_default().to_string(),
                _ => String::new(),
            }
        };
        Some(ChatTemplate::Jinja {
            source: source.to_string(),
            bos_token: token("tokenizer.ggml.bos_token_id"),
            eos_token: token("tokenizer.ggml.eos_token_id"),
        })
    }

    /// The prompt for `messages`, ending where the assistant's reply begins.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        match self {
            ChatTemplate::BitNet2B4T => {
                let mut out = String::from("<|begin_of_text|>");
                for m in messages {
                    let role = match m.role.as_str() {
                        "system" => "System",
                        "assistant" => "Assistant",
                        _ => "User",
                    };
                    out.push_str(&format!("{role}: {}<|eot_id|>", m.content));
                }
                out.push_str("Assistant: ");
                Ok(out)
            }
            ChatTemplate::Jinja { source, bos_token, eos_token } => {
                // Templates come from model files: bound their work (fuel: VM instructions) and their output.
                let mut env = minijinja::Environment::new();
                env.set_fuel(Some(TEMPLATE_FUEL));
                env.add_function("raise_exception", |message: String| -> std::result::Result<String, _> {
                    Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
                });
                let render_error = |e: minijinja::Error| ModelError::Request(format!("chat template: {e}"));
                refuse_repetition(source)?;
                env.add_template("chat", source).map_err(render_error)?;
                let template = env.get_template("chat").map_err(render_error)?;
                let mut out = CappedOutput { text: Vec::new(), cap: TEMPLATE_OUTPUT_CAP };
                let context = minijinja::context! {
                    messages => messages,
                    bos_token => bos_token,
                    eos_token => eos_token,
                    add_generation_prompt => true,
                };
                let rendered = template.render_captured_to(context, &mut out).map(|_| ());
                match rendered {
                    Ok(_) => String::from_utf8(out.text)
                        .map_err(|_| ModelError::Request("chat template: the output is not UTF-8".into())),
                    Err(_) if out.text.len() >= out.cap => Err(ModelError::Request(format!(
                        "chat template: the prompt exceeds {} MiB",
                        TEMPLATE_OUTPUT_CAP >> 20
                    ))),
                    Err(e) => Err(render_error(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::LLAMA3_TOKENIZER_CONFIG;

    #[test]
    fn bitnet_2b4t_fallback() {
        let t = ChatTemplate::from_tokenizer_config("{}").unwrap();
        let text = t.render(&[Message::new("system", "Be brief."), Message::new("user", "Hi")]).unwrap();
        assert_eq!(text, "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: ");
    }

    fn jinja(source: &str) -> ChatTemplate {
        ChatTemplate::Jinja { source: source.into(), bos_token: "<s>".into(), eos_token: "</s>".into() }
    }

    #[test]
    fn hostile_templates_fail_instead_of_hanging_or_exhausting_memory() {
        let hi = [Message::new("user", "hi")];
        let endless = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        let err = jinja(endless).render(&hi).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
        let s = "{% set s = '0123456789' %}{% set s = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}";
        let huge = format!("{s}{{% set s = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}}{{% for i in range(100000) %}}{{{{ s }}}}{{% endfor %}}");
        let err = jinja(&huge).render(&hi).unwrap_err().to_string();
        assert!(err.contains("MiB"), "{err}");
        // Repetition: a 48-byte template (found by the fuzzer) that printed 10^19 items, and its string twin.
        for repeat in ["s %e}{{000013411031718699088093*['row'] }}:zip", "{{ 'ab' * 99999999 }}", "{{ [1] *2 }}"] {
            let err = jinja(repeat).render(&hi).unwrap_err().to_string();
            assert!(err.contains("`*` operator (line 1)"), "{repeat}: {err}");
        }
        // `*` in a string, a comment or a raw block is text, not the operator.
        let text = "{# a * b #}{% raw %}{{ x * y }}{% endraw %}{{ 'a * b' }}";
        assert_eq!(jinja(text).render(&hi).unwrap(), "{{ x * y }}a * b");
    }

    #[test]
    fn templates_may_use_macros_raise_exception_and_the_list_form() {
        let macro_template = "{% macro turn(m) %}[{{ m.role }}] {{ m.content }}{% endmacro %}\
            {% for m in messages %}{{ turn(m) }}{% endfor %}";
        assert_eq!(jinja(macro_template).render(&[Message::new("user", "hi")]).unwrap(), "[user] hi");
        let raising = "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}";
        let err = jinja(raising).render(&[Message::new("user", "hi")]).unwrap_err().to_string();
        assert!(err.contains("system first"), "{err}");
        let config =
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#;
        assert_eq!(ChatTemplate::from_tokenizer_config(config).unwrap().render(&[]).unwrap(), "D");
        let config = r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#;
        assert!(ChatTemplate::from_tokenizer_config(config).unwrap_err().contains("default"));
        assert!(ChatTemplate::from_tokenizer_config(r#"{"chat_template": 5}"#).is_err());
    }

    #[test]
    fn llama3_jinja_template_renders() {
        let t = ChatTemplate::from_tokenizer_config(LLAMA3_TOKENIZER_CONFIG).unwrap();
        let text = t.render(&[Message::new("user", "  Hello  ")]).unwrap();
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }
}

/// A multi-turn conversation that keeps the model's KV cache across turns.
///
/// Each turn renders the whole conversation with the template and tokenizes it; the cached positions up to the
/// first token that differs (templates may trim or re-tokenize the previous reply) are kept, and only the rest
/// runs through the model, so the result is exactly that of a fresh run.
/// When a turn would not fit in the context, the conversation restarts from the system message and the new
/// user message ([`TurnInfo::restarted`]).
pub struct ChatSession<'m, B: bitnet_backend::BitNetBackend> {
    model: &'m crate::model::BitNetModel<B>,
    tokenizer: &'m crate::tokenizer::Tokenizer,
    template: ChatTemplate,
    cache: crate::model::KvCache<B>,
    cached: Vec<u32>,
    messages: Vec<Message>,
    system: Option<String>,
}

/// What one turn did.
#[derive(Debug, Clone)]
pub struct TurnInfo {
    /// The assistant's reply.
    pub reply: String,
    /// Prompt tokens that were already in the cache and did not run again.
    pub reused_tokens: usize,
    /// Whether the conversation restarted because the context was full.
    pub restarted: bool,
    /// The generation's tokens and timings.
    pub generation: crate::generate::Generation,
}

impl<'m, B: bitnet_backend::BitNetBackend> ChatSession<'m, B> {
    /// A new conversation with an optional system message and a context of `capacity` tokens (at most the
    /// model's `max_position_embeddings`).
    pub fn new(
        model: &'m crate::model::BitNetModel<B>,
        tokenizer: &'m crate::tokenizer::Tokenizer,
        template: ChatTemplate,
        system: Option<String>,
        capacity: usize,
    ) -> Result<Self> {
        let capacity = capacity.min(model.config().max_position_embeddings);
        let mut session = Self {
            model,
            tokenizer,
            template,
            cache: model.new_cache(1, capacity)?,
            cached: vec![],
            messages: vec![],
            system,
        };
        session.reset();
        Ok(session)
    }

    /// Forgets the conversation (keeps the system message).
    pub fn reset(&mut self) {
        self.messages = self.system.iter().map(|s| Message::new("system", s)).collect();
        self.cache.clear();
        self.cached.clear();
    }

    /// Replaces the conversation after the system message with `history` (nothing is cached yet).
    pub fn load_history(&mut self, history: &[Message]) {
        self.reset();
        self.messages.extend_from_slice(history);
    }

    /// Adds `user`'s message and generates the reply, streaming text pieces to `on_text`.
    pub fn turn(
        &mut self,
        user: &str,
        max_new_tokens: usize,
        sampler: &mut crate::sampling::Sampler,
        stop_tokens: &[u32],
        mut on_text: impl FnMut(&str),
    ) -> Result<TurnInfo> {
        self.messages.push(Message::new("user", user));
        let mut ids = self.tokenizer.encode(&self.template.render(&self.messages)?)?;
        let mut restarted = false;
        if ids.len() + max_new_tokens > self.cache.capacity() {
            let last = self.messages.pop().unwrap_or_else(|| Message::new("user", user));
            self.reset();
            self.messages.push(last);
            ids = self.tokenizer.encode(&self.template.render(&self.messages)?)?;
            restarted = true;
            if ids.len() >= self.cache.capacity() {
                self.messages.pop();
                return Err(ModelError::Request(format!(
                    "the message takes {} tokens, more than the context of {}",
                    ids.len(),
                    self.cache.capacity()
                )));
            }
        }
        // Positions whose token is unchanged keep valid keys and values: reuse the longest common prefix (at
        // least one token must run, to produce the next logits).
        let common = self.cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        let reused = common.min(ids.len() - 1);
        self.cache.truncate(reused);
        let mut stream = crate::tokenizer::TextStream::default();
        let tokenizer = self.tokenizer;
        let budget = max_new_tokens.min(self.cache.capacity() - ids.len());
        let generation = crate::generate::generate(
            self.model,
            &mut self.cache,
            &ids[reused..],
            budget,
            sampler,
            stop_tokens,
            |token| {
                if !stop_tokens.contains(&token) {
                    if let Ok(piece) = stream.push(tokenizer, token) {
                        on_text(&piece);
                    }
                }
                true
            },
        )?;
        let content: Vec<u32> = generation.tokens.iter().copied().filter(|t| !stop_tokens.contains(t)).collect();
        let reply = self.tokenizer.decode(&content, true)?;
        ids.extend(&generation.tokens);
        ids.truncate(self.cache.len());
        self.cached = ids;
        self.messages.push(Message::new("assistant", &reply));
        Ok(TurnInfo { reply, reused_tokens: reused, restarted, generation })
    }
}
