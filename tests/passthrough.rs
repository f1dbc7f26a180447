//! Passthrough reads against the real kernel: read-only opens of an array pass
//! through to a decoded spool file once its first reader has filled it.
//!
//! - every dtype written by atlas-python 0.10 reads the same through passthrough as
//!   through the decoded path (full reads, `mmap` slices, raw bytes), and the same
//!   again on a mount with passthrough off;
//! - a spool entry is never served stale: after a write through the mount, another
//!   writer's flush picked up by a refresh, a compaction, an array rename and a
//!   dataset rename, each read returns the new bytes (each check fails if the spool
//!   served the old ones); a descriptor opened before a change keeps its version;
//! - the spool keeps its byte budget; a full spool disk (a tiny tmpfs) costs one log
//!   line and no reader error; a damaged spool file is dropped and rebuilt, never
//!   served; spool files are private to the daemon's user;
//! - a peek at an array (a read of less than half of it) leaves nothing to decode
//!   in the background.
//!
//! Needs /dev/fuse, fusermount3 and the venv of `scripts/setup-test-env.sh`; root
//! for the tmpfs of the full-disk case and for passthrough itself (CAP_SYS_ADMIN).

mod common;

use common::mount::{Mounted, bin, log_report};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn python() -> PathBuf {
    common::python()
}

