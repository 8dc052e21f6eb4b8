//! The model zoo: the configurations of known BitNet b1.58 family members and Qwen3-shaped ternary models, for
//! `bitnet init --random`
//! (random-weight models of a member's shapes, for benchmarks and tests).

use crate::config::BitNetConfig;

/// Architectures `bitnet init --random --arch` knows.
pub const ARCHS: [&str; 7] = ["2b-4t", "2b-4t-silu", "tiny", "small", "bonsai-1.7b", "bonsai-8b", "tiny-qwen3"];

/// The `config.json` text of a named architecture, or `None` for an unknown name.
pub fn arch_config_json(arch: &str) -> Option<String> {
    if let Some(json) = qwen3_config_json(arch) {
        return Some(json);
    }
    let (hidden, inter, layers, heads, kv, vocab, max_pos, theta) = match arch {
        // microsoft/bitnet-b1.58-2B-4T; "2b-4t-silu" has its shapes in the 1bitLLM block (SiLU-gated FFN, the
        // block upstream llama.cpp runs as architecture `bitnet`): the GGUF file both engines load for
        // side-by-side benchmarks (scripts/bench-peers.sh).
        "2b-4t" | "2b-4t-silu" => (2560, 6912, 30, 20, 5, 128_256, 4096, 500_000.0),
        // Tiny shapes for tests.
        "tiny" => (64, 160, 2, 4, 2, 300, 128, 10_000.0),
        // A few-million-parameter model for CPU experiments.
        "small" => (256, 704, 4, 4, 2, 4096, 512, 10_000.0),
        _ => return None,
    };
    let (model_type, class, act) = if arch == "2b-4t-silu" {
        ("llama", "BitnetForCausalLM", "silu")
    } else {
        ("bitnet", "BitNetForCausalLM", "relu2")
    };
    Some(format!(
        r#"{{
  "architectures": ["{class}"],
  "model_type": "{model_type}",
  "hidden_size": {hidden},
  "intermediate_size": {inter},
  "num_hidden_layers": {layers},
  "num_attention_heads": {heads},
  "num_key_value_heads": {kv},
  "vocab_size": {vocab},
  "max_position_embeddings": {max_pos},
  "rms_norm_eps": 1e-05,
  "rope_theta": {theta:.1},
  "hidden_act": "{act}",
  "tie_word_embeddings": true,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128009],
  "torch_dtype": "bfloat16",
  "quantization_config": {{"quant_method": "bitnet", "linear_class": "bitlinear"}}
}}
"#
    ))
}

/// Qwen3-shaped ternary models (PrismML's Ternary-Bonsai 1.7B and 8B are Qwen3-1.7B and Qwen3-8B with every
/// weight ternary), and tiny Qwen3 shapes for tests.
fn qwen3_config_json(arch: &str) -> Option<String> {
    let (hidden, inter, layers, heads, kv, head_dim, vocab, tied) = match arch {
        "bonsai-1.7b" => (2048, 6144, 28, 16, 8, 128, 151_936, true),
        "bonsai-8b" => (4096, 12288, 36, 32, 8, 128, 151_936, false),
        "tiny-qwen3" => (256, 384, 2, 2, 1, 64, 300, false),
        _ => return None,
    };
    Some(format!(
        r#"{{
  "architectures": ["Qwen3ForCausalLM"],
  "model_type": "qwen3",
  "hidden_size": {hidden},
  "intermediate_size": {inter},
  "num_hidden_layers": {layers},
  "num_attention_heads": {heads},
  "num_key_value_heads": {kv},
  "head_dim": {head_dim},
  "vocab_size": {vocab},
  "max_position_embeddings": 40960,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "hidden_act": "silu",
  "tie_word_embeddings": {tied},
  "attention_bias": false,
  "bos_token_id": 151643,
  "eos_token_id": [151645, 151643],
  "torch_dtype": "bfloat16"
}}
"#
    ))
}

/// The parsed configuration of a named architecture.
pub fn arch_config(arch: &str) -> Option<BitNetConfig> {
    arch_config_json(arch).and_then(|text| BitNetConfig::from_json(&text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arch_parses() {
        for arch in ARCHS {
            assert!(arch_config(arch).is_some(), "{arch}");
        }
        assert_eq!(arch_config("2b-4t").unwrap().head_dim, 128);
        let silu = arch_config("2b-4t-silu").unwrap();
        assert_eq!((silu.family, silu.activation), (crate::config::Family::OneBitLlm, crate::config::Activation::Silu));
        assert!(arch_config("7b").is_none());
        let bonsai = arch_config("bonsai-8b").unwrap();
        assert_eq!(
            (bonsai.family, bonsai.head_dim, bonsai.tie_word_embeddings),
            (crate::config::Family::Qwen3, 128, false)
        );
    }
}
