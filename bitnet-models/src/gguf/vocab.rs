//! The tokenizer a GGUF file carries in its metadata (llama.cpp's `tokenizer.ggml.*` keys), converted to the
//! parts of a Hugging Face tokenizer, which are written as a `tokenizer.json` (and read back, for byte-level
//! BPE) or built into the tokenizer directly (no JSON round trip; see `TokenizerParts`): byte-level BPE vocabularies
//! (`tokenizer.ggml.model` "gpt2": the LLaMA-3 tokenizer of the 2B-4T family, Qwen's, GPT-2-style tokenizers
//! like the one `bitnet train-tokenizer` makes) and SentencePiece vocabularies ("llama": LLaMA-2-based models
//! such as llama.cpp's 1bitLLM conversions).
//!
//! The keys, as llama.cpp's converter writes them:
//! * `tokenizer.ggml.tokens`: every token string, indexed by id (byte-level: a space is `Ġ`);
//! * `tokenizer.ggml.token_type`: 1 normal, 3 control (special tokens such as `<|eot_id|>`), 4 user-defined
//!   (added, not special), 5 unused (ids with no token);
//! * `tokenizer.ggml.merges`: the BPE merges in rank order, each "left right";
//! * `tokenizer.ggml.pre`: the pre-tokenizer: "llama-bpe" (LLaMA-3's split regex), "qwen2" or "gpt-2";
//! * `tokenizer.chat_template`: the Jinja chat template, when the model has one.
//!
//! SentencePiece vocabularies carry `tokenizer.ggml.scores` instead of merges (types 2 unknown and 6 byte
//! appear too, and `tokenizer.ggml.add_space_prefix`, default true). They become what the `tokenizers`
//! conversion of a SentencePiece BPE model is (transformers' `LlamaConverter`, legacy mode): a BPE model with
//! byte fallback, `<unk>` fused, and the merges every split of a piece into two pieces gives, ranked by the
//! piece's score (highest first; ties keep the pieces' order, a piece's own splits ordered by the ids of their
//! halves, then by longer halves first as Python's stable sort on `(score, len left, len right)` descending
//! leaves them); a normalizer that prepends `▁` (with the space prefix) and turns spaces into `▁`; and the
//! decoder that undoes it.

use super::reader::GgufFile;
use super::value::{GgufArray, GgufValue};
use std::collections::BTreeMap;
use tokenizers::AddedToken;

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
    /// SentencePiece's unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A SentencePiece byte-fallback token (`<0x41>`).
    pub const BYTE: i32 = 6;
}

/// Qwen2/Qwen3's pre-tokenizer split pattern (llama.cpp "qwen2"): LLaMA-3's with single digits.
pub const QWEN2_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is split before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// LLaMA-3: [`LLAMA3_SPLIT_REGEX`], then byte-level mapping (llama.cpp "llama-bpe"; merges ignored for words
    /// that are whole tokens).
    Llama3,
    /// GPT-2: the byte-level pre-tokenizer's own regex (llama.cpp "gpt-2").
    Gpt2,
    /// Qwen2 / Qwen3: [`QWEN2_SPLIT_REGEX`] after NFC normalization, then byte-level mapping (llama.cpp "qwen2").
    Qwen2,
}

impl PreTokenizer {
    /// llama.cpp's name.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama3 => "llama-bpe",
            Self::Gpt2 => "gpt-2",
            Self::Qwen2 => "qwen2",
        }
    }

    fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "llama-bpe" | "llama3" => Some(Self::Llama3),
            "gpt-2" | "gpt2" => Some(Self::Gpt2),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    fn tokenizer_json(self) -> serde_json::Value {
        use serde_json::json;
        let split_then_bytes = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]})
        };
        match self {
            Self::Llama3 => split_then_bytes(LLAMA3_SPLIT_REGEX),
            Self::Qwen2 => split_then_bytes(QWEN2_SPLIT_REGEX),
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
        let split = |regex: &str| {
            pre["type"] == "Sequence"
                && parts.len() == 2
                && parts[0]["type"] == "Split"
                && parts[0]["pattern"]["Regex"] == regex
                && parts[0]["behavior"] == "Isolated"
                && parts[0]["invert"] == false
                && byte_level(&parts[1], false)
        };
        [(LLAMA3_SPLIT_REGEX, Self::Llama3), (QWEN2_SPLIT_REGEX, Self::Qwen2)]
            .into_iter()
            .find(|(regex, _)| split(regex))
            .map(|(_, p)| p)
    }
}

