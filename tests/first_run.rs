//! What a first-time user tripped over (issue 14), each against a real mount of
//! the `atlasfs` binary: a store written with one huge chunk read within the cache
//! budget, `touch` / `: >` of a new `.npy`, directory mtimes and an `rsync -a`
//! rerun, one log line per refusal and none for a clean unmount, the background
//! daemon's log kept over mounts, a non-empty mountpoint refused.
//!
//! Needs /dev/fuse, fusermount3, rsync and the venv of `scripts/setup-test-env.sh`;
//! a missing tool fails the test. One global lock: each test mounts a daemon.
//!
//! Run: `cargo test --release --test first_run -- --test-threads=1`

mod common;

use common::mount::{Mounted, bin, is_fuse_mount};

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn atlasfs(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env_remove("RUST_LOG").output().expect("spawn atlasfs")
}

fn ok(args: &[&str]) {
    let out = atlasfs(args);
    assert!(out.status.success(), "atlasfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sh(line: &str) -> Output {
    Command::new("sh").arg("-c").arg(line).output().expect("spawn sh")
}

fn py(code: &str) -> String {
    let out = Command::new(common::python()).arg("-c").arg(format!("import numpy as np, sys\n{code}")).output().expect("spawn python");
    assert!(out.status.success(), "python failed:\n{code}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A store with one array `ds/a`; returns (store, mountpoint).
fn store_with_one_array(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (store, mp) = (dir.join("s"), dir.join("mp"));
    std::fs::create_dir(&mp).unwrap();
    let f = dir.join("a.npy");
    py(&format!("np.save({:?}, np.arange(10))", s(&f)));
    ok(&["create", s(&store)]);
    ok(&["put", s(&store), "ds/a", s(&f)]);
    (store, mp)
}

/// A store written with one 128 MiB chunk (as atlas-python with `chunks = shape`
/// or an old `put` wrote it), mounted with `--cache-size 32M`: single elements,
/// a slice and a whole sequential read are right, and the daemon's peak RSS stays
/// near the budget (before: the block decoded whole, peak RSS over 2× the array).
#[test]
fn a_huge_chunk_is_read_within_the_cache_budget() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp, src) = (tmp.path().join("s"), tmp.path().join("mp"), tmp.path().join("a.npy"));
    std::fs::create_dir(&mp).unwrap();
    let n: usize = 16 << 20;
    py(&format!("np.save({:?}, np.arange({n}, dtype='<f8'))", s(&src)));
    ok(&["create", s(&store)]);
    ok(&["put", s(&store), "d/a", s(&src), "--chunks", &n.to_string()]);
    let m = Mounted::start(&store, &mp, &["--cache-size", "32M"]);
    let file = m.mp().join("d/a.npy");
    let got = py(&format!("a = np.load({:?}, mmap_mode='r'); print(a[0], a[-1], a[{}], bool((a[5_000_000:5_100_000] == np.arange(5_000_000, 5_100_000)).all()))", s(&file), n / 2));
    assert_eq!(got.trim(), format!("0.0 {}.0 {}.0 True", n - 1, n / 2));
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&src).unwrap(), "a sequential read of the whole file");
    let hwm_mib = m.status_kb("VmHWM").expect("VmHWM") / 1024;
    eprintln!("peak RSS of the daemon: {hwm_mib} MiB (array 128 MiB in one chunk, --cache-size 32M)");
    assert!(hwm_mib < 32 + 96, "peak RSS {hwm_mib} MiB with --cache-size 32M and a 128 MiB chunk");
    m.unmount();
}

/// `touch` and `: >` of a new `.npy` exit 0 (close cannot fail them) but store
/// nothing: an array needs a `.npy` header. One warning line each says so.
#[test]
fn an_empty_new_npy_is_not_stored_and_says_so() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp) = store_with_one_array(tmp.path());
    let m = Mounted::start(&store, &mp, &[]);
    let ds = m.mp().join("ds");
    assert!(sh(&format!("touch {}/t.npy", s(&ds))).status.success());
    assert!(sh(&format!(": > {}/e.npy", s(&ds))).status.success());
    let names: Vec<String> = std::fs::read_dir(&ds).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["a.npy"], "nothing appears");
    let log = m.log_text();
    for f in ["t.npy", "e.npy"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("file={f}")) && l.contains("the file is empty")).collect();
        assert_eq!(lines.len(), 1, "one line for {f}:\n{log}");
    }
    m.unmount();
}

