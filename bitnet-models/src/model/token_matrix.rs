//! [`TokenMatrix`]: a `[vocab, hidden]` matrix read by token, either as the embedding (a row per input token)
//! or as the output head (`logits = h W^T`, the largest single weight a decode step streams: a third of a 2B
//! model's bytes in bf16). One type serves both, so a tied model holds its matrix once in whatever format.
//!
//! | format | bytes per weight | product | where it runs natively |
//! |---|---|---|---|
//! | dense f32 / bf16 / f16 | 4 / 2 / 2 | f32 GEMV over the stored values | every backend |
//! | int8 | 1 (+ a scale per row) | `(sum_k Wq q) · r_n / s` (W8A8) | CPU; burn ops elsewhere |
//! | Q6_K | 0.82 | `(sum_b d_b S_b) / s` (see `bitnet_kernels::q6k`) | CPU; a dense copy elsewhere |
//! | Q4 | 0.56 | `(sum_g d_g S_g) / s` (see `bitnet_kernels::q4`) | CPU; a dense copy elsewhere |
//! | ternary | 0.25-0.31 (+ scales) | the ternary kernels, int8 activations (a `BitLinear`) | every backend |
//!
//! A ternary matrix (GGUF Q2_0 / PQ2_0 / TQ2_0 / TQ1_0 / I2_S `token_embd` or `output`, as the Qwen3-based
//! ternary models ship them) stays ternary: the embedding lookup dequantizes only the rows it reads
//! (`bitnet_backend::ternary_rows`), and the head runs the same kernels as every projection.
//!
//! The quantized formats round the head to 8, ~6 or 4 bits and the activations to 8 bits per token (as the
//! ternary layers already do); `docs/PERFORMANCE.md` gives their perplexity cost. A checkpoint's 16-bit values
//! and a GGUF file's Q6_K blocks are used in place (zero-copy from the file mapping) on the CPU; Q4_0 blocks are
//! repacked into the Q4 layout the kernels read (the same numbers).

use crate::error::{ModelError, Result};
use crate::gguf::SharedBytes;
use bitnet_backend::{
    block_linear, block_rows, dense_linear, int8_linear, ternary_rows, BitLinear, BitNetBackend, TernaryWeight,
};
use bitnet_kernels::{BlockFormat, TernaryMatrix};
use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{AllocationProperty, Bytes, DType, FloatDType, Int, Tensor, TensorData};

/// The format a token matrix is held in (`--head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadFormat {
    /// As the checkpoint stores it (f32, bf16, f16, or Q6_K / Q4 on the CPU).
    #[default]
    Stored,
    /// f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    Bf16,
    /// Per-row int8 codes and scales (`r_n = max|W[n,:]| / 127`).
    Int8,
    /// ggml's Q6_K blocks (6.5625 bits per weight; the CPU only).
    Q6K,
    /// Q4: an f16 scale per 32 weights and 4-bit codes (4.5 bits per weight, ggml Q4_0's numbers; the CPU only).
    Q4,
}

impl HeadFormat {
    /// Every format, with its command-line name.
    pub const ALL: [(HeadFormat, &'static str); 7] = [
        (Self::Stored, "stored"),
        (Self::F32, "f32"),
        (Self::F16, "f16"),
        (Self::Bf16, "bf16"),
        (Self::Int8, "int8"),
        (Self::Q6K, "q6k"),
        (Self::Q4, "q4"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(f, _)| *f == self).map_or("stored", |(_, n)| n)
    }

    /// The block format of a block-quantized head format.
    pub fn block_format(self) -> Option<BlockFormat> {
        match self {
            Self::Q6K => Some(BlockFormat::Q6K),
            Self::Q4 => Some(BlockFormat::Q4),
            _ => None,
        }
    }
}

impl std::str::FromStr for HeadFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)).map(|(f, _)| *f).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
            format!("unknown head format '{s}' (expected {})", names.join(", "))
        })
    }
}

