//! Export of a trained model to the Hugging Face packed layout `bitnet_models` loads (and transformers'
//! `BitNetForCausalLM` with `linear_class` "bitlinear"): `config.json`, `model.safetensors`, `tokenizer.json`.
//!
//! Each projection's latent weight `W` (`[out, in]`) is quantized exactly as the training forward pass
//! fake-quantizes it: `g = max(mean|W|, 1e-5)`, `c = clamp(round(W / g), -1, 1)`; the codes are packed as uint8
//! `[out/4, in]` and `weight_scale = 1 / g` is stored in f32 (bf16 would move the scale by up to 0.4% and the
//! exported model away from the trained one). Norms and the (tied) embedding are stored in f32.

use crate::error::{Result, TrainError};
use crate::model::{Projection, TrainableBitNet};
use bitnet_kernels::formats::hf_packed::pack_hf_packed;
use bitnet_kernels::quant::{absmean_scale, quantize_weights_with_scale};
use bitnet_kernels::TernaryCodes;
use bitnet_models::load::write::{write_safetensors, TensorSpec};
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use std::path::Path;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| TrainError::Export(format!("reading a tensor: {e:?}")))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_tensor<'a>(name: String, shape: Vec<usize>, data: Vec<f32>) -> TensorSpec<'a> {
    TensorSpec { name, dtype: "F32", shape, data: Box::new(move || Ok(f32_bytes(&data))) }
}

fn norm_tensor<'a, B: Backend>(name: String, norm: &RmsNorm<B>) -> Result<TensorSpec<'a>> {
    let v = values(norm.gamma.val())?;
    Ok(f32_tensor(name, vec![v.len()], v))
}

/// The ternary codes (`[out, in]`) and absmean scale `g` of a projection's latent weight, quantized as the
/// training forward pass fake-quantizes it.
fn projection_codes<B: Backend>(name: &str, p: &Projection<B>) -> Result<(TernaryCodes, f32)> {
    let w = p.weight().ok_or_else(|| TrainError::Export(format!("{name} holds no latent weights")))?;
    let [d_in, d_out] = w.dims();
    // [in, out] -> [out, in] rows.
    let rows = values(w.transpose())?;
    let g = absmean_scale(&rows);
    Ok((TernaryCodes::new(d_out, d_in, quantize_weights_with_scale(&rows, g))?, g))
}

/// The packed uint8 codes `[out/4, in]` and `weight_scale = 1/g` of a projection.
fn ternary_tensors<'a, B: Backend>(prefix: &str, p: &Projection<B>) -> Result<[TensorSpec<'a>; 2]> {
    let (codes, g) = projection_codes(prefix, p)?;
    let (d_out, d_in) = (codes.rows(), codes.cols());
    if !d_out.is_multiple_of(4) {
        return Err(TrainError::Export(format!("{prefix}: {d_out} outputs is not a multiple of 4 (HF packing)")));
    }
    let packed = pack_hf_packed(&codes)?;
    Ok([
        TensorSpec {
            name: format!("{prefix}.weight"),
            dtype: "U8",
            shape: vec![d_out / 4, d_in],
            data: Box::new(move || Ok(packed)),
        },
        f32_tensor(format!("{prefix}.weight_scale"), vec![1], vec![1.0 / g]),
    ])
}

