//! A model as a user names it, resolved and opened once: the weights, the tokenizer (built only when text is
//! needed), the chat template, the BOS token and the stop tokens.
//!
//! * [`ModelSpec`]: what `--model` names: a Hugging Face directory, a `.gguf` file, a hub id (`owner/name`,
//!   fetched into the hub cache), or nothing for the embedded default model.
//! * [`Checkpoint`]: the opened files (a GGUF file is parsed once, a directory's shards mapped once), enough to
//!   describe a model without loading it (`bitnet inspect`).
//! * [`ModelBundle`]: the model loaded on a device with everything a command needs around it.
//!
//! Stop tokens are the configuration's end-of-sequence ids, `generation_config.json`'s, a GGUF file's
//! end-of-turn id, and the ids of the end-of-turn tokens chat templates use (`<|eot_id|>`, `<|im_end|>`,
//! `<end_of_turn>`) where the vocabulary has them.

use crate::chat::ChatTemplate;
use crate::config::BitNetConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{token_id, GgufFile, GgufVocab};
use crate::model::{BitNetModel, HeadFormat};
use crate::source::hf::HfCheckpoint;
use crate::source::{build_model, LoadOptions, TensorSource};
use crate::tokenizer::Tokenizer;
use bitnet_backend::BitNetBackend;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Token strings that end a chat turn in the templates of the supported families.
pub const END_OF_TURN_TOKENS: [&str; 3] = ["<|eot_id|>", "<|im_end|>", "<end_of_turn>"];

/// What a user names as the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// The embedded default model (feature `default-model`).
    Default,
    /// A Hugging Face checkpoint directory.
    Dir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
    /// A hub repository at a revision.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
    },
}

impl ModelSpec {
    /// Interprets a `--model` argument: an existing directory or file, else a hub id; `None` is the default model.
    pub fn parse(spec: Option<&Path>) -> Result<Self> {
        let Some(spec) = spec else { return Ok(Self::Default) };
        if spec.is_dir() {
            return Ok(Self::Dir(spec.into()));
        }
        if spec.exists() {
            return Ok(Self::Gguf(spec.into()));
        }
        let text = spec.to_string_lossy();
        if crate::hub::is_hub_id(&text) {
            return Ok(Self::Hub { repo: text.into_owned(), revision: "main".into() });
        }
        Err(ModelError::Io {
            path: spec.into(),
            cause: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "No such file or directory (and not a hub id of the form owner/name)",
            ),
        })
    }

    /// The local path: the spec's own path, or the hub snapshot (downloaded once into the cache); `None` for the
    /// default model.
    fn local_path(&self) -> Result<Option<PathBuf>> {
        match self {
            Self::Default => Ok(None),
            Self::Dir(p) | Self::Gguf(p) => Ok(Some(p.clone())),
            Self::Hub { repo, revision } => crate::hub::fetch(repo, revision).map(Some),
        }
    }
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone)]
enum TokenizerSource {
    /// A `tokenizer.json` file.
    File(PathBuf),
    /// The vocabulary a GGUF file carries.
    Gguf(GgufVocab),
    /// The embedded default model's.
    Default,
    /// None: `reason` says why.
    None(String),
}

/// A model's weight files, opened.
#[derive(Debug)]
pub enum CheckpointFiles {
    /// A Hugging Face directory (or the embedded default model).
    Hf(HfCheckpoint),
    /// A GGUF file.
    Gguf(GgufFile),
}

/// The files of a model, opened once.
#[derive(Debug)]
pub struct Checkpoint {
    files: CheckpointFiles,
    /// The embedded default model (no side files on disk).
    embedded: bool,
}

impl Checkpoint {
    /// Resolves and opens `spec` (downloading a hub model first if it is not cached).
    pub fn open(spec: &ModelSpec) -> Result<Self> {
        let Some(path) = spec.local_path()? else {
            return Ok(Self { files: CheckpointFiles::Hf(default_model::checkpoint()?), embedded: true });
        };
        let files = if path.is_dir() {
            CheckpointFiles::Hf(HfCheckpoint::open(&path)?)
        } else {
            CheckpointFiles::Gguf(GgufFile::open(&path)?)
        };
        Ok(Self { files, embedded: false })
    }

