//! GGUF metadata values, one type for reading and writing.
//!
//! Scalars are held by value. Arrays keep their elements in GGUF's own little-endian encoding
//! ([`GgufArray`]): an array read from a file is a shared slice of the file's mapping (a 100 MB token list costs
//! no memory beyond the mapping), and an array built for writing owns its encoded bytes. Elements are decoded
//! when they are iterated.

pub use crate::io::SharedBytes;

/// Metadata value types, with their GGUF type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// u8 (id 0).
    U8,
    /// i8 (id 1).
    I8,
    /// u16 (id 2).
    U16,
    /// i16 (id 3).
    I16,
    /// u32 (id 4).
    U32,
    /// i32 (id 5).
    I32,
    /// f32 (id 6).
    F32,
    /// bool, one byte (id 7).
    Bool,
    /// UTF-8 string: u64 length then the bytes (id 8).
    String,
    /// Array: element type id (u32), u64 count, then the elements (id 9).
    Array,
    /// u64 (id 10).
    U64,
    /// i64 (id 11).
    I64,
    /// f64 (id 12).
    F64,
}

impl ValueType {
    /// The type of id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            Self::U8 => 0,
            Self::I8 => 1,
            Self::U16 => 2,
            Self::I16 => 3,
            Self::U32 => 4,
            Self::I32 => 5,
            Self::F32 => 6,
            Self::Bool => 7,
            Self::String => 8,
            Self::Array => 9,
            Self::U64 => 10,
            Self::I64 => 11,
            Self::F64 => 12,
        }
    }

    /// Bytes of one value of a fixed-size type (`None` for strings and arrays).
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            Self::U8 | Self::I8 | Self::Bool => Some(1),
            Self::U16 | Self::I16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::String | Self::Array => None,
        }
    }
}

/// An array value: `len` elements of `elem` in GGUF encoding.
#[derive(Debug, Clone)]
pub struct GgufArray {
    elem: ValueType,
    len: usize,
    bytes: SharedBytes,
}

/// A metadata value.
#[derive(Debug, Clone)]
pub enum GgufValue {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f32.
    F32(f32),
    /// f64.
    F64(f64),
    /// bool.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array.
    Array(GgufArray),
}

/// Reads little-endian fixed-size values from a byte slice.
fn read<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

impl GgufValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F32(_) => ValueType::F32,
            Self::F64(_) => ValueType::F64,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
        }
    }

    /// An integer value of any integer type, widened (`None` for other types).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float value (f32 or f64), widened.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short text for listings: scalars in full (strings cut after `max_chars` characters), arrays by type and
    /// length.
    pub fn describe(&self, max_chars: usize) -> String {
        match self {
            Self::String(s) => match s.char_indices().nth(max_chars) {
                Some((cut, _)) => format!("{:?}... ({} characters)", &s[..cut], s.chars().count()),
                None => format!("{s:?}"),
            },
            Self::Array(a) => format!("[{:?}; {}]", a.elem, a.len),
            Self::F32(v) => v.to_string(),
            Self::F64(v) => v.to_string(),
            Self::Bool(v) => v.to_string(),
            other => other.as_i128().map(|v| v.to_string()).unwrap_or_default(),
        }
    }

    /// Appends the GGUF encoding of the value (without its type id) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::U8(v) => out.push(*v),
            Self::I8(v) => out.extend(v.to_le_bytes()),
            Self::U16(v) => out.extend(v.to_le_bytes()),
            Self::I16(v) => out.extend(v.to_le_bytes()),
            Self::U32(v) => out.extend(v.to_le_bytes()),
            Self::I32(v) => out.extend(v.to_le_bytes()),
            Self::U64(v) => out.extend(v.to_le_bytes()),
            Self::I64(v) => out.extend(v.to_le_bytes()),
            Self::F32(v) => out.extend(v.to_le_bytes()),
            Self::F64(v) => out.extend(v.to_le_bytes()),
            Self::Bool(v) => out.push(*v as u8),
            Self::String(s) => encode_str(out, s),
            Self::Array(a) => {
                out.extend(a.elem.id().to_le_bytes());
                out.extend((a.len as u64).to_le_bytes());
                out.extend(a.bytes.as_slice());
            }
        }
    }

    /// Decodes one value of `ty` at the start of `bytes`; returns it and its encoded length. `bytes` must hold
    /// a value that [`GgufArray::parse`] (or the reader) already checked.
    fn decode(ty: ValueType, bytes: &SharedBytes) -> (Self, usize) {
        let b = bytes.as_slice();
        let v = match ty {
            ValueType::U8 => Self::U8(b[0]),
            ValueType::I8 => Self::I8(b[0] as i8),
            ValueType::U16 => Self::U16(u16::from_le_bytes(read(b, 0))),
            ValueType::I16 => Self::I16(i16::from_le_bytes(read(b, 0))),
            ValueType::U32 => Self::U32(u32::from_le_bytes(read(b, 0))),
            ValueType::I32 => Self::I32(i32::from_le_bytes(read(b, 0))),
            ValueType::U64 => Self::U64(u64::from_le_bytes(read(b, 0))),
            ValueType::I64 => Self::I64(i64::from_le_bytes(read(b, 0))),
            ValueType::F32 => Self::F32(f32::from_le_bytes(read(b, 0))),
            ValueType::F64 => Self::F64(f64::from_le_bytes(read(b, 0))),
            ValueType::Bool => Self::Bool(b[0] != 0),
            ValueType::String => {
                let len = u64::from_le_bytes(read(b, 0)) as usize;
                let s = std::str::from_utf8(&b[8..8 + len]).unwrap_or_default().to_string();
                return (Self::String(s), 8 + len);
            }
            ValueType::Array => {
                let elem = ValueType::from_id(u32::from_le_bytes(read(b, 0))).unwrap_or(ValueType::U8);
                let len = u64::from_le_bytes(read(b, 4)) as usize;
                let size = GgufArray::encoded_size(elem, len, &b[12..]).unwrap_or_default();
                let inner = bytes.slice(12..12 + size).unwrap_or_else(|| SharedBytes::from_vec(vec![]));
                return (Self::Array(GgufArray { elem, len, bytes: inner }), 12 + size);
            }
        };
        (v, ty.fixed_size().unwrap_or_default())
    }
}

