//! The trainable BitNet b1.58 decoder: the architecture of `bitnet_models::model` (DESIGN.md section 2) as a burn
//! [`Module`] whose projections are latent [`BitLinear`] layers (f32 weights, straight-through fake quantization
//! of weights and activations) or, for the full-precision baseline, plain `burn::nn::Linear` layers.
//!
//! ```text
//! x = rms_norm(h);  q, k, v = P_q(x), P_k(x), P_v(x);  q, k = rope(q, k)
//! h = h + P_o(rms_norm(causal_softmax(q k^T / sqrt(d)) v))            # GQA: each kv head serves heads/kv_heads
//! x = rms_norm(h);  h = h + P_down(rms_norm(act(P_gate(x)) * P_up(x)))  # act = relu^2 or silu
//! logits = rms_norm(h) E^T                                             # tied embedding E
//! loss = mean over tokens of -log softmax(logits)[next token]
//! ```
//!
//! With `quantized = true` every `P` computes `(x + sg(Q8(x) - x)) (W + sg(Q3(W) - W))`, where `Q8` is per-token
//! absmax int8 and `Q3` absmean ternary: the function the packed model computes at inference (exported by
//! [`crate::export`]), with the identity as gradient.

use bitnet_backend::{BitLinear, BitLinearConfig, TernaryBackend};
use bitnet_models::config::{Activation, BitNetConfig};
use bitnet_models::rope::Rope;
use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{log_softmax, relu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One projection: ternary (QAT) or full precision (baseline).
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// The latent BitLinear layer (QAT).
    pub ternary: Option<BitLinear<B>>,
    /// The plain linear layer (full-precision baseline).
    pub dense: Option<Linear<B>>,
}

impl<B: Backend> Projection<B> {
    fn new(d_input: usize, d_output: usize, quantized: bool, device: &B::Device) -> Self {
        // N(0, 0.02) as LLaMA-style recipes initialize; no bias (BitNet b1.58 has none).
        let initializer = Initializer::Normal { mean: 0.0, std: 0.02 };
        if quantized {
            let config = BitLinearConfig::new(d_input, d_output).with_bias(false).with_initializer(initializer);
            Self { ternary: Some(config.init(device)), dense: None }
        } else {
            let config = LinearConfig::new(d_input, d_output).with_bias(false).with_initializer(initializer);
            Self { ternary: None, dense: Some(config.init(device)) }
        }
    }

    /// Latent weights `[d_input, d_output]`.
    pub fn weight(&self) -> Option<Tensor<B, 2>> {
        match (&self.ternary, &self.dense) {
            (Some(t), _) => t.weight.as_ref().map(|w| w.val()),
            (None, Some(d)) => Some(d.weight.val()),
            (None, None) => None,
        }
    }
}

impl<B: TernaryBackend> Projection<B> {
    fn forward(&self, x: Tensor<B, 3>, lambda: f32) -> Tensor<B, 3> {
        match (&self.ternary, &self.dense) {
            (Some(t), _) => {
                if t.lambda == lambda {
                    t.forward(x)
                } else {
                    let mut t = t.clone();
                    t.set_lambda(lambda);
                    t.forward(x)
                }
            }
            (None, Some(d)) => d.forward(x),
            (None, None) => panic!("Projection holds no layer"),
        }
    }
}

/// The attention half of a block.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: Projection<B>,
    /// Key projection.
    pub k_proj: Projection<B>,
    /// Value projection.
    pub v_proj: Projection<B>,
    /// Norm of the attention output.
    pub attn_sub_norm: RmsNorm<B>,
    /// Output projection.
    pub o_proj: Projection<B>,
}

/// The FFN half of a block.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: Projection<B>,
    /// Up projection.
    pub up_proj: Projection<B>,
    /// Norm of the gated product.
    pub ffn_sub_norm: RmsNorm<B>,
    /// Down projection.
    pub down_proj: Projection<B>,
}

/// One decoder block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Attention.
    pub self_attn: Attention<B>,
    /// Norm before the FFN.
    pub post_attention_layernorm: RmsNorm<B>,
    /// FFN.
    pub mlp: Mlp<B>,
}

/// The trainable language model (tied embeddings).
#[derive(Module, Debug)]
pub struct TrainableBitNet<B: Backend> {
    /// Token embedding `[V, H]`, also the output projection.
    pub embed_tokens: Embedding<B>,
    /// Decoder blocks.
    pub layers: Vec<Block<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Architecture (not a parameter).
    #[module(skip)]
    pub arch: ArchInfo,
    /// Optimizer steps taken so far, shared by clones (drives the λ warm-up).
    #[module(skip)]
    pub steps: Arc<AtomicUsize>,
}

/// The architecture facts the forward pass needs.
#[derive(Debug, Clone)]
pub struct ArchInfo {
    /// The model's configuration.
    pub config: BitNetConfig,
    /// Ternary projections (QAT) or full precision (baseline).
    pub quantized: bool,
    /// Steps over which `λ` ramps linearly from 0 to 1 (0 = fully quantized from the start).
    pub lambda_warmup_steps: usize,
}

