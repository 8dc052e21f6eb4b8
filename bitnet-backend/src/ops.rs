//! [`TernaryBackend`]: the ternary ops of BitNet b1.58 on any burn backend.
//!
//! Packed weights travel as [`TernaryWeight`]: the kernel-native layout of `bitnet_kernels`
//! (`bitnet_kernels::formats::native`) as little-endian `i32` words, shape `[rows_padded, cols_padded / 16]` in the
//! 2-bit layout (`[rows_padded, cols_padded / 20]` in the five-trit one, which the CubeCL kernels and the scalar
//! and AVX-512 VNNI CPU kernels read: [`TernaryBackend::reads_ternary_layout`]; a backend packs in
//! [`TernaryBackend::preferred_ternary_layout`]), plus its scales: one f32 per output row, followed, for grouped
//! weights (GGUF Q2_0 and the like, 2-bit only), by one f32 per 64 weights in the kernels' order
//! (`bitnet_kernels::formats::native::group_scale_count`); the length tells the two apart. CPU backends run the
//! `bitnet-kernels` SIMD kernels on those bytes in place; CubeCL backends unpack the same codes in registers.
//!
//! Numerics (W1.58A8): activations are quantized per token (row of `x`) with absmax,
//! `s = 127 / max(max|x|, 1e-5)`, `q = clamp(round_half_even(x * s), -128, 127)`; with weight codes
//! `c = w + 1` in {0, 1, 2} and row scales `g_n`, `y[m, n] = (sum_k c[n,k] q[m,k] - sum_k q[m,k]) * g_n / s_m`,
//! accumulated exactly in i32 (i16 accumulation can wrap on adversarial inputs).

use crate::error::{BackendError, Result};
use bitnet_kernels::{TernaryCodes, TernaryLayout, TernaryMatrix};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{AllocationProperty, Bytes, DType, Int, Tensor, TensorData, TensorPrimitive};

/// Packed ternary weights at the primitive level (what the backend ops take).
#[derive(Debug, Clone)]
pub struct TernaryWeightPrimitive<B: Backend> {
    /// Native-layout bytes as i32 words, `[rows_padded, cols_padded / 16]` (2-bit layout).
    pub words: IntTensor<B>,
    /// Weight scales: `[rows]` row scales `g_n`, or `[rows + group scales]` for a grouped weight.
    pub scales: FloatTensor<B>,
    /// Output features `N`.
    pub rows: usize,
    /// Input features `K`.
    pub cols: usize,
    /// How the words hold the codes.
    pub layout: TernaryLayout,
}

/// Per-token int8 activations at the primitive level.
#[derive(Debug, Clone)]
pub struct QuantizedActivationsPrimitive<B: Backend> {
    /// Codes `q` in [-128, 127] stored as the backend's int dtype, `[M, K]`.
    pub codes: IntTensor<B>,
    /// Per-token scales `s` (`x ≈ q / s`), `[M]`.
    pub scales: FloatTensor<B>,
}

/// A burn backend that runs BitNet's ternary ops. It also runs the fused norm [`crate::TransformerBackend`] provides
/// (a [`crate::BitLinear`] with an input norm calls it), so every ternary backend implements both.
pub trait TernaryBackend: crate::TransformerBackend {
    /// The layout this backend's ternary products read fastest: what model loading packs weights in. 2 bits by
    /// default (every backend reads it); the CPU backend returns `bitnet_kernels::TernaryLayout::selected`, the
    /// CubeCL ones 2 bits unless `BITNET_TERNARY_LAYOUT` names another (`TernaryLayout::requested`).
    fn preferred_ternary_layout() -> TernaryLayout {
        TernaryLayout::Bits2
    }

    /// Whether this backend's ternary ops read weights in `layout`. Every backend reads the 2-bit layout; the
    /// CubeCL kernels read both; the CPU backends read five-trit words where the selected CPU kernel does
    /// (`bitnet_kernels::TernaryLayout::is_read_by`). A packed [`crate::BitLinear`] record is repacked to 2 bits
    /// at load where this machine's CPU kernel cannot read its layout.
    fn reads_ternary_layout(layout: TernaryLayout) -> bool {
        layout == TernaryLayout::Bits2
    }

