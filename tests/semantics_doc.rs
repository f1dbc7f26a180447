//! Runs the examples in docs/semantics.md against a real mount.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_atlasfs")
}

fn mounted(mp: &Path) -> bool {
    let canon = mp.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
}

struct Mount {
    mp: std::path::PathBuf,
    child: Child,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mp).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if mounted(&self.mp) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.mp).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The strerror(3) text a shell tool prints for an errno name.
fn strerror(name: &str) -> String {
    let n = match name {
        "EINVAL" => libc::EINVAL,
        "EEXIST" => libc::EEXIST,
        "EPERM" => libc::EPERM,
        "ENOTEMPTY" => libc::ENOTEMPTY,
        "ENOENT" => libc::ENOENT,
        "EROFS" => libc::EROFS,
        "EACCES" => libc::EACCES,
        other => panic!("docs/semantics.md uses an errno this test does not know: {other}"),
    };
    std::io::Error::from_raw_os_error(n).to_string().split(" (os error").next().unwrap().to_string()
}

#[test]
fn semantics_examples_hold() {
    let doc = std::fs::read_to_string(common::repo().join("docs/semantics.md")).unwrap();
    let examples: Vec<(String, String)> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .map(|l| {
            let (cmd, want) = l.rsplit_once('#').expect("example lines end with '# outcome'");
            (cmd.trim().to_string(), want.trim().to_string())
        })
        .collect();
    assert!(examples.len() >= 10, "docs/semantics.md lost its examples");

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let npy = tmp.path().join("a.npy");
    assert!(Command::new(common::python()).args(["-c", &format!("import numpy as np; np.save('{}', np.arange(10, dtype='<i8'))", npy.display())]).status().unwrap().success());
    assert!(Command::new(bin()).args(["create", store.to_str().unwrap()]).status().unwrap().success());
    assert!(Command::new(bin()).args(["put", store.to_str().unwrap(), "ds/a", npy.to_str().unwrap()]).status().unwrap().success());
    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    let child = Command::new(bin()).args(["mount", store.to_str().unwrap(), mp.to_str().unwrap(), "--foreground"]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let m = Mount { mp: mp.clone(), child };
    let t = Instant::now();
    while !mounted(&m.mp) {
        assert!(t.elapsed() < Duration::from_secs(20), "mount did not come up: {}", std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    for (cmd, want) in examples {
        let line = cmd.replace("MNT", mp.to_str().unwrap());
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if want == "ok" {
            assert!(out.status.success(), "`{cmd}` should succeed, got: {stderr}");
        } else {
            assert!(!out.status.success(), "`{cmd}` should fail with {want}");
            let text = strerror(&want);
            assert!(stderr.contains(&text), "`{cmd}` should fail with {want} ({text}), got: {stderr}");
        }
    }
}
