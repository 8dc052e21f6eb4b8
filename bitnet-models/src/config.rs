//! The model configuration, read from a Hugging Face `config.json` (`model_type` "bitnet", a BitNet "llama", or
//! "qwen3" for the Qwen3-based ternary models).
//!
//! Accepts both config styles checkpoints come in: `rope_theta` at the top level (released checkpoints) or inside
//! `rope_parameters` (transformers 5 saves), and `torch_dtype` or `dtype`.

use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::Path;

/// The FFN activation of the family member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu(x)^2` gating (`BitNet b1.58 2B-4T`): `down(relu(gate(x))^2 * up(x))`.
    Relu2,
    /// `silu(x)` gating (LLaMA-style members): `down(silu(gate(x)) * up(x))`.
    Silu,
}

/// Which member of the BitNet b1.58 family a config describes: it decides the block's norms and their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `model_type` "bitnet" (microsoft/bitnet-b1.58-2B-4T, transformers' `BitNetForCausalLM`): sub-norms
    /// `self_attn.attn_sub_norm` before `o_proj` and `mlp.ffn_sub_norm` before `down_proj`; relu² by default.
    BitNet,
    /// `model_type` "llama" with `architectures` ["BitnetForCausalLM"] (1bitLLM/bitnet_b1_58-large and -3B, fp16
    /// latent weights quantized at load): the same sub-norms, named `self_attn.inner_attn_ln` and
    /// `mlp.ffn_layernorm`; SiLU.
    OneBitLlm,
    /// `model_type` "llama" with `quantization_config.quant_method` "bitnet" (HF1BitLLM/Llama3-8B-1.58-100B-tokens,
    /// tiiuae Falcon3-*-1.58bit, Falcon-E): LLaMA blocks with BitLinear projections, no sub-norms, SiLU,
    /// optionally an RMSNorm inside every BitLinear (`use_rms_norm`).
    LlamaBitNet,
    /// `model_type` "qwen3" (PrismML's Ternary-Bonsai and other Qwen3-based ternary models): Qwen3 blocks, i.e.
    /// LLaMA blocks with a per-head RMSNorm on queries and keys before RoPE (`self_attn.q_norm` / `k_norm`, width
    /// `head_dim`), an explicit `head_dim`, SiLU, no biases, no sub-norms. The projections must be ternary: GGUF
    /// Q2_0 / PQ2_0 / TQ2_0 / TQ1_0, or float tensors holding ternary values times one scale per row or per 64
    /// weights. Activations are quantized to int8 per token like every member's.
    Qwen3,
}

impl Family {
    /// Whether the block has the sub-norms before the output and down projections.
    pub fn has_sub_norms(self) -> bool {
        matches!(self, Self::BitNet | Self::OneBitLlm)
    }

    /// Whether queries and keys are RMS-normalized per head before RoPE (Qwen3).
    pub fn has_qk_norm(self) -> bool {
        self == Self::Qwen3
    }
}

/// How a packed checkpoint's `weight_scale` relates to the absmean scale `g` (transformers'
/// `quantization_config.linear_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleConvention {
    /// "bitlinear" (the default): `y = y_int / (s * weight_scale)`, so `weight_scale = 1 / g`.
    Divide,
    /// "autobitlinear": `y = y_int / s * weight_scale`, so `weight_scale = g`.
    Multiply,
}

/// Architecture hyper-parameters of a BitNet b1.58 model.
#[derive(Debug, Clone, PartialEq)]
pub struct BitNetConfig {
    /// Vocabulary size `V`.
    pub vocab_size: usize,
    /// Model width `H`.
    pub hidden_size: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA groups).
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Longest supported context.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the output projection reuses the input embedding.
    pub tie_word_embeddings: bool,
    /// FFN activation.
    pub activation: Activation,
    /// `weight_scale` convention of packed checkpoints.
    pub scale_convention: ScaleConvention,
    /// Begin-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens.
    pub eos_token_ids: Vec<u32>,
    /// The family member (block layout and tensor names).
    pub family: Family,
    /// `quantization_config.use_rms_norm`: every BitLinear normalizes its input with its own RMSNorm (weight
    /// `<proj>.rms_norm.weight`) of this epsilon before quantizing it.
    pub linear_rms_norm_eps: Option<f64>,
}

