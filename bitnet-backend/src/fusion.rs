//! The extension traits for burn's `Fusion<B>` wrapper (what `burn::backend::Wgpu` and `Cuda` are): each ternary
//! op is registered as an opaque custom operation on the fusion stream and executed by the inner backend's op
//! (so q/k/v still share one activation quantization); the dense head and the cache append are burn's own ops,
//! which fusion can optimize with their neighbours.

use crate::cache::CacheWriteBackend;
use crate::dense::DenseLinearBackend;
use crate::ops::{QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use bitnet_kernels::TernaryLayout;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Element, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use std::marker::PhantomData;

type Handles<B> = HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// `ternary_linear_many`: inputs `[x, words_0, scales_0, words_1, scales_1, ...]`, outputs `[y_0, y_1, ...]`.
#[derive(Clone, Debug)]
struct TernaryLinearManyOp<B> {
    desc: CustomOpIr,
    /// `(rows, cols, layout)` of each weight.
    shapes: Vec<(usize, usize, TernaryLayout)>,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + TernaryBackend> Operation<B::FusionRuntime> for TernaryLinearManyOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let (inputs, outputs) = (&self.desc.inputs, &self.desc.outputs);
        let x = handles.get_float_tensor::<B>(&inputs[0]);
        let weights = self
            .shapes
            .iter()
            .enumerate()
            .map(|(i, &(rows, cols, layout))| TernaryWeightPrimitive {
                words: handles.get_int_tensor::<B>(&inputs[1 + 2 * i]),
                scales: handles.get_float_tensor::<B>(&inputs[2 + 2 * i]),
                rows,
                cols,
                layout,
            })
            .collect();
        for (y, out) in B::ternary_linear_many(x, weights).into_iter().zip(outputs) {
            handles.register_float_tensor::<B>(&out.id, y);
        }
    }
}

/// `quantize_activations`: input `[x]`, outputs `[codes, scales]`.
#[derive(Clone, Debug)]
struct QuantizeOp<B> {
    desc: CustomOpIr,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + TernaryBackend> Operation<B::FusionRuntime> for QuantizeOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([x], [codes, scales]) = self.desc.as_fixed();
        let q = B::quantize_activations(handles.get_float_tensor::<B>(x));
        handles.register_int_tensor::<B>(&codes.id, q.codes);
        handles.register_float_tensor::<B>(&scales.id, q.scales);
    }
}

/// `ternary_dequantize`: inputs `[words, scales]`, output `[w]`.
#[derive(Clone, Debug)]
struct DequantizeOp<B> {
    desc: CustomOpIr,
    rows: usize,
    cols: usize,
    layout: TernaryLayout,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + TernaryBackend> Operation<B::FusionRuntime> for DequantizeOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([words, scales], [out]) = self.desc.as_fixed();
        let weight = TernaryWeightPrimitive {
            words: handles.get_int_tensor::<B>(words),
            scales: handles.get_float_tensor::<B>(scales),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        };
        handles.register_float_tensor::<B>(&out.id, B::ternary_dequantize(weight));
    }
}

impl<B: FusionBackend + TernaryBackend> TernaryBackend for Fusion<B> {
    fn preferred_ternary_layout() -> TernaryLayout {
        B::preferred_ternary_layout()
    }

    fn reads_ternary_layout(layout: TernaryLayout) -> bool {
        B::reads_ternary_layout(layout)
    }

    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        Self::ternary_linear_many(x, vec![weight]).pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: FloatTensor<Self>, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FloatTensor<Self>> {
        assert!(x.shape.num_dims() == 2, "ternary_linear: expected a 2-D input, got shape {:?}", x.shape);
        let m = x.shape[0];
        for w in &weights {
            crate::ops::assert_input_fits("ternary_linear", m, x.shape[1], w);
        }
        let client = x.client.clone();
        let mut streams_of = vec![&x];
        for w in &weights {
            streams_of.push(&w.words);
            streams_of.push(&w.scales);
        }
        let streams = OperationStreams::with_inputs(streams_of);
        let outputs: Vec<TensorIr> = weights
            .iter()
            .map(|w| TensorIr::uninit(client.create_empty_handle(), Shape::new([m, w.rows]), x.dtype))
            .collect();
        let shapes = weights.iter().map(|w| (w.rows, w.cols, w.layout)).collect();
        let mut inputs = vec![x.into_ir()];
        for w in weights {
            inputs.push(w.words.into_ir());
            inputs.push(w.scales.into_ir());
        }
        let desc = CustomOpIr::new("bitnet_ternary_linear_many", &inputs, &outputs);
        let op = TernaryLinearManyOp::<B> { desc: desc.clone(), shapes, _backend: PhantomData };
        client.register(streams, OperationIr::Custom(desc), op).into_iter().collect()
    }

    fn quantize_activations(x: FloatTensor<Self>) -> QuantizedActivationsPrimitive<Self> {
        let (m, k) = (x.shape[0], x.shape[1]);
        let client = x.client.clone();
        let streams = OperationStreams::with_inputs([&x]);
        let int_dtype: DType = B::IntElem::dtype();
        let codes = TensorIr::uninit(client.create_empty_handle(), Shape::new([m, k]), int_dtype);
        let scales = TensorIr::uninit(client.create_empty_handle(), Shape::new([m]), x.dtype);
        let desc = CustomOpIr::new("bitnet_quantize_activations", &[x.into_ir()], &[codes, scales]);
        let op = QuantizeOp::<B> { desc: desc.clone(), _backend: PhantomData };
        let [codes, scales] = client
            .register(streams, OperationIr::Custom(desc), op)
            .try_into()
            .unwrap_or_else(|_| unreachable!("two outputs were registered"));
        QuantizedActivationsPrimitive { codes, scales }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        let client = weight.scales.client.clone();
        let streams = OperationStreams::with_inputs([&weight.words, &weight.scales]);
        let out =
            TensorIr::uninit(client.create_empty_handle(), Shape::new([weight.rows, weight.cols]), weight.scales.dtype);
        let desc =
            CustomOpIr::new("bitnet_ternary_dequantize", &[weight.words.into_ir(), weight.scales.into_ir()], &[out]);
        let op = DequantizeOp::<B> {
            desc: desc.clone(),
            rows: weight.rows,
            cols: weight.cols,
            layout: weight.layout,
            _backend: PhantomData,
        };
        client.register(streams, OperationIr::Custom(desc), op).output()
    }
}

impl<B: FusionBackend> DenseLinearBackend for Fusion<B> {}

impl<B: FusionBackend> CacheWriteBackend for Fusion<B> {}

impl<B: FusionBackend> crate::transformer::TransformerBackend for Fusion<B> {}
