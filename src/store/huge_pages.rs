//! Buffers for decoded blocks, backed by transparent huge pages where the kernel
//! offers them.
//!
//! A cold read decodes every block into fresh memory (the cache's buffer pool is
//! empty after a mount), and the kernel faults that memory in 4 KiB at a time:
//! 2,048 faults per 8 MiB block, each charged to the memory cgroup and zeroed
//! separately. `perf` of a cold `np.load` of a 1,000-dataset stacked file put a
//! sixth of the daemon's CPU there (`exc_page_fault`, `clear_page_erms`, memcg
//! charges). Asking for huge pages (`madvise(MADV_HUGEPAGE)`, which the usual
//! `transparent_hugepage=madvise` setting requires) before the first touch makes
//! it 4 faults of 2 MiB: 10–18 ms less daemon CPU per cold read of that file
//! (measured with glibc's `glibc.malloc.hugetlb=1`, which does the same).
//!
//! Only the 2 MiB-aligned interior of a buffer is advised; smaller buffers are
//! left alone. The advice is a hint: a kernel without THP, or with it off,
//! ignores it and nothing else changes.

/// Huge pages are this large on x86-64 and (with 4 KiB base pages) arm64.
const HUGE: usize = 2 << 20;

/// An empty `Vec` with room for `n` bytes, its memory advised to use huge pages.
pub(crate) fn vec_with_capacity(n: usize) -> Vec<u8> {
    let v: Vec<u8> = Vec::with_capacity(n);
    if n >= 2 * HUGE {
        let start = v.as_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + n) / HUGE * HUGE);
        if lo < hi {
            // SAFETY: [lo, hi) lies inside the allocation just made and not touched
            // yet; MADV_HUGEPAGE changes how it is faulted in, never its contents.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn advised_buffers_are_ordinary_vectors() {
        for n in [0, 1, 4 << 20, (8 << 20) + 123] {
            let mut v = super::vec_with_capacity(n);
            assert!(v.capacity() >= n);
            v.resize(n, 7);
            assert!(v.iter().all(|&b| b == 7));
        }
    }
}
