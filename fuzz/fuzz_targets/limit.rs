//! A global allocator that aborts on any single allocation above [`LIMIT`], so that
//! an input which makes a decoder allocate from a size it read (instead of from
//! the bytes it was given) is a crash libFuzzer saves, with or without a sanitizer
//! (`-malloc_limit_mb` needs a sanitizer's malloc hooks; this does not).

use std::alloc::{GlobalAlloc, Layout, System};

/// Fuzz inputs are at most a few hundred KiB; nothing honest needs more than this.
pub const LIMIT: usize = 256 << 20;

pub struct Limited;

// SAFETY: forwards to the system allocator unchanged, after a size check.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > LIMIT {
        // No formatting here: that would allocate inside the allocator.
        let msg = b"==fuzz== allocation above the fuzz limit (256 MiB): unbounded allocation\n";
        // SAFETY: write(2) of a static buffer to stderr.
        unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
        std::process::abort();
    }
}

unsafe extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, n: usize) -> isize;
}

#[global_allocator]
static GLOBAL: Limited = Limited;