    /// `y = ternary_linear(x, W)`: per-token int8 quantization of `x` (`[M, K]`) and the ternary x int8 product
    /// with the packed weights; returns `[M, N]` in f32.
    fn ternary_linear(x: FloatTensor<Self>, weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self>;

    /// `ternary_linear` of one input with several weights that share its activation quantization (q/k/v, or
    /// gate/up, in a BitNet block). The default runs [`TernaryBackend::ternary_linear`] per weight; backends
    /// override it to quantize `x` once (and, on the CPU, to run every product in one pool dispatch).
    fn ternary_linear_many(x: FloatTensor<Self>, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<FloatTensor<Self>> {
        weights.into_iter().map(|w| Self::ternary_linear(x.clone(), w)).collect()
    }

    /// Per-token absmax int8 quantization of `x` (`[M, K]`), bit-identical to `bitnet_kernels::quant`.
    fn quantize_activations(x: FloatTensor<Self>) -> QuantizedActivationsPrimitive<Self>;

    /// The dequantized weights `(c - 1) * g_n` as `[N, K]` f32 (for straight-through backward passes and
    /// reference checks).
    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> FloatTensor<Self>;

    /// Training's fake quantization of activations `x` (`[M, K]`): `x + λ · (dequant(quant(x)) - x)` with
    /// per-row absmax int8, exactly [`crate::quant::activation_fake_quant`] (bit for bit); its gradient with
    /// respect to `x` is the identity (straight-through). Backends may run it as one pass.
    fn fake_quantize_activations(x: FloatTensor<Self>, lambda: f32) -> FloatTensor<Self> {
        crate::quant::activation_fake_quant(float_tensor::<Self, 2>(x), lambda).into_primitive().tensor()
    }

    /// Training's fake quantization of latent weights `w` (`[K, N]`, any layout): `w + λ · (dequant(quant(w)) -
    /// w)` with per-tensor absmean ternary (see [`crate::quant::weight_fake_quant`]); its gradient with respect
    /// to `w` is the identity (straight-through). The CPU runs it in two passes with the scale the packed export
    /// computes (`bitnet_kernels::quant::absmean_scale`, accumulated in f64), so at `λ = 1` training multiplies
    /// by the weights `pack()` will store, up to the rounding of `w + (q - w)`.
    fn fake_quantize_weights(w: FloatTensor<Self>, lambda: f32) -> FloatTensor<Self> {
        crate::quant::weight_fake_quant(float_tensor::<Self, 2>(w), lambda).into_primitive().tensor()
    }
}

/// Packed ternary weights on a backend's device (the tensor-level handle of [`TernaryWeightPrimitive`]).
#[derive(Debug, Clone)]
pub struct TernaryWeight<B: Backend> {
    words: Tensor<B, 2, Int>,
    scales: Tensor<B, 1>,
    rows: usize,
    cols: usize,
    layout: TernaryLayout,
}

/// The shape of the word tensor of a `[rows, cols]` ternary weight in `layout`: rows padded to whole 4-row tiles,
/// columns to whole blocks of 16 words (256 weights in the 2-bit layout, 320 in the five-trit one).
pub fn packed_words_shape(layout: TernaryLayout, rows: usize, cols: usize) -> [usize; 2] {
    [rows.div_ceil(4) * 4, cols.div_ceil(layout.block_weights()) * 16]
}

/// Whether `dtype` can hold packed words on a backend (its default int dtype must hold i32 values).
fn words_dtype_ok(dtype: DType) -> bool {
    matches!(dtype, DType::I32 | DType::I64)
}

impl<B: Backend> TernaryWeight<B> {
    /// Uploads a packed matrix to `device`. On the CPU the words stay where they are written here: in
    /// huge-page memory shared with the model's other weights ([`bitnet_kernels::huge_pages`]), which decode
    /// streams with fewer TLB misses.
    pub fn from_matrix(matrix: &TernaryMatrix, device: &B::Device) -> Self {
        let data = matrix.data();
        let words = bitnet_kernels::huge_pages::HugePageBytes::filled(data.len(), |out| {
            // The words are little-endian i32s; the tensor holds them in native order.
            for (o, b) in out.chunks_exact_mut(4).zip(data.chunks_exact(4)) {
                o.copy_from_slice(&i32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_ne_bytes());
            }
        });
        let shape = packed_words_shape(matrix.layout(), matrix.rows(), matrix.cols());
        let words = Bytes::from_shared(bytes::Bytes::from_owner(words), AllocationProperty::Other);
        // The device's default int dtype (I32 on Flex and CubeCL, I64 on candle) holds the i32 words by value.
        let words = Tensor::from_data(TensorData::from_bytes(words, shape, DType::I32), device);
        let scales = Tensor::from_data(TensorData::new(matrix.scales().to_vec(), [matrix.scales().len()]), device);
        Self { words, scales, rows: matrix.rows(), cols: matrix.cols(), layout: matrix.layout() }
    }

    /// Packs ternary codes (`[rows, cols]`, values 0, 1, 2 for -1, 0, +1) with per-row scales.
    pub fn from_codes(codes: &TernaryCodes, row_scales: Vec<f32>, device: &B::Device) -> Result<Self> {
        Ok(Self::from_matrix(&TernaryMatrix::from_codes(codes, row_scales)?, device))
    }

    /// Quantizes f32 latent weights `[rows, cols]` (row = output feature) per tensor with absmean.
    pub fn quantize_absmean(weights: &[f32], rows: usize, cols: usize, device: &B::Device) -> Result<Self> {
        Ok(Self::from_matrix(&TernaryMatrix::quantize_absmean(weights, rows, cols)?, device))
    }

    /// An all-zero weight (every code 1) with unit scales: the skeleton a saved record is loaded into.
    pub fn zeros(rows: usize, cols: usize, device: &B::Device) -> Self {
        // Code 1 in every 2-bit slot: 0b01 repeated, 0x55555555 as a word.
        Self::zeros_in(TernaryLayout::Bits2, rows, cols, device)
    }

    /// [`Self::zeros`] in `layout`.
    pub fn zeros_in(layout: TernaryLayout, rows: usize, cols: usize, device: &B::Device) -> Self {
        // Code 1 everywhere: 0b01 in every 2-bit slot (0x55 a byte); five codes 1 are the base-3 value 121, the
        // byte ceil(121 * 256 / 243) = 128 (0x80).
        let word = match layout {
            TernaryLayout::Bits2 => 0x5555_5555u32,
            TernaryLayout::Trits5 => 0x8080_8080u32,
        } as i32;
        let [r, w] = packed_words_shape(layout, rows, cols);
        let words = Tensor::from_data(TensorData::new(vec![word; r * w], [r, w]), device);
        let scales = Tensor::from_data(TensorData::new(vec![1f32; rows], [rows]), device);
        Self { words, scales, rows, cols, layout }
    }

    /// Rebuilds a 2-bit weight from the two tensors (e.g. after loading a record), checking their shapes and dtype.
    pub fn from_tensors(words: Tensor<B, 2, Int>, scales: Tensor<B, 1>, rows: usize, cols: usize) -> Result<Self> {
        Self::from_tensors_in(TernaryLayout::Bits2, words, scales, rows, cols)
    }

    /// [`Self::from_tensors`] for words in `layout` (a five-trit weight has row scales only).
    pub fn from_tensors_in(
        layout: TernaryLayout,
        words: Tensor<B, 2, Int>,
        scales: Tensor<B, 1>,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let expected = packed_words_shape(layout, rows, cols);
        if words.dims() != expected {
            return Err(BackendError::Shape {
                what: "ternary weight words",
                expected: expected.to_vec(),
                got: words.dims().to_vec(),
            });
        }
        let grouped = rows + bitnet_kernels::formats::native::group_scale_count(rows, cols)?;
        if scales.dims() != [rows] && (scales.dims() != [grouped] || layout != TernaryLayout::Bits2) {
            return Err(BackendError::Shape {
                what: "ternary scales (row scales, or row and group scales)",
                expected: vec![rows],
                got: scales.dims().to_vec(),
            });
        }
        if !words_dtype_ok(words.dtype()) {
            return Err(BackendError::DType {
                what: "ternary weight words",
                expected: "I32 or I64".to_string(),
                got: format!("{:?}", words.dtype()),
            });
        }
        Ok(Self { words, scales, rows, cols, layout })
    }

    /// Downloads the packed matrix (to serialize it or run it on the host).
    pub fn to_matrix(&self) -> Result<TernaryMatrix> {
        let read = |what, e: burn::tensor::DataError| BackendError::Read { what, message: format!("{e:?}") };
        let words = self.words.to_data().convert::<i32>();
        let words = words.as_slice::<i32>().map_err(|e| read("ternary weight words", e))?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let scales = self.scales.to_data().convert::<f32>();
        let scales = scales.as_slice::<f32>().map_err(|e| read("ternary row scales", e))?;
        let view = bitnet_kernels::TernaryView::new_in(self.layout, self.rows, self.cols, &bytes, scales)?;
        // Foreign words may hold code 3: decoding them is the check.
        view.to_codes()?;
        Ok(TernaryMatrix::from_view(&view))
    }

    /// The packed words, `[rows_padded, cols_padded / 16]` (2-bit layout).
    pub fn words(&self) -> &Tensor<B, 2, Int> {
        &self.words
    }
    /// The scales: `[rows]`, or `[rows + group scales]` for a grouped weight.
    pub fn scales(&self) -> &Tensor<B, 1> {
        &self.scales
    }
    /// The two tensors, consuming the handle.
    pub fn into_tensors(self) -> (Tensor<B, 2, Int>, Tensor<B, 1>) {
        (self.words, self.scales)
    }
    /// Output features `N`.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// How the words hold the codes.
    pub fn layout(&self) -> TernaryLayout {
        self.layout
    }
    /// Input features `K`.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Whether the weight carries group scales.
    pub fn is_grouped(&self) -> bool {
        self.scales.dims()[0] > self.rows
    }
    /// Bytes a product with this weight reads: the packed codes (padded to whole tiles, 4-byte words on the
    /// device) and the f32 scales.
    pub fn packed_bytes(&self) -> u64 {
        let words = self.words.shape().num_elements() as u64;
        let scales = self.scales.shape().num_elements() as u64;
        words * self.words.dtype().size() as u64 + scales * self.scales.dtype().size() as u64
    }

    /// The primitive handle the backend ops take.
    pub fn primitive(&self) -> TernaryWeightPrimitive<B> {
        TernaryWeightPrimitive {
            words: self.words.clone().into_primitive(),
            scales: self.scales.clone().into_primitive().tensor(),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        }
    }
}

impl<B: TernaryBackend> TernaryWeight<B> {
    /// Uploads `matrix` in the layout `B`'s products read fastest ([`TernaryBackend::preferred_ternary_layout`]),
    /// repacking it when it differs; a matrix with group scales stays in the 2-bit layout (the only one that has
    /// them). Model loading packs every projection this way.
    pub fn from_matrix_preferred(matrix: &TernaryMatrix, device: &B::Device) -> Result<Self> {
        let layout = B::preferred_ternary_layout();
        if layout == matrix.layout() || matrix.group_scales().is_some() {
            return Ok(Self::from_matrix(matrix, device));
        }
        Ok(Self::from_matrix(&matrix.to_layout(layout)?, device))
    }
}

/// Panics if `weight` is five-trit with group scales: the layout has no group scales, and
/// [`TernaryWeight::from_tensors_in`] refuses them, so only a hand-built primitive reaches this.
#[cfg(feature = "cube")]
pub(crate) fn assert_no_five_trit_groups<B: Backend>(op: &str, weight: &TernaryWeightPrimitive<B>) {
    use burn::tensor::TensorMetadata;
    let scales = weight.scales.shape().num_elements();
    assert!(
        weight.layout == TernaryLayout::Bits2 || scales == weight.rows,
        "{op}: a five-trit ternary weight has one scale per row ({} rows), not {scales}",
        weight.rows
    );
}

/// Panics unless an input of shape `[m, k]` fits `weight`, naming both shapes (burn's convention for
/// `forward`). Every backend's `ternary_linear` calls it.
pub(crate) fn assert_input_fits<B: Backend>(op: &str, m: usize, k: usize, weight: &TernaryWeightPrimitive<B>) {
    assert!(
        k == weight.cols,
        "{op}: input of shape [{m}, {k}] does not match a ternary weight of shape [{}, {}] (needs {} input features)",
        weight.rows,
        weight.cols,
        weight.cols
    );
}

pub(crate) fn float_tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// `y = x W^T` for ternary `W` with per-token int8 activations: `x` is `[M, K]`, `y` is `[M, N]`.
///
/// # Panics
/// If `x` is not `K` wide, with a message naming both shapes (burn's convention for `forward`).
pub fn ternary_linear<B: TernaryBackend>(x: Tensor<B, 2>, weight: &TernaryWeight<B>) -> Tensor<B, 2> {
    let [m, k] = x.dims();
    let weight = weight.primitive();
    assert_input_fits("ternary_linear", m, k, &weight);
    float_tensor(B::ternary_linear(x.into_primitive().tensor(), weight))
}

/// [`ternary_linear`] of one input with several weights, quantizing the input once.
///
/// # Panics
/// If a weight's input width differs from `x`'s, naming both shapes.
pub fn ternary_linear_many<B: TernaryBackend>(x: Tensor<B, 2>, weights: &[&TernaryWeight<B>]) -> Vec<Tensor<B, 2>> {
    let [m, k] = x.dims();
    let prims: Vec<_> = weights.iter().map(|w| w.primitive()).collect();
    for w in &prims {
        assert_input_fits("ternary_linear_many", m, k, w);
    }
    B::ternary_linear_many(x.into_primitive().tensor(), prims).into_iter().map(float_tensor).collect()
}

/// Per-token int8 codes and scales of `x` (`[M, K]`): `x ≈ codes / scales[:, None]`.
pub fn quantize_activations<B: TernaryBackend>(x: Tensor<B, 2>) -> (Tensor<B, 2, Int>, Tensor<B, 1>) {
    let q = B::quantize_activations(x.into_primitive().tensor());
    (Tensor::from_primitive(q.codes), float_tensor(q.scales))
}

/// [`TernaryBackend::fake_quantize_activations`] over the last dimension of `x`.
pub fn fake_quantize_activations<B: TernaryBackend, const D: usize>(x: Tensor<B, D>, lambda: f32) -> Tensor<B, D> {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product();
    let x = x.reshape([rows, dims[D - 1]]).into_primitive().tensor();
    float_tensor::<B, 2>(B::fake_quantize_activations(x, lambda)).reshape(dims)
}

/// Straight-through fake quantization of a latent weight (see [`TernaryBackend::fake_quantize_weights`]).
pub fn fake_quantize_weights<B: TernaryBackend>(w: Tensor<B, 2>, lambda: f32) -> Tensor<B, 2> {
    float_tensor(B::fake_quantize_weights(w.into_primitive().tensor(), lambda))
}

/// The dequantized weights `[N, K]`.
pub fn ternary_dequantize<B: TernaryBackend>(weight: &TernaryWeight<B>) -> Tensor<B, 2> {
    float_tensor(B::ternary_dequantize(weight.primitive()))
}

/// Rows `ids` (`[T]`) of the dequantized weight, `[T, K]` f32: a ternary embedding lookup. Runs on any
/// backend without dequantizing the whole matrix: the 4-row tiles holding the rows are gathered (their word
/// rows, row scales and group scales) into a `[4T, K]` weight, dequantized, and the wanted row of each tile
/// kept. Ids must be below the row count (the caller checks them against the vocabulary).
pub fn ternary_rows<B: TernaryBackend>(weight: &TernaryWeight<B>, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let (rows, cols) = (weight.rows(), weight.cols());
    let t = ids.dims()[0];
    let device = ids.device();
    // Tensor-by-tensor division: candle has no integer division by a scalar.
    let tiles = ids.clone().div(Tensor::<B, 1, Int>::full([t], 4, &device));
    let slots = ids - tiles.clone().mul_scalar(4);
    let offsets = Tensor::<B, 1, Int>::arange(0..4, &device);
    let word_rows =
        (tiles.clone().mul_scalar(4).unsqueeze_dim::<2>(1) + offsets.unsqueeze_dim::<2>(0)).reshape([4 * t]);
    let words = weight.words().clone().select(0, word_rows.clone());
    let all_scales = weight.scales().clone();
    // A tile's padding rows (past `rows`) hold zero codes; any row scale serves them.
    let row_scales = all_scales.clone().slice(0..rows).select(0, word_rows.clamp_max(rows as i64 - 1));
    let scales = if weight.is_grouped() {
        let per_tile = cols.div_ceil(256) * bitnet_kernels::formats::native::GROUP_SCALES_PER_TILE_BLOCK;
        let total = all_scales.dims()[0];
        let groups = all_scales.slice(rows..total).reshape([(total - rows) / per_tile, per_tile]);
        Tensor::cat(vec![row_scales, groups.select(0, tiles).reshape([t * per_tile])], 0)
    } else {
        row_scales
    };
    let gathered = TernaryWeight::from_tensors_in(weight.layout(), words, scales, 4 * t, cols)
        .expect("a gathered tile set has the shapes of a [4T, K] ternary weight");
    let keep = Tensor::<B, 1, Int>::arange(0..t as i64, &device).mul_scalar(4) + slots;
    ternary_dequantize(&gathered).select(0, keep)
}
