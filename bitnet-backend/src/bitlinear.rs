//! `BitLinear`: a drop-in replacement for `burn::nn::Linear` with ternary weights and int8 activations.
//!
//! Same constructor shape (`BitLinearConfig::new(d_input, d_output).init(&device)`), same latent weight layout
//! (`[d_input, d_output]`), same `forward<D>(Tensor<B, D>) -> Tensor<B, D>`.
//!
//! The weight is in one of two states ([`BitLinearWeight`]):
//! * **latent** (after [`BitLinearConfig::init`], for training): f32 weights; forward fake-quantizes weights
//!   (absmean ternary, per tensor) and activations (per-token int8) with straight-through estimators
//!   ([`crate::quant`]), scaled by the warm-up factor `λ` ([`BitLinear::with_lambda`]); at `λ = 0` the layer is
//!   a plain float linear layer (the full-precision baseline);
//! * **packed** (after [`BitLinear::pack`], for inference): 2-bit codes in the kernel-native layout with one
//!   scale per output row, and the fast [`TernaryBackend::ternary_linear`] op:
//!   `y = (Σ c·q - Σ q) · g / s (+ bias)`.
//!
//! Both compute the same function (up to f32 rounding); the packed one reads 16x fewer weight bytes.
//!
//! Some checkpoints normalize each projection's input with its own RMSNorm before quantizing it
//! (`quantization_config.use_rms_norm` in transformers): [`BitLinearConfig::input_norm_eps`] adds that norm.
//!
//! A packed layer (or a model of them) saves with burn's recorders like any module; to load the record, build a
//! packed skeleton of the same shapes with [`BitLinearConfig::init_packed`] and call `load_record` (the record
//! names its words' layout, 2-bit or five-trit, and the loaded layer takes it from there, repacking five-trit
//! words into 2 bits where this machine's CPU kernel cannot read them: [`PackedTernary`]).

use crate::error::BackendError;
use crate::ops::{
    fake_quantize_activations, fake_quantize_weights, ternary_linear, ternary_linear_many, TernaryBackend,
    TernaryWeight,
};
pub use crate::packed_ternary::{PackedTernary, PackedTernaryRecord};
use bitnet_kernels::{TernaryLayout, TernaryMatrix};
use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::nn::{Initializer, RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Configuration of a [`BitLinear`] layer: the fields of `burn::nn::LinearConfig` (`d_input`, `d_output`,
/// `bias`, `initializer`, same defaults; `LinearConfig`'s `layout` is not offered: the latent weight is always
/// `[d_input, d_output]`, `Linear`'s default layout), plus the optional input norm.
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
    /// Epsilon of an RMSNorm applied to the input before it is quantized (`None`: no norm).
    #[config(default = "None")]
    pub input_norm_eps: Option<f64>,
}

/// The weight of a [`BitLinear`]: latent f32 values for training, or packed ternary codes for inference.
#[derive(Module, Debug)]
pub enum BitLinearWeight<B: Backend> {
    /// Latent f32 weights `[d_input, d_output]`, fake-quantized in the forward pass.
    Latent(Param<Tensor<B, 2>>),
    /// Packed 2-bit codes with per-row scales.
    Packed(PackedTernary<B>),
}

/// A ternary linear layer (see the module docs).
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BitLinear<B: Backend> {
    weight: BitLinearWeight<B>,
    bias: Option<Param<Tensor<B, 1>>>,
    input_norm: Option<RmsNorm<B>>,
    lambda: f32,
    d_input: usize,
    d_output: usize,
}

impl<B: Backend> ModuleDisplay for BitLinear<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new().with_new_line_after_attribute(false).optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("d_input", &self.d_input)
            .add("d_output", &self.d_output)
            .add("bias", &self.bias.is_some())
            .add("state", &if self.is_packed() { "packed" } else { "latent" }.to_string())
            .add("input_norm", &self.input_norm.is_some())
            .optional()
    }
}

