//! The `atlasfs` command: manage an atlas store and move arrays in and out as `.npy`.

mod cli;

fn main() -> std::process::ExitCode {
    // glibc gives threads that meet on a locked heap arenas of their own, up to 8 per
    // core, and each arena keeps the ~8 MiB block buffers freed into it: a 1 GiB read
    // held ~100 MiB more than it used (fetch and decode run on the blocking pool's many
    // threads). Two arenas keep that waste small; allocations are few and large, so
    // they rarely wait for each other. Set before any thread starts.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    // A fixed mmap threshold: glibc otherwise raises it to the size of each large
    // buffer freed, and the ~8–16 MiB compressed blocks a remote read-ahead streams
    // then land in an arena and stay there once freed (a cold 512 MiB read over S3:
    // peak RSS 335–351 MiB, 274–291 MiB with this, budget 256 MiB).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    cli::main()
}