/// A `[rows, cols]` matrix on the host as a checkpoint stores it.
#[derive(Debug, Clone)]
pub enum MatrixData {
    /// f32 values, row-major.
    F32(Vec<f32>),
    /// 16-bit floats (`DType::F16` or `DType::BF16`), little-endian, usually a slice of the file mapping.
    Half(SharedBytes, DType),
    /// Blocks of a [`BlockFormat`], `format.row_bytes(cols)` bytes per row (Q6_K blocks usually a slice of the
    /// file mapping).
    Blocks(BlockFormat, SharedBytes),
    /// Ternary codes with their scales (checked when they were unpacked).
    Ternary(TernaryMatrix),
}

impl MatrixData {
    /// Checks the byte length against `[rows, cols]`, then that every value is finite (NaN or infinite weights
    /// turn every logit into NaN); the error names the first bad element.
    pub(crate) fn check(&self, [rows, cols]: [usize; 2]) -> std::result::Result<(), String> {
        let n = rows.checked_mul(cols).ok_or("the shape overflows")?;
        let (len, want) = match self {
            Self::F32(v) => (v.len(), n),
            Self::Half(b, _) => (b.len(), n.checked_mul(2).ok_or("the shape overflows")?),
            Self::Blocks(format, b) => (
                b.len(),
                rows.checked_mul(format.row_bytes(cols).map_err(|e| e.to_string())?).ok_or("the shape overflows")?,
            ),
            Self::Ternary(m) => {
                if [m.rows(), m.cols()] != [rows, cols] {
                    return Err(format!("a [{}, {}] ternary matrix, [{rows}, {cols}] expected", m.rows(), m.cols()));
                }
                return Ok(());
            }
        };
        if len != want {
            return Err(format!("{len} bytes or values for a [{rows}, {cols}] matrix ({want} expected)"));
        }
        let bad = match self {
            Self::F32(v) => v.iter().position(|x| !x.is_finite()),
            Self::Half(b, dtype) => {
                // A 16-bit float is not finite when its exponent bits are all ones.
                let mask: u16 = if *dtype == DType::BF16 { 0x7f80 } else { 0x7c00 };
                b.as_slice().chunks_exact(2).position(|h| u16::from_le_bytes([h[0], h[1]]) & mask == mask)
            }
            Self::Blocks(format, b) => format.first_non_finite(b.as_slice()),
            Self::Ternary(_) => None,
        };
        match bad {
            None => Ok(()),
            Some(i) => Err(format!("element {i} is not finite (weights must be finite)")),
        }
    }

    /// Rows `first..first + count` as f32.
    fn rows_f32(&self, first: usize, count: usize, cols: usize) -> Vec<f32> {
        let range = first * cols..(first + count) * cols;
        match self {
            Self::F32(v) => v[range].to_vec(),
            Self::Half(b, dtype) => crate::source::widen(&b.as_slice()[2 * range.start..2 * range.end], *dtype),
            Self::Blocks(format, b) => {
                let row_bytes = format.row_bytes(cols).expect("checked by MatrixData::check");
                let bytes = &b.as_slice()[first * row_bytes..(first + count) * row_bytes];
                let mut out = vec![0f32; count * cols];
                format.dequantize(bytes, [count, cols], &mut out).expect("checked by MatrixData::check");
                out
            }
            Self::Ternary(m) => m.view().dequantize_rows(first..first + count),
        }
    }

    /// Every row as f32.
    fn to_f32(&self, [rows, cols]: [usize; 2]) -> Vec<f32> {
        self.rows_f32(0, rows, cols)
    }
}

/// Bytes burn reads in place where they are (a GPU backend uploads them), so the huge pages they were
/// allocated in (`quantize_rows`, [`SharedBytes::into_memory`]) stay behind the tensor.
fn in_place(owner: impl AsRef<[u8]> + Send + Sync + 'static) -> Bytes {
    Bytes::from_shared(bytes::Bytes::from_owner(owner), AllocationProperty::Other)
}