/// Runs Python code with numpy; panics with its output on failure.
fn py(code: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(code).args(args).output().expect("spawn python");
    assert!(out.status.success(), "python failed:\n{code}\n--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stats(m: &Mounted) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(m.mp().join(".atlasfs/stats")).unwrap()).unwrap()
}

fn spool_stat(m: &Mounted, key: &str) -> u64 {
    stats(m)["spool"][key].as_u64().unwrap_or_else(|| panic!("stats has no spool.{key}: {}", stats(m)))
}

/// Writes `value` (a Python expression over `np`) as `path` with np.save.
fn save(path: &Path, value: &str) {
    py(&format!("import numpy as np, sys\nnp.save(sys.argv[1], {value})"), &[s(path)]);
}

/// Loads `path` twice (the second open passes through once the first filled the
/// spool) and checks both against `value`; also an mmap slice. Returns nothing:
/// panics on any difference.
fn check(path: &Path, value: &str) {
    py(
        &format!(
            "import numpy as np, sys\nwant = {value}\np = sys.argv[1]\nfor i in range(2):\n    got = np.load(p)\n    assert got.dtype == want.dtype and np.array_equal(got, want), (i, got[:4], want[:4])\nm = np.load(p, mmap_mode='r')\nassert np.array_equal(m[3:9], want[3:9])\n"
        ),
        &[s(path)],
    );
}

struct Ctx {
    dir: tempfile::TempDir,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Ctx {
    fn new() -> Ctx {
        let lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Ctx { dir: tempfile::Builder::new().prefix("atlasfs-passthrough-test").tempdir().unwrap(), _lock: lock }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    fn store(&self) -> PathBuf {
        let st = self.path("store");
        run(Command::new(bin()).arg("create").arg(&st));
        st
    }
}

fn mount(ctx: &Ctx, store: &Path, extra: &[&str]) -> Mounted {
    let mp = ctx.mkdir("mnt");
    // Small arrays pass through too here (the default leaves those under 1 MiB to the page cache).
    let mut args = vec!["--metadata-ttl", "0", "--passthrough", "--passthrough-min", "0"];
    args.extend_from_slice(extra);
    Mounted::start(store, &mp, &args)
}

/// A new store mounted (see [`mount`]) with an empty dataset `d`: the store, the
/// mount and its mountpoint.
fn mount_new_store_with_d(ctx: &Ctx, extra: &[&str]) -> (PathBuf, Mounted, PathBuf) {
    let store = ctx.store();
    let m = mount(ctx, &store, extra);
    let mp = m.mp().to_path_buf();
    std::fs::create_dir(mp.join("d")).unwrap();
    (store, m, mp)
}

/// Every dtype atlas-python 0.10 writes (edge chunks, fills, layers, 0-D) reads the
/// same through passthrough as decoded, and on a mount without passthrough.
#[test]
fn every_dtype_reads_the_same_through_passthrough_and_without() {
    let ctx = Ctx::new();
    let store = ctx.path("store");
    let oracle = ctx.path("oracle.pkl");
    let script = |name: &str| common::repo().join("tests/python").join(name);
    run(Command::new(python()).arg(script("mount_store.py")).args(["full", s(&store), s(&oracle)]));
    let m = mount(&ctx, &store, &[]);
    // The first pass fills the spool, the second reads through it.
    for _ in 0..2 {
        run(Command::new(python()).arg(script("mount_check.py")).args(["read", s(m.mp()), s(&oracle)]));
    }
    let st = stats(&m);
    assert_eq!(st["passthrough"], true, "passthrough is on with --passthrough: {st}\n{}", log_report(&m.log));
    assert!(st["spool"]["built"].as_u64().unwrap() > 5 && st["spool"]["hits"].as_u64().unwrap() > 5, "the second pass passed through: {st}");
    m.unmount();

    let m = mount(&ctx, &store, &["--no-passthrough"]);
    run(Command::new(python()).arg(script("mount_check.py")).args(["read", s(m.mp()), s(&oracle)]));
    let st = stats(&m);
    assert_eq!((st["passthrough"].clone(), st["spool"].clone()), (serde_json::json!(false), serde_json::Value::Null), "{st}");
    m.unmount();
}

/// No change leaves the spool serving the old bytes.
#[test]
fn a_spool_entry_is_never_stale() {
    let ctx = Ctx::new();
    let (store, m, mp) = mount_new_store_with_d(&ctx, &[]);
    let a = mp.join("d/a.npy");
    let v1 = "np.arange(100_000, dtype=np.float32)";
    save(&a, v1);
    check(&a, v1);
    let hits = spool_stat(&m, "hits");
    check(&a, v1);
    assert!(spool_stat(&m, "hits") > hits, "a was read through the spool");
    // A passing-through read never reaches the daemon.
    // (Reading the stats file is itself a read: count what that costs first.)
    let reads = || stats(&m)["reads"].as_u64().unwrap();
    let (r0, r1) = (reads(), reads());
    assert_eq!(std::fs::read(&a).unwrap().len(), 128 + 400_000);
    assert_eq!(reads() - r1, r1 - r0, "a read of a spooled array reached the daemon");

    // A descriptor opened now keeps this version across the changes below.
    let held = std::fs::File::open(&a).unwrap();

    // 1. a write through the mount
    let v2 = "np.arange(100_000, dtype=np.float32) * 2";
    save(&a, v2);
    check(&a, v2);

    // 2. another writer's flush (the CLI on the store), picked up by a refresh
    let src = ctx.path("v3.npy");
    let v3 = "np.arange(100_000, dtype=np.float32) * 3";
    save(&src, v3);
    std::fs::write(mp.join(".atlasfs/flush"), b"1").unwrap();
    run(Command::new(bin()).arg("put").arg(&store).arg("d/a").arg(&src));
    std::fs::write(mp.join(".atlasfs/flush"), b"1").unwrap(); // a flush refreshes first
    check(&a, v3);

    // 3. a compaction
    std::fs::write(mp.join(".atlasfs/compact"), b"1").unwrap();
    check(&a, v3);

    // 4. an array renamed over another that was spooled
    let b = mp.join("d/b.npy");
    let vb = "np.full(100_000, 7, dtype=np.float32)";
    save(&b, vb);
    check(&b, vb);
    std::fs::rename(&a, &b).unwrap();
    check(&b, v3);
    assert!(!a.exists());

    // 5. a dataset renamed away, and a new one made under its name
    std::fs::rename(mp.join("d"), mp.join("e")).unwrap();
    check(&mp.join("e/b.npy"), v3);
    std::fs::create_dir(mp.join("d")).unwrap();
    let v4 = "np.full(100_000, -1, dtype=np.float32)";
    save(&mp.join("d/b.npy"), v4);
    check(&mp.join("d/b.npy"), v4);

    // The descriptor opened at v1 still reads v1, whole.
    let mut bytes = vec![];
    std::io::Read::read_to_end(&mut &held, &mut bytes).unwrap();
    let want = py("import numpy as np, io, sys\nb = io.BytesIO(); np.save(b, np.arange(100_000, dtype=np.float32)); sys.stdout.write(b.getvalue().hex())", &[]);
    assert_eq!(bytes.len() * 2, want.len());
    assert!(hex(&bytes) == want, "a descriptor opened before the changes must read the version it opened");
    drop(held);
    m.unmount();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spool keeps to its budget (least recently used arrays go), and its
/// directory and files are readable only by the daemon's user.
#[test]
fn the_spool_keeps_its_budget_and_is_private() {
    let ctx = Ctx::new();
    let (_, m, mp) = mount_new_store_with_d(&ctx, &["--spool-size", "1M"]);
    for i in 0..12 {
        let p = mp.join(format!("d/a{i}.npy"));
        let v = format!("np.full(50_000, {i}, dtype=np.int32)");
        save(&p, &v);
        check(&p, &v);
    }
    let st = stats(&m);
    let dir = PathBuf::from(st["spool"]["dir"].as_str().unwrap());
    let on_disk: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(on_disk <= 1 << 20 && st["spool"]["bytes_held"].as_u64().unwrap() <= 1 << 20, "spool over budget: {on_disk} bytes on disk, {st}");
    assert!(st["spool"]["evicted"].as_u64().unwrap() > 0, "{st}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for e in std::fs::read_dir(&dir).unwrap() {
        assert_eq!(e.unwrap().metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    m.unmount();
    assert!(!dir.exists(), "the spool directory is removed at unmount");
}

/// A peek (`file`, `head -c`) at a large array leaves nothing in the spool: only a
/// descriptor that read at least half of an array has the rest decoded after its
/// close, so exploring a big (or remote) store does not decode (or fetch) it whole.
#[test]
fn only_a_read_of_half_an_array_fills_the_spool() {
    let ctx = Ctx::new();
    let (store, m, mp) = mount_new_store_with_d(&ctx, &[]);
    for a in ["peek", "most"] {
        save(&mp.join(format!("d/{a}.npy")), "np.arange(1 << 20, dtype=np.float32)");
    }
    m.unmount();
    let m = mount(&ctx, &store, &[]);
    let mp = m.mp().to_path_buf();
    let read_part = |name: &str, n: usize| {
        use std::io::Read;
        let mut buf = vec![0u8; n];
        std::fs::File::open(mp.join(name)).unwrap().read_exact(&mut buf).unwrap();
        buf
    };
    assert_eq!(&read_part("d/peek.npy", 1024)[..6], b"\x93NUMPY");
    let _ = read_part("d/most.npy", 3 << 20); // 3 of its 4 MiB
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spool_stat(&m, "built") < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!((spool_stat(&m, "built"), spool_stat(&m, "files")), (1, 1), "only the array read for the most part was spooled: {}", stats(&m));
    // Both still read right, and the spooled one passes through.
    let hits = spool_stat(&m, "hits");
    check(&mp.join("d/most.npy"), "np.arange(1 << 20, dtype=np.float32)");
    assert!(spool_stat(&m, "hits") > hits, "{}", stats(&m));
    check(&mp.join("d/peek.npy"), "np.arange(1 << 20, dtype=np.float32)");
    m.unmount();
}

/// A spool file changed behind the daemon's back is dropped and rebuilt, never served.
#[test]
fn a_damaged_spool_file_is_rebuilt_not_served() {
    let ctx = Ctx::new();
    let (_, m, mp) = mount_new_store_with_d(&ctx, &[]);
    let a = mp.join("d/a.npy");
    let v = "np.arange(200_000, dtype=np.int64)";
    save(&a, v);
    check(&a, v);
    let dir = PathBuf::from(stats(&m)["spool"]["dir"].as_str().unwrap());
    let file = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).next().expect("a spool file");
    std::thread::sleep(std::time::Duration::from_millis(20));
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().write_all_at(&[0xff; 4096], 1000).unwrap();
    check(&a, v);
    assert!(spool_stat(&m, "damaged") >= 1, "{}", stats(&m));
    assert!(m.log_text().contains("spool file changed since it was written"), "one log line names the damage:\n{}", log_report(&m.log));
    m.unmount();
}

/// A spool on a full disk: readers get their data, the log says it once.
#[test]
fn a_full_spool_disk_falls_back_with_one_log_line() {
    let ctx = Ctx::new();
    let store = ctx.store();
    let tiny = ctx.mkdir("tiny");
    run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"]).arg(&tiny));
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _tmpfs = Umount(tiny.clone());
    let m = mount(&ctx, &store, &["--spool-dir", s(&tiny), "--spool-size", "64M"]);
    let mp = m.mp().to_path_buf();
    std::fs::create_dir(mp.join("d")).unwrap();
    for i in 0..3 {
        let p = mp.join(format!("d/a{i}.npy"));
        let v = format!("np.arange(250_000, dtype=np.float64) + {i}");
        save(&p, &v);
        check(&p, &v);
    }
    assert!(spool_stat(&m, "failed_writes") >= 1, "{}", stats(&m));
    let lines = m.log_text().lines().filter(|l| l.contains("cannot write to the spool")).count();
    assert_eq!(lines, 1, "one log line for a full spool disk:\n{}", log_report(&m.log));
    m.unmount();
}

/// `fstat` on a descriptor passing through to an old version, after a write moved
/// the name to a new inode, shows the old version's size (what it reads), while
/// `stat` of the name shows the new one. `--ttl 0`: every stat reaches the daemon.
#[test]
fn fstat_of_a_passthrough_descriptor_keeps_its_version_size() {
    let ctx = Ctx::new();
    let (_, m, mp) = mount_new_store_with_d(&ctx, &["--ttl", "0"]);
    let a = mp.join("d/a.npy");
    let v1 = "np.arange(100_000, dtype=np.float32)";
    save(&a, v1);
    check(&a, v1);
    let hits = spool_stat(&m, "hits");
    let held = std::fs::File::open(&a).unwrap();
    assert!(spool_stat(&m, "hits") > hits, "the held descriptor passes through");
    let old_len = 128 + 400_000;
    assert_eq!(held.metadata().unwrap().len(), old_len);
    // A bigger version through the mount: the name moves to a new inode.
    let v2 = "np.arange(300_000, dtype=np.float64)";
    save(&a, v2);
    check(&a, v2);
    assert_eq!(std::fs::metadata(&a).unwrap().len(), 128 + 2_400_000, "stat of the name: the new version");
    assert_eq!(held.metadata().unwrap().len(), old_len, "fstat of the old descriptor: the version it reads");
    let mut bytes = vec![];
    std::io::Read::read_to_end(&mut &held, &mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, old_len, "and it reads that version whole");
    drop(held);
    m.unmount();
}

/// A daemon killed with -9 leaves its spool directory; the next mount with the same
/// `--spool-dir` removes it (one log line) and leaves a live daemon's alone.
#[test]
fn a_dead_daemons_spool_is_removed_at_the_next_mount() {
    let ctx = Ctx::new();
    let store = ctx.store();
    let spool_dir = ctx.mkdir("spools");
    let args = ["--metadata-ttl", "0", "--passthrough", "--passthrough-min", "0", "--spool-dir", s(&spool_dir)];
    let spool_of = |m: &Mounted| PathBuf::from(stats(m)["spool"]["dir"].as_str().unwrap());
    let src = ctx.path("a.npy");
    save(&src, "np.arange(1000)");
    run(Command::new(bin()).arg("put").arg(&store).arg("d/a").arg(&src));
    let live = Mounted::start(&store, &ctx.mkdir("live"), &args);
    let dying = Mounted::start(&store, &ctx.mkdir("dying"), &args);
    let (live_dir, dead_dir) = (spool_of(&live), spool_of(&dying));
    let a = live.mp().join("d/a.npy");
    check(&a, "np.arange(1000)");
    check(&dying.mp().join("d/a.npy"), "np.arange(1000)"); // leaves a spool file behind
    dying.kill9();
    assert!(dead_dir.is_dir(), "kill -9 leaves the spool directory");
    let next = Mounted::start(&store, &ctx.mkdir("next"), &args);
    assert!(!dead_dir.exists(), "the dead daemon's spool is still there:\n{}", log_report(&next.log));
    assert!(live_dir.is_dir() && spool_of(&next).is_dir(), "a live daemon's spool was removed");
    let lines = next.log_text().lines().filter(|l| l.contains("removed the spool directory of an atlasfs daemon that is no longer running")).count();
    assert_eq!(lines, 1, "one log line per removal:\n{}", log_report(&next.log));
    check(&a, "np.arange(1000)");
    next.unmount();
    live.unmount();
    assert_eq!(std::fs::read_dir(&spool_dir).unwrap().count(), 0, "every spool is removed at unmount");
}
