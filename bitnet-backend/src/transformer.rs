//! [`TransformerBackend`]: the non-ternary ops of a transformer block (RMSNorm, rotary embedding, causal
//! grouped-query attention, gated activation), each one op that a backend can fuse.
//!
//! The defaults are chains of burn ops (differentiable, and what GPU backends run, where fusion merges them).
//! The CPU backend overrides them with the fused kernels of `bitnet_kernels::transformer`: in decode these ops
//! run on one token between the large ternary products, and a chain of small framework ops (an allocation and
//! a pass over memory each) costs more than the arithmetic.

use crate::ops::float_tensor;
pub use bitnet_kernels::transformer::GateActivation;
use burn::tensor::activation::{log_softmax, relu, sigmoid, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor};

/// A burn backend with the transformer block's non-ternary ops as single ops.
pub trait TransformerBackend: Backend {
    /// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * gamma` (`gamma`: `[d]`).
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        rms_norm_ops::<Self>(x, gamma, eps)
    }

    /// Rotary embedding of `x` (`[batch, heads, T, d]`) with `cos` and `sin` (`[T, d]`):
    /// `x * cos + rotate_half(x) * sin`, `rotate_half([x1, x2]) = [-x2, x1]`. The tables repeat their angles in
    /// both halves (`emb = [freqs, freqs]`, as every rotate-half model builds them); the autodiff backend's
    /// gradient relies on it: `rotate_half` is then orthogonal with inverse `-rotate_half`, so
    /// `dL/dx = g * cos - rotate_half(g) * sin`, the same op with `-sin`.
    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        rotary_ops::<Self>(x, cos, sin)
    }

    /// Causal grouped-query attention: `q` is `[groups, rep * T, d]` (the `rep` query heads of a key/value
    /// group stacked, head-major), `keys` and `values` `[groups, L, d]`; query row `i` sits at position
    /// `start + i % T` (`L = start + T`) and sees positions `0..=start + i % T`. Returns
    /// `softmax(q k^T * scale + mask) v`, `[groups, rep * T, d]`.
    fn causal_attention(
        q: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        t: usize,
        start: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        causal_attention_ops::<Self>(q, keys, values, t, start, scale)
    }

    /// The gradients of [`causal_attention`](Self::causal_attention) with respect to `q`, `keys` and `values`,
    /// given the output's gradient `g` (`[groups, rep * T, d]`): with the probabilities `P` recomputed,
    /// `dV = P^T g`, `dS = P ⊙ (g V^T - rowsum(g V^T ⊙ P))`, `dQ = dS K · scale`, `dK = dS^T Q · scale` (masked
    /// entries have `P = 0`, hence `dS = 0`).
    fn causal_attention_gradients(
        [q, keys, values]: [FloatTensor<Self>; 3],
        g: FloatTensor<Self>,
        t: usize,
        start: usize,
        scale: f64,
    ) -> [FloatTensor<Self>; 3] {
        causal_attention_gradients_ops::<Self>([q, keys, values], g, t, start, scale)
    }

    /// `act(gate) * up`, elementwise.
    fn gated_activation(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: GateActivation) -> FloatTensor<Self> {
        gated_activation_ops::<Self>(gate, up, act)
    }

    /// The gradients of [`gated_activation`](Self::gated_activation) with respect to `gate` and `up`, given the
    /// output's gradient `g`: `d_gate = g ⊙ up ⊙ act'(gate)`, `d_up = g ⊙ act(gate)`, with `relu²' = 2 relu(x)`
    /// and `silu'(x) = σ(x) (1 + x (1 - σ(x)))`.
    fn gated_activation_gradients(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        g: FloatTensor<Self>,
        act: GateActivation,
    ) -> [FloatTensor<Self>; 2] {
        gated_activation_gradients_ops::<Self>(gate, up, g, act)
    }

    /// `x` (`[b, p, q, d]`) with dimensions 1 and 2 swapped, `[b, q, p, d]`, laid out in its new order: the
    /// attention's split of token-major projections into heads and its merge back. The default is burn's
    /// `swap_dims` (a strided view); the CPU copies rows of `d` once, where a later reshape of the view would
    /// gather it element by element.
    fn swap_tokens_and_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_swap_dims(x, 1, 2)
    }

    /// Cross-entropy of each row of `logits` (`[rows, vocab]`, f32) against its class in `targets` (`[rows]`,
    /// each `< vocab`): `loss_r = logsumexp(logits_r) - logits_r[target_r] = -log softmax(logits_r)[target_r]`,
    /// `[rows]`.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        cross_entropy_ops::<Self>(logits, targets)
    }

    /// The gradient of [`cross_entropy`](Self::cross_entropy) with respect to `logits`, given the losses'
    /// gradient `g` (`[rows]`): `g_r (softmax(logits_r) - onehot(target_r))`, `[rows, vocab]`.
    fn cross_entropy_gradient(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy_gradient_ops::<Self>(logits, targets, g)
    }
}