/// [`in_place`] for bytes of a model file: a mapped file slice is first copied into memory, releasing its pages
/// as the copy proceeds, so the resident size stays one copy (see [`SharedBytes::into_memory`] for why); bytes
/// already in memory are used as they are.
fn shared_bytes(bytes: SharedBytes) -> Bytes {
    in_place(bytes.into_memory())
}

/// Per-row int8 weights: `W[n,k] ≈ codes[n,k] · scales[n]`, codes in [-127, 127].
#[derive(Module, Debug)]
pub struct Int8Table<B: Backend> {
    codes: Param<Tensor<B, 2, Int>>,
    scales: Param<Tensor<B, 1>>,
}

/// Blocks of a [`BlockFormat`], `[rows, format.row_bytes(cols)]` (u8).
#[derive(Module, Debug)]
pub struct BlockTable<B: Backend> {
    blocks: Param<Tensor<B, 2, Int>>,
    #[module(skip)]
    cols: usize,
    #[module(skip)]
    format: BlockFormat,
}

impl<B: Backend> BlockTable<B> {
    /// The blocks (u8 `[rows, format.row_bytes(cols)]`).
    pub fn blocks(&self) -> Tensor<B, 2, Int> {
        self.blocks.val()
    }

    /// Their format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }
}

/// A `[vocab, hidden]` token matrix (see the module docs).
// A model holds one or two; burn's `Module` derive does not see through a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TokenMatrix<B: Backend> {
    /// Dense, in its stored precision (trained as a parameter).
    Dense(Param<Tensor<B, 2>>),
    /// Per-row int8.
    Int8(Int8Table<B>),
    /// Block-quantized (Q6_K, Q4).
    Blocks(BlockTable<B>),
    /// Ternary codes (a packed `BitLinear` without bias or norm).
    Ternary(BitLinear<B>),
}

impl<B: Backend> TokenMatrix<B> {
    /// A dense matrix.
    pub fn dense(weight: Tensor<B, 2>) -> Self {
        Self::Dense(Param::from_tensor(weight))
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Dense(p) => p.dims(),
            Self::Int8(q) => q.codes.dims(),
            Self::Blocks(q) => [q.blocks.dims()[0], q.cols],
            Self::Ternary(l) => [l.d_output(), l.d_input()],
        }
    }

    /// Bytes a product with the whole matrix reads.
    pub fn bytes(&self) -> u64 {
        let [rows, cols] = self.dims();
        match self {
            Self::Dense(p) => (rows * cols) as u64 * p.val().dtype().size() as u64,
            Self::Int8(_) => (rows * cols + 4 * rows) as u64,
            Self::Blocks(q) => q.blocks.shape().num_elements() as u64,
            Self::Ternary(l) => l.packed_weight().and_then(|w| w.ok()).map_or(0, |w| w.packed_bytes()),
        }
    }

    /// The format's name (`f32`, `bf16`, `f16`, `int8`, `q6k`, `q4`, `ternary`).
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::Dense(p) => match p.val().dtype() {
                DType::BF16 => "bf16",
                DType::F16 => "f16",
                _ => "f32",
            },
            Self::Int8(_) => "int8",
            Self::Blocks(q) => q.format.name(),
            Self::Ternary(_) => "ternary",
        }
    }

    /// The dense parameter, if the matrix is dense.
    pub fn as_dense(&self) -> Option<&Param<Tensor<B, 2>>> {
        match self {
            Self::Dense(p) => Some(p),
            _ => None,
        }
    }

    /// The device the matrix lives on.
    pub fn device(&self) -> B::Device {
        match self {
            Self::Dense(p) => p.val().device(),
            Self::Int8(q) => q.scales.val().device(),
            Self::Blocks(q) => q.blocks.val().device(),
            Self::Ternary(l) => l.devices().first().cloned().unwrap_or_default(),
        }
    }

    /// The matrix read back to the host in its own format (int8 has none a checkpoint stores).
    fn to_data(&self) -> Result<MatrixData> {
        let read = |e: burn::tensor::DataError| ModelError::Request(format!("reading the matrix back: {e:?}"));
        match self {
            Self::Dense(p) => {
                let w = p.val();
                Ok(match w.dtype() {
                    dtype @ (DType::BF16 | DType::F16) => {
                        MatrixData::Half(SharedBytes::from_vec(w.into_data().as_bytes().to_vec()), dtype)
                    }
                    _ => MatrixData::F32(w.cast(FloatDType::F32).into_data().into_vec::<f32>().map_err(read)?),
                })
            }
            Self::Blocks(q) => {
                Ok(MatrixData::Blocks(q.format, SharedBytes::from_vec(q.blocks.val().into_data().as_bytes().to_vec())))
            }
            Self::Int8(_) => {
                Err(ModelError::Request("the matrix is already int8: load the model again to change it".into()))
            }
            Self::Ternary(l) => match l.packed_weight() {
                Some(w) => Ok(MatrixData::Ternary(w?.to_matrix()?)),
                None => Err(ModelError::Request("a ternary token matrix must be packed".into())),
            },
        }
    }
}