/// Writes `model` (ternary) into `dir` as an HF packed checkpoint, with `tokenizer_json` if given.
pub fn export_hf_packed<B: Backend>(
    model: &TrainableBitNet<B>,
    tokenizer_json: Option<&[u8]>,
    dir: &Path,
) -> Result<()> {
    if !model.is_quantized() {
        return Err(TrainError::Export(
            "the full-precision baseline has no ternary weights to pack; train without --full-precision".into(),
        ));
    }
    let io = |path: &Path, e: std::io::Error| TrainError::Io(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut config = model.config().clone();
    config.tie_word_embeddings = true;
    config.scale_convention = bitnet_models::config::ScaleConvention::Divide;
    let mut tensors = Vec::new();
    for (l, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        let a = &layer.self_attn;
        let m = &layer.mlp;
        for (name, proj) in [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &m.gate_proj),
            ("mlp.up_proj", &m.up_proj),
            ("mlp.down_proj", &m.down_proj),
        ] {
            tensors.extend(ternary_tensors(&format!("{p}.{name}"), proj)?);
        }
        tensors.push(norm_tensor(format!("{p}.input_layernorm.weight"), &layer.input_layernorm)?);
        tensors.push(norm_tensor(format!("{p}.self_attn.attn_sub_norm.weight"), &a.attn_sub_norm)?);
        tensors.push(norm_tensor(format!("{p}.post_attention_layernorm.weight"), &layer.post_attention_layernorm)?);
        tensors.push(norm_tensor(format!("{p}.mlp.ffn_sub_norm.weight"), &m.ffn_sub_norm)?);
    }
    tensors.push(norm_tensor("model.norm.weight".into(), &model.norm)?);
    let embedding = model.embed_tokens.weight.val();
    let shape = embedding.dims().to_vec();
    tensors.push(f32_tensor("model.embed_tokens.weight".into(), shape, values(embedding)?));
    write_safetensors(&dir.join("model.safetensors"), tensors)?;
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_json()).map_err(|e| io(&config_path, e))?;
    if let Some(bytes) = tokenizer_json {
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Writes `model` (ternary) as a GGUF file (architecture `bitnet-b1.58`) with ternary tensors of type `ty`,
/// the same codes and scales as [`export_hf_packed`], F32 norms and embedding, and `vocab` (see
/// `GgufVocab::from_tokenizer_json`) in the file's `tokenizer.ggml.*` metadata.
pub fn export_gguf<B: Backend>(
    model: &TrainableBitNet<B>,
    ty: bitnet_models::load::gguf_write::TernaryGgufType,
    vocab: Option<&bitnet_models::load::gguf_vocab::GgufVocab>,
    path: &Path,
) -> Result<()> {
    use bitnet_models::load::gguf_write::{bitnet_metadata, f32_spec, write_gguf, GgufTensorSpec};
    if !model.is_quantized() {
        return Err(TrainError::Export("the full-precision baseline has no ternary weights to encode".into()));
    }
    ty.check_shapes(model.config()).map_err(TrainError::Export)?;
    let norm = |name: String, n: &RmsNorm<B>| -> Result<GgufTensorSpec<'static>> {
        let v = values(n.gamma.val())?;
        Ok(f32_spec(name, vec![v.len() as u64], v))
    };
    let ternary = |name: String, p: &Projection<B>| -> Result<GgufTensorSpec<'static>> {
        let (codes, g) = projection_codes(&name, p)?;
        let ne = vec![codes.cols() as u64, codes.rows() as u64];
        let bytes = ty.encode(&codes, g).map_err(|e| TrainError::Export(format!("{name}: {e}")))?;
        Ok(GgufTensorSpec { name, ne, ggml_type: ty.id(), data: Box::new(move || Ok(bytes)) })
    };
    let embedding = model.embed_tokens.weight.val();
    let [v, h] = embedding.dims();
    let mut tensors = vec![
        f32_spec("token_embd.weight".into(), vec![h as u64, v as u64], values(embedding)?),
        norm("output_norm.weight".into(), &model.norm)?,
    ];
    for (l, layer) in model.layers.iter().enumerate() {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        tensors.push(norm(n("attn_norm"), &layer.input_layernorm)?);
        tensors.push(ternary(n("attn_q"), &a.q_proj)?);
        tensors.push(ternary(n("attn_k"), &a.k_proj)?);
        tensors.push(ternary(n("attn_v"), &a.v_proj)?);
        tensors.push(norm(n("attn_sub_norm"), &a.attn_sub_norm)?);
        tensors.push(ternary(n("attn_output"), &a.o_proj)?);
        tensors.push(norm(n("ffn_norm"), &layer.post_attention_layernorm)?);
        tensors.push(ternary(n("ffn_gate"), &m.gate_proj)?);
        tensors.push(ternary(n("ffn_up"), &m.up_proj)?);
        tensors.push(norm(n("ffn_sub_norm"), &m.ffn_sub_norm)?);
        tensors.push(ternary(n("ffn_down"), &m.down_proj)?);
    }
    let mut config = model.config().clone();
    config.tie_word_embeddings = true;
    let mut metadata = bitnet_metadata(&config, "bitnet-rust trained model");
    metadata.extend(vocab.map(|v| v.metadata()).unwrap_or_default());
    write_gguf(path, &metadata, tensors)?;
    Ok(())
}
