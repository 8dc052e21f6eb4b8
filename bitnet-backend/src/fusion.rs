//! [`TernaryBackend`] for burn's `Fusion<B>` wrapper (what `burn::backend::Wgpu` and `Cuda` are): each op is
//! registered as an opaque custom operation on the fusion stream and executed by the inner backend's op.

use crate::ops::{QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Element, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use std::marker::PhantomData;

type Handles<B> = HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// `ternary_linear`: inputs `[x, words, scales]`, output `[y]`.
#[derive(Clone, Debug)]
struct TernaryLinearOp<B> {
    desc: CustomOpIr,
    rows: usize,
    cols: usize,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + TernaryBackend> Operation<B::FusionRuntime> for TernaryLinearOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([x, words, scales], [out]) = self.desc.as_fixed();
        let weight = TernaryWeightPrimitive {
            words: handles.get_int_tensor::<B>(words),
            scales: handles.get_float_tensor::<B>(scales),
            rows: self.rows,
            cols: self.cols,
        };
        let y = B::ternary_linear(handles.get_float_tensor::<B>(x), weight);
        handles.register_float_tensor::<B>(&out.id, y);
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
        };
        handles.register_float_tensor::<B>(&out.id, B::ternary_dequantize(weight));
    }
}

impl<B: FusionBackend + TernaryBackend> TernaryBackend for Fusion<B> {
    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self> {
        assert!(x.shape.num_dims() == 2, "ternary_linear: expected a 2-D input, got shape {:?}", x.shape);
        let m = x.shape[0];
        crate::ops::assert_input_fits("ternary_linear", m, x.shape[1], &weight);
        let client = x.client.clone();
        let streams = OperationStreams::with_inputs([&x, &weight.words, &weight.scales]);
        let out = TensorIr::uninit(client.create_empty_handle(), Shape::new([m, weight.rows]), x.dtype);
        let desc = CustomOpIr::new(
            "bitnet_ternary_linear",
            &[x.into_ir(), weight.words.into_ir(), weight.scales.into_ir()],
            &[out],
        );
        let op =
            TernaryLinearOp::<B> { desc: desc.clone(), rows: weight.rows, cols: weight.cols, _backend: PhantomData };
        client.register(streams, OperationIr::Custom(desc), op).output()
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
        let op = DequantizeOp::<B> { desc: desc.clone(), rows: weight.rows, cols: weight.cols, _backend: PhantomData };
        client.register(streams, OperationIr::Custom(desc), op).output()
    }
}