    /// The opened files.
    pub fn files(&self) -> &CheckpointFiles {
        &self.files
    }

    /// The directory or file (or the default model's name).
    pub fn path(&self) -> &Path {
        match &self.files {
            CheckpointFiles::Hf(c) => c.dir(),
            CheckpointFiles::Gguf(f) => f.path(),
        }
    }

    /// The directory holding the model's side files (`tokenizer.json`, `tokenizer_config.json`, ...).
    fn side_dir(&self) -> Option<&Path> {
        match &self.files {
            _ if self.embedded => None,
            CheckpointFiles::Hf(c) => Some(c.dir()),
            CheckpointFiles::Gguf(f) => {
                Some(f.path().parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            }
        }
    }

    /// The model configuration.
    pub fn config(&self) -> Result<BitNetConfig> {
        match &self.files {
            CheckpointFiles::Hf(c) => Ok(c.config().clone()),
            CheckpointFiles::Gguf(f) => crate::gguf::config_from_metadata(f),
        }
    }

    /// The tensors, as a source to build a model from.
    pub fn source(&self) -> &dyn TensorSource {
        match &self.files {
            CheckpointFiles::Hf(c) => c,
            CheckpointFiles::Gguf(f) => f,
        }
    }

    fn tokenizer_source(&self) -> TokenizerSource {
        if self.embedded {
            return TokenizerSource::Default;
        }
        if let Some(file) = self.side_dir().map(|d| d.join("tokenizer.json")).filter(|p| p.is_file()) {
            return TokenizerSource::File(file);
        }
        match &self.files {
            CheckpointFiles::Gguf(f) => match GgufVocab::from_file(f) {
                Ok(Some(vocab)) => TokenizerSource::Gguf(vocab),
                Ok(None) => TokenizerSource::None(format!(
                    "{} carries no tokenizer and has no tokenizer.json beside it",
                    f.path().display()
                )),
                Err(why) => TokenizerSource::None(format!("{}: {why}", f.path().display())),
            },
            CheckpointFiles::Hf(c) => TokenizerSource::None(format!("{} has no tokenizer.json", c.dir().display())),
        }
    }

    /// The chat template: `tokenizer_config.json` beside the model, else the one a GGUF file carries, else the
    /// 2B-4T format.
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        if let Some(path) = self.side_dir().map(|d| d.join("tokenizer_config.json")).filter(|p| p.is_file()) {
            let text = String::from_utf8(crate::io::read_regular_file(&path)?)
                .map_err(|_| ModelError::Config { path: path.clone(), message: "not UTF-8".into() })?;
            return ChatTemplate::from_tokenizer_config(&text).map_err(|message| ModelError::Config { path, message });
        }
        if let CheckpointFiles::Gguf(f) = &self.files {
            if let Some(template) = ChatTemplate::from_gguf(f) {
                return Ok(template);
            }
        }
        Ok(ChatTemplate::BitNet2B4T)
    }

    /// The tokenizer files to write beside a converted model: `tokenizer.json` (the side file, the GGUF
    /// vocabulary converted, or the default model's) and `tokenizer_config.json` (the side file, else one
    /// holding the GGUF file's chat template); `None` when the model has no tokenizer.
    pub fn tokenizer_files(&self) -> Result<Option<crate::export::TokenizerFiles>> {
        let tokenizer_json = match self.tokenizer_source() {
            TokenizerSource::File(path) => crate::io::read_regular_file(&path)?,
            TokenizerSource::Gguf(vocab) => vocab.to_tokenizer_json(),
            TokenizerSource::Default => default_model::tokenizer_json().to_vec(),
            TokenizerSource::None(_) => return Ok(None),
        };
        let side_config = self.side_dir().map(|d| d.join("tokenizer_config.json")).filter(|p| p.is_file());
        let tokenizer_config = match (side_config, &self.files) {
            (Some(path), _) => Some(
                String::from_utf8(crate::io::read_regular_file(&path)?)
                    .map_err(|_| ModelError::Config { path, message: "not UTF-8".into() })?,
            ),
            (None, CheckpointFiles::Gguf(f)) => f
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(|t| serde_json::json!({ "chat_template": t }).to_string()),
            (None, CheckpointFiles::Hf(_)) => None,
        };
        Ok(Some(crate::export::TokenizerFiles { tokenizer_json, tokenizer_config }))
    }

