//! Writes at the encoder's limit (issue 13, item 5): the pipelined encoder
//! (`src/fs/core/encoder.rs`) on a real mount commits exactly the bytes written —
//! every dtype, small-chunk arrays the saves reuse, out-of-order writes, a rewrite of
//! ranges already encoded, a truncation while writing, a writer that closes early —
//! checked through the mount with numpy, then in the store with atlas-python 0.10
//! after the daemon exits (the store is local, so the flush links the encoded
//! blocks into place as the sidecars: `store/array_file/link.rs`). Sizes are
//! ~10–20 MiB, so several 8 MiB blocks are encoded in the background per file.
//!
//! Run: `cargo test --release --test bigwrite`

mod common;

use common::mount::Mounted;

#[test]
fn pipelined_encoder_commits_exactly_what_was_written() {
    let tmp = tempfile::Builder::new().prefix("atlasfs-bigwrite").tempdir().unwrap();
    let (store, mp) = (tmp.path().join("store"), tmp.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    common::run_python("bigwrite_check.py", &["prep", store.to_str().unwrap()]);
    let m = Mounted::start(&store, &mp, &[]);
    let out = common::run_python("bigwrite_check.py", &["write", m.mp().to_str().unwrap()]);
    let log = m.log_text();
    m.unmount();
    assert!(log.contains("rejected a written .npy"), "the short write was refused with a log line:\n{log}");
    let checked = common::run_python("bigwrite_check.py", &["check", store.to_str().unwrap()]);
    assert_eq!(checked.trim(), "ok", "{out}");
}