/// `touch -d` on a dataset directory and on the mount's root is kept, and an
/// `rsync -a` rerun itemizes nothing (the mtimes live in daemon memory).
#[test]
fn directory_mtimes_are_kept_and_rsync_reruns_copy_nothing() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp) = store_with_one_array(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("one")).unwrap();
    std::fs::create_dir_all(src.join("two")).unwrap();
    py(&format!("np.save({:?}, np.ones((3, 4))); np.save({:?}, np.arange(5))", s(&src.join("one/x.npy")), s(&src.join("two/y.npy"))));
    assert!(sh(&format!("touch -d 2020-01-02 {0}/one {0}/two {0}", s(&src))).status.success());
    let m = Mounted::start(&store, &mp, &[]);
    let ds = m.mp().join("ds");
    assert!(sh(&format!("touch -d '2021-03-04 05:06:07' {}", s(&ds))).status.success());
    let out = sh(&format!("stat -c %Y {}", s(&ds)));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1614834367");
    let rsync = |extra: &str| {
        let out = sh(&format!("rsync -a {extra} {}/ {}/", s(&src), s(m.mp())));
        assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    rsync("");
    assert_eq!(rsync("--itemize-changes"), "", "a rerun of rsync -a copies and touches nothing");
    m.unmount();
}

/// A clean unmount logs no fuser warning; `ln` and `ln -s` are refused with EPERM
/// and one log line each.
#[test]
fn refusals_and_a_clean_unmount_log_one_line_or_none() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp) = store_with_one_array(tmp.path());
    let m = Mounted::start(&store, &mp, &[]);
    let ds = m.mp().join("ds");
    let out = sh(&format!("ln -s a.npy {0}/l.npy; ln {0}/a.npy {0}/h.npy", s(&ds)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Operation not permitted").count(), 2, "{err}");
    let log_path = m.log.clone();
    m.unmount();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("Failed to umount"), "a clean unmount warns:\n{log}");
    assert!(!log.contains("[Not Implemented]"), "fuser's multi-line dumps:\n{log}");
    let symlink: Vec<&str> = log.lines().filter(|l| l.contains("symbolic links are not supported")).collect();
    let link: Vec<&str> = log.lines().filter(|l| l.contains("hard links are not supported")).collect();
    assert_eq!((symlink.len(), link.len()), (1, 1), "one line each:\n{log}");
    assert!(log.lines().all(|l| l.starts_with("20") || l.trim().is_empty()), "every log line is a record of its own:\n{log}");
}

/// The background daemon appends to its log with a separator line per mount, and
/// `--help` says where a background mount's logs go.
#[test]
fn the_background_log_is_kept_over_mounts() {
    let _g = lock();
    common::mount::require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp) = store_with_one_array(tmp.path());
    let log = tmp.path().join("daemon.log");
    for _ in 0..2 {
        ok(&["mount", s(&store), s(&mp), "--log-file", s(&log)]);
        assert!(is_fuse_mount(&mp.canonicalize().unwrap()));
        ok(&["unmount", s(&mp)]);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let seps: Vec<&str> = text.lines().filter(|l| l.starts_with("==== ") && l.contains("atlasfs mount")).collect();
    assert_eq!(seps.len(), 2, "two separator lines:\n{text}");
    assert_eq!(text.matches("mounted").count(), 2, "both mounts' lines are kept:\n{text}");
    let help = String::from_utf8(atlasfs(&["--help"]).stdout).unwrap();
    assert!(help.contains("a background mount logs to its --log-file"), "{help}");
}