/// Longest SentencePiece piece (in bytes) whose splits become merges.
const MAX_MERGED_PIECE_BYTES: usize = 256;

/// How a vocabulary splits text into its tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum VocabModel {
    /// Byte-level BPE (`tokenizer.ggml.model` "gpt2"): merges in rank order, "left right", and the pre-tokenizer.
    ByteLevelBpe {
        /// Merges in rank order.
        merges: Vec<String>,
        /// The pre-tokenizer.
        pre: PreTokenizer,
    },
    /// SentencePiece BPE (`tokenizer.ggml.model` "llama"): a score per token.
    SentencePiece {
        /// Each token's score (higher merges first).
        scores: Vec<f32>,
        /// Whether a `▁` is prepended to the text.
        add_space_prefix: bool,
    },
}

/// A vocabulary in GGUF form.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// llama.cpp token type of each id ([`token_type`]).
    pub token_types: Vec<i32>,
    /// How text becomes tokens.
    pub model: VocabModel,
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
        let model_name = string("tokenizer.ggml.model")?.unwrap_or("");
        let tokens = strings("tokenizer.ggml.tokens", tokens)?;
        let model = match model_name {
            "gpt2" => {
                let pre_name = string("tokenizer.ggml.pre")?.unwrap_or("default");
                let pre = PreTokenizer::from_gguf_name(pre_name).ok_or_else(|| {
                    format!(
                        "the embedded tokenizer's pre-tokenizer \"{pre_name}\" is not supported (llama-bpe, qwen2, gpt-2)"
                    )
                })?;
                let merges = match file.get("tokenizer.ggml.merges") {
                    Some(v) => strings("tokenizer.ggml.merges", v)?,
                    None => return Err("the embedded BPE tokenizer has no tokenizer.ggml.merges".into()),
                };
                if let Some(bad) = merges.iter().find(|m| split_merge(m).is_none()) {
                    return Err(format!("merge \"{bad}\" is not two tokens separated by one space"));
                }
                VocabModel::ByteLevelBpe { merges, pre }
            }
            "llama" => {
                let scores: Vec<f32> = match file.get("tokenizer.ggml.scores").and_then(GgufValue::as_array) {
                    Some(a) => a
                        .iter()
                        .map(|v| v.as_f64().map(|x| x as f32).filter(|x| x.is_finite()))
                        .collect::<Option<_>>()
                        .ok_or("tokenizer.ggml.scores holds a value that is not a finite number")?,
                    None => return Err("the embedded SentencePiece tokenizer has no tokenizer.ggml.scores".into()),
                };
                if scores.len() != tokens.len() {
                    return Err(format!("{} scores for {} tokens", scores.len(), tokens.len()));
                }
                let add_space_prefix = match file.get("tokenizer.ggml.add_space_prefix") {
                    None => true,
                    Some(v) => v.as_bool().ok_or("tokenizer.ggml.add_space_prefix is not a boolean")?,
                };
                VocabModel::SentencePiece { scores, add_space_prefix }
            }
            other => {
                return Err(format!(
                    "the embedded tokenizer is of type \"{other}\"; byte-level BPE (\"gpt2\") and SentencePiece \
                     (\"llama\") are converted"
                ))
            }
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
        if matches!(model, VocabModel::SentencePiece { .. }) && !token_types.contains(&token_type::UNKNOWN) {
            return Err("the embedded SentencePiece tokenizer has no unknown token (type 2)".into());
        }
        let chat_template = string("tokenizer.chat_template")?.map(str::to_string);
        Ok(Some(Self { tokens, token_types, model, chat_template }))
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
        Ok(Self { tokens, token_types, model: VocabModel::ByteLevelBpe { merges, pre }, chat_template: None })
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
            ("tokenizer.ggml.tokens".into(), GgufValue::Array(GgufArray::from_strings(&self.tokens))),
            ("tokenizer.ggml.token_type".into(), GgufValue::Array(GgufArray::from_i32s(&self.token_types))),
        ];
        match &self.model {
            VocabModel::ByteLevelBpe { merges, pre } => meta.extend([
                ("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())),
                ("tokenizer.ggml.pre".into(), GgufValue::String(pre.gguf_name().into())),
                ("tokenizer.ggml.merges".into(), GgufValue::Array(GgufArray::from_strings(merges))),
            ]),
            VocabModel::SentencePiece { scores, add_space_prefix } => meta.extend([
                ("tokenizer.ggml.model".into(), GgufValue::String("llama".into())),
                ("tokenizer.ggml.scores".into(), GgufValue::Array(GgufArray::from_f32s(scores))),
                ("tokenizer.ggml.add_space_prefix".into(), GgufValue::Bool(*add_space_prefix)),
            ]),
        }
        if let Some(template) = &self.chat_template {
            meta.push(("tokenizer.chat_template".into(), GgufValue::String(template.clone())));
        }
        meta
    }

    /// The tokenizer of this vocabulary, built through the `tokenizers` API from the same parts
    /// [`Self::to_tokenizer_json`] writes (no JSON round trip: see `TokenizerParts`).
    pub fn to_tokenizer(&self) -> Result<crate::tokenizer::Tokenizer, String> {
        self.tokenizer_parts().build().map(crate::tokenizer::Tokenizer::from_inner)
    }

    /// The equivalent `tokenizer.json` (what [`crate::tokenizer::Tokenizer::from_bytes`] reads).
    pub fn to_tokenizer_json(&self) -> Vec<u8> {
        // Serializing strings, numbers, booleans and maps with string keys into memory cannot fail.
        serde_json::to_vec(&self.tokenizer_parts()).unwrap_or_default()
    }

    fn tokenizer_parts(&self) -> TokenizerParts<'_> {
        match &self.model {
            VocabModel::ByteLevelBpe { merges, pre } => self.byte_level_parts(merges, *pre),
            VocabModel::SentencePiece { scores, add_space_prefix } => {
                self.sentencepiece_parts(scores, *add_space_prefix)
            }
        }
    }

    /// The added tokens of a `tokenizer.json`: control tokens (special) and user-defined ones.
    fn added_tokens(&self) -> Vec<AddedTokenJson> {
        let special = |kind: i32| kind == token_type::CONTROL || kind == token_type::USER_DEFINED;
        (self.tokens.iter().zip(&self.token_types).enumerate())
            .filter(|(_, (_, &kind))| special(kind))
            .map(|(id, (token, &kind))| AddedTokenJson {
                id,
                token: AddedToken::from(token.as_str(), kind == token_type::CONTROL)
                    .single_word(false)
                    .lstrip(false)
                    .rstrip(false)
                    .normalized(false),
            })
            .collect()
    }

    /// The SentencePiece vocabulary as the `tokenizers` conversion makes it (see the module docs), as parts.
    fn sentencepiece_parts(&self, scores: &[f32], add_space_prefix: bool) -> TokenizerParts<'_> {
        use serde_json::json;
        let mut ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (id, token) in self.tokens.iter().enumerate() {
            ids.entry(token.as_str()).or_insert(id);
        }
        // (left, right, score) for every split of every piece into two pieces of the vocabulary.
        let mut merges: Vec<(&str, &str, f32)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (piece, &score) in self.tokens.iter().zip(scores) {
            // A piece's splits cost its length squared (hashing each half): a hostile file's megabyte-long
            // token must not stall the load. SentencePiece pieces are at most 16 characters by default.
            if !seen.insert(piece.as_str()) || piece.len() > MAX_MERGED_PIECE_BYTES {
                continue;
            }
            let mut local: Vec<(&str, &str, f32)> = piece
                .char_indices()
                .skip(1)
                .map(|(at, _)| piece.split_at(at))
                .filter(|(l, r)| ids.contains_key(l) && ids.contains_key(r))
                .map(|(l, r)| (l, r, score))
                .collect();
            local.sort_by_key(|&(l, r, _)| (ids[l], ids[r]));
            merges.extend(local);
        }
        let chars = |s: &str| s.chars().count();
        // Python's stable `sorted(key=(score, len(l), len(r)), reverse=True)`: descending keys, ties kept in order.
        merges.sort_by(|a, b| {
            b.2.total_cmp(&a.2).then_with(|| chars(b.0).cmp(&chars(a.0))).then_with(|| chars(b.1).cmp(&chars(a.1)))
        });
        let merges = Merges::Pairs(merges.into_iter().map(|(l, r, _)| (l, r)).collect());
        let unk = (self.tokens.iter().zip(&self.token_types))
            .find(|(_, &kind)| kind == token_type::UNKNOWN)
            .map_or("<unk>", |(t, _)| t.as_str());
        let mut normalizers = vec![];
        if add_space_prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
        }
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_space_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        TokenizerParts {
            version: "1.0",
            truncation: (),
            padding: (),
            added_tokens: self.added_tokens(),
            normalizer: json!({"type": "Sequence", "normalizers": normalizers}),
            pre_tokenizer: serde_json::Value::Null,
            post_processor: serde_json::Value::Null,
            decoder: json!({"type": "Sequence", "decoders": decoders}),
            model: BpeParts {
                kind: "BPE",
                dropout: (),
                unk_token: Some(unk),
                continuing_subword_prefix: (),
                end_of_word_suffix: (),
                fuse_unk: true,
                byte_fallback: self.token_types.contains(&token_type::BYTE),
                ignore_merges: false,
                vocab: VocabById(&self.tokens),
                merges,
            },
        }
    }

    /// The byte-level BPE vocabulary as the parts of a `tokenizer.json`.
    fn byte_level_parts<'a>(&'a self, merges: &'a [String], pre: PreTokenizer) -> TokenizerParts<'a> {
        use serde_json::json;
        // Every id is in the model's vocabulary (so ids stay contiguous and an added token keeps its id: the
        // tokenizers library numbers added tokens missing from the vocabulary after it); control and
        // user-defined tokens are also added tokens, matched in the text before BPE.
        let normalizer = match pre {
            PreTokenizer::Qwen2 => json!({"type": "NFC"}),
            _ => serde_json::Value::Null,
        };
        TokenizerParts {
            version: "1.0",
            truncation: (),
            padding: (),
            added_tokens: self.added_tokens(),
            normalizer,
            pre_tokenizer: pre.tokenizer_json(),
            post_processor: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
            decoder: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            model: BpeParts {
                kind: "BPE",
                dropout: (),
                unk_token: None,
                continuing_subword_prefix: (),
                end_of_word_suffix: (),
                fuse_unk: false,
                byte_fallback: false,
                ignore_merges: pre == PreTokenizer::Llama3,
                vocab: VocabById(&self.tokens),
                merges: Merges::Joined(merges),
            },
        }
    }
}