fn encode_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Largest nesting of arrays in arrays the reader accepts.
const MAX_ARRAY_DEPTH: usize = 2;

impl GgufArray {
    /// An array of strings, encoded for writing.
    pub fn from_strings<S: AsRef<str>>(items: &[S]) -> Self {
        let mut bytes = Vec::new();
        for s in items {
            encode_str(&mut bytes, s.as_ref());
        }
        Self { elem: ValueType::String, len: items.len(), bytes: SharedBytes::from_vec(bytes) }
    }

    /// An array of i32, encoded for writing.
    pub fn from_i32s(items: &[i32]) -> Self {
        let bytes = items.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { elem: ValueType::I32, len: items.len(), bytes: SharedBytes::from_vec(bytes) }
    }

    /// An array of f32, encoded for writing.
    pub fn from_f32s(items: &[f32]) -> Self {
        let bytes = items.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { elem: ValueType::F32, len: items.len(), bytes: SharedBytes::from_vec(bytes) }
    }

    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the encoded elements.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The elements, decoded one by one.
    pub fn iter(&self) -> impl Iterator<Item = GgufValue> + '_ {
        let mut at = 0usize;
        (0..self.len).map(move |_| {
            let rest = self.bytes.slice(at..self.bytes.len()).unwrap_or_else(|| SharedBytes::from_vec(vec![0; 16]));
            let (v, size) = GgufValue::decode(self.elem, &rest);
            at += size;
            v
        })
    }

    /// The elements of a string array, borrowed from the encoded bytes (`None` for another element type).
    pub fn strings(&self) -> Option<impl Iterator<Item = &str> + '_> {
        (self.elem == ValueType::String).then(|| {
            let bytes = self.bytes.as_slice();
            let mut at = 0usize;
            (0..self.len).map(move |_| {
                let len = u64::from_le_bytes(read(bytes, at)) as usize;
                let s = std::str::from_utf8(&bytes[at + 8..at + 8 + len]).unwrap_or_default();
                at += 8 + len;
                s
            })
        })
    }

    /// The elements of an integer array, widened (`None` for another element type).
    pub fn integers(&self) -> Option<impl Iterator<Item = i128> + '_> {
        let ok =
            self.elem.fixed_size().is_some() && !matches!(self.elem, ValueType::F32 | ValueType::F64 | ValueType::Bool);
        ok.then(|| self.iter().map(|v| v.as_i128().unwrap_or_default()))
    }

    /// The size in bytes of `len` encoded elements of `elem` at the start of `bytes`, checking every length
    /// against the bytes that remain (and that strings are UTF-8): `Err` names the problem.
    pub(crate) fn encoded_size(elem: ValueType, len: usize, bytes: &[u8]) -> Result<usize, String> {
        Self::encoded_size_at_depth(elem, len, bytes, 0)
    }

    fn encoded_size_at_depth(elem: ValueType, len: usize, bytes: &[u8], depth: usize) -> Result<usize, String> {
        if let Some(size) = elem.fixed_size() {
            let total = len.checked_mul(size).filter(|&t| t <= bytes.len()).ok_or_else(|| {
                format!("an array of {len} {elem:?} values needs more than the {} bytes left", bytes.len())
            })?;
            return Ok(total);
        }
        let mut at = 0usize;
        for i in 0..len {
            let rest = &bytes[at..];
            match elem {
                ValueType::String => {
                    if rest.len() < 8 {
                        return Err(format!("array string {i} is truncated"));
                    }
                    let n = u64::from_le_bytes(read(rest, 0));
                    if n > (rest.len() - 8) as u64 {
                        return Err(format!("array string {i} of {n} bytes runs past the end"));
                    }
                    let n = n as usize;
                    std::str::from_utf8(&rest[8..8 + n]).map_err(|_| format!("array string {i} is not UTF-8"))?;
                    at += 8 + n;
                }
                ValueType::Array => {
                    if depth >= MAX_ARRAY_DEPTH {
                        return Err("arrays nested too deeply".into());
                    }
                    if rest.len() < 12 {
                        return Err(format!("nested array {i} is truncated"));
                    }
                    let inner = ValueType::from_id(u32::from_le_bytes(read(rest, 0)))
                        .ok_or_else(|| format!("nested array {i} has an unknown element type"))?;
                    let n = u64::from_le_bytes(read(rest, 4));
                    let n = usize::try_from(n).map_err(|_| format!("nested array {i} length {n} is too large"))?;
                    at += 12 + Self::encoded_size_at_depth(inner, n, &rest[12..], depth + 1)?;
                }
                _ => unreachable!("fixed-size types return above"),
            }
        }
        Ok(at)
    }

    /// An array of `len` elements of `elem` whose encoding starts `bytes` (already checked by
    /// [`GgufArray::encoded_size`]); returns it and its size.
    pub(crate) fn parse(elem: ValueType, len: usize, bytes: &SharedBytes) -> Result<(Self, usize), String> {
        let size = Self::encoded_size(elem, len, bytes.as_slice())?;
        let slice = bytes.slice(0..size).ok_or("array bytes out of range")?;
        Ok((Self { elem, len, bytes: slice }, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_encode_and_decode() {
        let a = GgufArray::from_strings(&["a", "ĠHello", ""]);
        assert_eq!(a.strings().unwrap().collect::<Vec<_>>(), vec!["a", "ĠHello", ""]);
        let mut out = Vec::new();
        GgufValue::Array(a.clone()).encode(&mut out);
        let (b, size) = GgufArray::parse(ValueType::String, 3, &SharedBytes::from_vec(out[12..].to_vec())).unwrap();
        assert_eq!(size, out.len() - 12);
        assert_eq!(b.strings().unwrap().collect::<Vec<_>>(), vec!["a", "ĠHello", ""]);
        let ints = GgufArray::from_i32s(&[1, -2, 3]);
        assert_eq!(ints.integers().unwrap().collect::<Vec<_>>(), vec![1, -2, 3]);
        assert!(ints.strings().is_none());
    }

    #[test]
    fn hostile_arrays_are_rejected_without_allocating() {
        // A billion u32 values in 10 bytes.
        assert!(GgufArray::encoded_size(ValueType::U32, 1_000_000_000, &[0; 10]).is_err());
        // A string longer than the rest.
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend(b"abc");
        assert!(GgufArray::encoded_size(ValueType::String, 1, &bytes).is_err());
        // Invalid UTF-8.
        let mut bytes = 2u64.to_le_bytes().to_vec();
        bytes.extend([0xff, 0xfe]);
        assert!(GgufArray::encoded_size(ValueType::String, 1, &bytes).is_err());
        // Nesting.
        let mut nested = Vec::new();
        for _ in 0..4 {
            nested.extend(9u32.to_le_bytes());
            nested.extend(1u64.to_le_bytes());
        }
        assert!(GgufArray::encoded_size(ValueType::Array, 1, &nested).unwrap_err().contains("nested"));
    }
}
