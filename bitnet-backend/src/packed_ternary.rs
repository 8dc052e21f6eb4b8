//! [`PackedTernary`]: a packed ternary weight as module state (words, scales and the words' layout), and what
//! loading its record does.
//!
//! Loading adopts the layout the record names (`packed_layout`): a record means what it meant when it was saved.
//! A five-trit record saved where the CPU kernel reads that layout (AVX-512 VNNI, whose preferred layout it is)
//! may be loaded on a machine whose kernel does not (AVX2, NEON): there loading repacks the words into the 2-bit
//! layout, which every backend reads, so a saved layer runs wherever it is loaded, with the same outputs (both
//! layouts hold the same codes, and the products' integer sums do not depend on the layout). That step is why
//! this module's `Module` implementation is written out instead of derived; its record is exactly the derived one.

use crate::ops::TernaryWeight;
use crate::packed_layout::PackedLayout;
use bitnet_kernels::TernaryLayout;
use burn::module::{
    AutodiffModule, Content, Devices, EmptyRecord, HasAutodiffModule, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor, Param, ParamId,
};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};

/// Packed ternary weights as module parameters (saved and loaded with the module's record). The record holds the
/// words, the scales and the name of the words' layout, and loading adopts that layout: a record saved from
/// five-trit weights loads into a 2-bit skeleton (`BitLinearConfig::init_packed`) as five-trit weights and the
/// other way round (records saved before the layout was named are 2-bit), unless this machine's CPU kernel cannot
/// read the record's layout: then the words are repacked into 2 bits (see the module docs). The shapes come from
/// the skeleton.
#[derive(Debug, Clone)]
pub struct PackedTernary<B: Backend> {
    /// Native-layout words, `[rows_padded, cols_padded / 16]` i32 in the 2-bit layout
    /// ([`crate::packed_words_shape`] for both).
    words: Param<Tensor<B, 2, Int>>,
    /// Per-output scales `[d_output]`.
    scales: Param<Tensor<B, 1>>,
    rows: usize,
    cols: usize,
    /// How the words hold the codes (saved in the record by name).
    layout: PackedLayout,
}

/// The record of a [`PackedTernary`]: the fields `#[derive(Module)]` gives a struct of its fields (`rows` and
/// `cols` are not saved: the skeleton has them), so records keep the format they had when the module was derived.
#[derive(Record)]
pub struct PackedTernaryRecord<B: Backend> {
    /// The words.
    pub words: <Param<Tensor<B, 2, Int>> as Module<B>>::Record,
    /// The scales.
    pub scales: <Param<Tensor<B, 1>> as Module<B>>::Record,
    /// Not saved.
    pub rows: EmptyRecord,
    /// Not saved.
    pub cols: EmptyRecord,
    /// The layout's name (`None` in records saved before it was).
    pub layout: Option<String>,
}

impl<B: Backend> PackedTernary<B> {
    pub(crate) fn from_weight(w: TernaryWeight<B>) -> Self {
        let (rows, cols, layout) = (w.rows(), w.cols(), w.layout());
        let (words, scales) = w.into_tensors();
        Self {
            words: Param::initialized(ParamId::new(), words),
            scales: Param::from_tensor(scales).set_require_grad(false),
            rows,
            cols,
            layout: PackedLayout::new(layout),
        }
    }

    /// The tensor-level handle, checked.
    pub fn weight(&self) -> crate::error::Result<TernaryWeight<B>> {
        let layout = self.layout.layout()?;
        TernaryWeight::from_tensors_in(layout, self.words.val(), self.scales.val(), self.rows, self.cols)
    }

    /// These weights in a layout `reads` accepts: unchanged when it accepts theirs, else repacked into the 2-bit
    /// layout (every kernel reads it), the parameters keeping their ids. Weights that fail their checks (an
    /// unknown layout name, words of the wrong shape) are left as they are: [`Self::weight`] reports the error.
    fn readable_by(self, reads: impl Fn(TernaryLayout) -> bool) -> Self {
        let Ok(weight) = self.weight() else { return self };
        if reads(weight.layout()) {
            return self;
        }
        let device = weight.words().device();
        let Ok(matrix) = weight.to_matrix().and_then(|m| Ok(m.to_layout(TernaryLayout::Bits2)?)) else {
            return self;
        };
        let (words, scales) = TernaryWeight::<B>::from_matrix(&matrix, &device).into_tensors();
        Self {
            words: self.words.map(|_| words),
            scales: self.scales.map(|_| scales),
            rows: self.rows,
            cols: self.cols,
            layout: PackedLayout::new(TernaryLayout::Bits2),
        }
    }
}

const CONTAINER: &str = "Struct:PackedTernary";

