//! The FUSE-over-io_uring probe (examples/fuse_uring_probe.rs, issue 13 item 2) serves
//! the right bytes in each transport: a real mount per mode, the directory listed and
//! every file read back and decoded by hand (not with the probe's own encoder); in the
//! io_uring modes the requests must really have gone over the ring, and
//! `enable_uring` must be as it was before. This kernel (the CI machine's) has FUSE over
//! io_uring: a failed registration fails the test, saying so.

#[path = "../examples/fuse_uring_probe.rs"]
#[allow(dead_code)]
mod probe;

mod common;

use std::sync::atomic::Ordering;

use probe::{Mode, Options, Probe};

const FILES: usize = 12;

/// One probe per process (its unmount guard and `enable_uring` are process-wide).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_files(mnt: &std::path::Path, mode: Mode) {
    let mut names: Vec<String> = std::fs::read_dir(mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut want: Vec<String> = (0..FILES).map(|i| format!("a{i}.npy")).collect();
    want.sort();
    assert_eq!(names, want, "{mode:?}: listing");
    for i in 0..FILES {
        let p = mnt.join(format!("a{i}.npy"));
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{mode:?}: read {}: {e}", p.display()));
        assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, bytes.len(), "{mode:?}: st_size of a{i}.npy");
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{mode:?}: a{i}.npy magic");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (24,)"), "{mode:?}: a{i}.npy header {header:?}");
        let data: Vec<f32> = bytes[10 + hlen..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let expect: Vec<f32> = (0..24).map(|k| (k + i) as f32).collect();
        assert_eq!(data, expect, "{mode:?}: a{i}.npy data");
        // Python's open() asks isatty of every file: the probe answers ENOTTY
        let f = std::fs::File::open(&p).unwrap();
        // SAFETY: isatty on an open descriptor
        assert_eq!(unsafe { libc::isatty(std::os::fd::AsRawFd::as_raw_fd(&f)) }, 0, "{mode:?}: isatty");
    }
    assert!(std::fs::metadata(mnt.join("nope.npy")).is_err(), "{mode:?}: a missing name");
}

/// FUSE present, a fresh mountpoint (`DIR/mnt`), and `enable_uring`'s path and value.
fn setup() -> (tempfile::TempDir, &'static str, String) {
    common::mount::require_fuse();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let enable = "/sys/module/fuse/parameters/enable_uring";
    let before = std::fs::read_to_string(enable)
        .unwrap_or_else(|e| panic!("{enable}: {e}: this kernel lacks FUSE over io_uring (CONFIG_FUSE_IO_URING, Linux 6.14+), which the CI machine has"));
    (dir, enable, before)
}

#[test]
fn probe_serves_the_same_bytes_classic_and_over_io_uring() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, enable, before) = setup();
    let mnt = dir.path().join("mnt");
    for mode in [Mode::Classic, Mode::ClassicPoll, Mode::Uring, Mode::UringPoll] {
        let p = Probe::start(&mnt, Options { mode, files: FILES, ..Options::default() }).unwrap_or_else(|e| panic!("{mode:?}: the probe did not start: {e}"));
        check_files(&mnt, mode);
        let (classic, uring) = (p.counters.classic.load(Ordering::Relaxed), p.counters.uring.load(Ordering::Relaxed));
        drop(p);
        assert!(!common::mount::is_fuse_mount(&mnt.canonicalize().unwrap()), "{mode:?}: still mounted after drop");
        if matches!(mode, Mode::Uring | Mode::UringPoll) {
            assert!(uring > 3 * FILES as u64, "{mode:?}: only {uring} requests over io_uring ({classic} from /dev/fuse)");
            assert_eq!(std::fs::read_to_string(enable).unwrap(), before, "{mode:?}: {enable} not restored");
        } else {
            assert!(classic > 3 * FILES as u64 && uring == 0, "{mode:?}: {classic} from /dev/fuse, {uring} over io_uring");
        }
    }
}

/// The fallback an adopting atlasfs would need: with `enable_uring` N, an io_uring mode
/// that may fall back serves every request from /dev/fuse, right bytes, none on the ring.
#[test]
fn io_uring_mode_falls_back_to_dev_fuse_when_enable_uring_is_n() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, enable, before) = setup();
    let mnt = dir.path().join("mnt");
    std::fs::write(enable, "N").unwrap_or_else(|e| panic!("echo N > {enable}: {e} (the tests run as root)"));
    let started = Probe::start(&mnt, Options { mode: Mode::Uring, files: FILES, fallback: true, set_enable_uring: false, ..Options::default() });
    let result = std::panic::catch_unwind(|| {
        let p = started.unwrap_or_else(|e| panic!("the probe did not start: {e}"));
        check_files(&mnt, Mode::Uring);
        let (classic, uring) = (p.counters.classic.load(Ordering::Relaxed), p.counters.uring.load(Ordering::Relaxed));
        assert!(p.counters.fell_back.load(Ordering::SeqCst), "registration succeeded with enable_uring N");
        assert!(classic > 3 * FILES as u64 && uring == 0, "{classic} from /dev/fuse, {uring} over io_uring");
    });
    std::fs::write(enable, before.trim()).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
