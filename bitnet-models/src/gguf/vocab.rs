//! The tokenizer a GGUF file carries in its metadata (llama.cpp's `tokenizer.ggml.*` keys), converted to and
//! from a Hugging Face `tokenizer.json`, for byte-level BPE vocabularies (`tokenizer.ggml.model` "gpt2": the
//! LLaMA-3 tokenizer of the 2B-4T family, GPT-2-style tokenizers like the one `bitnet train-tokenizer` makes).
//!
//! The keys, as llama.cpp's converter writes them:
//! * `tokenizer.ggml.tokens`: every token string, indexed by id (byte-level: a space is `Ġ`);
//! * `tokenizer.ggml.token_type`: 1 normal, 3 control (special tokens such as `<|eot_id|>`), 4 user-defined
//!   (added, not special), 5 unused (ids with no token);
//! * `tokenizer.ggml.merges`: the BPE merges in rank order, each "left right";
//! * `tokenizer.ggml.pre`: the pre-tokenizer: "llama-bpe" (LLaMA-3's split regex) or "gpt-2";
//! * `tokenizer.chat_template`: the Jinja chat template, when the model has one.
//!
//! SentencePiece vocabularies (`tokenizer.ggml.model` "llama", e.g. LLaMA-2-based 1bitLLM conversions) carry
//! scores instead of merges and are not converted: such files need a `tokenizer.json` beside them.

use super::reader::GgufFile;
use super::value::{GgufArray, GgufValue};
use std::collections::BTreeMap;

/// The LLaMA-3 pre-tokenizer split pattern (llama.cpp's "llama-bpe").
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types.
pub mod token_type {
    /// An ordinary vocabulary entry.
    pub const NORMAL: i32 = 1;
    /// A special (control) token.
    pub const CONTROL: i32 = 3;
    /// An added token that is not special.
    pub const USER_DEFINED: i32 = 4;
    /// An id with no token.
    pub const UNUSED: i32 = 5;
}

/// How text is split before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// LLaMA-3: [`LLAMA3_SPLIT_REGEX`], then byte-level mapping (llama.cpp "llama-bpe"; merges ignored for words
    /// that are whole tokens).
    Llama3,
    /// GPT-2: the byte-level pre-tokenizer's own regex (llama.cpp "gpt-2").
    Gpt2,
}

impl PreTokenizer {
    /// llama.cpp's name.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama3 => "llama-bpe",
            Self::Gpt2 => "gpt-2",
        }
    }

    fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "llama-bpe" | "llama3" => Some(Self::Llama3),
            "gpt-2" | "gpt2" => Some(Self::Gpt2),
            _ => None,
        }
    }

    fn tokenizer_json(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::Llama3 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_REGEX}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]}),
            Self::Gpt2 => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
            }
        }
    }

    /// Recognizes the pre-tokenizer of a `tokenizer.json`.
    fn detect(pre: &serde_json::Value) -> Option<Self> {
        let byte_level = |v: &serde_json::Value, regex: bool| {
            v["type"] == "ByteLevel" && v["use_regex"] == regex && v["add_prefix_space"] == false
        };
        if byte_level(pre, true) {
            return Some(Self::Gpt2);
        }
        let parts = pre["pretokenizers"].as_array()?;
        let llama3 = pre["type"] == "Sequence"
            && parts.len() == 2
            && parts[0]["type"] == "Split"
            && parts[0]["pattern"]["Regex"] == LLAMA3_SPLIT_REGEX
            && parts[0]["behavior"] == "Isolated"
            && parts[0]["invert"] == false
            && byte_level(&parts[1], false);
        llama3.then_some(Self::Llama3)
    }
}

/// A byte-level BPE vocabulary in GGUF form.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// llama.cpp token type of each id ([`token_type`]).
    pub token_types: Vec<i32>,
    /// Merges in rank order, "left right".
    pub merges: Vec<String>,
    /// The pre-tokenizer.
    pub pre: PreTokenizer,
    /// The Jinja chat template (`tokenizer_config.json`'s `chat_template`), if any.
    pub chat_template: Option<String>,
}

