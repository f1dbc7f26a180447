//! `atlasfs mount` and `atlasfs unmount`.
//!
//! Without `--foreground`, mount re-runs itself in the background (a new session,
//! logs to a file) and returns only once the mount is usable — or fails with the
//! daemon's own error message. Changes are flushed within `--writeback-delay` of being
//! made; the daemon flushes and unmounts on SIGTERM/SIGINT; an external `umount` ends
//! it too, after a final flush.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlasfs::fs::spool::SpoolConfig;
use atlasfs::fs::{AtlasFs, FsConfig};
use atlasfs::fuse::{MountConfig, session};
use atlasfs::{StoreConfig, StoreOptions};

use super::progress::Bar;
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
    /// Largest read-ahead window of a sequential reader (default 16M, 32M for remote stores).
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
    /// Serve extended attributes (`user.atlas.*`: dataset attributes, array
    /// facts). Off by default: the kernel then stops asking, and `ls -l` makes no
    /// request per entry for SELinux labels and ACLs. The same facts without them:
    /// `atlasfs ls STORE DATASET`.
    #[arg(long)]
    pub xattrs: bool,
    /// The default (kept so older command lines and fstab entries still work).
    #[arg(long, hide = true)]
    pub no_xattrs: bool,
    /// Parent directory of the spool: decoded arrays that read-only opens pass
    /// through to, so the kernel reads them without the daemon (default: $TMPDIR
    /// or /tmp). The mount's spool is private (0700) and removed at unmount.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Disk budget of the spool; the least recently used arrays go first, and an
    /// array over a quarter of it is never spooled. 0 turns passthrough off.
    #[arg(long, default_value = "4G", value_parser = parse_size, value_name = "SIZE")]
    pub spool_size: u64,
    /// Pass read-only opens of arrays through to decoded spool files (FUSE
    /// passthrough; needs root and Linux 6.9+). Off by default, as peers' local
    /// caches are: the spool is a second copy of what is read, on local disk.
    #[arg(long)]
    pub passthrough: bool,
    /// Serve every read through the daemon (no spool, no FUSE passthrough): the default.
    #[arg(long)]
    pub no_passthrough: bool,
    /// Arrays whose .npy is smaller are not passed through: their warm reads come
    /// from the page cache with fewer round trips.
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "SIZE")]
    pub passthrough_min: u64,
    /// Seconds a change made through the mount (a file closed, renamed, deleted…) may
    /// wait before it is flushed to the store without an fsync; changes within one
    /// window share a flush. 0 flushes at every close, whose error close(2) returns.
    #[arg(long, default_value_t = 2.0, value_name = "SECS", value_parser = parse_delay)]
    pub writeback_delay: f64,
    /// Sidecar layers an array file may collect (one per flush that changed it)
    /// before the daemon compacts it in the background, as `atlasfs compact` does
    /// for one array file; reads stay fast under long save loops. 0: never
    /// automatically.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_layers: usize,
    /// Size a chunk of the zarr view's `_stacked` group aims at: as many datasets'
    /// chunks as fit, so dask and zarr-python pay their per-chunk cost once per
    /// SIZE, not once per dataset. 0: one dataset's chunk per zarr chunk.
    #[arg(long, default_value = "4M", value_parser = parse_size, value_name = "SIZE")]
    pub zarr_stack_chunk: u64,
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

fn parse_delay(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("not a delay in seconds from 0 to 86400: {s:?}")),
    }
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

/// `/tmp/atlasfs-<mountpoint>.lock`, held by the daemon serving that mountpoint until it
/// exits (after its final flush).
fn daemon_lock_path(mp: &Path) -> PathBuf {
    let abs = std::path::absolute(mp).unwrap_or_else(|_| mp.to_path_buf());
    PathBuf::from(format!("/tmp/atlasfs-{}.lock", abs.display().to_string().trim_matches('/').replace('/', "_")))
}

