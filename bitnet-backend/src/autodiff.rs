//! The extension traits for `Autodiff<B>`.
//!
//! * The packed ternary op gets a straight-through estimator: forward runs `B`'s packed op; backward treats
//!   both quantizers as the identity, `y ≈ x W^T` with `W = (c - 1) * g`, so `dL/dx = dL/dy · W`. Packed weights
//!   are constants (no gradient): training uses `BitLinear`'s latent f32 weights with tensor-level fake
//!   quantization instead.
//! * The dense head and the cache append forward to `B`'s fast op when no input is tracked (inference on an
//!   autodiff backend), and otherwise run burn's differentiable ops (the trait defaults), so training gets every
//!   gradient.
//! * The fused transformer ops (RMSNorm, rotary, attention, gated activation, cross-entropy) run `B`'s fused
//!   op forward and a backward of their own on `B` (the gradients their trait docs state), never a chain of
//!   autodiff nodes.

use crate::cache::{cache_write_slice_assign, CacheWriteBackend};
use crate::dense::{dense_linear_matmul, int8_linear_ops, DenseLinearBackend};
use crate::ops::{QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use crate::transformer::{rms_norm_gradients, rotary_ops, GateActivation, TransformerBackend};
use bitnet_kernels::BlockFormat;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};

fn inner<B: TernaryBackend, C: CheckpointStrategy>(
    w: TernaryWeightPrimitive<Autodiff<B, C>>,
) -> TernaryWeightPrimitive<B> {
    TernaryWeightPrimitive { words: w.words, scales: w.scales.primitive, rows: w.rows, cols: w.cols, layout: w.layout }
}

/// Whether no gradient flows through `t` (a constant, or a tensor of a graph that does not require grads).
fn untracked<B: burn::tensor::backend::Backend, C: CheckpointStrategy>(t: &FloatTensor<Autodiff<B, C>>) -> bool {
    t.node.requirement.is_none()
}

/// Backward of `ternary_linear` with respect to `x`.
#[derive(Debug)]
struct TernaryLinearSte;

impl<B: TernaryBackend> Backward<B, 1> for TernaryLinearSte {
    type State = TernaryWeightPrimitive<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad_y = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let w = B::ternary_dequantize(ops.state);
            grads.register::<B>(node.id, B::float_matmul(grad_y, w));
        }
    }
}

/// Backward of `rms_norm` (see `rms_norm_gradients`).
#[derive(Debug)]
struct RmsNormBackward;

impl<B: TransformerBackend> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_y = grads.consume::<B>(&ops.node);
        let (x, gamma, eps) = ops.state;
        for (node, gradient) in ops.parents.into_iter().zip(rms_norm_gradients::<B>(x, gamma, grad_y, eps)) {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

/// Backward of `causal_attention` (see [`TransformerBackend::causal_attention_gradients`]).
#[derive(Debug)]
struct CausalAttentionBackward;

impl<B: TransformerBackend> Backward<B, 3> for CausalAttentionBackward {
    type State = ([FloatTensor<B>; 3], usize, usize, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_y = grads.consume::<B>(&ops.node);
        let (inputs, t, start, scale) = ops.state;
        let gradients = B::causal_attention_gradients(inputs, grad_y, t, start, scale);
        for (node, gradient) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

/// Backward of `rotary` with respect to `x` for constant tables: `dL/dx = rotary(dL/dy, cos, -sin)` (see
/// [`TransformerBackend::rotary`]).
#[derive(Debug)]
struct RotaryBackward;

impl<B: TransformerBackend> Backward<B, 1> for RotaryBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad_y = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let (cos, sin) = ops.state;
            grads.register::<B>(node.id, B::rotary(grad_y, cos, B::float_neg(sin)));
        }
    }
}

/// Backward of `gated_activation` (see [`TransformerBackend::gated_activation_gradients`]).
#[derive(Debug)]
struct GatedActivationBackward;