impl GgufVocab {
    /// The vocabulary a GGUF file carries: `Ok(None)` when the file carries no tokenizer, an error naming the
    /// reason when it carries one this converter does not handle or a malformed one.
    pub fn from_file(file: &GgufFile) -> Result<Option<Self>, String> {
        let Some(tokens) = file.get("tokenizer.ggml.tokens") else {
            return Ok(None);
        };
        let string = |key: &str| match file.get(key) {
            Some(GgufValue::String(s)) => Ok(Some(s.as_str())),
            None => Ok(None),
            Some(_) => Err(format!("{key} is not a string")),
        };
        let strings = |key: &str, value: &GgufValue| -> Result<Vec<String>, String> {
            value
                .as_array()
                .and_then(GgufArray::strings)
                .map(|items| items.map(str::to_string).collect())
                .ok_or_else(|| format!("{key} is not an array of strings"))
        };
        let model = string("tokenizer.ggml.model")?.unwrap_or("");
        if model != "gpt2" {
            return Err(format!(
                "the embedded tokenizer is of type \"{model}\"; only byte-level BPE (\"gpt2\") is converted"
            ));
        }
        let pre_name = string("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = PreTokenizer::from_gguf_name(pre_name).ok_or_else(|| {
            format!("the embedded tokenizer's pre-tokenizer \"{pre_name}\" is not supported (llama-bpe, gpt-2)")
        })?;
        let tokens = strings("tokenizer.ggml.tokens", tokens)?;
        let merges = match file.get("tokenizer.ggml.merges") {
            Some(v) => strings("tokenizer.ggml.merges", v)?,
            None => return Err("the embedded BPE tokenizer has no tokenizer.ggml.merges".into()),
        };
        let token_types = match file.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .and_then(GgufArray::integers)
                .ok_or("tokenizer.ggml.token_type is not an array of integers")?
                .map(|i| i32::try_from(i).map_err(|_| format!("token type {i} is out of range")))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![token_type::NORMAL; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(format!("{} token types for {} tokens", token_types.len(), tokens.len()));
        }
        if let Some(bad) = merges.iter().find(|m| m.split(' ').count() != 2) {
            return Err(format!("merge \"{bad}\" is not two tokens separated by one space"));
        }
        let chat_template = string("tokenizer.chat_template")?.map(str::to_string);
        Ok(Some(Self { tokens, token_types, merges, pre, chat_template }))
    }

    /// The vocabulary of a byte-level BPE `tokenizer.json` (ids with no token become `[PAD<id>]`, unused).
    pub fn from_tokenizer_json(bytes: &[u8]) -> Result<Self, String> {
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("tokenizer.json: {e}"))?;
        let model = &json["model"];
        if model["type"] != "BPE" || json["decoder"]["type"] != "ByteLevel" {
            return Err("only byte-level BPE tokenizers can be embedded in GGUF".into());
        }
        let pre = PreTokenizer::detect(&json["pre_tokenizer"])
            .ok_or("the tokenizer's pre-tokenizer is neither LLaMA-3's nor GPT-2's byte-level one")?;
        let mut by_id: BTreeMap<u64, (String, i32)> = BTreeMap::new();
        for (token, id) in model["vocab"].as_object().ok_or("model.vocab is not an object")? {
            let id = id.as_u64().ok_or("a vocabulary id is not an integer")?;
            by_id.insert(id, (token.clone(), token_type::NORMAL));
        }
        for added in json["added_tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let id = added["id"].as_u64().ok_or("an added token has no id")?;
            let content = added["content"].as_str().ok_or("an added token has no content")?;
            let kind = if added["special"] == true { token_type::CONTROL } else { token_type::USER_DEFINED };
            by_id.insert(id, (content.to_string(), kind));
        }
        let count = by_id.keys().next_back().map_or(0, |&last| last + 1);
        if count > (1 << 24) {
            return Err(format!("a vocabulary of {count} ids is implausible"));
        }
        let (mut tokens, mut token_types) = (Vec::new(), Vec::new());
        for id in 0..count {
            let (token, kind) = by_id.remove(&id).unwrap_or_else(|| (format!("[PAD{id}]"), token_type::UNUSED));
            tokens.push(token);
            token_types.push(kind);
        }
        let merges = model["merges"]
            .as_array()
            .ok_or("model.merges is not an array")?
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Array(pair) if pair.len() == 2 => {
                    Ok(format!("{} {}", pair[0].as_str().unwrap_or_default(), pair[1].as_str().unwrap_or_default()))
                }
                _ => Err("a merge is neither \"a b\" nor [a, b]".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { tokens, token_types, merges, pre, chat_template: None })
    }

    /// This vocabulary with the chat template of a `tokenizer_config.json` (none if it has no template).
    pub fn with_chat_template_of(mut self, tokenizer_config: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(tokenizer_config).map_err(|e| format!("tokenizer_config.json: {e}"))?;
        self.chat_template = config["chat_template"].as_str().map(str::to_string);
        Ok(self)
    }

    /// The `tokenizer.*` metadata of this vocabulary, for [`super::write_gguf`].
    pub fn metadata(&self) -> Vec<(String, GgufValue)> {
        let mut meta = vec![
            ("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), GgufValue::String(self.pre.gguf_name().into())),
            ("tokenizer.ggml.tokens".into(), GgufValue::Array(GgufArray::from_strings(&self.tokens))),
            ("tokenizer.ggml.token_type".into(), GgufValue::Array(GgufArray::from_i32s(&self.token_types))),
            ("tokenizer.ggml.merges".into(), GgufValue::Array(GgufArray::from_strings(&self.merges))),
        ];
        if let Some(template) = &self.chat_template {
            meta.push(("tokenizer.chat_template".into(), GgufValue::String(template.clone())));
        }
        meta
    }

    /// The tokenizer of this vocabulary.
    pub fn to_tokenizer(&self) -> Result<crate::tokenizer::Tokenizer, String> {
        crate::tokenizer::Tokenizer::from_bytes(&self.to_tokenizer_json())
    }

    /// The equivalent `tokenizer.json` (what [`crate::tokenizer::Tokenizer::from_bytes`] reads).
    pub fn to_tokenizer_json(&self) -> Vec<u8> {
        use serde_json::json;
        let special = |kind: i32| kind == token_type::CONTROL || kind == token_type::USER_DEFINED;
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        // Every id is in the model's vocabulary (so ids stay contiguous and an added token keeps its id: the
        // tokenizers library numbers added tokens missing from the vocabulary after it); control and
        // user-defined tokens are also added tokens, matched in the text before BPE.
        for (id, (token, &kind)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            if special(kind) {
                added.push(json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": kind == token_type::CONTROL}));
            }
            vocab.entry(token.clone()).or_insert(json!(id));
        }
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": self.pre.tokenizer_json(),
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": self.pre == PreTokenizer::Llama3,
                "vocab": vocab,
                "merges": self.merges,
            },
        });
        serde_json::to_vec(&tokenizer).unwrap_or_default()
    }
}