impl BitLinearConfig {
    fn input_norm<B: Backend>(&self, device: &B::Device) -> Option<RmsNorm<B>> {
        self.input_norm_eps.map(|eps| RmsNormConfig::new(self.d_input).with_epsilon(eps).init(device))
    }

    /// A new layer in the latent (training) state, initialized with [`BitLinearConfig::initializer`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> BitLinear<B> {
        let (i, o) = (self.d_input, self.d_output);
        let weight = self.initializer.init_with([i, o], Some(i), Some(o), device);
        let bias = self.bias.then(|| self.initializer.init_with([o], Some(i), Some(o), device));
        BitLinear {
            weight: BitLinearWeight::Latent(weight),
            bias,
            input_norm: self.input_norm(device),
            lambda: 1.0,
            d_input: i,
            d_output: o,
        }
    }

    /// A packed layer of these shapes with zero weights in the 2-bit layout: the skeleton a saved packed record is
    /// loaded into (`layer.load_record(record)`).
    pub fn init_packed<B: Backend>(&self, device: &B::Device) -> BitLinear<B> {
        self.init_packed_in(TernaryLayout::Bits2, device)
    }

    /// [`Self::init_packed`] in `layout` (a loaded record replaces the layout with its own).
    pub fn init_packed_in<B: Backend>(&self, layout: TernaryLayout, device: &B::Device) -> BitLinear<B> {
        let (i, o) = (self.d_input, self.d_output);
        BitLinear {
            weight: BitLinearWeight::Packed(PackedTernary::from_weight(TernaryWeight::zeros_in(layout, o, i, device))),
            bias: self.bias.then(|| Param::from_tensor(Tensor::zeros([o], device))),
            input_norm: self.input_norm(device),
            lambda: 1.0,
            d_input: i,
            d_output: o,
        }
    }
}

fn check_bias<B: Backend>(bias: &Option<Tensor<B, 1>>, d_output: usize) -> crate::error::Result<()> {
    match bias {
        Some(b) if b.dims() != [d_output] => {
            Err(BackendError::Shape { what: "BitLinear bias", expected: vec![d_output], got: b.dims().to_vec() })
        }
        _ => Ok(()),
    }
}

fn check_norm<B: Backend>(norm: &Option<RmsNorm<B>>, d_input: usize) -> crate::error::Result<()> {
    match norm {
        Some(n) if n.gamma.dims() != [d_input] => Err(BackendError::Shape {
            what: "BitLinear input norm",
            expected: vec![d_input],
            got: n.gamma.dims().to_vec(),
        }),
        _ => Ok(()),
    }
}

impl<B: Backend> BitLinear<B> {
    /// A packed (inference) layer from ternary weights already on the device, e.g. from a checkpoint loader.
    pub fn from_packed(
        weight: TernaryWeight<B>,
        bias: Option<Tensor<B, 1>>,
        input_norm: Option<RmsNorm<B>>,
    ) -> crate::error::Result<Self> {
        let (d_output, d_input) = (weight.rows(), weight.cols());
        check_bias(&bias, d_output)?;
        check_norm(&input_norm, d_input)?;
        Ok(Self {
            weight: BitLinearWeight::Packed(PackedTernary::from_weight(weight)),
            bias: bias.map(Param::from_tensor),
            input_norm,
            lambda: 1.0,
            d_input,
            d_output,
        })
    }

    /// A latent (training) layer from f32 weights `[d_input, d_output]`, e.g. a pretrained checkpoint to
    /// fine-tune.
    pub fn from_latent(
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
        input_norm: Option<RmsNorm<B>>,
    ) -> crate::error::Result<Self> {
        let [d_input, d_output] = weight.dims();
        check_bias(&bias, d_output)?;
        check_norm(&input_norm, d_input)?;
        Ok(Self {
            weight: BitLinearWeight::Latent(Param::from_tensor(weight)),
            bias: bias.map(Param::from_tensor),
            input_norm,
            lambda: 1.0,
            d_input,
            d_output,
        })
    }

