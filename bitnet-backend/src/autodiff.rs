//! [`TernaryBackend`] for `Autodiff<B>`: the packed op with a straight-through estimator.
//!
//! Forward runs `B`'s packed op. Backward treats both quantizers as the identity (DESIGN.md section 1):
//! `y ≈ x W^T` with `W = (c - 1) * g`, so `dL/dx = dL/dy · W`. Packed weights are constants (no gradient):
//! training uses `BitLinear`'s latent f32 weights with tensor-level fake quantization instead.

use crate::ops::{QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

fn inner<B: TernaryBackend, C: CheckpointStrategy>(
    w: TernaryWeightPrimitive<Autodiff<B, C>>,
) -> TernaryWeightPrimitive<B> {
    TernaryWeightPrimitive { words: w.words, scales: w.scales.primitive, rows: w.rows, cols: w.cols }
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

impl<B: TernaryBackend, C: CheckpointStrategy> TernaryBackend for Autodiff<B, C> {
    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        let weight = inner(weight);
        match TernaryLinearSte.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::ternary_linear(x.primitive, weight.clone());
                prep.finish(weight, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::ternary_linear(x.primitive, weight)),
        }
    }

    fn quantize_activations(x: FloatTensor<Self>) -> QuantizedActivationsPrimitive<Self> {
        let q = B::quantize_activations(x.primitive);
        QuantizedActivationsPrimitive { codes: q.codes, scales: Self::from_inner(q.scales) }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::ternary_dequantize(inner(weight)))
    }
}