/// A non-empty mountpoint is refused with one line, as rclone and mountpoint-s3
/// refuse it; `--allow-non-empty` mounts over it.
#[test]
fn a_non_empty_mountpoint_is_refused_unless_allowed() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp) = store_with_one_array(tmp.path());
    std::fs::write(mp.join("hidden.txt"), b"x").unwrap();
    let out = atlasfs(&["mount", s(&store), s(&mp), "--foreground"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1 && err.contains("the mountpoint is not empty") && err.contains("--allow-non-empty"), "{err}");
    assert!(!is_fuse_mount(&mp));
    let m = Mounted::start(&store, &mp, &["--allow-non-empty"]);
    assert!(m.mp().join("ds/a.npy").exists());
    m.unmount();
    assert!(mp.join("hidden.txt").exists());
}

/// `scripts/demo.sh`, started from another directory, prints a closing hint whose
/// every line runs as printed (the venv's Python, the binary, the unmount).
#[test]
fn the_demo_hint_runs_as_printed() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let script = common::repo().join("scripts/demo.sh");
    // The venv `scripts/setup-test-env.sh` made is the one the demo uses; the binary is
    // this build (a nested `cargo build` would wait for this test's own cargo).
    let out = Command::new("bash").arg(&script).args(["st", "mnt"]).current_dir(tmp.path()).env("ATLASFS_DEMO_BIN", bin()).env_remove("RUST_LOG").output().expect("spawn demo.sh");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mp = tmp.path().join("mnt");
    let unmounted = |mp: &Path| {
        if is_fuse_mount(&mp.canonicalize().unwrap()) {
            let _ = Command::new("fusermount3").arg("-u").arg(mp).status();
        }
    };
    if !out.status.success() {
        unmounted(&mp);
        panic!("demo.sh failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let hint: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("try, from ")).skip(1).take_while(|l| l.starts_with("  ")).collect();
    let unmount = text.lines().find_map(|l| l.strip_prefix("unmount: ")).map(str::to_string);
    assert!(hint.len() >= 3 && hint[0].starts_with("  cd ") && unmount.is_some(), "no closing hint in the demo's output:\n{text}");
    // Run from somewhere else again, as a user in a new shell would.
    let tried = Command::new("sh").arg("-ec").arg(hint.join("\n")).current_dir("/").output().expect("spawn sh");
    let shown = String::from_utf8_lossy(&tried.stdout).to_string();
    let ok = tried.status.success() && shown.contains("station_001") && shown.contains("pressure");
    let gone = Command::new("sh").arg("-ec").arg(format!("{}\n{}", hint[0], unmount.unwrap())).current_dir("/").output().expect("spawn sh");
    unmounted(&mp);
    assert!(ok, "the demo's hint failed:\n{}\n--- printed\n{shown}\n{}", hint.join("\n"), String::from_utf8_lossy(&tried.stderr));
    assert!(gone.status.success() && !is_fuse_mount(&mp.canonicalize().unwrap()), "the demo's unmount hint failed: {}", String::from_utf8_lossy(&gone.stderr));
}

/// The README's "Using it" block runs as printed, line for line, with its store and
/// mountpoint moved into a temporary directory and `B` this build.
#[test]
fn the_readme_examples_run_as_printed() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let after = readme.split("## Using it").nth(1).expect("a 'Using it' section");
    let block = after.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block under 'Using it'");
    let base = tmp.path().join("atlas");
    let venv = common::repo().join(".venv/bin/python");
    assert!(block.contains("/tmp/atlas/") && block.contains("B=target/release/atlasfs") && block.contains(".venv/bin/python"), "the block changed:\n{block}");
    let script = block
        .replace("cargo build --release\n", "")
        .replace("B=target/release/atlasfs", &format!("B='{}'", bin()))
        .replace("/tmp/atlas/", &format!("{}/", base.display()))
        .replace(".venv/bin/python", venv.to_str().unwrap());
    let out = Command::new("bash").arg("-ec").arg(&script).current_dir(tmp.path()).env_remove("RUST_LOG").output().expect("spawn bash");
    let mp = base.join("mnt");
    if mp.exists() && is_fuse_mount(&mp.canonicalize().unwrap()) {
        let _ = Command::new("fusermount3").arg("-u").arg(&mp).status();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "README examples failed:\n{script}\n--- stdout\n{text}\n--- stderr\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("temperature") && text.contains("jan"), "README examples printed:\n{text}");
}