/// The tokenizer a vocabulary converts to, as parts that borrow the vocabulary's strings. Serialized, they are
/// a `tokenizer.json`, written straight to bytes; built ([`Self::build`]), the tokenizer itself, through the
/// `tokenizers` API with the same settings its `tokenizer.json` reader applies. (That reader buffers the whole
/// model object as a `serde_json::Value` tree, and with a JSON tree of our own on top, building a LLaMA-3
/// tokenizer took 123 MB at its peak for a 46 MB result: it set a 2B model's peak memory.)
#[derive(serde::Serialize)]
struct TokenizerParts<'a> {
    version: &'static str,
    truncation: (),
    padding: (),
    added_tokens: Vec<AddedTokenJson>,
    normalizer: serde_json::Value,
    pre_tokenizer: serde_json::Value,
    post_processor: serde_json::Value,
    decoder: serde_json::Value,
    model: BpeParts<'a>,
}

impl TokenizerParts<'_> {
    /// The tokenizer: the BPE model from the vocabulary and merges, the pipeline parts from their JSON, then
    /// the added tokens (in that order, as the `tokenizer.json` reader does, so an added token that is also in
    /// the vocabulary keeps its id).
    fn build(self) -> Result<tokenizers::Tokenizer, String> {
        use tokenizers::models::bpe::{Vocab, BPE};
        let model = self.model;
        let mut vocab = Vocab::with_capacity(model.vocab.0.len());
        for (token, id) in model.vocab.first_ids() {
            let id = u32::try_from(id)
                .map_err(|_| format!("a vocabulary of {} tokens is too large", model.vocab.0.len()))?;
            vocab.insert(token.to_string(), id);
        }
        let merges = match model.merges {
            Merges::Joined(merges) => (merges.iter().enumerate())
                .map(|(rank, merge)| match split_merge(merge) {
                    Some((left, right)) => Ok((left.to_string(), right.to_string())),
                    None => Err(format!("merge {rank} (\"{merge}\") is not two tokens separated by one space")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Merges::Pairs(pairs) => pairs.into_iter().map(|(l, r)| (l.to_string(), r.to_string())).collect(),
        };
        let mut builder = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .fuse_unk(model.fuse_unk)
            .byte_fallback(model.byte_fallback)
            .ignore_merges(model.ignore_merges);
        if let Some(unk) = model.unk_token {
            builder = builder.unk_token(unk.to_string());
        }
        let mut tokenizer = tokenizers::Tokenizer::new(builder.build().map_err(|e| e.to_string())?);
        tokenizer
            .with_normalizer(part::<tokenizers::NormalizerWrapper>(self.normalizer)?)
            .with_pre_tokenizer(part::<tokenizers::PreTokenizerWrapper>(self.pre_tokenizer)?)
            .with_post_processor(part::<tokenizers::PostProcessorWrapper>(self.post_processor)?)
            .with_decoder(part::<tokenizers::DecoderWrapper>(self.decoder)?);
        let added: Vec<AddedToken> = self.added_tokens.into_iter().map(|a| a.token).collect();
        tokenizer.add_tokens(&added);
        Ok(tokenizer)
    }
}

/// The two tokens of a merge written "left right" (exactly one space), else `None`.
fn split_merge(merge: &str) -> Option<(&str, &str)> {
    merge.split_once(' ').filter(|(_, right)| !right.contains(' '))
}

/// A pipeline part from its `tokenizer.json` object (`null`: none).
fn part<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Result<Option<T>, String> {
    match json {
        serde_json::Value::Null => Ok(None),
        json => serde_json::from_value(json).map(Some).map_err(|e| e.to_string()),
    }
}

/// An entry of a `tokenizer.json`'s `added_tokens`.
#[derive(serde::Serialize)]
struct AddedTokenJson {
    id: usize,
    #[serde(flatten)]
    token: AddedToken,
}

/// BPE merges in rank order.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Merges<'a> {
    /// "left right" (GGUF's and the older `tokenizer.json` form).
    Joined(&'a [String]),
    /// `[left, right]` pairs.
    Pairs(Vec<(&'a str, &'a str)>),
}

/// The `model` object of a BPE `tokenizer.json` (`()` fields are `null`).
#[derive(serde::Serialize)]
struct BpeParts<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: (),
    unk_token: Option<&'a str>,
    continuing_subword_prefix: (),
    end_of_word_suffix: (),
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: VocabById<'a>,
    merges: Merges<'a>,
}

/// Token -> id as a JSON object, the first id of a repeated token winning.
struct VocabById<'a>(&'a [String]);

impl<'a> VocabById<'a> {
    /// (token, id) for each distinct token, at its first id.
    fn first_ids(&self) -> impl Iterator<Item = (&'a str, usize)> {
        let mut seen = std::collections::HashSet::with_capacity(self.0.len());
        self.0.iter().enumerate().map(|(id, token)| (token.as_str(), id)).filter(move |&(token, _)| seen.insert(token))
    }
}

impl serde::Serialize for VocabById<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.first_ids())
    }
}
