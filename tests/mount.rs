//! The FUSE daemon against the real kernel: `atlasfs mount STORE MP --foreground`
//! serves a store, and standard tools (numpy, cp, rsync, ls, du, find, stat, cat)
//! read and write it. atlas-python 0.10 is the oracle for what a store holds.
//!
//! Scenarios ("FUSE daemon" must-show list):
//! 1. reading a store written by atlas-python (every dtype, chunked/unchunked, 0-D,
//!    fills, several layers, a deleted array) with numpy and shell tools;
//! 2. writing with np.save, mkdir, cp -r, rsync -a and `cat >`, checked through the
//!    mount, by atlas-python after unmount, and through a remount;
//! 3. in-place edits with np.load(mmap_mode='r+') and pwrite;
//! 4. semantics: errno of refused operations, renames, unlink, garbage .npy files,
//!    xattrs, a --read-only mount;
//! 5. compaction through `.atlasfs/compact` while files are held open; stats;
//! 6. durability: fsync / `.atlasfs/flush` survive kill -9; SIGTERM flushes.
//!
//! Scenarios 1–6 run twice: with the store in a local directory (`s1_…`) and in a
//! bucket of a real S3-compatible server (moto on 127.0.0.1, `s1_…_on_s3`), where
//! atlas-python 0.10 writes and checks the store through obstore and the daemon and
//! the CLI reach it with `--endpoint`. The bodies are shared (see [`Backend`]).
//!
//! Needs /dev/fuse, fusermount3, rsync, getfattr and the venv of
//! `scripts/setup-test-env.sh`; a missing tool fails the test, it does not skip.
//! The tests take one global lock: each mounts a daemon and they are heavy on 2 cores.
//!
//! Run: `cargo test --release --test mount -- --test-threads=1`

mod common;

use common::mount::{EXIT_TIMEOUT, Mounted, bin, fusermount, is_fuse_mount, log_report};
#[path = "conformance/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ harness

static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Daemon logs of the running test, printed if it fails.
    static LOGS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// One test's world: the global lock, a temp dir, and on failure the daemon logs.
