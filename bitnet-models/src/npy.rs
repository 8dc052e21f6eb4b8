//! A minimal writer of NumPy `.npy` files (format version 1.0, little-endian float32, C order).

use std::io::Write;

/// Writes `values` with `shape` as a float32 `.npy` file to `out`.
pub fn write_f32_npy(mut out: impl Write, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for v in values {
        out.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

/// Writes `values` with `shape` as a float32 `.npy` file at `path`, atomically (a failed write, e.g. to a full
/// device, is an error and leaves no partial file).
pub fn save_f32_npy(path: &std::path::Path, shape: &[usize], values: &[f32]) -> crate::Result<()> {
    let mut file = crate::io::AtomicFile::create(path)?;
    write_f32_npy(&mut file, shape, values).map_err(|cause| crate::ModelError::Io { path: path.into(), cause })?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_data_follows() {
        let mut buf = Vec::new();
        write_f32_npy(&mut buf, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(&buf[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([buf[8], buf[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&buf[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        assert_eq!(buf.len(), 10 + header_len + 24);
        assert_eq!(&buf[10 + header_len..10 + header_len + 4], &1.0f32.to_le_bytes());
    }
}
