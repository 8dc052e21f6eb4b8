//! Transparent huge pages for the buffers decode streams every token.
//!
//! Decode reads every weight once per token (1.2 GB for a 2B model with a 16-bit head). With 4 KiB pages that
//! is a TLB miss, and a restart of the hardware prefetcher's stream, every 4 KiB; with 2 MiB pages the same
//! reads need 512 times fewer translations. Linux hands out transparent huge pages either to every anonymous
//! mapping (`/sys/kernel/mm/transparent_hugepage/enabled` = `always`) or, in the `madvise` mode most
//! distributions ship, only to ranges marked with `MADV_HUGEPAGE`. So the buffers decode streams are marked
//! before their first write (the page faults of that write then map huge pages directly):
//!
//! * one large buffer (a 16-bit head, the bandwidth probe) through [`huge_page_vec`];
//! * the many small ones (a 2B model's 210 ternary matrices of 0.4-4.4 MB each, too small to hold whole huge
//!   pages of their own) through [`HugePageBytes`], which carves them one after the other out of shared
//!   64 MiB chunks, so they share huge pages.
//!
//! Measured in `docs/PERFORMANCE.md` ("Huge pages").
//!
//! The advice changes no contents and can fail harmlessly (a kernel without THP keeps 4 KiB pages); on other
//! systems it is a no-op.

/// The huge page size of x86-64 and of aarch64 with 4 KiB base pages.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// `len` copies of `value` in a vector whose whole 2 MiB pages were marked for transparent huge pages before
/// anything was written to them. Vectors under one huge page are allocated as usual.
pub fn huge_page_vec<T: Clone>(value: T, len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    let spare = v.spare_capacity_mut();
    advise_huge_pages(spare.as_ptr().cast::<u8>(), std::mem::size_of_val(spare));
    v.resize(len, value);
    v
}

/// Bytes carved out of a shared chunk of huge-page memory: the storage of a weight that lives as long as its
/// model (`AsRef<[u8]>`, so it can own a `bytes::Bytes` that burn reads in place).
///
/// Chunks are [`CHUNK_BYTES`], 2 MiB-aligned, and handed out front to back in 64-byte-aligned pieces; a chunk
/// is freed when the last piece of it is dropped (the allocator keeps only a weak reference to the chunk it
/// carves from). A piece larger than half a chunk gets a chunk of its own size. Freed pieces are not reused, so
/// this is for buffers that live as long as their neighbours (a model's weights), not for temporaries.
pub struct HugePageBytes {
    chunk: std::sync::Arc<Chunk>,
    start: usize,
    len: usize,
}

/// The size of the chunks [`HugePageBytes`] carves pieces from.
pub const CHUNK_BYTES: usize = 32 * HUGE_PAGE_BYTES;

/// Alignment of every piece (one cache line, as [`crate::aligned::AlignedBytes`]).
const PIECE_ALIGN: usize = 64;

impl HugePageBytes {
    /// `len` bytes, zeroed and then written by `fill`.
    pub fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        use std::sync::{Arc, Mutex, Weak};
        /// The chunk pieces are carved from, and the offset of its first free byte.
        static CURRENT: Mutex<(Weak<Chunk>, usize)> = Mutex::new((Weak::new(), 0));
        let padded = len.next_multiple_of(PIECE_ALIGN);
        let (chunk, start) = {
            let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            let (live, free) = (current.0.upgrade(), current.1);
            match live {
                Some(chunk) if chunk.len - free >= padded => {
                    current.1 += padded;
                    (chunk, free)
                }
                _ if padded > CHUNK_BYTES / 2 => (Arc::new(Chunk::new(padded)), 0),
                live => {
                    // The rest of the chunk is never handed out: give back the pages its last piece's huge
                    // page brought in beyond that piece.
                    if let Some(old) = live {
                        old.release_from(free);
                    }
                    let chunk = Arc::new(Chunk::new(CHUNK_BYTES));
                    *current = (Arc::downgrade(&chunk), padded);
                    (chunk, 0)
                }
            }
        };
        // SAFETY: `[start, start + len)` lies inside the chunk's allocation and was handed out to this piece
        // alone (the lock above moved the free offset past it), so no other reference to it exists; the bytes
        // are zeroed before a slice of them is formed.
        let piece = unsafe {
            let at = chunk.ptr.add(start);
            at.write_bytes(0, len);
            std::slice::from_raw_parts_mut(at, len)
        };
        fill(piece);
        Self { chunk, start, len }
    }
}

impl AsRef<[u8]> for HugePageBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the piece lies inside the chunk this value keeps alive, was initialised by `filled`, and is
        // never written again (no `&mut` to it exists after `filled` returned).
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.add(self.start), self.len) }
    }
}

