//! Permissions and containment on a real mount:
//!
//! 1. a `--read-only` mount refuses every kind of change with `EROFS` (create, write
//!    opens, truncate, mkdir, rmdir, unlink, rename, xattrs, chmod/chown/utimes,
//!    link/symlink/mknod, the control files), reads still work, and the store's
//!    files are byte-for-byte unchanged afterwards (tests/mount.rs s4 checks the
//!    common ones through Python against atlas-python; this adds the rest and the
//!    bytes);
//! 2. without `--allow-other` another user (`nobody`) cannot even stat or list the
//!    mount (`EACCES`); with it they can read, and the usual mode checks refuse
//!    their changes;
//! 3. no name reaches outside the store: array and dataset names that decode or
//!    normalize to `..`, `/` or `\`, links and symlinks; the store's parent
//!    directory (with a sentinel file in it) is unchanged and every file of the
//!    store stays under it.
//!
//! Needs root (to switch to `nobody` with setpriv), /dev/fuse and fusermount3.
//! Run: `cargo test --release --test permissions -- --test-threads=1`

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use atlasfs::store::{Cells, DType};
use common::mount::{Mounted, bin};

/// The tests mount daemons and switch users: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn npy_i64(vals: &[i64]) -> Vec<u8> {
    atlasfs::fs::npy::encode(&DType::Int64, &[vals.len()], &Cells::Fixed { elsize: 8, bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// errno of a libc call's -1 result, 0 on success.
fn errno_of(rc: libc::c_int) -> i32 {
    if rc == -1 { std::io::Error::last_os_error().raw_os_error().unwrap() } else { 0 }
}

fn err_name(e: i32) -> String {
    match e {
        0 => "success".into(),
        libc::EROFS => "EROFS".into(),
        libc::EACCES => "EACCES".into(),
        libc::EPERM => "EPERM".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EXDEV => "EXDEV".into(),
        libc::ENOSYS => "ENOSYS".into(),
        e => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
    }
}

/// Every file under `root` (relative path → bytes), directories as empty entries.
fn snapshot(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if Some(p.as_path()) == skip {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    // Other users must be able to reach the mountpoint for test 2 to mean anything.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A store with datasets `ds` (array `a`, attribute `k`) and `empty`.
fn make_store(dir: &Path) -> (PathBuf, Vec<u8>) {
    let store = dir.join("store");
    let src = dir.join("a.npy");
    let a = npy_i64(&[1, 2, 3, 4]);
    std::fs::write(&src, &a).unwrap();
    for args in [vec!["create".as_ref(), store.as_os_str()], vec!["put".as_ref(), store.as_os_str(), "ds/a".as_ref(), src.as_os_str()]] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert!(out.status.success(), "atlasfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_file(&src).unwrap();
    let mp = dir.join("setup-mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &["--xattrs"]);
    std::fs::create_dir(m.mp().join("empty")).unwrap();
    let ds = cpath(&m.mp().join("ds"));
    // SAFETY: valid C strings and buffer.
    let rc = unsafe { libc::setxattr(ds.as_ptr(), c"user.atlas.attr.k".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(errno_of(rc), 0, "setxattr ds user.atlas.attr.k");
    m.unmount();
    std::fs::remove_dir(&mp).unwrap();
    (store, a)
}

#[test]
fn read_only_mount_refuses_every_change_with_erofs() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("atlasfs-perm-ro");
    let (store, a) = make_store(dir.path());
    let before = snapshot(&store, None);
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &["--read-only", "--xattrs"]);
    let p = |rel: &str| cpath(&m.mp().join(rel));
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, b"x").unwrap();
    let open = |rel: &str, flags: libc::c_int| {
        let c = p(rel);
        // SAFETY: a valid C string; the descriptor, if any, is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
        let e = errno_of(fd);
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        e
    };
    let mut ops: Vec<(&str, i32)> = vec![];
    // SAFETY (all below): libc calls on valid C strings and buffers.
    unsafe {
        ops.push(("create ds/new.npy", open("ds/new.npy", libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)));
        ops.push(("create ds/new.npy O_EXCL", open("ds/new.npy", libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)));
        ops.push(("open ds/a.npy O_WRONLY", open("ds/a.npy", libc::O_WRONLY)));
        ops.push(("open ds/a.npy O_RDWR", open("ds/a.npy", libc::O_RDWR)));
        ops.push(("open ds/a.npy O_WRONLY|O_TRUNC", open("ds/a.npy", libc::O_WRONLY | libc::O_TRUNC)));
        ops.push(("open ds/a.npy O_WRONLY|O_APPEND", open("ds/a.npy", libc::O_WRONLY | libc::O_APPEND)));
        ops.push(("truncate ds/a.npy 0", errno_of(libc::truncate(p("ds/a.npy").as_ptr(), 0))));
        ops.push(("mkdir new", errno_of(libc::mkdir(p("new").as_ptr(), 0o755))));
        ops.push(("mkdir ds/sub", errno_of(libc::mkdir(p("ds/sub").as_ptr(), 0o755))));
        ops.push(("rmdir empty", errno_of(libc::rmdir(p("empty").as_ptr()))));
        ops.push(("unlink ds/a.npy", errno_of(libc::unlink(p("ds/a.npy").as_ptr()))));
        ops.push(("rename ds/a.npy ds/b.npy", errno_of(libc::rename(p("ds/a.npy").as_ptr(), p("ds/b.npy").as_ptr()))));
        ops.push(("rename ds/a.npy empty/a.npy", errno_of(libc::rename(p("ds/a.npy").as_ptr(), p("empty/a.npy").as_ptr()))));
        ops.push(("rename ds ds2", errno_of(libc::rename(p("ds").as_ptr(), p("ds2").as_ptr()))));
        ops.push(("setxattr ds user.atlas.attr.k", errno_of(libc::setxattr(p("ds").as_ptr(), c"user.atlas.attr.k".as_ptr(), b"2".as_ptr().cast(), 1, 0))));
        ops.push(("setxattr ds user.atlas.attr.new", errno_of(libc::setxattr(p("ds").as_ptr(), c"user.atlas.attr.new".as_ptr(), b"2".as_ptr().cast(), 1, 0))));
        ops.push(("removexattr ds user.atlas.attr.k", errno_of(libc::removexattr(p("ds").as_ptr(), c"user.atlas.attr.k".as_ptr()))));
        ops.push(("setxattr ds/a.npy", errno_of(libc::setxattr(p("ds/a.npy").as_ptr(), c"user.atlas.dtype".as_ptr(), b"1".as_ptr().cast(), 1, 0))));
        ops.push(("chmod ds/a.npy 0600", errno_of(libc::chmod(p("ds/a.npy").as_ptr(), 0o600))));
        ops.push(("chmod ds 0700", errno_of(libc::chmod(p("ds").as_ptr(), 0o700))));
        ops.push(("chown ds/a.npy 1:1", errno_of(libc::chown(p("ds/a.npy").as_ptr(), 1, 1))));
        ops.push(("utimensat ds/a.npy now", errno_of(libc::utimensat(libc::AT_FDCWD, p("ds/a.npy").as_ptr(), std::ptr::null(), 0))));
        let times = [libc::timespec { tv_sec: 1, tv_nsec: 0 }, libc::timespec { tv_sec: 1, tv_nsec: 0 }];
        ops.push(("utimensat ds/a.npy 1970", errno_of(libc::utimensat(libc::AT_FDCWD, p("ds/a.npy").as_ptr(), times.as_ptr(), 0))));
        ops.push(("symlink ds/l.npy", errno_of(libc::symlink(c"/etc/passwd".as_ptr(), p("ds/l.npy").as_ptr()))));
        ops.push(("link ds/a.npy ds/h.npy", errno_of(libc::link(p("ds/a.npy").as_ptr(), p("ds/h.npy").as_ptr()))));
        ops.push(("mknod ds/n.npy", errno_of(libc::mknod(p("ds/n.npy").as_ptr(), libc::S_IFREG | 0o644, 0))));
        ops.push(("mkfifo ds/f.npy", errno_of(libc::mkfifo(p("ds/f.npy").as_ptr(), 0o644))));
        ops.push(("write .atlasfs/flush", open(".atlasfs/flush", libc::O_WRONLY)));
        ops.push(("write .atlasfs/compact", open(".atlasfs/compact", libc::O_WRONLY)));
        ops.push(("write .atlasfs/stats", open(".atlasfs/stats", libc::O_WRONLY)));
        ops.push(("write .atlasfs/stacked/a.npy", open(".atlasfs/stacked/a.npy", libc::O_WRONLY)));
        ops.push(("unlink .atlasfs/stats", errno_of(libc::unlink(p(".atlasfs/stats").as_ptr()))));
        ops.push(("rename outside file into the mount", errno_of(libc::rename(cpath(&outside).as_ptr(), p("ds/o.npy").as_ptr()))));
    }
    let wrong: Vec<String> = ops.iter().filter(|(_, e)| *e != libc::EROFS).map(|(what, e)| format!("{what}: {}", err_name(*e))).collect();
    // a rename from another filesystem is refused before any filesystem sees it
    let wrong: Vec<String> = wrong.into_iter().filter(|w| w != "rename outside file into the mount: EXDEV").collect();

    // reads work, and show nothing changed
    assert_eq!(std::fs::read(m.mp().join("ds/a.npy")).unwrap(), a, "reading ds/a.npy on the read-only mount");
    let mut names: Vec<String> = std::fs::read_dir(m.mp()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [".atlasfs", "ds", "empty"], "root listing");
    assert_eq!(std::fs::read_dir(m.mp().join("ds")).unwrap().count(), 1, "ds lists a.npy only");
    assert!(std::fs::read(m.mp().join(".atlasfs/stats")).is_ok(), "stats is readable");
    let mode = std::fs::metadata(m.mp().join("ds/a.npy")).unwrap().permissions().mode();
    m.unmount();

    assert!(wrong.is_empty(), "on a --read-only mount these did not fail with EROFS:\n  {}", wrong.join("\n  "));
    assert_eq!(mode & 0o777, 0o444, "files show mode 0444 on a read-only mount");
    let after = snapshot(&store, None);
    let changed: Vec<String> = before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).map(|k| k.display().to_string()).collect();
    assert!(changed.is_empty(), "the store changed under a read-only mount: {changed:?}");
    assert!(std::fs::read(&outside).unwrap() == b"x", "the file outside is untouched");
}

/// Runs a Python snippet as `nobody` (uid/gid 65534, no groups) with `args`; returns
/// its stdout (one JSON object).
fn as_nobody(script: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env_remove("PYTHONPATH")
        .output()
        .expect("setpriv (util-linux) and python3 must be installed");
    assert!(out.status.success(), "python3 as nobody failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("as nobody: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// What `nobody` gets for each operation: "ok" or the errno name.
const PROBE: &str = r#"
import errno, json, os, sys
mnt = sys.argv[1]
P = lambda *p: os.path.join(mnt, *p)
def t(fn):
    try:
        r = fn()
        return "ok" if r is None or not isinstance(r, (bytes, list)) else ("ok:" + (r.hex() if isinstance(r, bytes) else ",".join(sorted(r))))
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def read(p):
    with open(p, "rb") as f:
        return f.read()
def create(p):
    with open(p, "wb") as f:
        f.write(b"x")
out = {
    "stat root": t(lambda: os.stat(mnt) and None),
    "list root": t(lambda: os.listdir(mnt)),
    "stat ds/a.npy": t(lambda: os.stat(P("ds", "a.npy")) and None),
    "list ds": t(lambda: os.listdir(P("ds"))),
    "read ds/a.npy": t(lambda: read(P("ds", "a.npy"))),
    "getxattr ds": t(lambda: os.getxattr(P("ds"), "user.atlas.attr.k")),
    "create ds/new.npy": t(lambda: create(P("ds", "new.npy"))),
    "write ds/a.npy": t(lambda: os.close(os.open(P("ds", "a.npy"), os.O_WRONLY))),
    "mkdir new": t(lambda: os.mkdir(P("new"))),
    "unlink ds/a.npy": t(lambda: os.unlink(P("ds", "a.npy"))),
    "rename ds/a.npy": t(lambda: os.rename(P("ds", "a.npy"), P("ds", "b.npy"))),
    "rmdir empty": t(lambda: os.rmdir(P("empty"))),
    "setxattr ds": t(lambda: os.setxattr(P("ds"), "user.atlas.attr.k", b"2")),
    "write .atlasfs/flush": t(lambda: os.close(os.open(P(".atlasfs", "flush"), os.O_WRONLY))),
    "write .atlasfs/compact": t(lambda: os.close(os.open(P(".atlasfs", "compact"), os.O_WRONLY))),
}
print(json.dumps(out))
"#;

#[test]
fn other_users_need_allow_other() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test switches to the user nobody and must run as root");
    let dir = tempdir("atlasfs-perm-users");
    let (store, a) = make_store(dir.path());
    let before = snapshot(&store, None);
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();

    // without --allow-other: nothing at all, not even stat of the mount's root
    let m = Mounted::start(&store, &mp, &["--xattrs"]);
    let got = as_nobody(PROBE, &[m.mp()]);
    m.unmount();
    let not_denied: Vec<String> = got.as_object().unwrap().iter().filter(|(_, v)| *v != "EACCES").map(|(k, v)| format!("{k}: {v}")).collect();
    assert!(not_denied.is_empty(), "without --allow-other, another user must get EACCES for everything; got:\n  {}", not_denied.join("\n  "));
    // (the same mountpoint, unmounted, is reachable by nobody: the refusal was the mount's)
    let plain = as_nobody("import os, sys, json; print(json.dumps(os.listdir(sys.argv[1])))", &[&mp]);
    assert_eq!(plain, serde_json::json!([]), "nobody lists the bare mountpoint");

    // with --allow-other: reads work; the mode checks (dirs 0755, files 0644, owned by root) refuse changes
    let m = Mounted::start(&store, &mp, &["--allow-other", "--xattrs"]);
    let got = as_nobody(PROBE, &[m.mp()]);
    m.unmount();
    let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
    let want = serde_json::json!({
        "stat root": "ok",
        "list root": "ok:.atlasfs,ds,empty",
        "stat ds/a.npy": "ok",
        "list ds": "ok:a.npy",
        "read ds/a.npy": format!("ok:{hex}"),
        "getxattr ds": "ok:31",
        "create ds/new.npy": "EACCES",
        "write ds/a.npy": "EACCES",
        "mkdir new": "EACCES",
        "unlink ds/a.npy": "EACCES",
        "rename ds/a.npy": "EACCES",
        "rmdir empty": "EACCES",
        "setxattr ds": "EACCES",
        "write .atlasfs/flush": "EACCES",
        "write .atlasfs/compact": "EACCES",
    });
    let diff: Vec<String> =
        want.as_object().unwrap().iter().filter(|(k, v)| got.get(k.as_str()) != Some(v)).map(|(k, v)| format!("{k}: got {}, expected {v}", got[k.as_str()])).collect();
    assert!(diff.is_empty(), "another user on an --allow-other mount:\n  {}", diff.join("\n  "));
    let after = snapshot(&store, None);
    assert!(before == after, "another user's refused changes changed the store");
}

#[test]
fn no_name_reaches_outside_the_store() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("atlasfs-perm-escape");
    // STORE_PARENT/{store, sentinel.txt, outside/}; the mountpoint elsewhere
    let parent = dir.path().join("s");
    std::fs::create_dir(&parent).unwrap();
    let (store, _) = make_store(&parent);
    std::fs::write(parent.join("sentinel.txt"), b"secret sentinel").unwrap();
    std::fs::create_dir(parent.join("outside")).unwrap();
    std::fs::write(parent.join("outside/keep.npy"), npy_i64(&[9])).unwrap();
    let outside_before = snapshot(&parent, Some(&store));
    let mp = dir.path().join("m/mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &["--xattrs"]);
    let ds = m.mp().join("ds");

    // names whose store paths could decode, normalize or be joined into `..` or `/`
    let names = [
        "%2e%2e",
        "%2E%2E",
        "%2e",
        "%2e%2e%2fsentinel.txt",
        "..%2f..%2fsentinel",
        "%2e%2e%2f%2e%2e%2foutside%2fkeep",
        "a%2Fb",
        "%2f",
        "%5c..%5c..%5csentinel",
        "..\\..\\sentinel",
        "a\\b",
        "...",
        "..%00",
        "~",
        "$HOME",
        "*",
    ];
    let mut problems = vec![];
    for (i, n) in names.iter().enumerate() {
        let f = ds.join(format!("{n}.npy"));
        let bytes = npy_i64(&[i as i64, 7]);
        match std::fs::write(&f, &bytes) {
            Ok(()) => match std::fs::read(&f) {
                Ok(got) if got == bytes => {}
                Ok(got) => problems.push(format!("{n}.npy reads back {} other bytes", got.len())),
                Err(e) => problems.push(format!("{n}.npy written but not readable: {e}")),
            },
            Err(e) => problems.push(format!("writing the array {n}.npy: {e}")),
        }
        // a dataset of that name lives in the metadata only
        if let Err(e) = std::fs::create_dir(m.mp().join(n)) {
            problems.push(format!("mkdir {n}: {e}"));
        }
        // the name as an attribute key is stored in the metadata too
        let key = CString::new(format!("user.atlas.attr.{n}")).unwrap();
        // SAFETY: valid C strings and buffer.
        let rc = unsafe { libc::setxattr(cpath(&ds).as_ptr(), key.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        if rc != 0 {
            problems.push(format!("setxattr {key:?}: {}", err_name(errno_of(rc))));
        }
    }
    // names that are `.`/`..` once `.npy` is stripped are not arrays: hidden temp files at most
    for n in ["..npy", "...npy"] {
        let f = ds.join(n);
        let _ = std::fs::write(&f, npy_i64(&[1]));
        let _ = std::fs::remove_file(&f);
    }
    // links and symlinks to the outside are refused
    let sentinel = parent.join("sentinel.txt");
    let sym = std::os::unix::fs::symlink(&sentinel, ds.join("l.npy")).err().and_then(|e| e.raw_os_error());
    let sym_root = std::os::unix::fs::symlink(&parent, m.mp().join("up")).err().and_then(|e| e.raw_os_error());
    let hard_in = std::fs::hard_link(&sentinel, ds.join("h.npy")).err().and_then(|e| e.raw_os_error());
    let hard_out = std::fs::hard_link(ds.join("a.npy"), parent.join("a-link.npy")).err().and_then(|e| e.raw_os_error());
    // reading names that were never written never yields the sentinel
    for n in ["%2e%2e%2fsentinel.txt", "..%2fsentinel.txt", "%2e%2e%2f%2e%2e%2fsentinel.txt"] {
        if let Ok(b) = std::fs::read(ds.join(n)) {
            problems.push(format!("reading ds/{n} (never written) gave {} bytes", b.len()));
        }
    }
    std::fs::write(m.mp().join(".atlasfs/flush"), b"1").expect("flush");
    std::fs::write(m.mp().join(".atlasfs/compact"), b"1").expect("compact");
    m.unmount();

    assert_eq!(sym, Some(libc::EPERM), "symlink in a dataset to the sentinel outside the store");
    assert_eq!(sym_root, Some(libc::EPERM), "symlink at the mount's root to the store's parent");
    assert_eq!(hard_in, Some(libc::EXDEV), "hard link from outside into the mount");
    assert_eq!(hard_out, Some(libc::EXDEV), "hard link from the mount to outside");
    assert!(problems.is_empty(), "escaping names:\n  {}", problems.join("\n  "));
    let outside_after = snapshot(&parent, Some(&store));
    assert!(
        outside_before == outside_after,
        "the store's parent changed: before {:?}, after {:?}",
        outside_before.keys().collect::<Vec<_>>(),
        outside_after.keys().collect::<Vec<_>>()
    );
    // every file of the store is under it (no `..` in a stored path, no symlink)
    let canon = store.canonicalize().unwrap();
    for (rel, _) in snapshot(&store, None) {
        let full = store.join(&rel);
        assert!(!std::fs::symlink_metadata(&full).unwrap().file_type().is_symlink(), "a symlink in the store: {}", rel.display());
        assert!(full.canonicalize().unwrap().starts_with(&canon), "{} resolves outside the store", rel.display());
        assert!(rel.components().all(|c| matches!(c, std::path::Component::Normal(_))), "odd store path {}", rel.display());
    }
    // a remount shows every array under its own name, with its own bytes
    let m = Mounted::start(&store, &mp, &["--read-only", "--xattrs"]);
    for (i, n) in names.iter().enumerate() {
        let got = std::fs::read(m.mp().join("ds").join(format!("{n}.npy"))).unwrap_or_else(|e| panic!("after a remount, ds/{n}.npy: {e}"));
        assert_eq!(got, npy_i64(&[i as i64, 7]), "after a remount, ds/{n}.npy");
        assert!(m.mp().join(n).is_dir(), "after a remount, the dataset {n}");
    }
    m.unmount();
}
