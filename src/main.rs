//! The `atlasfs` command: manage an atlas store and move arrays in and out as `.npy`.

mod cli;

fn main() -> std::process::ExitCode {
    // Decoded blocks are 8 MiB buffers, allocated and freed by the hundred. glibc raises
    // its mmap threshold after the first is freed, so later ones come from the heap and
    // are not given back: the daemon's RSS then grew ~150 MiB past the cache budget on a
    // 1 GiB read. A fixed threshold keeps big buffers mmapped, returned when freed.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    cli::main()
}