impl<B: BitNetBackend> TokenMatrix<B> {
    /// The matrix in `format`, made on the host from `data` (`[rows, cols]`): stored data is used in place
    /// where the backend reads it (16-bit values it stores, blocks on a backend with native block formats), and
    /// converted otherwise (a block-quantized matrix becomes dense f32 where blocks are not native).
    pub fn from_data(data: MatrixData, dims: [usize; 2], format: HeadFormat, device: &B::Device) -> Result<Self> {
        data.check(dims).map_err(|message| ModelError::Request(format!("invalid matrix: {message}")))?;
        Self::from_checked_data(data, dims, format, device)
    }

    /// [`TokenMatrix::from_data`] of data that passed [`MatrixData::check`].
    pub(crate) fn from_checked_data(
        data: MatrixData,
        dims: [usize; 2],
        format: HeadFormat,
        device: &B::Device,
    ) -> Result<Self> {
        Self::build(data, dims, format, device)
    }

    fn build(data: MatrixData, dims: [usize; 2], format: HeadFormat, device: &B::Device) -> Result<Self> {
        let [rows, cols] = dims;
        let supports = |dtype: DType| B::supports_dtype(device, dtype);
        let f32_matrix = |values: Vec<f32>| Self::dense(Tensor::from_data(TensorData::new(values, dims), device));
        let half_matrix = |bytes: SharedBytes, dtype: DType| {
            Self::dense(Tensor::from_data(TensorData::from_bytes(shared_bytes(bytes), dims, dtype), (device, dtype)))
        };
        Ok(match (format, data) {
            (HeadFormat::Stored, MatrixData::Ternary(m)) => {
                Self::Ternary(BitLinear::from_packed(TernaryWeight::from_matrix_preferred(&m, device)?, None, None)?)
            }
            (HeadFormat::Stored, MatrixData::F32(values)) => f32_matrix(values),
            (HeadFormat::Stored, MatrixData::Half(bytes, dtype)) if supports(dtype) => half_matrix(bytes, dtype),
            (_, MatrixData::Blocks(stored, bytes))
                if B::has_native_blocks(device)
                    && (format == HeadFormat::Stored || format.block_format() == Some(stored)) =>
            {
                let row_bytes = bytes.len() / rows.max(1);
                let blocks = TensorData::from_bytes(shared_bytes(bytes), [rows, row_bytes], DType::U8);
                Self::block_table(Tensor::from_data(blocks, (device, DType::U8)), cols, stored)
            }
            (HeadFormat::Stored | HeadFormat::F32, data) => f32_matrix(data.to_f32(dims)),
            (HeadFormat::Q6K, data) => Self::quantized_blocks(&data, dims, BlockFormat::Q6K, device)?,
            (HeadFormat::Q4, data) => Self::quantized_blocks(&data, dims, BlockFormat::Q4, device)?,
            (HeadFormat::F16 | HeadFormat::Bf16, data) => {
                let dtype = if format == HeadFormat::F16 { DType::F16 } else { DType::BF16 };
                if !supports(dtype) {
                    return Err(ModelError::Request(format!("this device does not store {dtype:?} tensors")));
                }
                match data {
                    MatrixData::Half(bytes, stored) if stored == dtype => half_matrix(bytes, dtype),
                    data => {
                        let values = data.to_f32(dims);
                        let halves: Vec<u8> = if dtype == DType::F16 {
                            values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
                        } else {
                            values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()
                        };
                        half_matrix(SharedBytes::from_vec(halves), dtype)
                    }
                }
            }
            (HeadFormat::Int8, data) => {
                if !supports(DType::I8) {
                    return Err(ModelError::Request("an int8 head needs a device that stores int8 tensors".into()));
                }
                let (codes, scales) = quantize_rows(&data, dims, cols, &|w, out| {
                    Ok(bitnet_kernels::int8::quantize_row(w, bytemuck_i8(out)))
                })?;
                let codes = TensorData::from_bytes(in_place(codes), dims, DType::I8);
                let codes = Tensor::from_data(codes, (device, DType::I8));
                let scales = Tensor::from_data(TensorData::new(scales, [rows]), device);
                Self::Int8(Int8Table {
                    codes: Param::initialized(ParamId::new(), codes),
                    scales: Param::from_tensor(scales).set_require_grad(false),
                })
            }
        })
    }

