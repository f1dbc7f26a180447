//! A real FUSE mount for integration tests: `atlasfs mount STORE MP --foreground`
//! started from the test binary's own build of `atlasfs`, waited for until the kernel
//! lists it and answers a directory read, logging to a file next to the mountpoint.
//! Dropping a [`Mounted`] unmounts (fusermount3 -u, then -uz, then umount -l), waits for
//! the daemon and kills it after a timeout, so a failing test leaves no mount behind.
//!
//! Use: `mod common;` then `common::mount::Mounted::start(&store, &mp, &["--read-only"])`.
//! [`require_fuse`] fails (never skips) with what to install when FUSE is missing.
//! [`log_report`] gives the warnings and the tail of a daemon log for failure messages.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `atlasfs` binary cargo built for this test run (release with `--release`).
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_atlasfs")
}

/// Fails with what to install when /dev/fuse or fusermount3 is missing.
pub fn require_fuse() {
    assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing: the mount tests need FUSE (a container needs --device /dev/fuse --cap-add SYS_ADMIN)");
    let ok = Command::new("fusermount3").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(ok, "fusermount3 is not installed (Debian package fuse3): run scripts/setup-test-env.sh");
}

/// Whether `mp` (canonical) is a FUSE mount in /proc/self/mountinfo.
pub fn is_fuse_mount(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = mp.to_str().expect("utf-8 mountpoint");
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().position(|&x| x == "-").and_then(|i| f.get(i + 1)).copied().unwrap_or("");
        f.get(4).map(|m| m.replace("\\040", " ")).as_deref() == Some(want) && fstype.starts_with("fuse")
    })
}

