//! Write-back without fsync (issue 14): a file closed through a real mount reaches the
//! store within `--writeback-delay`, with no fsync; delay 0 makes the close itself
//! durable; SIGTERM and unmount flush what the timer has not; `.atlasfs/stats` shows
//! what is pending. Each check ends with a `kill -9` (or a clean exit) of the daemon
//! and reads the store with atlas-python 0.10 and the CLI, so "in the store" means on
//! disk, not in the daemon's memory.
//!
//! Run: `cargo test --release --test writeback`

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{Mounted, bin};

/// `np.save` of `np.arange(n) * k` to `path` through the mount, then close; no fsync.
fn np_save(path: &Path, n: usize, k: i64) {
    let code = format!("import numpy as np; np.save({:?}, np.arange({n}, dtype=np.int64) * {k})", path.to_str().unwrap());
    let out = Command::new(common::python()).args(["-c", &code]).output().unwrap();
    assert!(out.status.success(), "np.save {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

/// atlas-python reads `ds/arr` from the store directory: `np.arange(n) * k`, or absent.
fn py_has(store: &Path, ds: &str, arr: &str, n: usize, k: i64) -> bool {
    let code = format!(
        "import atlas, numpy as np\ns = atlas.Atlas.open({:?})\n\
         ok = {ds:?} in s.list_datasets() and {arr:?} in s.open_dataset({ds:?}).list_arrays()\n\
         if ok:\n    a = s.open_dataset({ds:?}).read_array({arr:?})\n    assert np.array_equal(a, np.arange({n}, dtype=np.int64) * {k}), a\n\
         print(ok)",
        store.to_str().unwrap()
    );
    let out = Command::new(common::python()).args(["-c", &code]).output().unwrap();
    assert!(out.status.success(), "atlas-python reading {ds}/{arr}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

fn stats(mp: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(mp.join(".atlasfs/stats")).unwrap()).unwrap()
}

fn setup(tag: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::Builder::new().prefix(&format!("atlasfs-wb-{tag}")).tempdir().unwrap();
    let (store, mp) = (tmp.path().join("store"), tmp.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    let out = Command::new(bin()).arg("create").arg(&store).output().unwrap();
    assert!(out.status.success(), "atlasfs create: {}", String::from_utf8_lossy(&out.stderr));
    (tmp, store, mp)
}

/// Close, no fsync, wait for the timer; then an in-place edit (mmap r+), wait again;
/// kill -9: the array with the edit is in the store. Stats show nothing pending after.
#[test]
fn closed_file_is_flushed_by_the_timer_and_survives_kill9() {
    let (_tmp, store, mp) = setup("timer");
    let m = Mounted::start(&store, &mp, &["--writeback-delay", "1"]);
    std::fs::create_dir(m.mp().join("ds")).unwrap();
    np_save(&m.mp().join("ds/x.npy"), 1000, 3);
    // The timer is armed for at most 1 s after the close; wait for it (a bound for a
    // liveness check, not a speed target).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats(m.mp());
        let wb = &s["writeback"];
        if wb["pending_arrays"] == 0 && wb["pending_bytes"] == 0 && wb["pending_metadata"] == false && s["flushes"].as_u64() >= Some(1) {
            assert!(s["last_flush_unix"].as_u64() > Some(0), "a flush time after the flush: {s}");
            assert!(wb["next_flush_unix"].is_null(), "nothing scheduled once flushed: {s}");
            break;
        }
        assert!(Instant::now() < deadline, "the write-back timer did not flush within 60 s: {s}\n{}", m.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(m.log_text().contains("write-back flush done"), "the flush was the timer's");
    // An in-place edit (pwrite into the open file, applied at close, no fsync) arms
    // the timer too. (Not an mmap edit: its msync is an fsync, which flushes at once.)
    let x = m.mp().join("ds/x.npy");
    let code = format!(
        "import numpy as np, os\np = {:?}\nh = 128\nassert len(np.lib.format.magic(1, 0)) and open(p, 'rb').read(h)[-1:] == b'\\n'\nfd = os.open(p, os.O_RDWR)\nos.pwrite(fd, np.int64(-1).tobytes(), h + 7 * 8)\nos.close(fd)",
        x.to_str().unwrap()
    );
    let out = Command::new(common::python()).args(["-c", &code]).output().unwrap();
    assert!(out.status.success(), "mmap r+ edit: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(m.log_text().matches("write-back flush done").count() >= 2 && stats(m.mp())["writeback"]["pending_arrays"] == 0) {
        assert!(Instant::now() < deadline, "the in-place edit was not flushed within 60 s: {}\n{}", stats(m.mp()), m.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    m.kill9();
    let code = format!(
        "import atlas, numpy as np\na = atlas.Atlas.open({:?}).open_dataset('ds').read_array('x')\nw = np.arange(1000, dtype=np.int64) * 3\nw[7] = -1\nassert np.array_equal(a, w), a[:10]",
        store.to_str().unwrap()
    );
    let out = Command::new(common::python()).args(["-c", &code]).output().unwrap();
    assert!(out.status.success(), "after kill -9 the store holds the closed file with the in-place edit: {}", String::from_utf8_lossy(&out.stderr));
}

/// Stats before and after: pending counts and the next deadline while a change waits,
/// zero after `.atlasfs/flush`. SIGTERM then flushes what is pending again.
#[test]
fn stats_show_pending_and_sigterm_flushes() {
    let (_tmp, store, mp) = setup("stats");
    // A delay no test waits for: only the flush file, SIGTERM and unmount flush here.
    let m = Mounted::start(&store, &mp, &["--writeback-delay", "3600"]);
    std::fs::create_dir(m.mp().join("ds")).unwrap();
    np_save(&m.mp().join("ds/a.npy"), 5000, 1);
    np_save(&m.mp().join("ds/b.npy"), 10, 2);
    let s = stats(m.mp());
    let wb = &s["writeback"];
    assert_eq!(wb["pending_arrays"], 2, "two arrays written and not flushed: {s}");
    assert!(wb["pending_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(wb["pending_metadata"], true, "{s}");
    assert_eq!(wb["delay_s"], 3600.0, "{s}");
    let next = wb["next_flush_unix"].as_f64().unwrap_or_else(|| panic!("a flush is scheduled: {s}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(next > now + 3000.0 && next < now + 3601.0, "scheduled one delay after the first change: {next} vs now {now}");
    assert_eq!(s["last_flush_unix"], 0, "no flush yet: {s}");
    std::fs::write(m.mp().join(".atlasfs/flush"), b"1").unwrap();
    let s = stats(m.mp());
    assert_eq!((&s["writeback"]["pending_arrays"], &s["writeback"]["pending_bytes"], &s["writeback"]["pending_metadata"]), (&0.into(), &0.into(), &false.into()), "{s}");
    assert!(s["last_flush_unix"].as_u64() > Some(0), "{s}");
    // Pending again, then SIGTERM: the daemon flushes before it exits.
    np_save(&m.mp().join("ds/b.npy"), 10, 7);
    assert_eq!(stats(m.mp())["writeback"]["pending_arrays"], 1);
    m.terminate();
    assert!(py_has(&store, "ds", "a", 5000, 1));
    assert!(py_has(&store, "ds", "b", 10, 7), "SIGTERM flushed the pending write");
}

/// Delay 0: the close itself flushes, so a kill -9 right after it loses nothing; and a
/// plain `umount` (the kernel's DESTROY) flushes with the timer still armed.
#[test]
fn delay_zero_close_is_durable_and_umount_flushes() {
    let (_tmp, store, mp) = setup("zero");
    let m = Mounted::start(&store, &mp, &["--writeback-delay", "0"]);
    std::fs::create_dir(m.mp().join("ds")).unwrap();
    np_save(&m.mp().join("ds/z.npy"), 100, 5);
    let s = stats(m.mp());
    assert_eq!(s["writeback"]["pending_arrays"], 0, "delay 0: nothing waits after the close: {s}");
    m.kill9();
    assert!(py_has(&store, "ds", "z", 100, 5), "delay 0: the close alone made it durable");

    let mut m = Mounted::start(&store, &mp, &["--writeback-delay", "3600"]);
    np_save(&m.mp().join("ds/u.npy"), 20, 9);
    std::fs::remove_file(m.mp().join("ds/z.npy")).unwrap();
    assert_eq!(stats(m.mp())["writeback"]["pending_arrays"], 2, "a write and an unlink pending");
    assert!(common::mount::fusermount("-u", m.mp()), "fusermount3 -u");
    let mut child = m.take_child();
    let st = common::mount::wait_exit(&mut child, Duration::from_secs(30)).expect("the daemon exits after umount, with a timer armed");
    assert!(st.success(), "daemon exit after umount: {st}\n{}", m.log_text());
    assert!(py_has(&store, "ds", "u", 20, 9), "umount flushed the pending write");
    assert!(!py_has(&store, "ds", "z", 100, 5), "umount flushed the pending unlink");
}
