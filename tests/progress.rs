//! Progress bars (issue 14): `put`, `get`, `compact` and the flush at unmount draw
//! bytes, percentage, rate and time left on a terminal, and print nothing when
//! stderr is a pipe or `--quiet` is given.
//!
//! The terminal is a real pseudo-terminal: Python's `pty` module (the venv of
//! `scripts/setup-test-env.sh`) runs each command line with stdin, stdout and
//! stderr on it and returns everything it drew. The unmount cases mount for real
//! (/dev/fuse, fusermount3).
//!
//! Run: `cargo test --release --test progress`

mod common;

use common::mount::{bin, clear_stale, require_fuse};

use std::path::Path;
use std::process::{Command, Output};

/// Runs `sh -c LINE` with stdin, stdout and stderr on a new pseudo-terminal; returns
/// what it drew there and its exit status.
const UNDER_PTY: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp("sh", ["sh", "-c", sys.argv[1]])
out = b""
while True:
    try:
        d = os.read(fd, 65536)
    except OSError:
        break
    if not d:
        break
    out += d
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(st))
"#;

fn under_pty(line: &str) -> String {
    let out = Command::new(common::python()).arg("-c").arg(UNDER_PTY).arg(line).env_remove("RUST_LOG").output().expect("spawn python");
    let drawn = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "under a pty: {line}\nfailed ({}):\n{drawn}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    drawn
}

fn sh(line: &str) -> Output {
    Command::new("sh").arg("-c").arg(line).env_remove("RUST_LOG").output().expect("spawn sh")
}

fn q(p: &Path) -> String {
    format!("'{}'", p.to_str().unwrap())
}

/// A store and a 4 MiB float64 array file `a.npy` in `dir`.
fn setup(dir: &Path) -> (String, String) {
    let (store, npy) = (q(&dir.join("s")), q(&dir.join("a.npy")));
    let py = common::python();
    let made =
        sh(&format!("cd {} && '{}' -c 'import numpy as np; np.save(\"a.npy\", np.random.default_rng(1).random((512, 1024)))' && '{}' create {store}", q(dir), py.display(), bin()));
    assert!(made.status.success(), "setup: {}", String::from_utf8_lossy(&made.stderr));
    (store, npy)
}

fn in_dir(dir: &Path, line: &str) -> String {
    format!("cd {} && {line}", q(dir))
}

#[test]
fn put_get_compact_draw_progress_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, npy) = setup(dir.path());
    let b = bin();
    let drawn = under_pty(&in_dir(dir.path(), &format!("{b} put {store} ds/a {npy} && {b} put {store} ds/a {npy} && {b} get {store} ds/a -o b.npy && {b} compact {store}")));
    // The bars: phase, percentage, bytes of the total, rate, time left.
    for want in ["reading [", "encoding [", "writing [", "compacting [", "% ", "/4.00 MiB", "/s eta "] {
        assert!(drawn.contains(want), "no {want:?} in what the commands drew:\n{drawn}");
    }
    // Each command replaces its bar with one summary line.
    for want in ["stored ds/a: 4.00 MiB in ", "wrote ds/a: 4.00 MiB in ", "compacted: "] {
        assert_eq!(drawn.matches(want).count(), if want.starts_with("stored") { 2 } else { 1 }, "summary {want:?}:\n{drawn}");
    }
    let same = sh(&in_dir(dir.path(), "cmp a.npy b.npy"));
    assert!(same.status.success(), "get under a pty wrote another array: {}", String::from_utf8_lossy(&same.stdout));
}

#[test]
fn no_progress_when_stderr_is_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let (store, npy) = setup(dir.path());
    let b = bin();
    for line in [format!("{b} put {store} ds/a {npy}"), format!("{b} get {store} ds/a -o b.npy"), format!("{b} compact {store}")] {
        let out = sh(&in_dir(dir.path(), &line));
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{line} printed to a pipe:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    // stdout on the terminal, stderr to a pipe (`2>file`): still nothing.
    let drawn = under_pty(&in_dir(dir.path(), &format!("{b} put {store} ds/a {npy} 2>err.txt && {b} get {store} ds/a -o c.npy 2>>err.txt")));
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert!(err.is_empty() && drawn.is_empty(), "progress with stderr not a terminal:\n{err}\n{drawn}");
}

#[test]
fn quiet_draws_nothing_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, npy) = setup(dir.path());
    let b = bin();
    // Global (before the command) and per command (after it).
    let drawn = under_pty(&in_dir(dir.path(), &format!("{b} --quiet put {store} ds/a {npy} && {b} get -q {store} ds/a -o b.npy && {b} compact {store} --quiet")));
    assert!(drawn.is_empty(), "--quiet drew on the terminal:\n{drawn}");
    assert!(dir.path().join("b.npy").is_file(), "get --quiet wrote no file");
}

/// The flush at the end of a mount, with a change pending (a long write-back delay):
/// `atlasfs unmount` of a background mount shows it, and so does a foreground
/// daemon's final flush on SIGTERM.
#[test]
fn unmount_flush_draws_progress_on_a_terminal() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let (b, py) = (bin(), common::python());
    let mp = dir.path().join("mp");
    std::fs::create_dir(&mp).unwrap();
    let save = |name: &str| format!("'{}' -c 'import numpy as np; np.save(\"{}/ds/{name}.npy\", np.arange(1 << 19, dtype=\"f8\"))'", py.display(), mp.display());
    let mpq = q(&mp);
    let log = q(&dir.path().join("daemon.log"));

    // Background mount, then `atlasfs unmount` on the terminal.
    let drawn = under_pty(&format!("{b} mount {store} {mpq} --writeback-delay 3600 --log-file {log} && mkdir {mpq}/ds && {} && {b} unmount {mpq}", save("x")));
    clear_stale(&mp);
    assert!(drawn.contains("flushed: ") && drawn.contains("flushing ["), "atlasfs unmount drew no flush progress:\n{drawn}");

    // Foreground daemon on the terminal, stopped by SIGTERM.
    let fg = format!(
        "{b} mount {store} {mpq} --foreground --writeback-delay 3600 & p=$!; i=0; until grep -qs \" $(realpath {mpq}) \" /proc/self/mountinfo || [ $i -ge 400 ]; do sleep 0.05; i=$((i+1)); done; {} && kill -TERM $p; wait $p",
        save("y")
    );
    let drawn = under_pty(&fg);
    clear_stale(&mp);
    assert!(drawn.contains("flushed: ") && drawn.contains("writing ["), "the foreground daemon's final flush drew no progress:\n{drawn}");
    let listed = sh(&format!("{b} ls {store} ds"));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(["x ", "y "].iter().all(|a| listed.lines().any(|l| l.starts_with(a))), "the flushed arrays are not in the store:\n{listed}");
}