/// [`TransformerBackend::rms_norm`] with burn ops (the statistic in f32, as burn's `RmsNorm`).
pub(crate) fn rms_norm_ops<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let x = float_tensor::<B, 2>(x);
    let rms = (x.clone().cast(DType::F32).square().mean_dim(1) + eps).sqrt();
    ((x / rms) * float_tensor::<B, 1>(gamma).unsqueeze()).into_primitive().tensor()
}

/// The gradients of [`TransformerBackend::rms_norm`] (`x`: `[rows, d]`) with respect to `x` and `gamma`, given
/// the output's gradient `g`: with `r = sqrt(mean(x²) + eps)` per row and `n = x / r`,
/// `dgamma = Σ_rows g ⊙ n` and `dx = (g ⊙ gamma - n · mean(g ⊙ gamma ⊙ n)) / r`.
pub(crate) fn rms_norm_gradients<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    g: FloatTensor<B>,
    eps: f64,
) -> [FloatTensor<B>; 2] {
    let (x, gamma, g) = (float_tensor::<B, 2>(x), float_tensor::<B, 1>(gamma), float_tensor::<B, 2>(g));
    let [_, d] = x.dims();
    let rms = (x.clone().square().mean_dim(1) + eps).sqrt();
    let n = x / rms.clone();
    let d_gamma = (g.clone() * n.clone()).sum_dim(0).reshape([d]);
    let scaled = g * gamma.unsqueeze();
    let d_x = (scaled.clone() - n.clone() * (scaled * n).mean_dim(1)) / rms;
    [d_x.into_primitive().tensor(), d_gamma.into_primitive().tensor()]
}

/// [`TransformerBackend::rotary`] with burn ops.
pub(crate) fn rotary_ops<B: Backend>(x: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>) -> FloatTensor<B> {
    let x = float_tensor::<B, 4>(x);
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let (cos, sin) = (float_tensor::<B, 2>(cos).unsqueeze::<4>(), float_tensor::<B, 2>(sin).unsqueeze::<4>());
    (x * cos + rotated * sin).into_primitive().tensor()
}

/// [`TransformerBackend::causal_attention`] with burn ops (an additive mask built on the device).
pub(crate) fn causal_attention_ops<B: Backend>(
    q: FloatTensor<B>,
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    t: usize,
    start: usize,
    scale: f64,
) -> FloatTensor<B> {
    let probabilities = attention_probabilities::<B>(float_tensor(q), float_tensor(keys), t, start, scale);
    probabilities.matmul(float_tensor::<B, 3>(values)).into_primitive().tensor()
}