impl BitNetConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|cause| ModelError::Io { path: path.into(), cause })?;
        Self::from_json(&text).map_err(|message| ModelError::Config { path: path.into(), message })
    }

    /// Parses and validates the JSON text of a `config.json`; the error is a one-line message.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = v.as_object().ok_or("expected a JSON object")?;
        let quant = obj.get("quantization_config");
        let quant_method = quant.and_then(|q| q.get("quant_method")).and_then(Value::as_str);
        let architectures: Vec<&str> = obj
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let family = match obj.get("model_type").and_then(Value::as_str).unwrap_or("bitnet") {
            "bitnet" => Family::BitNet,
            "llama" if architectures.contains(&"BitnetForCausalLM") => Family::OneBitLlm,
            "llama" if quant_method == Some("bitnet") => Family::LlamaBitNet,
            "llama" => {
                return Err("model_type 'llama' without quantization_config.quant_method 'bitnet' (or the \
                    BitnetForCausalLM architecture) is a full-precision model, not BitNet b1.58"
                    .into())
            }
            "qwen3" => Family::Qwen3,
            mt => return Err(format!("model_type is '{mt}', expected 'bitnet', 'qwen3' (or a BitNet 'llama')")),
        };
        for (flag, what) in [("attention_bias", "attention biases"), ("use_sliding_window", "sliding-window attention")]
        {
            if obj.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(format!("'{flag}' is true: {what} are not supported"));
            }
        }
        let usize_field = |name: &str| -> std::result::Result<Option<usize>, String> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0 && n < (1 << 32))
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| format!("'{name}' must be a positive integer below 2^32, got {x}")),
            }
        };
        let required = |name: &str| usize_field(name)?.ok_or_else(|| format!("missing '{name}'"));
        let hidden_size = required("hidden_size")?;
        let num_attention_heads = required("num_attention_heads")?;
        let num_key_value_heads = usize_field("num_key_value_heads")?.unwrap_or(num_attention_heads);
        let head_dim = usize_field("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        let float_field = |name: &str, default: f64| -> std::result::Result<f64, String> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| format!("'{name}' must be a positive number, got {x}")),
            }
        };
        let rope_theta = match obj.get("rope_parameters").and_then(|p| p.get("rope_theta")) {
            Some(t) => t
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or("'rope_parameters.rope_theta' must be a positive number")?,
            None => float_field("rope_theta", if family == Family::Qwen3 { 1_000_000.0 } else { 500_000.0 })?,
        };
        if let Some(scaling) = obj.get("rope_scaling").filter(|v| !v.is_null()) {
            let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("?");
            if kind != "default" {
                return Err(format!("rope_scaling '{kind}' is not supported (only unscaled RoPE)"));
            }
        }
        if let Some(kind) = obj.get("rope_parameters").and_then(|p| p.get("rope_type")).and_then(Value::as_str) {
            if kind != "default" {
                return Err(format!("rope_type '{kind}' is not supported (only 'default')"));
            }
        }
        let default_act = if family == Family::BitNet { "relu2" } else { "silu" };
        let activation = match obj.get("hidden_act").and_then(Value::as_str).unwrap_or(default_act) {
            "relu2" => Activation::Relu2,
            "silu" => Activation::Silu,
            other => return Err(format!("hidden_act '{other}' is not supported (relu2, silu)")),
        };
        let linear_rms_norm_eps = match quant.and_then(|q| q.get("use_rms_norm")).and_then(Value::as_bool) {
            Some(true) => Some(
                quant
                    .and_then(|q| q.get("rms_norm_eps"))
                    .and_then(Value::as_f64)
                    .filter(|e| e.is_finite() && *e > 0.0)
                    .unwrap_or(1e-6),
            ),
            _ => None,
        };
        let scale_convention =
            match quant.and_then(|q| q.get("linear_class")).and_then(Value::as_str).unwrap_or("bitlinear") {
                "bitlinear" => ScaleConvention::Divide,
                "autobitlinear" => ScaleConvention::Multiply,
                other => return Err(format!("quantization_config.linear_class '{other}' is unknown")),
            };
        let token = |x: &Value| x.as_u64().filter(|&n| n < (1 << 32)).map(|n| n as u32);
        let eos_token_ids = match obj.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(items)) => items
                .iter()
                .map(|x| token(x).ok_or("'eos_token_id' holds a non-integer"))
                .collect::<std::result::Result<_, _>>()?,
            Some(x) => vec![token(x).ok_or("'eos_token_id' must be an integer or a list")?],
        };
        let config = Self {
            vocab_size: required("vocab_size")?,
            hidden_size,
            intermediate_size: required("intermediate_size")?,
            num_hidden_layers: required("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: usize_field("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: float_field("rms_norm_eps", 1e-5)?,
            rope_theta,
            tie_word_embeddings: obj.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            activation,
            scale_convention,
            bos_token_id: obj.get("bos_token_id").and_then(token),
            eos_token_ids,
            family,
            linear_rms_norm_eps,
        };
        config.check()?;
        Ok(config)
    }

    /// Checks the hyper-parameters are consistent; the error is a one-line message.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim ({}) must be even for RoPE", self.head_dim));
        }
        // f32 tables: theta must survive the conversion, and only theta > 1 gives decreasing frequencies.
        if !(self.rope_theta > 1.0 && (self.rope_theta as f32).is_finite()) {
            return Err(format!("rope_theta {} must be greater than 1 and finite in f32", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!("rms_norm_eps {} must be a finite number >= 0", self.rms_norm_eps));
        }
        if self.max_position_embeddings > 1 << 20 {
            return Err(format!("max_position_embeddings {} is beyond 2^20", self.max_position_embeddings));
        }
        Ok(())
    }

    /// Parameters of the model (embedding, untied head, every projection and norm), or `None` if the count
    /// overflows `u64` (a hostile configuration).
    pub fn parameter_count(&self) -> Option<u64> {
        let n = |x: usize| x as u64;
        let (h, f, d) = (n(self.hidden_size), n(self.intermediate_size), n(self.head_dim));
        let q = n(self.num_attention_heads).checked_mul(d)?;
        let kv = n(self.num_key_value_heads).checked_mul(d)?;
        let attention = h.checked_mul(q.checked_mul(2)?.checked_add(kv.checked_mul(2)?)?)?;
        let mlp = h.checked_mul(f)?.checked_mul(3)?;
        let qk_norms = if self.family.has_qk_norm() { d.checked_mul(2)? } else { 0 };
        let norms = h.checked_mul(3)?.checked_add(q)?.checked_add(f)?.checked_add(qk_norms)?;
        let layer = attention.checked_add(mlp)?.checked_add(norms)?;
        let matrices = if self.tie_word_embeddings { 1 } else { 2 };
        let tokens = n(self.vocab_size).checked_mul(h)?.checked_mul(matrices)?;
        n(self.num_hidden_layers).checked_mul(layer)?.checked_add(tokens)?.checked_add(h)
    }

    /// Query heads per key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The Hugging Face `config.json` of this configuration (`model_type` "bitnet"), which
    /// [`BitNetConfig::from_json`] reads back to an equal value.
    pub fn to_json(&self) -> String {
        let activation = match self.activation {
            Activation::Relu2 => "relu2",
            Activation::Silu => "silu",
        };
        let linear_class = match self.scale_convention {
            ScaleConvention::Divide => "bitlinear",
            ScaleConvention::Multiply => "autobitlinear",
        };
        let (model_type, architecture) = match self.family {
            Family::BitNet => ("bitnet", "BitNetForCausalLM"),
            Family::OneBitLlm => ("llama", "BitnetForCausalLM"),
            Family::LlamaBitNet => ("llama", "LlamaForCausalLM"),
            Family::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
        };
        let mut quantization = serde_json::json!({"quant_method": "bitnet", "linear_class": linear_class});
        if let Some(eps) = self.linear_rms_norm_eps {
            quantization["use_rms_norm"] = true.into();
            quantization["rms_norm_eps"] = eps.into();
        }
        let mut value = serde_json::json!({
            "architectures": [architecture],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": activation,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
            "torch_dtype": "float32",
            "quantization_config": quantization,
        });
        // A Qwen3 checkpoint is a plain Qwen3 to transformers: its ternary values are the weights.
        if self.family == Family::Qwen3 {
            if let Some(map) = value.as_object_mut() {
                map.remove("quantization_config");
                map.insert("attention_bias".into(), false.into());
            }
        }
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_B: &str = r#"{"architectures":["BitNetForCausalLM"],"model_type":"bitnet","hidden_size":2560,
        "intermediate_size":6912,"num_hidden_layers":30,"num_attention_heads":20,"num_key_value_heads":5,
        "vocab_size":128256,"max_position_embeddings":4096,"rms_norm_eps":1e-05,"rope_theta":500000.0,
        "hidden_act":"relu2","tie_word_embeddings":true,"bos_token_id":128000,"eos_token_id":128001,
        "torch_dtype":"bfloat16","quantization_config":{"quant_method":"bitnet","linear_class":"autobitlinear"}}"#;

    #[test]
    fn parses_2b_4t() {
        let c = BitNetConfig::from_json(TWO_B).unwrap();
        assert_eq!((c.head_dim, c.kv_groups(), c.vocab_size), (128, 4, 128256));
        assert_eq!(c.scale_convention, ScaleConvention::Multiply);
        assert_eq!(c.activation, Activation::Relu2);
        assert_eq!(c.eos_token_ids, vec![128001]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn maps_the_family_members() {
        let llama = TWO_B
            .replace(r#""model_type":"bitnet""#, r#""model_type":"llama""#)
            .replace(r#""hidden_act":"relu2","#, "");
        let c = BitNetConfig::from_json(&llama).unwrap();
        assert_eq!((c.family, c.activation, c.linear_rms_norm_eps), (Family::LlamaBitNet, Activation::Silu, None));
        let normed = llama
            .replace(r#""linear_class":"autobitlinear"}"#, r#""linear_class":"autobitlinear","use_rms_norm":true}"#);
        assert_eq!(BitNetConfig::from_json(&normed).unwrap().linear_rms_norm_eps, Some(1e-6));
        let one_bit = llama.replace(r#"["BitNetForCausalLM"]"#, r#"["BitnetForCausalLM"]"#);
        assert_eq!(BitNetConfig::from_json(&one_bit).unwrap().family, Family::OneBitLlm);
        let fp = llama.replace(r#""quant_method":"bitnet""#, r#""quant_method":"gptq""#);
        assert!(BitNetConfig::from_json(&fp).unwrap_err().contains("full-precision"));
        for text in [normed, one_bit] {
            let c = BitNetConfig::from_json(&text).unwrap();
            assert_eq!(BitNetConfig::from_json(&c.to_json()).unwrap(), c);
        }
    }

    #[test]
    fn reads_qwen3() {
        let qwen = r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":2048,
            "intermediate_size":6144,"num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":8,
            "head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"rms_norm_eps":1e-06,
            "rope_theta":1000000,"hidden_act":"silu","tie_word_embeddings":true,"attention_bias":false,
            "use_sliding_window":false,"bos_token_id":151643,"eos_token_id":151645}"#;
        let c = BitNetConfig::from_json(qwen).unwrap();
        assert_eq!((c.family, c.activation, c.head_dim, c.rope_theta), (Family::Qwen3, Activation::Silu, 128, 1e6));
        assert!(c.family.has_qk_norm() && !c.family.has_sub_norms());
        assert_eq!(BitNetConfig::from_json(&c.to_json()).unwrap(), c);
        let biased = qwen.replace(r#""attention_bias":false"#, r#""attention_bias":true"#);
        assert!(BitNetConfig::from_json(&biased).unwrap_err().contains("attention_bias"));
        let sliding = qwen.replace(r#""use_sliding_window":false"#, r#""use_sliding_window":true"#);
        assert!(BitNetConfig::from_json(&sliding).unwrap_err().contains("sliding"));
    }

    #[test]
    fn to_json_round_trips() {
        let c = BitNetConfig::from_json(TWO_B).unwrap();
        assert_eq!(BitNetConfig::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn accepts_rope_parameters_and_eos_lists() {
        let text = TWO_B
            .replace(r#""rope_theta":500000.0,"#, r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"#)
            .replace(r#""eos_token_id":128001"#, r#""eos_token_id":[128001,128009]"#)
            .replace(r#""linear_class":"autobitlinear""#, r#""linear_class":"bitlinear""#);
        let c = BitNetConfig::from_json(&text).unwrap();
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.eos_token_ids, vec![128001, 128009]);
        assert_eq!(c.scale_convention, ScaleConvention::Divide);
    }

    #[test]
    fn rejects_bad_configs_with_a_message() {
        for (from, to, needle) in [
            (r#""hidden_size":2560"#, r#""hidden_size":-1"#, "hidden_size"),
            (r#""num_key_value_heads":5"#, r#""num_key_value_heads":3"#, "multiple"),
            (r#""hidden_act":"relu2""#, r#""hidden_act":"gelu""#, "gelu"),
            (r#""model_type":"bitnet""#, r#""model_type":"mistral""#, "mistral"),
            (
                r#""rope_theta":500000.0,"#,
                r#""rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0},"#,
                "llama3",
            ),
            (r#""vocab_size":128256,"#, "", "vocab_size"),
        ] {
            let err = BitNetConfig::from_json(&TWO_B.replace(from, to)).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        assert!(BitNetConfig::from_json("{").unwrap_err().contains("invalid JSON"));
    }
}