impl<B: Backend> Module<B> for PackedTernary<B> {
    type Record = PackedTernaryRecord<B>;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        let devices = self.words.collect_devices(devices);
        self.scales.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        Self {
            words: self.words.fork(device),
            scales: self.scales.fork(device),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        }
    }

    fn to_device(self, device: &B::Device) -> Self {
        Self {
            words: self.words.to_device(device),
            scales: self.scales.to_device(device),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        }
    }

    fn num_params(&self) -> usize {
        Module::<B>::num_params(&self.words) + Module::<B>::num_params(&self.scales)
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        visitor.enter_module("words", CONTAINER);
        self.words.visit(visitor);
        visitor.exit_module("words", CONTAINER);
        visitor.enter_module("scales", CONTAINER);
        self.scales.visit(visitor);
        visitor.exit_module("scales", CONTAINER);
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        mapper.enter_module("words", CONTAINER);
        let words = Module::<B>::map(self.words, mapper);
        mapper.exit_module("words", CONTAINER);
        mapper.enter_module("scales", CONTAINER);
        let scales = Module::<B>::map(self.scales, mapper);
        mapper.exit_module("scales", CONTAINER);
        Self { words, scales, rows: self.rows, cols: self.cols, layout: self.layout }
    }

    /// Loads the words, scales and layout the record holds, then repacks them into 2 bits where this machine's CPU
    /// kernel cannot read the record's layout.
    fn load_record(self, record: Self::Record) -> Self {
        let loaded = Self {
            words: self.words.load_record(record.words),
            scales: self.scales.load_record(record.scales),
            rows: self.rows,
            cols: self.cols,
            layout: PackedLayout::from_record(record.layout),
        };
        loaded.readable_by(crate::host::cpu_reads)
    }

    fn into_record(self) -> Self::Record {
        PackedTernaryRecord {
            words: self.words.into_record(),
            scales: self.scales.into_record(),
            rows: EmptyRecord::new(),
            cols: EmptyRecord::new(),
            layout: self.layout.into_record(),
        }
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for PackedTernary<B> {
    type InnerModule = PackedTernary<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        PackedTernary {
            words: self.words.valid(),
            scales: self.scales.valid(),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout.clone(),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        Self {
            words: Param::from_inner(module.words),
            scales: Param::from_inner(module.scales),
            rows: module.rows,
            cols: module.cols,
            layout: module.layout,
        }
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for PackedTernary<B::InnerBackend> {
    type TrainModule = PackedTernary<B>;
}

impl<B: Backend> ModuleDisplayDefault for PackedTernary<B> {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .set_top_level_type("PackedTernary")
            .add("words", &self.words)
            .add("scales", &self.scales)
            .add_debug_attribute("rows", &self.rows)
            .add_debug_attribute("cols", &self.cols)
            .add_debug_attribute("layout", &self.layout)
            .optional()
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl<B: Backend> ModuleDisplay for PackedTernary<B> {}

impl<B: Backend> core::fmt::Display for PackedTernary<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", ModuleDisplay::format(self, Default::default()))
    }
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;
    use bitnet_kernels::Kernel;
    use burn::backend::Flex;

    /// Repacking for a kernel that cannot read five-trit words gives 2-bit words of the same codes and scales,
    /// keeping the parameter ids; a kernel that reads them leaves them alone; 2-bit words are never touched.
    #[test]
    fn readable_by_repacks_only_for_kernels_that_cannot_read_the_layout() {
        let device = Default::default();
        let (rows, cols) = (9, 700);
        let codes: Vec<u8> = (0..rows * cols).map(|i| ((i * 7 + i / 5) % 3) as u8).collect();
        let codes = bitnet_kernels::TernaryCodes::new(rows, cols, codes).unwrap();
        let scales: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
        let two_bit = bitnet_kernels::TernaryMatrix::from_codes(&codes, scales).unwrap();
        for layout in [TernaryLayout::Bits2, TernaryLayout::Trits5] {
            let matrix = two_bit.to_layout(layout).unwrap();
            for kernel in Kernel::ALL {
                let packed = PackedTernary::<Flex>::from_weight(TernaryWeight::from_matrix(&matrix, &device));
                let ids = (packed.words.id, packed.scales.id);
                let readable = packed.readable_by(|layout| layout.is_read_by(kernel));
                let want = if layout.is_read_by(kernel) { layout } else { TernaryLayout::Bits2 };
                let weight = readable.weight().unwrap();
                assert_eq!(weight.layout(), want, "{} words, {}", layout.name(), kernel.name());
                assert_eq!((readable.words.id, readable.scales.id), ids);
                let back = weight.to_matrix().unwrap();
                assert_eq!(back.to_codes(), codes, "{} words, {}", layout.name(), kernel.name());
                assert_eq!(back.scales(), two_bit.scales());
            }
        }
    }
}