/// `P = softmax(q k^T · scale + mask)` (`[groups, rows, len]`), the causal mask letting row `r` see keys
/// `..= start + r % t`.
fn attention_probabilities<B: Backend>(
    q: Tensor<B, 3>,
    keys: Tensor<B, 3>,
    t: usize,
    start: usize,
    scale: f64,
) -> Tensor<B, 3> {
    let [_, rows, _] = q.dims();
    let mut scores = q.matmul(keys.swap_dims(1, 2)) * scale;
    if t > 1 {
        let device = scores.device();
        let len = start + t;
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device).reshape([1, len]).expand([t, len]);
        let queries = Tensor::<B, 1, Int>::arange(start as i64..len as i64, &device).reshape([t, 1]).expand([t, len]);
        let mask = Tensor::<B, 2>::zeros([t, len], &device)
            .mask_fill(positions.greater(queries), f32::NEG_INFINITY)
            .repeat_dim(0, rows / t);
        scores = scores + mask.unsqueeze::<3>();
    }
    softmax(scores, 2)
}

/// [`TransformerBackend::causal_attention_gradients`] with burn ops.
pub(crate) fn causal_attention_gradients_ops<B: Backend>(
    [q, keys, values]: [FloatTensor<B>; 3],
    g: FloatTensor<B>,
    t: usize,
    start: usize,
    scale: f64,
) -> [FloatTensor<B>; 3] {
    let (q, keys, values, g) =
        (float_tensor::<B, 3>(q), float_tensor::<B, 3>(keys), float_tensor::<B, 3>(values), float_tensor::<B, 3>(g));
    let p = attention_probabilities::<B>(q.clone(), keys.clone(), t, start, scale);
    let d_values = p.clone().swap_dims(1, 2).matmul(g.clone());
    let d_p = g.matmul(values.swap_dims(1, 2));
    let d_scores = p.clone() * (d_p.clone() - (d_p * p).sum_dim(2));
    let d_q = d_scores.clone().matmul(keys) * scale;
    let d_keys = d_scores.swap_dims(1, 2).matmul(q) * scale;
    [d_q, d_keys, d_values].map(|x| x.into_primitive().tensor())
}

/// [`TransformerBackend::gated_activation`] with burn ops.
pub(crate) fn gated_activation_ops<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    act: GateActivation,
) -> FloatTensor<B> {
    let gate = float_tensor::<B, 2>(gate);
    let gate = match act {
        GateActivation::ReluSquared => relu(gate).powi_scalar(2),
        GateActivation::Silu => silu(gate),
    };
    (gate * float_tensor::<B, 2>(up)).into_primitive().tensor()
}

/// [`TransformerBackend::gated_activation_gradients`] with burn ops.
pub(crate) fn gated_activation_gradients_ops<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    g: FloatTensor<B>,
    act: GateActivation,
) -> [FloatTensor<B>; 2] {
    let (gate, up, g) = (float_tensor::<B, 2>(gate), float_tensor::<B, 2>(up), float_tensor::<B, 2>(g));
    let (activated, slope) = match act {
        GateActivation::ReluSquared => {
            let r = relu(gate);
            (r.clone().square(), r * 2.0)
        }
        GateActivation::Silu => {
            let s = sigmoid(gate.clone());
            let slope = s.clone() * ((s.clone().neg() + 1.0) * gate.clone() + 1.0);
            (s * gate, slope)
        }
    };
    let d_gate = g.clone() * up * slope;
    let d_up = g * activated;
    [d_gate.into_primitive().tensor(), d_up.into_primitive().tensor()]
}

/// [`TransformerBackend::cross_entropy`] with burn ops.
pub(crate) fn cross_entropy_ops<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
    let logits = float_tensor::<B, 2>(logits);
    let [rows, _] = logits.dims();
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).reshape([rows, 1]);
    log_softmax(logits, 1).gather(1, targets).neg().reshape([rows]).into_primitive().tensor()
}

/// [`TransformerBackend::cross_entropy_gradient`] with burn ops.
pub(crate) fn cross_entropy_gradient_ops<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    g: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = float_tensor::<B, 2>(logits);
    let [rows, _] = logits.dims();
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).reshape([rows, 1]);
    let g = float_tensor::<B, 1>(g).reshape([rows, 1]);
    (softmax(logits, 1) * g.clone()).scatter(1, targets, g.neg(), IndexingUpdateOp::Add).into_primitive().tensor()
}

