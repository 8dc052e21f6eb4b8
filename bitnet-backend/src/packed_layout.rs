//! The layout of a packed weight's words as a module field that its record saves.
//!
//! The words of a [`crate::PackedTernary`] mean different codes in the 2-bit and the five-trit layout, and for
//! some shapes the two word tensors have the same size (up to 256 columns both are 16 words a row), so a record
//! that did not say which layout it holds could load into a skeleton of the other one and compute garbage without
//! an error. [`PackedLayout`] saves the layout's name next to the words, and loading adopts the name the record
//! carries, whatever layout the skeleton was built in: a record always means what it meant when it was saved.
//! Records written before the name was saved hold an empty entry in its place (the field existed, unsaved), and
//! every weight packed then was 2-bit.

use bitnet_kernels::{KernelError, TernaryLayout};
use burn::module::{
    AutodiffModule, Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use core::marker::PhantomData;

/// The layout of a packed weight's words, or the name a record gave that this build does not know (a newer
/// build wrote it, or the file is damaged). Generic over the backend only so that burn's module derive treats it
/// as a module and saves its record.
#[derive(Clone, Debug)]
pub struct PackedLayout<B: Backend> {
    known: Result<TernaryLayout, String>,
    backend: PhantomData<B>,
}

impl<B: Backend> PackedLayout<B> {
    /// Words in `layout`.
    pub fn new(layout: TernaryLayout) -> Self {
        Self { known: Ok(layout), backend: PhantomData }
    }

    /// The layout, or the error a record with an unknown layout name gets.
    pub fn layout(&self) -> Result<TernaryLayout, KernelError> {
        self.known.clone().map_err(KernelError::UnknownLayout)
    }

    /// The name saved in records: what `BITNET_TERNARY_LAYOUT` accepts ([`TernaryLayout::parse`]).
    fn record_name(layout: TernaryLayout) -> &'static str {
        match layout {
            TernaryLayout::Bits2 => "2bit",
            TernaryLayout::Trits5 => "trits5",
        }
    }

    /// What a record's name means: no name is a record from before the name was saved, which is 2-bit.
    fn from_record(name: Option<String>) -> Self {
        let known = match name {
            None => Ok(TernaryLayout::Bits2),
            Some(name) => TernaryLayout::parse(&name).map_err(|_| name),
        };
        Self { known, backend: PhantomData }
    }
}

impl<B: Backend> Module<B> for PackedLayout<B> {
    /// The layout's name (`None` in records saved before it was).
    type Record = Option<String>;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        devices
    }

    fn fork(self, _device: &B::Device) -> Self {
        self
    }

    fn to_device(self, _device: &B::Device) -> Self {
        self
    }

    fn visit<V: ModuleVisitor<B>>(&self, _visitor: &mut V) {}

    fn map<M: ModuleMapper<B>>(self, _mapper: &mut M) -> Self {
        self
    }

    /// Adopts the record's layout: the loaded words are in it, whatever the skeleton was built in.
    fn load_record(self, record: Self::Record) -> Self {
        Self::from_record(record)
    }

    fn into_record(self) -> Self::Record {
        Some(match self.known {
            Ok(layout) => Self::record_name(layout).to_string(),
            Err(name) => name,
        })
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for PackedLayout<B> {
    type InnerModule = PackedLayout<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        PackedLayout { known: self.known.clone(), backend: PhantomData }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        PackedLayout { known: module.known, backend: PhantomData }
    }
}

impl<B: Backend> ModuleDisplayDefault for PackedLayout<B> {
    fn content(&self, content: Content) -> Option<Content> {
        let name = match &self.known {
            Ok(layout) => layout.name().to_string(),
            Err(name) => format!("unrecognized {name:?}"),
        };
        content.add_formatted(&name).optional()
    }
}

impl<B: Backend> ModuleDisplay for PackedLayout<B> {}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;

    #[test]
    fn record_names_round_trip_and_old_records_are_2_bit() {
        type L = PackedLayout<burn::backend::Flex>;
        for layout in [TernaryLayout::Bits2, TernaryLayout::Trits5] {
            let name = L::new(layout).into_record();
            assert_eq!(L::from_record(name).layout().unwrap(), layout);
        }
        assert_eq!(L::from_record(None).layout().unwrap(), TernaryLayout::Bits2);
        let unknown = L::from_record(Some("nine-trit".to_string()));
        assert!(matches!(unknown.layout(), Err(KernelError::UnknownLayout(name)) if name == "nine-trit"));
    }
}
