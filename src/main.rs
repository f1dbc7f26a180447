//! The `atlasfs` command: manage an atlas store and move arrays in and out as `.npy`.

mod cli;

fn main() -> std::process::ExitCode {
    // glibc gives threads that meet on a locked heap arenas of their own, up to 8 per
    // core, and each arena keeps the ~8 MiB block buffers freed into it: a 1 GiB read
    // held ~100 MiB more than it used (fetch and decode run on the blocking pool's many
    // threads). Two arenas keep that waste small; allocations are few and large, so
    // they rarely wait for each other. Set before any thread starts.
    // No fixed mmap threshold (M_MMAP_THRESHOLD), though it would return freed
    // multi-MiB buffers to the OS at once: a fresh mapping for every such buffer
    // made a cold 1 GiB np.load ~2× slower (docs/reliability.md) and a large
    // np.save 1.5× slower (4 MiB threshold, 2026-12-07). Memory is bounded by
    // reusing block buffers instead (store/cache.rs BufferPool).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    cli::main()
}
