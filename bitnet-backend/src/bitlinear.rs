//! `BitLinear`: a drop-in replacement for `burn::nn::Linear` with ternary weights and int8 activations.
//!
//! Same constructor shape (`BitLinearConfig::new(d_input, d_output).init(&device)`), same weight layout
//! (`[d_input, d_output]`), same `forward<D>(Tensor<B, D>) -> Tensor<B, D>`.
//!
//! Two states:
//! * **latent** (after `init`, for training): f32 weights; forward fake-quantizes weights (absmean ternary) and
//!   activations (per-token int8) with straight-through estimators ([`crate::quant`]), scaled by the warm-up
//!   factor `λ` ([`BitLinear::set_lambda`]);
//! * **packed** (after [`BitLinear::pack`], for inference): 2-bit weights in the kernel-native layout and the fast
//!   [`TernaryBackend::ternary_linear`] op: `y = (Σ c·q - Σ q) · g / s (+ bias)`.
//!
//! Both compute the same function (up to f32 rounding); the packed one reads 16x fewer weight bytes.

use crate::error::BackendError;
use crate::ops::{ternary_linear, TernaryBackend, TernaryWeight};
use crate::quant::{activation_fake_quant, weight_fake_quant};
use bitnet_kernels::TernaryMatrix;
use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::Initializer;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Configuration of a [`BitLinear`] layer, field for field that of `burn::nn::LinearConfig`.
#[derive(Config, Debug)]
pub struct BitLinearConfig {
    /// The size of the input features.
    pub d_input: usize,
    /// The size of the output features.
    pub d_output: usize,
    /// If a bias is added after the ternary product (BitNet b1.58 models have none; `Linear`'s default is kept).
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the latent weights and bias (`Linear`'s default).
    #[config(default = "Initializer::KaimingUniform{gain: 0.5773502691896258, fan_out_only: false}")]
    pub initializer: Initializer,
}

/// Packed ternary weights as module parameters (saved and loaded with the module's record).
#[derive(Module, Debug)]
pub struct PackedTernary<B: Backend> {
    /// Native-layout words, `[rows_padded, cols_padded / 16]` i32.
    pub words: Param<Tensor<B, 2, Int>>,
    /// Per-output scales `[d_output]`.
    pub scales: Param<Tensor<B, 1>>,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

impl<B: Backend> PackedTernary<B> {
    fn from_weight(w: TernaryWeight<B>) -> Self {
        let (rows, cols) = (w.rows(), w.cols());
        Self {
            words: Param::initialized(ParamId::new(), w.words),
            scales: Param::from_tensor(w.scales).set_require_grad(false),
            rows,
            cols,
        }
    }

    /// The tensor-level handle, checked.
    pub fn weight(&self) -> crate::error::Result<TernaryWeight<B>> {
        TernaryWeight::from_tensors(self.words.val(), self.scales.val(), self.rows, self.cols)
    }
}

/// A ternary linear layer (see the module docs).
#[derive(Module, Debug)]
pub struct BitLinear<B: Backend> {
    /// Latent f32 weights `[d_input, d_output]` (training state); `None` once packed.
    pub weight: Option<Param<Tensor<B, 2>>>,
    /// Packed ternary weights (inference state); `None` while training.
    pub packed: Option<PackedTernary<B>>,
    /// Optional bias `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Warm-up factor `λ` of the fake quantization (1 = fully quantized).
    pub lambda: f32,
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
}

impl BitLinearConfig {
    /// A new layer in the latent (training) state.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BitLinear<B> {
        let (i, o) = (self.d_input, self.d_output);
        let weight = self.initializer.init_with([i, o], Some(i), Some(o), device);
        let bias = self.bias.then(|| self.initializer.init_with([o], Some(i), Some(o), device));
        BitLinear { weight: Some(weight), packed: None, bias, lambda: 1.0, d_input: i, d_output: o }
    }
}

impl<B: Backend> BitLinear<B> {
    /// A packed (inference) layer from ternary weights already on the device, e.g. from a checkpoint loader.
    pub fn from_packed(weight: TernaryWeight<B>, bias: Option<Tensor<B, 1>>) -> crate::error::Result<Self> {
        let (d_output, d_input) = (weight.rows(), weight.cols());
        if let Some(b) = &bias {
            if b.dims() != [d_output] {
                return Err(BackendError::Shape {
                    what: "BitLinear bias",
                    expected: vec![d_output],
                    got: b.dims().to_vec(),
                });
            }
        }
        Ok(Self {
            weight: None,
            packed: Some(PackedTernary::from_weight(weight)),
            bias: bias.map(Param::from_tensor),
            lambda: 1.0,
            d_input,
            d_output,
        })
    }

    /// Sets the warm-up factor `λ` in [0, 1] of the fake quantization (latent state only).
    pub fn set_lambda(&mut self, lambda: f32) {
        self.lambda = lambda.clamp(0.0, 1.0);
    }

    /// Whether the layer holds packed ternary weights.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Quantizes the latent weights (absmean, per tensor) and returns the packed (inference) layer.
    pub fn pack(&self) -> crate::error::Result<Self> {
        let weight = self.weight.as_ref().ok_or(BackendError::State("BitLinear::pack: the layer is already packed"))?;
        let w = weight.val();
        let device = w.device();
        // [d_input, d_output] -> rows = outputs.
        let data = w.transpose().to_data().convert::<f32>();
        let values = data
            .as_slice::<f32>()
            .map_err(|e| BackendError::Read { what: "BitLinear weight", message: format!("{e:?}") })?;
        let matrix = TernaryMatrix::quantize_absmean(values, self.d_output, self.d_input)?;
        Self::from_packed(TernaryWeight::from_matrix(&matrix, &device), self.bias.as_ref().map(|b| b.val()))
    }
}

impl<B: TernaryBackend> BitLinear<B> {
    /// Applies the layer to the last dimension of `input` (`[..., d_input]` -> `[..., d_output]`).
    ///
    /// # Panics
    /// If the last dimension is not `d_input`, with a message naming both shapes (as `Linear::forward`).
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let dims = input.dims();
        assert!(
            D >= 1 && dims[D - 1] == self.d_input,
            "BitLinear::forward: input of shape {dims:?} does not match a BitLinear of shape [{}, {}] (d_input = {})",
            self.d_input,
            self.d_output,
            self.d_input
        );
        let output = match (&self.packed, &self.weight) {
            (Some(packed), _) => {
                let weight = packed.weight().unwrap_or_else(|e| panic!("BitLinear::forward: {e}"));
                let rows: usize = dims[..D - 1].iter().product();
                let y = ternary_linear(input.reshape([rows, self.d_input]), &weight);
                let mut out_dims = dims;
                out_dims[D - 1] = self.d_output;
                y.reshape(out_dims)
            }
            (None, Some(weight)) => {
                let x = activation_fake_quant(input, self.lambda);
                let w = weight_fake_quant(weight.val(), self.lambda);
                burn::tensor::module::linear(x, w, None)
            }
            (None, None) => panic!("BitLinear::forward: the layer holds neither latent nor packed weights"),
        };
        match &self.bias {
            Some(b) => output + b.val().unsqueeze(),
            None => output,
        }
    }
}