impl<B: TransformerBackend> Backward<B, 2> for GatedActivationBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, GateActivation);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_y = grads.consume::<B>(&ops.node);
        let (gate, up, act) = ops.state;
        let gradients = B::gated_activation_gradients(gate, up, grad_y, act);
        for (node, gradient) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

/// Backward of `swap_tokens_and_heads`: the same swap of the output's gradient.
#[derive(Debug)]
struct SwapTokensAndHeadsBackward;

impl<B: TransformerBackend> Backward<B, 1> for SwapTokensAndHeadsBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad_y = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::swap_tokens_and_heads(grad_y));
        }
    }
}

/// Backward of `cross_entropy` with respect to the logits (see
/// [`TransformerBackend::cross_entropy_gradient`]; the classes are integers, without a gradient).
#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: TransformerBackend> Backward<B, 1> for CrossEntropyBackward {
    type State = (FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_logits] = ops.parents;
        let grad_losses = grads.consume::<B>(&ops.node);
        if let Some(node) = node_logits {
            let (logits, targets) = ops.state;
            grads.register::<B>(node.id, B::cross_entropy_gradient(logits, targets, grad_losses));
        }
    }
}

impl<B: TernaryBackend, C: CheckpointStrategy> TernaryBackend for Autodiff<B, C> {
    fn preferred_ternary_layout() -> bitnet_kernels::TernaryLayout {
        B::preferred_ternary_layout()
    }

    fn reads_ternary_layout(layout: bitnet_kernels::TernaryLayout) -> bool {
        B::reads_ternary_layout(layout)
    }

    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        Self::ternary_linear_many(x, vec![weight]).pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: FloatTensor<Self>, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FloatTensor<Self>> {
        let weights: Vec<_> = weights.into_iter().map(inner).collect();
        // One quantization of `x` for every product; each output is its own graph node with `x` as parent.
        let ys = B::ternary_linear_many(x.primitive.clone(), weights.clone());
        ys.into_iter()
            .zip(weights)
            .map(|(y, w)| match TernaryLinearSte.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(w, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            })
            .collect()
    }

    fn quantize_activations(x: FloatTensor<Self>) -> QuantizedActivationsPrimitive<Self> {
        let q = B::quantize_activations(x.primitive);
        QuantizedActivationsPrimitive { codes: q.codes, scales: Self::from_inner(q.scales) }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::ternary_dequantize(inner(weight)))
    }

    fn fake_quantize_activations(x: FloatTensor<Self>, lambda: f32) -> FloatTensor<Self> {
        let y = B::fake_quantize_activations(x.primitive, lambda);
        StraightThrough.prepare::<C>([x.node]).compute_bound().stateless(y)
    }

    fn fake_quantize_weights(w: FloatTensor<Self>, lambda: f32) -> FloatTensor<Self> {
        let y = B::fake_quantize_weights(w.primitive, lambda);
        StraightThrough.prepare::<C>([w.node]).compute_bound().stateless(y)
    }
}

/// The identity backward of a straight-through estimator.
#[derive(Debug)]
struct StraightThrough;

impl<B: burn::tensor::backend::Backend> Backward<B, 1> for StraightThrough {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad_y = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, grad_y);
        }
    }
}

impl<B: DenseLinearBackend, C: CheckpointStrategy> DenseLinearBackend for Autodiff<B, C> {
    fn dense_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        if untracked::<B, C>(&x) && untracked::<B, C>(&weight) {
            Self::from_inner(B::dense_linear(x.primitive, weight.primitive))
        } else {
            dense_linear_matmul::<Self>(x, weight)
        }
    }

    fn int8_linear(x: FloatTensor<Self>, codes: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self> {
        if untracked::<B, C>(&x) && untracked::<B, C>(&scales) {
            Self::from_inner(B::int8_linear(x.primitive, codes, scales.primitive))
        } else {
            int8_linear_ops::<Self>(x, codes, scales)
        }
    }

    fn has_native_blocks(device: &Self::Device) -> bool {
        B::has_native_blocks(device)
    }

    /// Block-quantized weights are not trained: the product runs on the inner backend and no gradient flows
    /// through it.
    fn block_linear(
        x: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        cols: usize,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::block_linear(x.primitive, blocks, cols, format))
    }

    fn block_rows(
        blocks: IntTensor<Self>,
        ids: IntTensor<Self>,
        cols: usize,
        format: BlockFormat,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::block_rows(blocks, ids, cols, format))
    }
}