    /// The vocabulary (with its chat template) to embed in a converted GGUF file: the GGUF file's own, or the
    /// `tokenizer.json` converted; `Ok(None)` with no tokenizer, an error when it cannot be embedded (not
    /// byte-level BPE).
    pub fn gguf_vocab(&self) -> Result<Option<GgufVocab>> {
        if let (TokenizerSource::Gguf(vocab), CheckpointFiles::Gguf(_)) = (self.tokenizer_source(), &self.files) {
            return Ok(Some(vocab));
        }
        let Some(files) = self.tokenizer_files()? else { return Ok(None) };
        let vocab = GgufVocab::from_tokenizer_json(&files.tokenizer_json).map_err(ModelError::Request)?;
        match files.tokenizer_config {
            Some(config) => Ok(Some(vocab.with_chat_template_of(&config).map_err(ModelError::Request)?)),
            None => Ok(Some(vocab)),
        }
    }

    /// The stop tokens (see the module docs).
    fn stop_ids(&self, config: &BitNetConfig) -> Vec<u32> {
        let mut ids = config.eos_token_ids.clone();
        let named = |name: &str| END_OF_TURN_TOKENS.contains(&name);
        match &self.files {
            CheckpointFiles::Gguf(f) => {
                ids.extend(
                    ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eos_token_id"]
                        .iter()
                        .filter_map(|k| token_id(f, k)),
                );
                if let Some(tokens) =
                    f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).and_then(|a| a.strings())
                {
                    ids.extend(tokens.enumerate().filter(|(_, t)| named(t)).map(|(i, _)| i as u32));
                }
            }
            CheckpointFiles::Hf(_) => {
                let side = self.side_dir();
                if let Some(dir) = side {
                    ids.extend(generation_config_eos(&dir.join("generation_config.json")));
                }
                let added = match side {
                    Some(dir) => added_tokens(&dir.join("tokenizer.json")),
                    None => added_tokens_json(default_model::tokenizer_json()),
                };
                ids.extend(added.into_iter().filter(|(_, t)| named(t)).map(|(id, _)| id));
            }
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| (*id as usize) < config.vocab_size && seen.insert(*id));
        ids
    }
}

/// `eos_token_id` (an id or a list) of a `generation_config.json`, if the file exists and parses.
fn generation_config_eos(path: &Path) -> Vec<u32> {
    let Ok(bytes) = crate::io::read_regular_file(path) else { return vec![] };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return vec![] };
    let id = |v: &serde_json::Value| v.as_u64().filter(|&n| n < 1 << 32).map(|n| n as u32);
    match &json["eos_token_id"] {
        serde_json::Value::Array(items) => items.iter().filter_map(id).collect(),
        other => id(other).into_iter().collect(),
    }
}

/// The added tokens `(id, content)` of a `tokenizer.json` file (none if it is absent or malformed).
fn added_tokens(path: &Path) -> Vec<(u32, String)> {
    crate::io::read_regular_file(path).map(|b| added_tokens_json(&b)).unwrap_or_default()
}

fn added_tokens_json(bytes: &[u8]) -> Vec<(u32, String)> {
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        content: String,
    }
    #[derive(serde::Deserialize)]
    struct TokenizerJson {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    serde_json::from_slice::<TokenizerJson>(bytes)
        .map(|t| t.added_tokens.into_iter().map(|a| (a.id, a.content)).collect())
        .unwrap_or_default()
}