/// Declare it first so it is dropped last (after every [`Mounted`]).
struct Ctx {
    dir: tempfile::TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl Ctx {
    fn new() -> Ctx {
        let lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        require_tools();
        LOGS.with(|l| l.borrow_mut().clear());
        Ctx { dir: tempfile::Builder::new().prefix("atlasfs-mount-test").tempdir().expect("tempdir"), _lock: lock }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in LOGS.with(|l| l.borrow().clone()) {
                eprintln!("{}", log_report(&log));
            }
        }
    }
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn require_tools() {
    assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing: the mount tests need FUSE (a container needs --device /dev/fuse --cap-add SYS_ADMIN)");
    for (tool, arg, pkg) in [("fusermount3", "-V", "fuse3"), ("rsync", "--version", "rsync"), ("getfattr", "--version", "attr")] {
        assert!(have(tool, arg), "{tool} is not installed (Debian package {pkg}): run scripts/setup-test-env.sh");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs a tests/python script with the venv interpreter; panics with its output on failure.
fn py(script: &str, args: &[&str]) -> String {
    py_env(None, &[], script, args)
}

/// Runs a tests/python script with extra environment. With `problems`, the script's
/// check failures (see `fail_if` in mount_common.py) are returned there instead of
/// failing at once, so a scenario can go on and report them all.
fn py_env(problems: Option<&mut Vec<String>>, env: &[(&str, String)], script: &str, args: &[&str]) -> String {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let python = PY.get_or_init(common::python);
    let file = std::env::temp_dir().join(format!("atlasfs-mount-problems-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut cmd = Command::new(python);
    cmd.arg(common::repo().join("tests/python").join(script)).args(args).env("PYTHONDONTWRITEBYTECODE", "1").envs(env.iter().map(|(k, v)| (k, v)));
    if problems.is_some() {
        cmd.env("MOUNT_CHECK_PROBLEMS", &file);
    }
    let out = cmd.output().expect("spawn python");
    assert!(out.status.success(), "python {script} {args:?} failed:\n--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if let Some(problems) = problems
        && let Ok(text) = std::fs::read_to_string(&file)
    {
        problems.extend(text.lines().map(|l| serde_json::from_str::<String>(l).unwrap()));
        let _ = std::fs::remove_file(&file);
    }
    String::from_utf8(out.stdout).unwrap()
}

/// Where a scenario keeps its store: a local directory, or a prefix of a bucket on a
/// moto server on 127.0.0.1, which the daemon and the CLI reach with `--endpoint` and
/// the AWS_* environment, and atlas-python 0.10 through obstore (mount_common.source).
struct Backend {
    s3: Option<moto::MotoServer>,
}

const BUCKET: &str = "mount";

impl Backend {
    fn local() -> Backend {
        Backend { s3: None }
    }

    fn s3() -> Backend {
        Backend { s3: Some(moto::MotoServer::start(BUCKET)) }
    }

    /// The STORE argument for a store named `name`: `DIR/name` or `s3://mount/name`.
    fn store(&self, ctx: &Ctx, name: &str) -> String {
        match &self.s3 {
            None => s(&ctx.path(name)).to_string(),
            Some(_) => format!("s3://{BUCKET}/{name}"),
        }
    }

    /// The AWS_* environment for the daemon, the CLI and atlas-python (none for a local store).
    fn env(&self) -> Vec<(&'static str, String)> {
        let Some(server) = &self.s3 else { return vec![] };
        vec![
            ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY.into()),
            ("AWS_REGION", moto::REGION.into()),
            ("AWS_ENDPOINT_URL", server.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `atlasfs` with the environment; for S3 also `--endpoint` (a global flag, so it
    /// goes first and the caller adds the subcommand).
    fn cli(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.envs(self.env());
        if let Some(server) = &self.s3 {
            cmd.args(["--endpoint", &server.endpoint()]);
        }
        cmd
    }

    fn mount(&self, store: &str, mp: &Path, extra: &[&str]) -> Mounted {
        let endpoint = self.s3.as_ref().map(|s| s.endpoint());
        let mut args: Vec<&str> = endpoint.iter().flat_map(|e| ["--endpoint", e.as_str()]).collect();
        args.extend_from_slice(extra);
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        mounted(store.as_ref(), mp, &args, &env)
    }

    fn py(&self, script: &str, args: &[&str]) -> String {
        py_env(None, &self.env(), script, args)
    }

    fn py_soft(&self, problems: &mut Vec<String>, script: &str, args: &[&str]) -> String {
        py_env(Some(problems), &self.env(), script, args)
    }
}

/// `#[test] fn LOCAL` runs `body` on a local store, `#[test] fn ON_S3` on a moto bucket.
macro_rules! local_and_s3 {
    ($body:ident => $local:ident, $on_s3:ident) => {
        #[test]
        fn $local() {
            let ctx = Ctx::new();
            $body(&ctx, &Backend::local());
        }

        #[test]
        fn $on_s3() {
            let ctx = Ctx::new();
            $body(&ctx, &Backend::s3());
        }
    };
}

/// Runs a command; it must succeed. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn log_text(m: &Mounted) -> String {
    m.log_text()
}

/// A daemon for `store` at `mp` (see `common::mount`); its log is printed if the test fails.
fn mounted(store: &std::ffi::OsStr, mp: &Path, extra: &[&str], env: &[(&str, &str)]) -> Mounted {
    let m = Mounted::start_with(store, mp, extra, env);
    LOGS.with(|l| l.borrow_mut().push(m.log.clone()));
    m
}

// ------------------------------------------------------------------ scenario 1: reading

local_and_s3!(read_store_written_by_atlas_python => s1_read_store_written_by_atlas_python, s1_read_store_written_by_atlas_python_on_s3);

fn read_store_written_by_atlas_python(ctx: &Ctx, b: &Backend) {
    let store = b.store(ctx, "store");
    let oracle = ctx.path("oracle.pkl");
    let mp = ctx.mkdir("mnt");
    b.py("mount_store.py", &["full", &store, s(&oracle)]);
    let m = b.mount(&store, &mp, &[]);
    let mp = m.mp().to_path_buf();

    // numpy (plain and mmap), exact bytes, st_size, preads; cold cache
    let sizes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&py("mount_check.py", &["read", s(&mp), s(&oracle)])).unwrap();
    assert_eq!(sizes.len(), 42, "arrays read: {sizes:?}");
    let sizes: Vec<(String, u64)> = sizes.into_iter().map(|(k, v)| (k, v.as_u64().unwrap())).collect();

    // ls -l: every name with its size
    for ds in ["obs", "grid"] {
        let out = run(Command::new("ls").arg("-l").arg(mp.join(ds)));
        for (path, size) in sizes.iter().filter(|(p, _)| p.starts_with(&format!("{ds}/"))) {
            let name = path.split('/').nth(1).unwrap();
            let line = out.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap_or_else(|| panic!("ls -l {ds} lacks {name}:\n{out}"));
            assert!(line.starts_with("-rw-r--r--"), "ls -l {ds}: {line}");
            assert!(line.split_whitespace().any(|f| f == size.to_string()), "ls -l {ds}: {name} should show size {size}: {line}");
        }
        assert_eq!(out.lines().filter(|l| l.starts_with('-')).count(), sizes.iter().filter(|(p, _)| p.starts_with(&format!("{ds}/"))).count(), "ls -l {ds}:\n{out}");
    }
    let out = run(Command::new("ls").arg("-la").arg(&mp));
    for d in [".atlasfs", "obs", "grid", "empty_ds"] {
        assert!(out.lines().any(|l| l.starts_with('d') && l.ends_with(&format!(" {d}"))), "ls -la MOUNT lacks directory {d}:\n{out}");
    }
    assert!(run(Command::new("ls").arg("-A").arg(mp.join("empty_ds"))).is_empty());

    // stat: size and type of every file
    let mut cmd = Command::new("stat");
    cmd.arg("-c").arg("%s %F %n");
    for (p, _) in &sizes {
        cmd.arg(mp.join(p));
    }
    let out = run(&mut cmd);
    for ((p, size), line) in sizes.iter().zip(out.lines()) {
        assert_eq!(line, format!("{size} regular file {}", mp.join(p).display()), "stat");
    }
    let out = run(Command::new("stat").arg(mp.join("obs")));
    assert!(out.contains("directory"), "stat obs: {out}");

    // find: exactly the arrays, plus the stacked views (checked by mount_check.py)
    let out = run(Command::new("find").arg(&mp).arg("-name").arg("*.npy"));
    let (stacked, mut found): (Vec<String>, Vec<String>) =
        out.lines().map(|l| l.strip_prefix(&format!("{}/", mp.display())).unwrap_or(l).to_string()).partition(|p| p.starts_with(".atlasfs/"));
    found.sort();
    let mut want: Vec<String> = sizes.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(found, want, "find MOUNT -name '*.npy'");
    assert!(stacked.iter().all(|p| p.starts_with(".atlasfs/stacked/")) && stacked.contains(&".atlasfs/stacked/temp.npy".to_string()), "find under .atlasfs: {stacked:?}");

    // du -a: every file, with a block count that covers its size
    let out = run(Command::new("du").arg("-a").arg("-B1").arg(&mp));
    for (p, size) in &sizes {
        let full = mp.join(p).display().to_string();
        let line = out.lines().find(|l| l.ends_with(&format!("\t{full}"))).unwrap_or_else(|| panic!("du -a lacks {full}:\n{out}"));
        let bytes: u64 = line.split('\t').next().unwrap().parse().unwrap();
        assert!(bytes >= *size, "du -a: {full} uses {bytes} bytes for a {size}-byte file");
    }

    // cp -r out of the mount; the copies are checked with np.load below
    let copy = ctx.mkdir("copy");
    run(Command::new("cp").arg("-r").arg(mp.join("obs")).arg(mp.join("grid")).arg(mp.join("empty_ds")).arg(&copy));
    for (p, size) in &sizes {
        assert_eq!(std::fs::metadata(copy.join(p)).unwrap().len(), *size, "cp -r: size of the copy of {p}");
    }
    py("mount_check.py", &["read", s(&mp), s(&oracle), s(&copy)]);

    // statfs
    run(Command::new("df").arg(&mp));
    // a busy mount: 'atlasfs unmount' refuses, and the mount stays usable
    {
        let f = std::fs::File::open(mp.join("obs/c_float64.npy")).unwrap();
        let out = Command::new(bin()).arg("unmount").arg(&mp).output().unwrap();
        assert!(!out.status.success(), "'atlasfs unmount' of a mount with an open file should fail");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unmount failed"), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        assert!(is_fuse_mount(&mp), "a busy mount must stay mounted");
        assert_eq!(std::fs::metadata(mp.join("obs/c_float64.npy")).unwrap().len(), sizes.iter().find(|(p, _)| p == "obs/c_float64.npy").unwrap().1);
        drop(f);
    }

    let log = log_text(&m);
    m.unmount();
    assert!(log.contains("mounted"), "the daemon log should say it mounted:\n{log}");
}

// ------------------------------------------------------------------ scenario 2: writing

local_and_s3!(write_with_numpy_cp_rsync_cat => s2_write_with_numpy_cp_rsync_cat, s2_write_with_numpy_cp_rsync_cat_on_s3);

fn write_with_numpy_cp_rsync_cat(ctx: &Ctx, b: &Backend) {
    let store = b.store(ctx, "store"); // made by mount --create
    let src = ctx.mkdir("src");
    let oracle = ctx.path("written.pkl");
    let mp = ctx.mkdir("mnt");
    let m = b.mount(&store, &mp, &["--create"]);
    let mp = m.mp().to_path_buf();

    py("mount_check.py", &["write", s(&mp), s(&src), s(&oracle)]);
    run(Command::new("mkdir").arg(mp.join("newds")));
    assert!(mp.join("newds").is_dir());
    run(Command::new("cp").arg("-r").arg(src.join("cpsrc")).arg(mp.join("cpds")));
    run(Command::new("rsync").arg("-a").arg(format!("{}/", src.join("rsyncsrc").display())).arg(format!("{}/", mp.join("rsyncds").display())));
    // Failures below are collected so that the rest of the scenario still runs.
    let mut problems: Vec<String> = vec![];
    // rsync renamed its temp files into place: the new names must work at once
    for n in ["r1", "r2", "r3"] {
        let want = std::fs::read(src.join(format!("rsyncsrc/{n}.npy"))).unwrap();
        match std::fs::read(mp.join(format!("rsyncds/{n}.npy"))) {
            Ok(got) if got == want => {}
            Ok(got) => problems.push(format!("right after rsync -a: rsyncds/{n}.npy reads {} bytes that differ from the source's {}", got.len(), want.len())),
            Err(e) => problems.push(format!("right after rsync -a: reading rsyncds/{n}.npy: {e}")),
        }
    }
    // rsync again: r1 changed (dtype and shape), replaced through a temp file and a rename over it
    run(Command::new("rsync").arg("-a").arg(format!("{}/", src.join("rsyncsrc2").display())).arg(format!("{}/", mp.join("rsyncds").display())));
    let want = std::fs::read(src.join("rsyncsrc2/r1.npy")).unwrap();
    match std::fs::read(mp.join("rsyncds/r1.npy")) {
        Ok(got) if got == want => {}
        Ok(got) => problems.push(format!("right after the second rsync -a: rsyncds/r1.npy reads {} bytes that differ from the new source's {}", got.len(), want.len())),
        Err(e) => problems.push(format!("right after the second rsync -a: reading rsyncds/r1.npy: {e}")),
    }
    // a shell redirect: open(O_TRUNC), dup2 onto stdout, close (a FUSE flush of the still-empty file), then writes
    let out = Command::new("sh").arg("-c").arg(format!("cat '{}' > '{}'", src.join("cat.npy").display(), mp.join("wds/cat.npy").display())).output().unwrap();
    if !out.status.success() {
        problems.push(format!("cat cat.npy > MOUNT/wds/cat.npy failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        // go on with a copy instead, so the rest of the scenario runs
        if let Err(e) = std::fs::copy(src.join("cat.npy"), mp.join("wds/cat.npy")) {
            problems.push(format!("cp cat.npy MOUNT/wds/cat.npy right after the failed cat: {e}"));
            std::thread::sleep(Duration::from_millis(1200)); // the entry TTL
            std::fs::copy(src.join("cat.npy"), mp.join("wds/cat.npy")).expect("cp cat.npy into the mount (instead of cat), after the entry TTL");
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(mp.join("rsyncds")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["r1.npy", "r2.npy", "r3.npy"], "rsync's temp files must be gone, its files in place");
    b.py_soft(&mut problems, "mount_check.py", &["readback", s(&mp), s(&oracle)]);
    m.unmount();

    // atlas-python 0.10 reads what was written (it cannot read bool arrays: flag is checked by the remount)
    b.py("mount_check.py", &["store", &store, s(&oracle), "--skip", "wds/flag"]);
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["readback", s(m.mp()), s(&oracle)]);
    m.unmount();
    assert!(problems.is_empty(), "writing through the mount:\n  {}", problems.join("\n  "));
}

// ------------------------------------------------------------------ scenario 3: in-place edits

local_and_s3!(edit_in_place_with_mmap => s3_edit_in_place_with_mmap, s3_edit_in_place_with_mmap_on_s3);

fn edit_in_place_with_mmap(ctx: &Ctx, b: &Backend) {
    let store = b.store(ctx, "store");
    let oracle = ctx.path("oracle.pkl");
    let edited = ctx.path("edited.pkl");
    let mp = ctx.mkdir("mnt");
    b.py("mount_store.py", &["small", &store, s(&oracle)]);
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["edit", s(m.mp()), s(&oracle), s(&edited)]);
    m.unmount();
    b.py("mount_check.py", &["store", &store, s(&edited)]);
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["read", s(m.mp()), s(&edited)]);
    m.unmount();
}

// ------------------------------------------------------------------ scenario 4: semantics

local_and_s3!(semantics_errors_xattrs_read_only => s4_semantics_errors_xattrs_read_only, s4_semantics_errors_xattrs_read_only_on_s3);

fn semantics_errors_xattrs_read_only(ctx: &Ctx, b: &Backend) {
    let store = b.store(ctx, "store");
    let oracle = ctx.path("oracle.pkl");
    let after = ctx.path("after.pkl");
    let mp = ctx.mkdir("mnt");
    b.py("mount_store.py", &["small", &store, s(&oracle)]);
    let m = b.mount(&store, &mp, &["--xattrs"]);
    let mpp = m.mp().to_path_buf();
    let mut problems = vec![];
    b.py_soft(&mut problems, "mount_check.py", &["semantics", s(&mpp), s(&oracle), s(&after)]);
    // the same xattrs through getfattr
    let out = run(Command::new("getfattr").args(["-n", "user.atlas.dtype", "--only-values"]).arg(mpp.join("ds/temp.npy")));
    assert_eq!(out, "\"float64\"");
    let out = run(Command::new("getfattr").args(["-d", "-m", "-"]).arg(mpp.join("ds")));
    assert!(out.contains("user.atlas.attr.month=\"3\"") && out.contains("user.atlas.attr.count=\"42\""), "getfattr -d ds:\n{out}");
    // shell tools see refusals as failures
    let st = Command::new("touch").arg(mpp.join("ds/notes.txt")).stderr(Stdio::null()).status().unwrap();
    assert!(!st.success(), "touch ds/notes.txt must fail");
    m.unmount();

    let attrs = ["--attr", "ds.month=3", "--attr", "ds.count=42", "--attr", "ds.station=\"De Bilt\"", "--attr", "ds.ratio=0.5", "--attr", "ds.flag=true"];
    let mut args = vec!["store", &store, s(&after)];
    args.extend(attrs);
    b.py("mount_check.py", &args);

    // read-only: every change is EROFS, reads work, and the store is untouched
    let m = b.mount(&store, &mp, &["--read-only", "--xattrs"]);
    py("mount_check.py", &["readonly", s(m.mp()), s(&after)]);
    let st = Command::new("mkdir").arg(m.mp().join("nope")).stderr(Stdio::null()).status().unwrap();
    assert!(!st.success(), "mkdir on a read-only mount must fail");
    m.unmount();
    b.py("mount_check.py", &args);
    assert!(problems.is_empty(), "filesystem semantics:\n  {}", problems.join("\n  "));
}

// ------------------------------------------------------------------ scenario 5: compaction

local_and_s3!(compaction_with_open_readers => s5_compaction_with_open_readers, s5_compaction_with_open_readers_on_s3);

fn compaction_with_open_readers(ctx: &Ctx, b: &Backend) {
    let store = b.store(ctx, "store");
    let oracle = ctx.path("oracle.pkl");
    let after = ctx.path("after.pkl");
    let mp = ctx.mkdir("mnt");
    b.py("mount_store.py", &["full", &store, s(&oracle)]);
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["compact", s(m.mp()), s(&oracle), s(&after)]);
    let stats = std::fs::read_to_string(m.mp().join(".atlasfs/stats")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap_or_else(|e| panic!("cat .atlasfs/stats is not JSON ({e}):\n{stats}"));
    assert_eq!(v["compactions"], 2, "stats: {stats}");
    assert!(v["last_compaction_unix"].as_u64().unwrap_or(0) > 1_600_000_000, "stats: {stats}");
    m.unmount();
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["read", s(m.mp()), s(&after)]);
    m.unmount();
    b.py("mount_check.py", &["store", &store, s(&after)]);
}

// ------------------------------------------------------------------ scenario 6: durability

local_and_s3!(durability_kill9_after_fsync_and_sigterm => s6_durability_kill9_after_fsync_and_sigterm, s6_durability_kill9_after_fsync_and_sigterm_on_s3);

fn durability_kill9_after_fsync_and_sigterm(ctx: &Ctx, b: &Backend) {
    let mp = ctx.mkdir("mnt");

    // fsync and .atlasfs/flush are the durability boundary: kill -9 loses nothing before them
    let store = b.store(ctx, "store_kill");
    let oracle = ctx.path("kill.pkl");
    let m = b.mount(&store, &mp, &["--create"]);
    py("mount_check.py", &["durable", s(m.mp()), s(&oracle), "fsync"]);
    m.kill9();
    // atlas-python finds everything fsynced before the kill in the store itself
    b.py("mount_check.py", &["store", &store, s(&oracle)]);
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["read", s(m.mp()), s(&oracle)]);
    // A stale mount left by a killed daemon is cleared by the next mount, not a reason to fail.
    m.kill9_leaving_stale();
    run(b.cli().arg("mount").arg(&store).arg(&mp).arg("--log-file").arg(ctx.path("remount.log")));
    py("mount_check.py", &["read", s(&mp), s(&oracle)]);
    run(Command::new(bin()).arg("unmount").arg(&mp));
    assert!(!is_fuse_mount(&mp));

    // SIGTERM flushes and unmounts by itself
    let store = b.store(ctx, "store_term");
    let oracle = ctx.path("term.pkl");
    let m = b.mount(&store, &mp, &["--create"]);
    py("mount_check.py", &["durable", s(m.mp()), s(&oracle), "plain"]);
    let log = m.log.clone();
    m.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("signal received"), "the daemon should log the signal:\n{text}");
    let m = b.mount(&store, &mp, &[]);
    py("mount_check.py", &["read", s(m.mp()), s(&oracle)]);
    m.unmount();
    b.py("mount_check.py", &["store", &store, s(&oracle)]);
}

// ------------------------------------------------------------------ background mode, owner options

/// Unmounts a background (self-daemonized) mount on drop, and makes sure its daemon ends.
struct Background {
    mp: PathBuf,
    pid: Option<i32>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if is_fuse_mount(&self.mp) && !fusermount("-u", &self.mp) {
            fusermount("-uz", &self.mp);
        }
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                // SAFETY: kill(2) of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The pid of the `atlasfs mount ... MP ... --foreground` daemon serving `mp`.
fn daemon_pid(mp: &Path) -> Option<i32> {
    let want = mp.to_str().unwrap();
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let has = |x: &str| args.contains(&x.as_bytes());
        (has("mount") && has(want) && has("--foreground") && args.first().is_some_and(|a| a.ends_with(b"atlasfs"))).then_some(pid)
    })
}

#[test]
fn s7_background_mount_with_owner() {
    let ctx = Ctx::new();
    let store = ctx.path("store");
    let oracle = ctx.path("oracle.pkl");
    py("mount_store.py", &["small", s(&store), s(&oracle)]);
    let mp = ctx.mkdir("mnt").canonicalize().unwrap();
    let log = ctx.path("background.log");
    LOGS.with(|l| l.borrow_mut().push(log.clone()));
    let mut guard = Background { mp: mp.clone(), pid: None };
    // without --foreground, mount returns once the mount is usable
    run(Command::new(bin())
        .arg("mount")
        .arg(&store)
        .arg(&mp)
        .args(["--uid", "1234", "--gid", "5678", "--log-file", s(&log)])
        .env("RUST_LOG", "atlasfs=debug")
        .env("NO_COLOR", "1"));
    assert!(is_fuse_mount(&mp), "'atlasfs mount' returned but {} is not mounted", mp.display());
    guard.pid = daemon_pid(&mp);
    let pid = guard.pid.expect("the background daemon's process");
    let out = run(Command::new("stat").args(["-c", "%u %g %a"]).arg(mp.join("ds/temp.npy")).arg(mp.join("ds")));
    assert_eq!(out, "1234 5678 644\n1234 5678 755\n", "--uid/--gid and modes");
    py("mount_check.py", &["read", s(&mp), s(&oracle)]);
    // mounting again on a busy mountpoint is refused
    let out = Command::new(bin()).arg("mount").arg(&store).arg(&mp).arg("--foreground").output().unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "a second mount on {}: {}",
        mp.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    run(Command::new(bin()).arg("unmount").arg(&mp));
    assert!(!is_fuse_mount(&mp));
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false) {
        assert!(Instant::now() < deadline, "the background daemon {pid} still runs {EXIT_TIMEOUT:?} after 'atlasfs unmount'");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("mounted"), "the --log-file should hold the daemon's log");
}

// ------------------------------------------------------------------ scenario 8: two daemons, one bucket

fn npy_i64(vals: &[i64]) -> Vec<u8> {
    use atlasfs::store::{Cells, DType};
    atlasfs::fs::npy::encode(&DType::Int64, &[vals.len()], &Cells::Fixed { elsize: 8, bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap()
}

fn i64s_of(npy: &[u8], n: usize) -> Vec<i64> {
    npy[npy.len() - 8 * n..].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Waits until `f` holds, or panics with `what` after `limit`.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} (not within {limit:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two workstations on one S3 bucket (moto on 127.0.0.1): each daemon writes its own
/// datasets concurrently; after both flush, each mount sees the other's within the
/// metadata TTL and atlas-python reads both sets. Writing the same dataset from
/// both: the second flush fails with EBUSY and a log line, the first writer's
/// values stand.
#[test]
fn s8_two_daemons_on_one_bucket() {
    let ctx = Ctx::new();
    require_tools();
    let server = moto::MotoServer::start("shared");
    let endpoint = server.endpoint();
    let url = "s3://shared/store";
    let env = [("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY), ("AWS_REGION", moto::REGION)];
    let cli = |args: &[&str]| {
        let out = Command::new(bin()).args(args).args(["--endpoint", &endpoint]).envs(env).output().unwrap();
        assert!(out.status.success(), "atlasfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    cli(&["create", url]);
    let src = ctx.mkdir("src");
    std::fs::write(src.join("x.npy"), npy_i64(&[0, 0, 0])).unwrap();
    cli(&["put", url, "both/x", s(&src.join("x.npy"))]);

    let extra = ["--endpoint", endpoint.as_str(), "--metadata-ttl", "0.3", "--ttl", "0.1"];
    let a = mounted(url.as_ref(), &ctx.mkdir("a"), &extra, &env);
    let b = mounted(url.as_ref(), &ctx.mkdir("b"), &extra, &env);

    // Different datasets, written at the same time.
    let writers: Vec<_> = [("a", a.mp().to_path_buf()), ("b", b.mp().to_path_buf())]
        .into_iter()
        .map(|(who, mp)| {
            std::thread::spawn(move || {
                for i in 0..5i64 {
                    let ds = mp.join(format!("{who}{i}"));
                    std::fs::create_dir(&ds).unwrap();
                    std::fs::write(ds.join("v.npy"), npy_i64(&[i, i * 10, if who == "a" { 1 } else { 2 }])).unwrap();
                }
                std::fs::write(mp.join(".atlasfs/flush"), b"1").unwrap_or_else(|e| panic!("flush of mount {who}: {e}"));
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread");
    }
    let in_bucket = String::from_utf8(cli(&["ls", url])).unwrap();
    for (mp, other) in [(a.mp(), "b"), (b.mp(), "a")] {
        eventually(Duration::from_secs(10), &format!("{} lists the other daemon's datasets; the bucket has:\n{in_bucket}", mp.display()), || {
            let names: Vec<String> = std::fs::read_dir(mp).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            (0..5).all(|i| names.contains(&format!("{other}{i}")))
        });
        for i in 0..5i64 {
            let got = std::fs::read(mp.join(format!("{other}{i}/v.npy"))).unwrap();
            assert_eq!(i64s_of(&got, 3), [i, i * 10, if other == "a" { 1 } else { 2 }], "{}: {other}{i}/v.npy", mp.display());
        }
    }

    // The same dataset from both sides: first flush wins, the second gets EBUSY and
    // its version is kept as a conflicted copy: neither side's values are lost.
    std::fs::write(a.mp().join("both/x.npy"), npy_i64(&[1, 1, 1])).unwrap();
    std::fs::write(b.mp().join("both/x.npy"), npy_i64(&[2, 2, 2])).unwrap();
    std::fs::write(a.mp().join(".atlasfs/flush"), b"1").expect("first writer's flush");
    let e = std::fs::write(b.mp().join(".atlasfs/flush"), b"1").expect_err("the second writer of one dataset must be told");
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "flush of a conflicting change: {e}");
    let got = cli(&["get", url, "both/x", "-o", s(&ctx.path("x_now.npy"))]);
    assert!(got.is_empty());
    assert_eq!(i64s_of(&std::fs::read(ctx.path("x_now.npy")).unwrap(), 3), [1, 1, 1], "the first writer's values stand");
    assert!(log_text(&b).contains("conflict"), "the losing daemon logs the conflict:\n{}", log_text(&b));
    let copies: Vec<String> =
        std::fs::read_dir(b.mp()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("both.conflict-")).collect();
    assert_eq!(copies.len(), 1, "the losing mount shows one conflicted copy of `both`: {copies:?}");
    assert_eq!(i64s_of(&std::fs::read(b.mp().join(&copies[0]).join("x.npy")).unwrap(), 3), [2, 2, 2], "the copy holds the second writer's values");
    assert_eq!(i64s_of(&std::fs::read(b.mp().join("both/x.npy")).unwrap(), 3), [1, 1, 1], "and `both` shows the first writer's, there too");
    assert!(log_text(&b).contains(&copies[0]), "the log names the copy:\n{}", log_text(&b));
    std::fs::write(b.mp().join(".atlasfs/flush"), b"1").expect("flushing again succeeds: nothing is left pending");
    a.unmount();
    b.unmount();

    // atlas-python 0.10 reads both sets: the bucket's objects, copied to a directory.
    let copy = ctx.mkdir("bucket_copy");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let store = server.store();
        let prefix = object_store::path::Path::from("store");
        let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        for o in objects {
            let rel: Vec<String> = o.location.prefix_match(&prefix).unwrap().map(|p| p.as_ref().to_string()).collect();
            let dest = rel.iter().fold(copy.clone(), |p, part| p.join(part));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, store.get(&o.location).await.unwrap().bytes().await.unwrap()).unwrap();
        }
    });
    let script = r#"
import sys, atlas, numpy as np
a = atlas.Atlas.open(sys.argv[1])
for who, tag in (("a", 1), ("b", 2)):
    for i in range(5):
        got = a.open_dataset(f"{who}{i}").read_array("v")
        assert got.dtype == np.int64 and list(got) == [i, i * 10, tag], (who, i, got)
copy = [n for n in a.list_datasets() if n.startswith("both.conflict-")]
assert list(a.open_dataset("both").read_array("x")) == [1, 1, 1]
assert len(copy) == 1 and list(a.open_dataset(copy[0]).read_array("x")) == [2, 2, 2], copy
print(len(a.list_datasets()))
"#;
    let out = Command::new(common::python()).arg("-c").arg(script).arg(&copy).output().unwrap();
    assert!(out.status.success(), "atlas-python on the bucket's objects: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12", "datasets: a0..a4, b0..b4, both and its conflicted copy");
    let listing = String::from_utf8(cli(&["ls", url])).unwrap();
    for who in ["a", "b"] {
        for i in 0..5 {
            assert!(listing.lines().any(|l| l.trim() == format!("{who}{i}")), "ls {url} lacks {who}{i}:\n{listing}");
        }
    }
}

// ------------------------------------------------------------------ scenario 9: --no-xattrs

/// By default (and with the old `--no-xattrs`) every xattr call is refused as
/// unsupported (the kernel stops asking after the first ENOSYS), while listing and
/// reading work as before.
#[test]
fn s9_mount_without_xattrs() {
    let ctx = Ctx::new();
    let store = ctx.path("store");
    let src = ctx.path("a.npy");
    std::fs::write(&src, npy_i64(&[4, 5, 6])).unwrap();
    run(Command::new(bin()).arg("create").arg(&store));
    run(Command::new(bin()).arg("put").arg(&store).arg("ds/a").arg(&src));
    let m = mounted(store.as_os_str(), &ctx.mkdir("mnt"), &[], &[]);
    let f = m.mp().join("ds/a.npy");
    assert!(run(Command::new("ls").arg("-l").arg(m.mp().join("ds"))).contains("a.npy"), "ls -l lists the array");
    assert_eq!(i64s_of(&std::fs::read(&f).unwrap(), 3), [4, 5, 6]);
    for _ in 0..2 {
        let out = Command::new("getfattr").arg("-n").arg("user.atlas.dtype").arg(&f).output().unwrap();
        assert!(!out.status.success(), "getfattr must fail on a mount without --xattrs");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not supported"), "getfattr: {}", String::from_utf8_lossy(&out.stderr));
    }
    m.unmount();
}