    /// The layer with warm-up factor `λ` in [0, 1] for its fake quantization (latent state; 1 = fully
    /// quantized, 0 = a float linear layer).
    pub fn with_lambda(mut self, lambda: f32) -> Self {
        self.lambda = if lambda.is_nan() { 1.0 } else { lambda.clamp(0.0, 1.0) };
        self
    }

    /// The warm-up factor `λ`.
    pub fn lambda(&self) -> f32 {
        self.lambda
    }

    /// Whether the layer holds packed ternary weights.
    pub fn is_packed(&self) -> bool {
        matches!(self.weight, BitLinearWeight::Packed(_))
    }

    /// The weight (latent or packed).
    pub fn weight(&self) -> &BitLinearWeight<B> {
        &self.weight
    }

    /// The latent weight `[d_input, d_output]`, if the layer is latent.
    pub fn latent_weight(&self) -> Option<&Param<Tensor<B, 2>>> {
        match &self.weight {
            BitLinearWeight::Latent(w) => Some(w),
            BitLinearWeight::Packed(_) => None,
        }
    }

    /// The packed weight, if the layer is packed.
    pub fn packed_weight(&self) -> Option<crate::error::Result<TernaryWeight<B>>> {
        match &self.weight {
            BitLinearWeight::Latent(_) => None,
            BitLinearWeight::Packed(p) => Some(p.weight()),
        }
    }

    /// The bias `[d_output]`.
    pub fn bias(&self) -> Option<&Param<Tensor<B, 1>>> {
        self.bias.as_ref()
    }

    /// The RMSNorm applied to the input before quantization, if any.
    pub fn input_norm(&self) -> Option<&RmsNorm<B>> {
        self.input_norm.as_ref()
    }

    /// Input features.
    pub fn d_input(&self) -> usize {
        self.d_input
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.d_output
    }

    /// Quantizes the latent weights (absmean, per tensor: `g = max(mean|W|, 1e-5)`,
    /// `c = clamp(round(W / g), -1, 1) + 1`) and returns the packed (inference) layer. A packed layer is
    /// returned unchanged.
    pub fn pack(self) -> crate::error::Result<Self> {
        let Self { weight, bias, input_norm, lambda, d_input, d_output } = self;
        // Materialize a lazily initialized bias now: clones of an uninitialized burn `Param` each draw their own
        // values, and a packed layer must compute one function however it is cloned, saved or loaded.
        if let Some(b) = &bias {
            let _ = b.val();
        }
        let weight = match weight {
            BitLinearWeight::Packed(p) => BitLinearWeight::Packed(p),
            BitLinearWeight::Latent(w) => {
                let w = w.val();
                let device = w.device();
                // [d_input, d_output] -> rows = outputs.
                let data = w.transpose().to_data().convert::<f32>();
                let values = data
                    .as_slice::<f32>()
                    .map_err(|e| BackendError::Read { what: "BitLinear weight", message: format!("{e:?}") })?;
                let matrix = TernaryMatrix::quantize_absmean(values, d_output, d_input)?;
                BitLinearWeight::Packed(PackedTernary::from_weight(TernaryWeight::from_matrix(&matrix, &device)))
            }
        };
        Ok(Self { weight, bias, input_norm, lambda, d_input, d_output })
    }
}

impl<B: TernaryBackend> BitLinear<B> {
    fn check_input(&self, dims: &[usize]) {
        assert!(
            dims.last() == Some(&self.d_input),
            "BitLinear::forward: input of shape {dims:?} does not match a BitLinear of shape [{}, {}] (d_input = {})",
            self.d_input,
            self.d_output,
            self.d_input
        );
    }