impl std::fmt::Debug for HugePageBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugePageBytes({} bytes)", self.len)
    }
}

/// A 2 MiB-aligned allocation, marked for huge pages and left untouched until pieces of it are written.
struct Chunk {
    ptr: *mut u8,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: the chunk is plain memory; its pieces are written once, each through the one `&mut` handed to
// `filled`, and only read afterwards.
unsafe impl Send for Chunk {}
// SAFETY: as above: shared access only ever reads.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(len: usize) -> Self {
        // Fails only for a length within 2 MiB of `isize::MAX`, as `Vec::with_capacity` would.
        let layout =
            std::alloc::Layout::from_size_align(len.max(1), HUGE_PAGE_BYTES).expect("chunk size overflows a layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        advise_huge_pages(ptr, len);
        Self { ptr, len, layout }
    }

    /// Hands the pages of `[from, len)` back to the OS (rounded inwards to 64 KiB, a multiple of every base
    /// page size): the caller guarantees that no piece lies there and none will be handed out there.
    fn release_from(&self, from: usize) {
        const UNIT: usize = 64 * 1024;
        let first = from.next_multiple_of(UNIT);
        if first < self.len {
            #[cfg(target_os = "linux")]
            // SAFETY: the range lies inside this chunk's allocation and holds no piece (the caller's
            // guarantee), so nothing reads or writes it; MADV_DONTNEED leaves it readable as zeros.
            unsafe {
                libc::madvise(self.ptr.add(first).cast(), self.len - first, libc::MADV_DONTNEED);
            }
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Marks the whole 2 MiB-aligned pages inside `[start, start + len)` for transparent huge pages (Linux
/// `madvise(MADV_HUGEPAGE)`). Purely advisory: it reads and writes nothing, and its failure is ignored.
fn advise_huge_pages(start: *const u8, len: usize) {
    let first = (start as usize).next_multiple_of(HUGE_PAGE_BYTES);
    let end = (start as usize).saturating_add(len) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: MADV_HUGEPAGE only sets a flag on the mappings of the range (which lies inside one allocation of
    // this process): it neither reads nor changes their contents, and an error leaves everything as it was.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_values_at_every_size() {
        for len in [0, 1, 1000, HUGE_PAGE_BYTES / 8 + 3, 3 * HUGE_PAGE_BYTES / 8] {
            let v = huge_page_vec(7u64, len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn pieces_hold_their_bytes_and_share_chunks() {
        let pieces: Vec<HugePageBytes> =
            (0..50usize).map(|i| HugePageBytes::filled(1000 + i * 7919, |b| b.fill(i as u8))).collect();
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(p.as_ref().len(), 1000 + i * 7919);
            assert!(p.as_ref().iter().all(|&v| v == i as u8));
            assert_eq!(p.as_ref().as_ptr() as usize % PIECE_ALIGN, 0);
        }
        assert!(std::sync::Arc::ptr_eq(&pieces[0].chunk, &pieces[1].chunk));
        let big = HugePageBytes::filled(CHUNK_BYTES + 5, |b| b[CHUNK_BYTES + 4] = 9);
        assert_eq!(big.as_ref()[CHUNK_BYTES + 4], 9);
        assert_eq!(big.as_ref().as_ptr() as usize % HUGE_PAGE_BYTES, 0);
    }

    /// On Linux with THP available, a marked 8 MiB buffer is backed by at least one huge page once written.
    /// (x86-64 only: the aarch64 tests run under qemu-user, whose /proc/self/smaps lists the emulator's own
    /// mappings at host addresses.)
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn large_buffers_get_huge_pages_where_the_kernel_offers_them() {
        let setting = |name: &str| std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{name}"));
        let mode = setting("enabled").unwrap_or_default();
        if !mode.contains("[madvise]") && !mode.contains("[always]")
            || setting("defrag").is_ok_and(|d| d.contains("[never]"))
        {
            // THP disabled, or a huge page only when one happens to be free: nothing certain to observe.
            return;
        }
        let v = huge_page_vec(1u8, 4 * HUGE_PAGE_BYTES);
        // The advice covers the whole huge pages inside the buffer: look at the mapping of the first one.
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE_PAGE_BYTES);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        let mut huge_kb = 0u64;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-') && !r.ends_with(':')) {
                let (lo, hi) = range.split_once('-').expect("range");
                let (lo, hi) =
                    (usize::from_str_radix(lo, 16).expect("hex"), usize::from_str_radix(hi, 16).expect("hex"));
                inside = lo <= start && start < hi;
            } else if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    huge_kb = kb.trim().trim_end_matches("kB").trim().parse().expect("kB");
                }
            }
        }
        assert!(huge_kb >= 2048, "no huge page behind the buffer ({huge_kb} kB)");
        drop(v);
    }
}