impl<B: Backend> TrainableBitNet<B> {
    /// A freshly initialized model of `config`'s shapes.
    ///
    /// The config must use tied embeddings: the trained model is exported with them.
    pub fn new(config: &BitNetConfig, quantized: bool, lambda_warmup_steps: usize, device: &B::Device) -> Self {
        let c = config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let norm = |width: usize| RmsNormConfig::new(width).with_epsilon(c.rms_norm_eps).init(device);
        let proj = |i: usize, o: usize| Projection::new(i, o, quantized, device);
        let layers = (0..c.num_hidden_layers)
            .map(|_| Block {
                input_layernorm: norm(h),
                self_attn: Attention {
                    q_proj: proj(h, c.num_attention_heads * d),
                    k_proj: proj(h, c.num_key_value_heads * d),
                    v_proj: proj(h, c.num_key_value_heads * d),
                    attn_sub_norm: norm(c.num_attention_heads * d),
                    o_proj: proj(c.num_attention_heads * d, h),
                },
                post_attention_layernorm: norm(h),
                mlp: Mlp {
                    gate_proj: proj(h, c.intermediate_size),
                    up_proj: proj(h, c.intermediate_size),
                    ffn_sub_norm: norm(c.intermediate_size),
                    down_proj: proj(c.intermediate_size, h),
                },
            })
            .collect();
        let embed_tokens = EmbeddingConfig::new(c.vocab_size, h)
            .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
            .init(device);
        Self {
            embed_tokens,
            layers,
            norm: norm(h),
            arch: ArchInfo { config: config.clone(), quantized, lambda_warmup_steps },
            steps: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BitNetConfig {
        &self.arch.config
    }

    /// Whether the projections are ternary (QAT).
    pub fn is_quantized(&self) -> bool {
        self.arch.quantized
    }

    /// Sets the optimizer step count (when resuming).
    pub fn set_steps(&self, steps: usize) {
        self.steps.store(steps, Ordering::Relaxed);
    }

    /// The warm-up factor `λ = min(1, step / warmup)` of the current step.
    pub fn lambda(&self) -> f32 {
        let warmup = self.arch.lambda_warmup_steps;
        if warmup == 0 {
            1.0
        } else {
            (self.steps.load(Ordering::Relaxed) as f32 / warmup as f32).min(1.0)
        }
    }

    /// Counts one optimizer step.
    pub fn count_step(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
    }
}

impl<B: TernaryBackend> TrainableBitNet<B> {
    /// Logits `[batch, T, V]` of `tokens` (`[batch, T]`), all positions, with the given `λ`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, lambda: f32) -> Tensor<B, 3> {
        let c = self.config();
        let [batch, t] = tokens.dims();
        let device = tokens.device();
        let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rope = Rope::<B>::new(d, t, c.rope_theta, &device);
        let mask = generate_autoregressive_mask::<B>(batch, t, &device).unsqueeze_dim::<4>(1);
        let scale = 1.0 / (d as f64).sqrt();
        let mut h = self.embed_tokens.forward(tokens);
        for layer in &self.layers {
            let a = &layer.self_attn;
            let x = layer.input_layernorm.forward(h.clone());
            let split = |y: Tensor<B, 3>, n: usize| y.reshape([batch, t, n, d]).swap_dims(1, 2);
            let q = split(a.q_proj.forward(x.clone(), lambda), heads);
            let k = split(a.k_proj.forward(x.clone(), lambda), kv_heads);
            let v = split(a.v_proj.forward(x, lambda), kv_heads);
            let rotate =
                |y: Tensor<B, 4>, n: usize| rope.apply(y.reshape([batch * n, t, d]), 0).reshape([batch, n, t, d]);
            let (q, k) = (rotate(q, heads), rotate(k, kv_heads));
            let group = heads / kv_heads;
            let repeat = |y: Tensor<B, 4>| {
                if group == 1 {
                    y
                } else {
                    y.unsqueeze_dim::<5>(2).expand([batch, kv_heads, group, t, d]).reshape([batch, heads, t, d])
                }
            };
            let (k, v) = (repeat(k), repeat(v));
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale).mask_fill(mask.clone(), f32::NEG_INFINITY);
            let attn = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([batch, t, heads * d]);
            h = h + a.o_proj.forward(a.attn_sub_norm.forward(attn), lambda);
            let m = &layer.mlp;
            let x = layer.post_attention_layernorm.forward(h.clone());
            let gate = m.gate_proj.forward(x.clone(), lambda);
            let gate = match c.activation {
                Activation::Relu2 => relu(gate).powi_scalar(2),
                Activation::Silu => silu(gate),
            };
            let up = m.up_proj.forward(x, lambda);
            h = h + m.down_proj.forward(m.ffn_sub_norm.forward(gate * up), lambda);
        }
        let h = self.norm.forward(h);
        let embedding = self.embed_tokens.weight.val();
        h.matmul(embedding.transpose().unsqueeze::<3>())
    }

    /// Per-token losses `-log softmax(logits)[target]` (`[batch * T]`) and the flattened logits.
    pub fn token_losses(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let [batch, t] = inputs.dims();
        let v = self.config().vocab_size;
        let logits = self.forward(inputs, self.lambda()).reshape([batch * t, v]);
        let targets = targets.reshape([batch * t, 1]);
        let losses = log_softmax(logits.clone(), 1).gather(1, targets).neg().reshape([batch * t]);
        (losses, logits)
    }
}