/// A loaded model and everything a command needs around it.
pub struct ModelBundle<B: BitNetBackend> {
    model: BitNetModel<B>,
    path: PathBuf,
    tokenizer_source: TokenizerSource,
    tokenizer: OnceLock<std::result::Result<Tokenizer, String>>,
    chat_template: ChatTemplate,
    stop_ids: Vec<u32>,
}

impl<B: BitNetBackend> std::fmt::Debug for ModelBundle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBundle").field("path", &self.path).field("stop_ids", &self.stop_ids).finish()
    }
}

impl<B: BitNetBackend> ModelBundle<B> {
    /// Resolves, opens and loads `spec` (packed, for inference) onto `device`.
    pub fn open(spec: &ModelSpec, device: &B::Device) -> Result<Self> {
        Self::load(&Checkpoint::open(spec)?, device)
    }

    /// Loads an opened checkpoint onto `device`, packed, with the head as stored.
    pub fn load(checkpoint: &Checkpoint, device: &B::Device) -> Result<Self> {
        Self::load_with(checkpoint, LoadOptions::packed(), device)
    }

    /// Loads an opened checkpoint onto `device` as `options` say.
    pub fn load_with(checkpoint: &Checkpoint, options: LoadOptions, device: &B::Device) -> Result<Self> {
        let config = checkpoint.config()?;
        let model = build_model(&config, checkpoint.source(), options, device)?;
        Ok(Self {
            stop_ids: checkpoint.stop_ids(&config),
            model,
            path: checkpoint.path().into(),
            tokenizer_source: checkpoint.tokenizer_source(),
            tokenizer: OnceLock::new(),
            chat_template: checkpoint.chat_template()?,
        })
    }

    /// The bundle with its model's output head in `format` (see [`HeadFormat`]).
    pub fn with_head(self, format: HeadFormat) -> Result<Self> {
        Ok(Self { model: self.model.with_head(format)?, ..self })
    }

    /// The model.
    pub fn model(&self) -> &BitNetModel<B> {
        &self.model
    }

    /// The model's directory or file (or the default model's name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokenizer, built on first use; an error says why the model has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        let built = self.tokenizer.get_or_init(|| match &self.tokenizer_source {
            TokenizerSource::File(path) => Tokenizer::from_file(path).map_err(|e| e.to_string()),
            TokenizerSource::Gguf(vocab) => {
                vocab.to_tokenizer().map_err(|e| format!("{}: the embedded tokenizer: {e}", self.path.display()))
            }
            TokenizerSource::Default => default_model::tokenizer().map_err(|e| e.to_string()),
            TokenizerSource::None(why) => Err(why.clone()),
        });
        built.as_ref().map_err(|why| ModelError::Request(format!("no tokenizer: {why}")))
    }

    /// The chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat_template
    }

    /// The begin-of-sequence token, if the model has one.
    pub fn bos_token(&self) -> Option<u32> {
        self.model.config().bos_token_id
    }

    /// The tokens that end a generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The ids of a text prompt: tokenized (special tokens written in the text are recognized), with the BOS
    /// token prepended when the model has one and the text does not start with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer()?.encode(text)?;
        if let Some(bos) = self.bos_token() {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}

/// The embedded default model, or errors naming its absence in builds without the `default-model` feature.
#[cfg(feature = "default-model")]
mod default_model {
    pub use crate::default_model::{checkpoint, tokenizer, tokenizer_json};
}

#[cfg(not(feature = "default-model"))]
mod default_model {
    use crate::error::{ModelError, Result};

    fn absent() -> ModelError {
        ModelError::Request("no --model given, and this build has no embedded default model".into())
    }

    pub fn checkpoint() -> Result<crate::source::hf::HfCheckpoint> {
        Err(absent())
    }

    pub fn tokenizer() -> Result<crate::tokenizer::Tokenizer> {
        Err(absent())
    }

    pub fn tokenizer_json() -> &'static [u8] {
        b"{}"
    }
}