/// RMSNorm of `x` over its last dimension.
pub fn rms_norm<B: TransformerBackend, const D: usize>(
    x: Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    assert_eq!(gamma.dims(), [d], "rms_norm: gains {:?} for rows of {d}", gamma.dims());
    let rows = dims[..D - 1].iter().product();
    float_tensor::<B, 2>(B::rms_norm(
        x.reshape([rows, d]).into_primitive().tensor(),
        gamma.clone().into_primitive().tensor(),
        eps,
    ))
    .reshape(dims)
}

/// Rotary embedding of `x` (`[batch, heads, T, d]`) with the tables `cos`, `sin` (`[T, d]`).
pub fn rotary<B: TransformerBackend>(x: Tensor<B, 4>, cos: &Tensor<B, 2>, sin: &Tensor<B, 2>) -> Tensor<B, 4> {
    let [_, _, t, d] = x.dims();
    assert!(cos.dims() == [t, d] && sin.dims() == [t, d], "rotary: tables {:?} for {t} positions of {d}", cos.dims());
    float_tensor(B::rotary(
        x.into_primitive().tensor(),
        cos.clone().into_primitive().tensor(),
        sin.clone().into_primitive().tensor(),
    ))
}

/// Causal grouped-query attention (see [`TransformerBackend::causal_attention`]).
pub fn causal_attention<B: TransformerBackend>(
    q: Tensor<B, 3>,
    keys: Tensor<B, 3>,
    values: Tensor<B, 3>,
    t: usize,
    start: usize,
    scale: f64,
) -> Tensor<B, 3> {
    let ([g, rows, d], [gk, len, dk]) = (q.dims(), keys.dims());
    assert!(
        g == gk && d == dk && values.dims() == keys.dims() && t > 0 && rows.is_multiple_of(t) && len == start + t,
        "causal_attention: queries [{g}, {rows}, {d}] at {start}..{} do not fit keys [{gk}, {len}, {dk}]",
        start + t
    );
    float_tensor(B::causal_attention(
        q.into_primitive().tensor(),
        keys.into_primitive().tensor(),
        values.into_primitive().tensor(),
        t,
        start,
        scale,
    ))
}

/// `act(gate) * up`, elementwise, for tensors of any rank.
pub fn gated_activation<B: TransformerBackend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
    act: GateActivation,
) -> Tensor<B, D> {
    let dims = gate.dims();
    assert_eq!(dims, up.dims(), "gated_activation: gate {dims:?} and up {:?}", up.dims());
    let d = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let (gate, up) = (gate.reshape([rows, d]), up.reshape([rows, d]));
    float_tensor::<B, 2>(B::gated_activation(gate.into_primitive().tensor(), up.into_primitive().tensor(), act))
        .reshape(dims)
}

/// Cross-entropy of each row of `logits` (`[rows, vocab]`) against its class in `targets` (`[rows]`):
/// `-log softmax(logits_r)[target_r]`, `[rows]` (see [`TransformerBackend::cross_entropy`]).
pub fn cross_entropy<B: TransformerBackend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let ([rows, _], [n]) = (logits.dims(), targets.dims());
    assert_eq!(rows, n, "cross_entropy: {rows} rows of logits and {n} targets");
    float_tensor(B::cross_entropy(logits.into_primitive().tensor(), targets.into_primitive()))
}

/// `x` (`[b, p, q, d]`) as `[b, q, p, d]` (see [`TransformerBackend::swap_tokens_and_heads`]); a reshape when
/// `p` or `q` is at most 1 (the order of the elements does not change).
pub fn swap_tokens_and_heads<B: TransformerBackend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, p, q, d] = x.dims();
    if p <= 1 || q <= 1 {
        return x.reshape([b, q, p, d]);
    }
    float_tensor(B::swap_tokens_and_heads(x.into_primitive().tensor()))
}