/// `fusermount3 FLAGS MP`; whether it succeeded.
pub fn fusermount(flags: &str, mp: &Path) -> bool {
    Command::new("fusermount3").arg(flags).arg(mp).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Clears a mount left behind at `mp` (a daemon that died: ENOTCONN), so a rerun of a
/// test that was killed half-way can mount there again.
pub fn clear_stale(mp: &Path) {
    let Ok(canon) = mp.canonicalize().or_else(|_| std::path::absolute(mp)) else { return };
    if is_fuse_mount(&canon) && !fusermount("-u", &canon) && !fusermount("-uz", &canon) {
        let _ = Command::new("umount").arg("-l").arg(&canon).status();
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The warnings and errors of a daemon log, and its last lines.
pub fn log_report(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    let important: Vec<&str> = lines.iter().copied().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked")).take(60).collect();
    let tail = &lines[lines.len().saturating_sub(80)..];
    format!(
        "===== daemon log {} ({} lines)\n--- warnings and errors:\n{}\n--- last {} lines:\n{}\n=====",
        log.display(),
        lines.len(),
        important.join("\n"),
        tail.len(),
        tail.join("\n")
    )
}

static LOG_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running `atlasfs mount --foreground` daemon. Dropping it unmounts, waits for the
/// daemon (killing it after a timeout) and never leaves a mount behind, also when the
/// test panics; a panicking test also gets the daemon log's warnings printed.
pub struct Mounted {
    child: Option<Child>,
    /// Canonical mountpoint.
    mp: PathBuf,
    /// The daemon's stdout and stderr.
    pub log: PathBuf,
}

impl Mounted {
    /// Mounts the store directory `store` at the existing directory `mp`, with extra
    /// `atlasfs mount` options; the daemon logs at `RUST_LOG=atlasfs=debug`.
    pub fn start(store: &Path, mp: &Path, extra: &[&str]) -> Mounted {
        Self::start_with(store.as_os_str(), mp, extra, &[])
    }

    /// A mount of any STORE (a URL too), with extra environment for the daemon.
    pub fn start_with(store: &OsStr, mp: &Path, extra: &[&str], env: &[(&str, &str)]) -> Mounted {
        require_fuse();
        clear_stale(mp);
        let mp = mp.canonicalize().expect("mountpoint exists");
        let log = mp.parent().unwrap().join(format!("daemon-{}-{}.log", std::process::id(), LOG_SEQ.fetch_add(1, Ordering::Relaxed)));
        let out = std::fs::File::create(&log).expect("create daemon log");
        let child = Command::new(bin())
            .arg("mount")
            .arg(store)
            .arg(&mp)
            .arg("--foreground")
            .args(extra)
            .env("RUST_LOG", std::env::var("ATLASFS_TEST_RUST_LOG").unwrap_or_else(|_| "atlasfs=debug".into()))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn atlasfs mount");
        let mut m = Mounted { child: Some(child), mp, log };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_fuse_mount(&m.mp) {
            if let Ok(Some(st)) = m.child.as_mut().unwrap().try_wait() {
                m.child = None;
                panic!("atlasfs mount {} exited ({st}) before mounting:\n{}", m.mp.display(), std::fs::read_to_string(&m.log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "{} was not mounted after {MOUNT_TIMEOUT:?}\n{}", m.mp.display(), log_report(&m.log));
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first access waits for FUSE_INIT.
        std::fs::read_dir(&m.mp).unwrap_or_else(|e| panic!("readdir {} right after mounting: {e}", m.mp.display()));
        m
    }

    /// The canonical mountpoint.
    pub fn mp(&self) -> &Path {
        &self.mp
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon running").id() as i32
    }

    /// The daemon log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A field of the daemon's /proc/PID/status in kB, e.g. `VmHWM` (peak RSS) or `VmRSS`.
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// `atlasfs unmount MP`; the daemon must then exit 0 with the mount gone.
    pub fn unmount(mut self) {
        let out = Command::new(bin()).arg("unmount").arg(&self.mp).output().expect("spawn atlasfs unmount");
        assert!(out.status.success(), "atlasfs unmount {} failed: {}\n{}", self.mp.display(), String::from_utf8_lossy(&out.stderr), log_report(&self.log));
        assert!(!is_fuse_mount(&self.mp), "{} is still mounted after 'atlasfs unmount'", self.mp.display());
        let mut child = self.child.take().expect("daemon running");
        let st = wait_exit(&mut child, EXIT_TIMEOUT);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let st = st.unwrap_or_else(|| panic!("the daemon did not exit within {EXIT_TIMEOUT:?} of 'atlasfs unmount'"));
        assert!(st.success(), "the daemon exited with {st} after 'atlasfs unmount'\n{}", log_report(&self.log));
    }
}

impl Mounted {
    /// The daemon process, taken out of the guard (Drop then only unmounts).
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("daemon running")
    }

    /// SIGKILL, and the stale mount is left for the next `atlasfs mount` to clear.
    pub fn kill9_leaving_stale(mut self) {
        let mut child = self.take_child();
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
        assert_eq!(std::fs::read_dir(&self.mp).err().and_then(|e| e.raw_os_error()), Some(libc::ENOTCONN), "the mount is stale");
        self.mp = PathBuf::from("/nonexistent"); // Drop must not clear it
    }

    /// SIGKILL: the daemon dies with the mount in place (a stale mount: ENOTCONN),
    /// which is then cleared with fusermount3 -uz.
    pub fn kill9(mut self) {
        let mut child = self.take_child();
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
        assert!(is_fuse_mount(&self.mp), "after kill -9 the mount should be left behind, stale");
        // (A stat may still be answered from the kernel's attribute cache; a directory
        // read always goes to the daemon.)
        let e = std::fs::read_dir(&self.mp).expect_err("a dead daemon's mount answers nothing");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "readdir of a stale mount: {e}");
        assert!(fusermount("-uz", &self.mp), "fusermount3 -uz {} failed", self.mp.display());
        assert!(!is_fuse_mount(&self.mp), "the stale mount is still there after fusermount3 -uz");
    }

    /// SIGTERM: the daemon must flush, unmount and exit 0 by itself.
    pub fn terminate(mut self) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM {pid}");
        let mut child = self.take_child();
        let st = wait_exit(&mut child, EXIT_TIMEOUT);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let st = st.unwrap_or_else(|| panic!("the daemon did not exit within {EXIT_TIMEOUT:?} of SIGTERM"));
        assert!(st.success(), "the daemon exited with {st} after SIGTERM\n{}", log_report(&self.log));
        assert!(!is_fuse_mount(&self.mp), "{} is still mounted after the daemon exited on SIGTERM", self.mp.display());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", log_report(&self.log));
        }
        for _ in 0..20 {
            if !is_fuse_mount(&self.mp) || fusermount("-u", &self.mp) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_fuse_mount(&self.mp) {
            fusermount("-uz", &self.mp);
        }
        if let Some(mut child) = self.child.take()
            && wait_exit(&mut child, Duration::from_secs(10)).is_none()
        {
            eprintln!("the daemon for {} did not exit after unmount; killing it", self.mp.display());
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_fuse_mount(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}