impl<B: CacheWriteBackend, C: CheckpointStrategy> CacheWriteBackend for Autodiff<B, C> {
    fn cache_write(cache: FloatTensor<Self>, start: usize, values: FloatTensor<Self>) -> FloatTensor<Self> {
        if untracked::<B, C>(&cache) && untracked::<B, C>(&values) {
            Self::from_inner(B::cache_write(cache.primitive, start, values.primitive))
        } else {
            cache_write_slice_assign::<Self>(cache, start, values)
        }
    }
}

impl<B: TransformerBackend, C: CheckpointStrategy> TransformerBackend for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        if untracked::<B, C>(&x) && untracked::<B, C>(&gamma) {
            return Self::from_inner(B::rms_norm(x.primitive, gamma.primitive, eps));
        }
        // `B`'s fused op forward; the backward recomputes the row statistics on `B`.
        let state = (x.primitive.clone(), gamma.primitive.clone(), eps);
        let y = B::rms_norm(x.primitive, gamma.primitive, eps);
        match RmsNormBackward.prepare::<C>([x.node, gamma.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        if untracked::<B, C>(&x) {
            Self::from_inner(B::rotary(x.primitive, cos.primitive, sin.primitive))
        } else if untracked::<B, C>(&cos) && untracked::<B, C>(&sin) {
            // Constant tables (every model): `B`'s fused op forward and backward.
            let y = B::rotary(x.primitive, cos.primitive.clone(), sin.primitive.clone());
            match RotaryBackward.prepare::<C>([x.node]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((cos.primitive, sin.primitive), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        } else {
            rotary_ops::<Self>(x, cos, sin)
        }
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        t: usize,
        start: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        if [&q, &keys, &values].iter().all(|x| untracked::<B, C>(x)) {
            return Self::from_inner(B::causal_attention(
                q.primitive,
                keys.primitive,
                values.primitive,
                t,
                start,
                scale,
            ));
        }
        // `B`'s fused op forward; the backward recomputes the probabilities on `B` (no graph of the forward).
        let inputs = [q.primitive.clone(), keys.primitive.clone(), values.primitive.clone()];
        let y = B::causal_attention(q.primitive, keys.primitive, values.primitive, t, start, scale);
        match CausalAttentionBackward.prepare::<C>([q.node, keys.node, values.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((inputs, t, start, scale), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn gated_activation(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: GateActivation) -> FloatTensor<Self> {
        if untracked::<B, C>(&gate) && untracked::<B, C>(&up) {
            return Self::from_inner(B::gated_activation(gate.primitive, up.primitive, act));
        }
        // `B`'s fused op forward; the backward is one fused op on `B` too.
        let state = (gate.primitive.clone(), up.primitive.clone(), act);
        let y = B::gated_activation(gate.primitive, up.primitive, act);
        match GatedActivationBackward.prepare::<C>([gate.node, up.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn swap_tokens_and_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if untracked::<B, C>(&x) {
            return Self::from_inner(B::swap_tokens_and_heads(x.primitive));
        }
        let y = B::swap_tokens_and_heads(x.primitive);
        SwapTokensAndHeadsBackward.prepare::<C>([x.node]).compute_bound().stateless(y)
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        if untracked::<B, C>(&logits) {
            return Self::from_inner(B::cross_entropy(logits.primitive, targets));
        }
        let state = (logits.primitive.clone(), targets.clone());
        let losses = B::cross_entropy(logits.primitive, targets);
        match CrossEntropyBackward.prepare::<C>([logits.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, losses),
            OpsKind::UnTracked(prep) => prep.finish(losses),
        }
    }
}