    fn normed<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.input_norm {
            Some(norm) => crate::transformer::rms_norm(x, &norm.gamma.val(), norm.epsilon),
            None => x,
        }
    }

    fn add_bias<const D: usize>(&self, y: Tensor<B, D>) -> Tensor<B, D> {
        match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        }
    }

    /// The layer's output for an input already normalized and (for latent layers) already fake-quantized
    /// as `x_used`.
    fn product<const D: usize>(&self, x_used: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x_used.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let mut out_dims = dims;
        out_dims[D - 1] = self.d_output;
        let y = match &self.weight {
            BitLinearWeight::Packed(packed) => {
                let weight = packed.weight().unwrap_or_else(|e| panic!("BitLinear::forward: {e}"));
                ternary_linear(x_used.reshape([rows, self.d_input]), &weight).reshape(out_dims)
            }
            BitLinearWeight::Latent(w) => {
                let w = if self.lambda == 0.0 { w.val() } else { fake_quantize_weights(w.val(), self.lambda) };
                // As a matrix of rows: the weight's gradient is then one product `x^T g` over every row, not one
                // per batch entry summed afterwards.
                burn::tensor::module::linear(x_used.reshape([rows, self.d_input]), w, None).reshape(out_dims)
            }
        };
        self.add_bias(y)
    }

    fn fake_quantized<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.weight {
            BitLinearWeight::Latent(_) if self.lambda != 0.0 => fake_quantize_activations(x, self.lambda),
            _ => x,
        }
    }

    /// Applies the layer to the last dimension of `input` (`[..., d_input]` -> `[..., d_output]`).
    ///
    /// # Panics
    /// If the last dimension is not `d_input`, with a message naming both shapes (as `Linear::forward`).
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        self.check_input(&input.dims());
        let x = self.normed(input);
        match &self.weight {
            // The packed op quantizes its input itself.
            BitLinearWeight::Packed(_) => self.product(x),
            BitLinearWeight::Latent(_) => self.product(self.fake_quantized(x)),
        }
    }

    /// `[layer.forward(input) for layer in layers]`, quantizing `input` once when the layers can share it: all
    /// packed (one activation quantization and, on the CPU, one kernel dispatch for q/k/v or gate/up), or all
    /// latent with the same `λ`; layers with an input norm each quantize their own normalized input.
    ///
    /// # Panics
    /// If a layer's `d_input` is not the input's last dimension.
    pub fn forward_shared<const D: usize>(layers: &[&Self], input: Tensor<B, D>) -> Vec<Tensor<B, D>> {
        let dims = input.dims();
        for layer in layers {
            layer.check_input(&dims);
        }
        let shareable = layers.iter().all(|l| l.input_norm.is_none());
        let all_packed = layers.iter().all(|l| l.is_packed());
        let all_latent = layers.iter().all(|l| !l.is_packed() && l.lambda == layers[0].lambda);
        if !shareable || layers.len() < 2 || !(all_packed || all_latent) {
            return layers.iter().map(|l| l.forward(input.clone())).collect();
        }
        if all_packed {
            let weights: Vec<TernaryWeight<B>> = layers
                .iter()
                .map(|l| {
                    l.packed_weight().expect("a packed layer").unwrap_or_else(|e| panic!("BitLinear::forward: {e}"))
                })
                .collect();
            let rows: usize = dims[..D - 1].iter().product();
            let refs: Vec<&TernaryWeight<B>> = weights.iter().collect();
            let outs = ternary_linear_many(input.reshape([rows, dims[D - 1]]), &refs);
            return outs
                .into_iter()
                .zip(layers)
                .map(|(y, l)| {
                    let mut out_dims = dims;
                    out_dims[D - 1] = l.d_output;
                    l.add_bias(y.reshape(out_dims))
                })
                .collect();
        }
        let x = layers[0].fake_quantized(input);
        layers.iter().map(|l| l.product(x.clone())).collect()
    }
}
