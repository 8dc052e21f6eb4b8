//! The BitNet b1.58 decoder: one burn module tree of [`bitnet_backend::BitLinear`] projections, used latent for
//! training (under `Autodiff`) and packed for inference, on any [`bitnet_backend::BitNetBackend`].
//!
//! ```text
//! BitNetModel
//! ├── embed_tokens          TokenMatrix [vocab, hidden]: dense (f32, bf16, f16), int8 or Q6_K
//! ├── layers: Vec<Block>
//! │   ├── input_layernorm   RMSNorm
//! │   ├── self_attn: Attention
//! │   │   ├── q_proj, k_proj, v_proj   BitLinear (one activation quantization for the three)
//! │   │   ├── attn_sub_norm            RMSNorm, 2B-4T and 1bitLLM members only
//! │   │   └── o_proj                   BitLinear
//! │   ├── post_attention_layernorm     RMSNorm
//! │   └── mlp: Mlp
//! │       ├── gate_proj, up_proj       BitLinear (one activation quantization for the two)
//! │       ├── ffn_sub_norm             RMSNorm, 2B-4T and 1bitLLM members only
//! │       └── down_proj                BitLinear
//! ├── norm                  RMSNorm
//! └── lm_head               TokenMatrix [vocab, hidden] (absent when the embedding is the head)
//! ```
//!
//! Members whose checkpoints normalize each projection's input (`quantization_config.use_rms_norm`) carry that
//! RMSNorm inside the `BitLinear`. RMSNorm is `x / sqrt(mean(x²) + eps) * gamma` (burn's `RmsNorm`).

mod attention;
mod block;
mod build;
mod cache;
mod decoder;
mod init;
mod mlp;
mod rope;
mod token_matrix;

pub use attention::Attention;
pub use block::Block;
pub(crate) use build::ParamFactory;
pub use build::{BlockTensor, TensorId};
pub use cache::KvCache;
pub(crate) use decoder::describe;
pub use decoder::{BitNetModel, ModelTensor, SequenceStep};
pub use init::INIT_STD;
pub use mlp::Mlp;
pub use token_matrix::{BlockTable, HeadFormat, Int8Table, MatrixData, TokenMatrix};