/// Takes the mountpoint's daemon lock, waiting up to `wait` for a previous daemon of the
/// same mountpoint to exit: when a session ends, fuser unmounts the mountpoint *by path*
/// as the daemon finishes, which would take down a new mount made there in between
/// (`atlasfs unmount` then `atlasfs mount` at once).
/// A lock file this user cannot open (another user's mount there before) is skipped.
fn daemon_lock(mp: &Path, wait: Duration) -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let path = daemon_lock_path(mp);
    let f = match std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(lock = %path.display(), error = %e, "cannot open the mountpoint's daemon lock; not waiting for a previous daemon");
            return Ok(None);
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(f));
        }
        if Instant::now() > deadline {
            return Err(CliError::Usage(format!("{}: the previous atlasfs daemon of this mountpoint is still flushing and exiting (lock {})", mp.display(), path.display())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(a: Args, rt: &tokio::runtime::Runtime) -> Result<()> {
    check_mountpoint(&a.mountpoint, a.allow_non_empty)?;
    if !a.foreground {
        return daemonize(&a);
    }
    let _daemon_lock = daemon_lock(&a.mountpoint, Duration::from_secs(60))?;
    let disk_cache = a.cache_dir.clone().map(|d| (d, a.cache_dir_size));
    let options = StoreOptions { block_cache_bytes: a.cache_size, disk_cache, ..StoreOptions::default() };
    let location = super::location(&a.store)?;
    let shown = location.redacted();
    let atlas = rt.block_on(async {
        if a.create {
            match location.create(StoreConfig::default(), options.clone()).await {
                Ok(atlas) => return Ok::<_, CliError>(atlas),
                Err(e) if matches!(e.detail(), Some(atlasfs::ErrorDetail::StoreAlreadyExists(_))) => {}
                Err(e) => return Err(e.into()),
            }
        }
        super::open_store_with(&a.store, options).await
    })?;
    // A remote block costs a round trip: read further ahead to keep it hidden.
    let read_ahead_bytes = a.read_ahead.unwrap_or(if location.is_remote() { 32 << 20 } else { 16 << 20 });
    let spool = (a.passthrough && !a.no_passthrough && a.spool_size > 0).then(|| SpoolConfig { dir: a.spool_dir.clone(), budget: a.spool_size });
    let mut cfg = FsConfig {
        read_only: a.read_only,
        ttl: Duration::from_secs_f64(a.ttl.max(0.0)),
        read_ahead_bytes,
        spool,
        passthrough_min_bytes: a.passthrough_min,
        writeback_delay: Duration::from_secs_f64(a.writeback_delay),
        max_layers: a.max_layers,
        zarr_stack_chunk_bytes: a.zarr_stack_chunk as usize,
        ..FsConfig::default()
    };
    if let Some(u) = a.uid {
        cfg.uid = u;
    }
    if let Some(g) = a.gid {
        cfg.gid = g;
    }
    let core = Arc::new(AtlasFs::new(atlas, cfg));
    core.start_writeback(rt.handle());
    core.start_autocompact(rt.handle());
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
    let mcfg = MountConfig { read_only: a.read_only, allow_other: a.allow_other, threads: a.threads, xattrs: a.xattrs && !a.no_xattrs, fs_name: format!("atlasfs:{shown}") };
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
        if let Err(e) = rt.block_on(flush_with_progress(&core)) {
            tracing::error!(error = %e, "flush before unmount failed");
        }
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "unmount failed (busy?); detaching lazily");
            let _ = Command::new("fusermount3").arg("-uz").arg(&a.mountpoint).status();
        }
    }
    let served = serve.join().unwrap_or_else(|_| Err(std::io::Error::other("FUSE session thread panicked")));
    // Whatever ended the session, pending writes go out before the process does.
    rt.block_on(flush_with_progress(&core)).map_err(|e| CliError::Usage(format!("final flush failed, recent writes may be lost: {e}")))?;
    served.map_err(|e| CliError::File { path: a.mountpoint.display().to_string(), source: e })
}

/// The daemon's final flush, with a progress bar when it runs in the foreground on
/// a terminal and has something to write.
async fn flush_with_progress(core: &Arc<AtlasFs>) -> atlasfs::fs::FsResult<()> {
    let bar = Bar::new();
    let r = atlasfs::store::progress::scope(bar.sink(), core.final_flush()).await;
    if r.is_ok() && bar.phase_total() > 0 {
        bar.complete();
        bar.finish("flushed", bar.phase_total());
    }
    r
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
    // The daemon flushes; this side can only show how much is pending and how long
    // it takes (read from .atlasfs/stats before the flush).
    let pending = pending_bytes(mp);
    let bar = Bar::new();
    if pending > 0 {
        bar.phase("flushing", pending);
    }
    if let Err(e) = std::fs::write(mp.join(".atlasfs/flush"), b"1") {
        tracing::warn!(error = %e, "flush before unmount failed");
    } else if pending > 0 {
        bar.complete();
        bar.finish("flushed", pending);
    }
    drop(bar);
    let ok = Command::new("fusermount3").arg("-u").arg(mp).status().map(|s| s.success()).unwrap_or(false)
        || Command::new("umount").arg(mp).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        return Err(CliError::Usage(format!("{}: unmount failed (is a file still open there?)", mp.display())));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mounted(mp) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Returns once the daemon has finished its final flush and exited.
    if let Err(e) = daemon_lock(mp, Duration::from_secs(30)) {
        tracing::warn!(error = %e, "the daemon has not exited yet");
    }
    Ok(())
}

/// Bytes awaiting a flush in the mount at `mp`, from `.atlasfs/stats` (0 if unknown).
fn pending_bytes(mp: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(mp.join(".atlasfs/stats")) else { return 0 };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["writeback"]["pending_bytes"].as_u64().unwrap_or(0)
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
