//! 64-byte aligned byte buffers, so SIMD loads of packed weights and activations never split a cache line.

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

/// A zero-initialised, 64-byte aligned, fixed-length byte buffer.
#[derive(Clone)]
pub struct AlignedBytes {
    lines: Vec<CacheLine>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        Self { lines: vec![CacheLine([0; 64]); len.div_ceil(64)], len }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `lines` is `lines.len() * 64 >= len` initialised bytes; CacheLine is repr(C) plain bytes.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }

    /// The bytes viewed as `i8`.
    pub fn as_i8(&self) -> &[i8] {
        // SAFETY: u8 and i8 have the same size, alignment and validity.
        unsafe { std::slice::from_raw_parts(self.as_slice().as_ptr().cast::<i8>(), self.len) }
    }

    /// The bytes viewed as `i8`, mutably.
    pub fn as_i8_mut(&mut self) -> &mut [i8] {
        let len = self.len;
        // SAFETY: u8 and i8 have the same size, alignment and validity.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_slice().as_mut_ptr().cast::<i8>(), len) }
    }
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBytes").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBytes::zeroed(130);
        assert_eq!(b.len(), 130);
        assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
        assert!(b.as_slice().iter().all(|&v| v == 0));
        b.as_i8_mut()[129] = -1;
        assert_eq!(b.as_slice()[129], 255);
    }
}
