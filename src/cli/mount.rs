//! `atlasfs mount` and `atlasfs unmount`.
//!
//! Without `--foreground`, mount re-runs itself in the background (a new session,
//! logs to a file) and returns only once the mount is usable — or fails with the
//! daemon's own error message. The daemon flushes and unmounts on SIGTERM/SIGINT;
//! an external `umount` ends it too, after a final flush.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlasfs::fs::{AtlasFs, FsConfig};
use atlasfs::fuse::{MountConfig, session};
use atlasfs::{StoreConfig, StoreOptions};

use super::{CliError, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory or a URL.
    pub store: String,
    /// An existing, empty directory.
    pub mountpoint: PathBuf,
    /// Mount over a directory that is not empty (its files are hidden while mounted).
    #[arg(long)]
    pub allow_non_empty: bool,
    /// Stay in the foreground (logs go to stderr).
    #[arg(short, long)]
    pub foreground: bool,
    /// Refuse every change (EROFS).
    #[arg(long)]
    pub read_only: bool,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// Owner of every file and directory (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of every file and directory (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Memory for decoded blocks, cached and in flight, in bytes (suffixes K, M, G allowed).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Keep fetched blocks in this directory, across mounts (worth it for remote
    /// stores). One mount at a time may use a directory.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size limit of `--cache-dir`; the least recently used blocks go first.
    #[arg(long, default_value = "10G", value_parser = parse_size, value_name = "SIZE")]
    pub cache_dir_size: u64,
    /// Largest read-ahead window of a sequential reader (default 16M, 64M for remote stores).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub read_ahead: Option<u64>,
    /// Create the store if the location holds none.
    #[arg(long)]
    pub create: bool,
    /// Seconds the kernel may cache names and attributes.
    #[arg(long, default_value_t = 10.0)]
    pub ttl: f64,
    /// Seconds between checks for changes other writers flushed to the store (one
    /// HEAD of the metadata file; more only when it changed). 0 turns it off.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub metadata_ttl: f64,
    /// Serve no extended attributes (no `user.atlas.*`), so that `ls -l` makes no
    /// request per entry for SELinux labels and ACLs.
    #[arg(long)]
    pub no_xattrs: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Background daemon's log file, appended to with a separator line per mount and
    /// moved to FILE.1 once over 8 MiB (default: /tmp/atlasfs-<mountpoint>.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UnmountArgs {
    /// The mountpoint.
    pub mountpoint: PathBuf,
}

/// `256M` → bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.trim().parse::<u64>().map(|n| n * mult).map_err(|_| format!("not a size: {s:?}"))
}

/// Whether `mountpoint` is currently an atlasfs mount (from /proc/self/mountinfo).
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canon) = mountpoint.canonicalize().or_else(|_| std::path::absolute(mountpoint)) else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().position(|&x| x == "-").and_then(|i| f.get(i + 1)).copied().unwrap_or("");
        f.get(4).map(|m| m.replace("\\040", " ")) == Some(canon.display().to_string()) && fstype.starts_with("fuse")
    })
}

/// A mount whose daemon died answers every request with ENOTCONN; clear it. The probe
/// is a directory read, which always reaches the daemon: a `stat` may still be served
/// from the kernel's attribute cache (`--ttl`) after the daemon is gone.
fn clean_stale(mountpoint: &Path) {
    if let Err(e) = std::fs::read_dir(mountpoint)
        && e.raw_os_error() == Some(libc::ENOTCONN)
    {
        tracing::warn!(mountpoint = %mountpoint.display(), "clearing a stale mount left by a daemon that died");
        let ok = Command::new("fusermount3").arg("-uz").arg(mountpoint).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
        }
    }
}

fn check_mountpoint(mp: &Path, allow_non_empty: bool) -> Result<()> {
    clean_stale(mp);
    let meta = std::fs::metadata(mp).map_err(|e| CliError::File { path: mp.display().to_string(), source: e })?;
    if !meta.is_dir() {
        return Err(CliError::Usage(format!("{}: the mountpoint must be a directory", mp.display())));
    }
    if is_mounted(mp) {
        return Err(CliError::Usage(format!("{}: something is already mounted here", mp.display())));
    }
    // As rclone and mountpoint-s3 do: files under a mount are hidden, so mounting
    // over them is refused unless asked for.
    if !allow_non_empty && std::fs::read_dir(mp).map_err(|e| CliError::File { path: mp.display().to_string(), source: e })?.next().is_some() {
        return Err(CliError::Usage(format!("{}: the mountpoint is not empty (its files would be hidden); use an empty directory or pass --allow-non-empty", mp.display())));
    }
    Ok(())
}

