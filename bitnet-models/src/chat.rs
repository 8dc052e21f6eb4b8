//! Chat prompts: the model's Jinja `chat_template` (from `tokenizer_config.json`, rendered with minijinja), or
//! the 2B-4T template of DESIGN.md when a model ships none:
//! `<|begin_of_text|>System: {sys}<|eot_id|>User: {msg}<|eot_id|>Assistant: {reply}<|eot_id|>...Assistant: `.

use crate::error::{ModelError, Result};
use serde::Serialize;
use std::path::Path;

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
        Ok(match v.get("chat_template").and_then(|t| t.as_str()) {
            Some(source) => ChatTemplate::Jinja {
                source: source.into(),
                bos_token: special("bos_token"),
                eos_token: special("eos_token"),
            },
            None => ChatTemplate::BitNet2B4T,
        })
    }

    /// The template of a model directory's `tokenizer_config.json`, or 2B-4T's when the file is absent.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer_config.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_tokenizer_config(&text).map_err(|message| ModelError::Config { path, message }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ChatTemplate::BitNet2B4T),
            Err(cause) => Err(ModelError::Io { path, cause }),
        }
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
                let mut env = minijinja::Environment::new();
                let render_error = |e: minijinja::Error| ModelError::Request(format!("chat template: {e}"));
                env.add_template("chat", source).map_err(render_error)?;
                let template = env.get_template("chat").map_err(render_error)?;
                template
                    .render(minijinja::context! {
                        messages => messages,
                        bos_token => bos_token,
                        eos_token => eos_token,
                        add_generation_prompt => true,
                    })
                    .map_err(render_error)
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
