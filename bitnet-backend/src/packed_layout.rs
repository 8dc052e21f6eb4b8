//! The layout of a packed weight's words as its record saves it.
//!
//! The words of a [`crate::PackedTernary`] mean different codes in the 2-bit and the five-trit layout, and for
//! some shapes the two word tensors have the same size (up to 256 columns both are 16 words a row), so a record
//! that did not say which layout it holds could load into a skeleton of the other one and compute garbage without
//! an error. The record saves the layout's name next to the words, and loading adopts the name the record
//! carries, whatever layout the skeleton was built in: a record always means what it meant when it was saved.
//! Records written before the name was saved hold an empty entry in its place, and every weight packed then was
//! 2-bit.

use bitnet_kernels::{KernelError, TernaryLayout};

/// The layout of a packed weight's words, or the name a record gave that this build does not know (a newer
/// build wrote it, or the file is damaged).
#[derive(Clone)]
pub(crate) struct PackedLayout(Result<TernaryLayout, String>);

impl PackedLayout {
    /// Words in `layout`.
    pub(crate) fn new(layout: TernaryLayout) -> Self {
        Self(Ok(layout))
    }

    /// The layout, or the error a record with an unknown layout name gets.
    pub(crate) fn layout(&self) -> Result<TernaryLayout, KernelError> {
        self.0.clone().map_err(KernelError::UnknownLayout)
    }

    /// What a record's entry means: no name is a record from before the name was saved, which is 2-bit.
    pub(crate) fn from_record(name: Option<String>) -> Self {
        Self(match name {
            None => Ok(TernaryLayout::Bits2),
            Some(name) => TernaryLayout::parse(&name).map_err(|_| name),
        })
    }

    /// The record's entry: the layout's name, what `BITNET_TERNARY_LAYOUT` accepts ([`TernaryLayout::parse`]), or
    /// the unknown name the record held.
    pub(crate) fn into_record(self) -> Option<String> {
        Some(match self.0 {
            Ok(TernaryLayout::Bits2) => "2bit".to_string(),
            Ok(TernaryLayout::Trits5) => "trits5".to_string(),
            Err(name) => name,
        })
    }
}

/// The layout's name in module displays.
impl std::fmt::Debug for PackedLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(layout) => f.write_str(layout.name()),
            Err(name) => write!(f, "unrecognized {name:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_round_trip_and_old_records_are_2_bit() {
        for layout in [TernaryLayout::Bits2, TernaryLayout::Trits5] {
            let name = PackedLayout::new(layout).into_record();
            assert_eq!(PackedLayout::from_record(name).layout().unwrap(), layout);
        }
        assert_eq!(PackedLayout::from_record(None).layout().unwrap(), TernaryLayout::Bits2);
        let unknown = PackedLayout::from_record(Some("nine-trit".to_string()));
        assert!(matches!(unknown.layout(), Err(KernelError::UnknownLayout(name)) if name == "nine-trit"));
        assert_eq!(unknown.into_record().as_deref(), Some("nine-trit"));
    }
}