pub fn run(a: Args, rt: &tokio::runtime::Runtime) -> Result<()> {
    check_mountpoint(&a.mountpoint, a.allow_non_empty)?;
    if !a.foreground {
        return daemonize(&a);
    }
    let disk_cache = a.cache_dir.clone().map(|d| (d, a.cache_dir_size));
    let options = StoreOptions { block_cache_bytes: a.cache_size, disk_cache, ..StoreOptions::default() };
    let location = super::location(&a.store)?;
    let shown = location.redacted();
    let atlas = rt.block_on(async {
        if a.create {
            match location.create(StoreConfig::default(), options.clone()).await {
                Ok(atlas) => return Ok::<_, CliError>(atlas),
                Err(atlasfs::Error::StoreAlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        super::open_store_with(&a.store, options).await
    })?;
    // A remote block costs a round trip: read further ahead to keep it hidden.
    let read_ahead_bytes = a.read_ahead.unwrap_or(if location.is_remote() { 64 << 20 } else { 16 << 20 });
    let mut cfg = FsConfig { read_only: a.read_only, ttl: Duration::from_secs_f64(a.ttl.max(0.0)), read_ahead_bytes, ..FsConfig::default() };
    if let Some(u) = a.uid {
        cfg.uid = u;
    }
    if let Some(g) = a.gid {
        cfg.gid = g;
    }
    let core = Arc::new(AtlasFs::new(atlas, cfg));
    if a.metadata_ttl > 0.0 {
        let (core, every) = (core.clone(), Duration::from_secs_f64(a.metadata_ttl));
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = core.refresh().await {
                    tracing::warn!(error = %e, "checking the store for other writers' changes failed; will retry");
                }
            }
        });
    }
    let mcfg = MountConfig { read_only: a.read_only, allow_other: a.allow_other, threads: a.threads, xattrs: !a.no_xattrs, fs_name: format!("atlasfs:{shown}") };
    let mut sess = session(core.clone(), rt.handle().clone(), &a.mountpoint, &mcfg).map_err(|e| CliError::File { path: a.mountpoint.display().to_string(), source: e })?;
    let mut unmounter = sess.unmount_callable();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serve = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = sess.run();
            let _ = done_tx.send(());
            r
        })
        .map_err(|e| CliError::File { path: "fuse session thread".into(), source: e })?;
    atlasfs::fuse::raise_readahead(&a.mountpoint, 16 << 10);
    tracing::info!(store = %shown, mountpoint = %a.mountpoint.display(), "mounted");
    let signalled = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => true,
            _ = tokio::signal::ctrl_c() => true,
            _ = done_rx => false,
        }
    });
    if signalled {
        tracing::info!("signal received: flushing and unmounting");
        if let Err(e) = rt.block_on(core.flush_store()) {
            tracing::error!(error = %e, "flush before unmount failed");
        }
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "unmount failed (busy?); detaching lazily");
            let _ = Command::new("fusermount3").arg("-uz").arg(&a.mountpoint).status();
        }
    }
    let served = serve.join().unwrap_or_else(|_| Err(std::io::Error::other("FUSE session thread panicked")));
    // Whatever ended the session, pending writes go out before the process does.
    rt.block_on(core.flush_store()).map_err(|e| CliError::Usage(format!("final flush failed, recent writes may be lost: {e}")))?;
    served.map_err(|e| CliError::File { path: a.mountpoint.display().to_string(), source: e })
}

/// Runs the mount again in the background and waits until it is usable.
fn daemonize(a: &Args) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| CliError::File { path: "current executable".into(), source: e })?;
    let mp_abs = std::path::absolute(&a.mountpoint).map_err(|e| CliError::File { path: a.mountpoint.display().to_string(), source: e })?;
    let log = a.log_file.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/atlasfs-{}.log", mp_abs.display().to_string().trim_matches('/').replace('/', "_"))));
    let log_file = open_daemon_log(&log, &a.store, &mp_abs).map_err(|e| CliError::File { path: log.display().to_string(), source: e })?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--foreground".into());
    let mut cmd = Command::new(exe);
    cmd.args(&args).stdin(std::process::Stdio::null()).stdout(log_file.try_clone().map_err(|e| CliError::File { path: log.display().to_string(), source: e })?).stderr(log_file);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| CliError::File { path: "daemon".into(), source: e })?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if is_mounted(&mp_abs) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().rev().find(|l| l.contains("error")).unwrap_or(text.lines().last().unwrap_or("no output")).trim().to_string();
            return Err(CliError::Usage(format!("the mount daemon exited ({status}) before the mount was ready: {last} (log: {})", log.display())));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(CliError::Usage(format!("the mount was not ready after 60 s (log: {})", log.display())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A background daemon's log is kept over mounts, so that the errors of the last
/// one are still there after a remount.
const DAEMON_LOG_LIMIT: u64 = 8 << 20;

/// Opens the daemon log for appending, after moving it to `<log>.1` (replacing
/// the previous one) once it is over [`DAEMON_LOG_LIMIT`], and writes a separator
/// line saying which mount starts here.
fn open_daemon_log(log: &Path, store: &str, mp: &Path) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    if std::fs::metadata(log).is_ok_and(|m| m.len() > DAEMON_LOG_LIMIT) {
        let mut old = log.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(log, old)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    writeln!(f, "==== {now} atlasfs mount {store} {} ====", mp.display())?;
    Ok(f)
}

/// Flushes through the control file, then unmounts and waits for the mount to go.
pub fn unmount(a: UnmountArgs) -> Result<()> {
    let mp = &a.mountpoint;
    if !is_mounted(mp) {
        return Err(CliError::Usage(format!("{}: not mounted", mp.display())));
    }
    if let Err(e) = std::fs::write(mp.join(".atlasfs/flush"), b"1") {
        tracing::warn!(error = %e, "flush before unmount failed");
    }
    let ok = Command::new("fusermount3").arg("-u").arg(mp).status().map(|s| s.success()).unwrap_or(false)
        || Command::new("umount").arg(mp).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        return Err(CliError::Usage(format!("{}: unmount failed (is a file still open there?)", mp.display())));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mounted(mp) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("x").is_err());
    }
}