    fn block_table(blocks: Tensor<B, 2, Int>, cols: usize, format: BlockFormat) -> Self {
        Self::Blocks(BlockTable { blocks: Param::initialized(ParamId::new(), blocks), cols, format })
    }

    /// `data` quantized into `format` on the host, row blocks split over the pool (the CPU only: elsewhere the
    /// product would read the blocks back on every call).
    fn quantized_blocks(data: &MatrixData, dims: [usize; 2], format: BlockFormat, device: &B::Device) -> Result<Self> {
        let [rows, cols] = dims;
        let name = format.name();
        if !B::has_native_blocks(device) {
            return Err(ModelError::Request(format!("a {name} head runs on the CPU only (--device cpu)")));
        }
        let row_bytes = format.row_bytes(cols).map_err(|_| {
            ModelError::Request(format!("a {name} head needs a hidden size that is a multiple of 256 (got {cols})"))
        })?;
        let (bytes, _) = quantize_rows(data, dims, row_bytes, &|w, out| format.quantize_row(w, out).map(|_| 0.0))?;
        let blocks = TensorData::from_bytes(in_place(bytes), [rows, row_bytes], DType::U8);
        Ok(Self::block_table(Tensor::from_data(blocks, (device, DType::U8)), cols, format))
    }

    /// The matrix in `format` (a round trip through the host; the same rules as [`TokenMatrix::from_data`]).
    pub fn convert(self, format: HeadFormat) -> Result<Self> {
        if format == HeadFormat::Stored {
            return Ok(self);
        }
        let (dims, device) = (self.dims(), self.device());
        let data = self.to_data()?;
        drop(self);
        Self::build(data, dims, format, &device)
    }
}

