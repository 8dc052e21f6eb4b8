//! The GGUF container: the file format of llama.cpp and bitnet.cpp.
//!
//! * [`GgmlType`]: tensor types with their ids, names, block sizes and bytes;
//! * [`GgufValue`] / [`GgufArray`]: metadata values, one type for reading and writing;
//! * [`GgufFile`]: the reader (bounds-checked, memory-mapped, duplicate names refused);
//! * [`write_gguf`]: the streaming, atomic writer;
//! * [`config_from_metadata`] / [`metadata_from_config`]: a BitNet model's configuration as metadata;
//! * [`GgufVocab`]: the tokenizer a file carries (`tokenizer.ggml.*`), to and from a `tokenizer.json`.

mod metadata;
mod reader;
mod types;
mod value;
mod vocab;
mod writer;

pub(crate) use metadata::token_id;
pub use metadata::{
    config_from_metadata, metadata_from_config, written_architecture, EMBEDDING_TENSOR, WRITTEN_ARCHITECTURE,
};
pub use reader::{GgufFile, GgufTensorInfo};
pub use types::{GgmlType, FORK_ARCHITECTURES};
pub use value::{GgufArray, GgufValue, SharedBytes, ValueType};
pub use vocab::{token_type, GgufVocab, PreTokenizer, VocabModel, LLAMA3_SPLIT_REGEX, QWEN2_SPLIT_REGEX};
pub use writer::{f32_spec, write_gguf, GgufTensorSpec, ALIGNMENT};
