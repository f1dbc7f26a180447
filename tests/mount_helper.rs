//! `mount.atlasfs`: option translation, and a real `mount -t atlasfs`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_atlasfs")
}

fn helper() -> std::path::PathBuf {
    common::repo().join("mount-helper/mount.atlasfs")
}

fn mounted(mp: &Path) -> bool {
    let canon = mp.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
}

fn umount(mp: &Path) {
    let _ = Command::new("umount").arg(mp).status();
    let t = Instant::now();
    while mounted(mp) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if mounted(mp) {
        let _ = Command::new("fusermount3").arg("-uz").arg(mp).status();
    }
}

/// Unmounts on drop, even when an assertion fails.
struct Guard<'a>(&'a Path);
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        umount(self.0);
    }
}

fn make_store(dir: &Path) {
    let out = Command::new(bin()).args(["create", dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let py = common::python();
    let npy = dir.parent().unwrap().join("a.npy");
    let ok = Command::new(py).args(["-c", &format!("import numpy as np; np.save('{}', np.arange(6, dtype='<f4'))", npy.display())]).status().unwrap();
    assert!(ok.success());
    let out = Command::new(bin()).args(["put", dir.to_str().unwrap(), "ds/a", npy.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn helper_translates_fstab_options() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    make_store(&store);
    let out = Command::new(helper())
        .args([
            store.to_str().unwrap(),
            mp.to_str().unwrap(),
            "-o",
            "ro,_netdev,nofail,noauto,x-systemd.automount,defaults,allow_other,uid=1234,gid=2345,noatime,noxattrs,metadata_ttl=2,writeback_delay=0.5,max_layers=3",
        ])
        .env("ATLASFS_BIN", bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "helper failed: {}", String::from_utf8_lossy(&out.stderr));
    let _u = Guard(&mp);
    assert!(mounted(&mp));
    let meta = std::fs::metadata(mp.join("ds/a.npy")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.len()), (1234, 2345, 128 + 24));
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(mp.join(".atlasfs/stats")).unwrap()).unwrap();
    assert_eq!(stats["writeback"]["delay_s"], 0.5, "writeback_delay= reaches --writeback-delay: {stats}");
    assert_eq!(stats["auto_compaction"]["max_layers"], 3, "max_layers= reaches --max-layers: {stats}");
    let err = std::fs::create_dir(mp.join("new")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "ro must give EROFS");
    let x = Command::new("getfattr").arg("-n").arg("user.atlas.dtype").arg(mp.join("ds/a.npy")).output().unwrap();
    assert!(!x.status.success() && String::from_utf8_lossy(&x.stderr).contains("Operation not supported"), "noxattrs must turn xattrs off: {}", String::from_utf8_lossy(&x.stderr));
}

#[test]
fn helper_refuses_unknown_options() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(helper()).args(["/nonexistent", tmp.path().to_str().unwrap(), "-o", "rw,bogus_opt"]).env("ATLASFS_BIN", bin()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option: bogus_opt"));
    assert!(!mounted(tmp.path()));
}

#[test]
fn mount_dash_t_atlasfs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(Command::new("mount").arg("--version").output().is_ok(), "mount(8) is missing: apt-get install mount");
    // mount(8) looks for /sbin/mount.<type>; install ours there.
    std::fs::copy(helper(), "/sbin/mount.atlasfs").expect("install /sbin/mount.atlasfs (the suite runs as root)");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    make_store(&store);
    let out = Command::new("mount").args(["-t", "atlasfs", store.to_str().unwrap(), mp.to_str().unwrap(), "-o", "rw,nofail"]).env("ATLASFS_BIN", bin()).output().unwrap();
    assert!(out.status.success(), "mount -t atlasfs failed: {}", String::from_utf8_lossy(&out.stderr));
    let _u = Guard(&mp);
    let bytes = std::fs::read(mp.join("ds/a.npy")).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(bytes.len(), 128 + 24);
    std::fs::create_dir(mp.join("made_by_mount_t")).unwrap();
    drop(_u);
    let out = Command::new(bin()).args(["ls", store.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("made_by_mount_t"), "the dataset made through the mount persists after umount");
}