impl<B: BitNetBackend> TokenMatrix<B> {
    /// The rows of `ids` (`[T]`) as f32 `[T, cols]`: the embedding lookup.
    pub fn rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        match self {
            Self::Dense(p) => {
                let rows = p.val().select(0, ids);
                // Checkpoints ship 16-bit embeddings; activations are f32.
                if rows.dtype() != DType::F32 {
                    rows.cast(FloatDType::F32)
                } else {
                    rows
                }
            }
            Self::Int8(q) => {
                let codes = q.codes.val().select(0, ids.clone()).float().cast(FloatDType::F32);
                codes * q.scales.val().select(0, ids).unsqueeze_dim(1)
            }
            Self::Blocks(q) => block_rows(&q.blocks.val(), ids, q.cols, q.format),
            // A malformed record panics with its cause, as `BitLinear::forward` does.
            Self::Ternary(l) => match l.packed_weight() {
                Some(Ok(w)) => ternary_rows(&w, ids),
                Some(Err(e)) => panic!("TokenMatrix::rows: {e}"),
                None => unreachable!("a ternary token matrix is built packed"),
            },
        }
    }

    /// `h W^T` (`h`: `[tokens, cols]`): the logits.
    pub fn logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Dense(p) => dense_linear(h, &p.val()),
            Self::Int8(q) => int8_linear(h, &q.codes.val(), &q.scales.val()),
            Self::Blocks(q) => block_linear(h, &q.blocks.val(), q.cols, q.format),
            Self::Ternary(l) => l.forward(h),
        }
    }
}

/// `i8` view of a byte buffer (same size and alignment).
fn bytemuck_i8(bytes: &mut [u8]) -> &mut [i8] {
    // SAFETY: u8 and i8 have the same size and alignment, and every bit pattern is valid for both.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), bytes.len()) }
}

/// Quantizes one row of f32 into its bytes, returning a value for the row (int8's scale).
type RowQuantizer<'a> = dyn Fn(&[f32], &mut [u8]) -> bitnet_kernels::Result<f32> + Sync + 'a;

/// Quantizes every row of `data` (`[rows, cols]`) into `row_bytes` bytes each with `quantize(row, out)`, which
/// returns a value per row (int8's scale); rows are split over the kernels' thread pool, and each chunk widens
/// a block of rows to f32 at a time (a 2B head is never widened whole).
fn quantize_rows(
    data: &MatrixData,
    [rows, cols]: [usize; 2],
    row_bytes: usize,
    quantize: &RowQuantizer<'_>,
) -> Result<(Vec<u8>, Vec<f32>)> {
    use bitnet_kernels::pool::{chunk_count, split_range};
    use std::sync::Mutex;
    let total = rows.checked_mul(row_bytes).ok_or_else(|| ModelError::Request("the matrix is too large".into()))?;
    let (mut out, mut values) = (bitnet_kernels::huge_pages::huge_page_vec(0u8, total), vec![0f32; rows]);
    let pool = bitnet_kernels::global_pool();
    let chunks = chunk_count(pool, rows, 64);
    // Each chunk owns a contiguous run of rows of both outputs.
    let mut parts = Vec::with_capacity(chunks);
    let (mut bytes_left, mut values_left) = (out.as_mut_slice(), values.as_mut_slice());
    for c in 0..chunks {
        let range = split_range(rows, chunks, c, 1);
        let (bytes, rest) = bytes_left.split_at_mut(range.len() * row_bytes);
        let (vals, rest_values) = values_left.split_at_mut(range.len());
        (bytes_left, values_left) = (rest, rest_values);
        parts.push(Mutex::new((range.start, bytes, vals)));
    }
    let failure = Mutex::new(None);
    pool.run(chunks, &|c| {
        let mut part = parts[c].lock().unwrap_or_else(|e| e.into_inner());
        let (first, bytes, vals) = &mut *part;
        const BLOCK: usize = 256;
        for start in (0..vals.len()).step_by(BLOCK) {
            let count = BLOCK.min(vals.len() - start);
            let widened = data.rows_f32(*first + start, count, cols);
            for (r, w) in widened.chunks_exact(cols.max(1)).enumerate() {
                let n = start + r;
                match quantize(w, &mut bytes[n * row_bytes..(n + 1) * row_bytes]) {
                    Ok(v) => vals[n] = v,
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        return;
                    }
                }
            }
        }
    });
    drop(parts);
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(message) => Err(ModelError::Request(message)),
        None => Ok((out, values)),
    }
}
