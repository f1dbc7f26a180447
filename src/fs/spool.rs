//! The spool: decoded `.npy` files on local disk, for FUSE passthrough.
//!
//! A read through FUSE costs a round trip per request and a copy out of the daemon;
//! a file the kernel reads *itself* costs neither. So once an array has been
//! decoded whole into a spool file, later read-only opens of it are answered with
//! passthrough to that file and its reads (and `mmap`) never reach the daemon.
//!
//! - **Keys and versions.** An entry is one `(dataset, array)` at one generation
//!   (the fs core's counter of changes to that array). An entry is served only at
//!   the generation it was built at, and the core drops it the moment the array
//!   changes (a write, a refresh, a rename, a compaction), so it is never stale.
//!   Files are never rewritten in place: a new version is a new file, and readers
//!   that hold the old one keep reading the version they opened.
//! - **Budget.** Entries are evicted least recently used first to keep the spool
//!   within its byte budget; an array larger than a quarter of it is never spooled.
//!   An evicted file that is still open stays readable until closed (its name is
//!   gone, its inode is not).
//! - **Damage.** Each entry remembers its file's inode, size, mtime and ctime when
//!   it was finished; any write to the file changes them, and such an entry is
//!   dropped (one log line) and built again instead of being served.
//! - **Faults.** A spool that cannot be written (disk full, I/O error) costs
//!   nothing but speed: the build is abandoned with one log line and reads take
//!   the decoded path.
//! - **Privacy.** The spool directory is created 0700 and its files 0600, so only
//!   the daemon's user can read them; it is removed at unmount.
//! - **Leftovers.** A daemon that dies (`kill -9`, a crash) cannot remove its spool
//!   directory. Each is named `atlasfs-spool-<pid>-<random>` and held with an
//!   exclusive `flock` on the directory for the daemon's life (the kernel drops the
//!   lock when the process dies, however it dies). A new spool removes every
//!   sibling `atlasfs-spool-<pid>-*` whose lock it can take and whose pid is not a
//!   running process, one log line each. The lock keeps a live daemon's directory
//!   safe; the pid check covers the instant between another daemon creating its
//!   directory and locking it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Where and how large the spool is.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Parent directory of the mount's private spool directory (default: the
    /// system's temp directory).
    pub dir: Option<PathBuf>,
    /// Byte budget.
    pub budget: u64,
}

pub type SpoolKey = (String, String);

/// A finished spool file, as handed to an open.
#[derive(Debug, Clone)]
pub struct SpoolFile {
    /// Unique per file: two opens of one inode must share one backing file.
    pub id: u64,
    pub file: Arc<File>,
    pub len: u64,
}

impl PartialEq for SpoolFile {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for SpoolFile {}

/// What a finished file looked like, to tell a damaged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(f: &File) -> std::io::Result<Stamp> {
        let m = f.metadata()?;
        Ok(Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })
    }
}

struct Entry {
    file: SpoolFile,
    path: PathBuf,
    generation: u64,
    stamp: Stamp,
    last_use: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<SpoolKey, Entry>,
    building: HashSet<SpoolKey>,
    /// Bytes of finished entries plus bytes reserved by builds under way.
    used: u64,
    tick: u64,
}

/// Counters for `.atlasfs/stats`.
#[derive(Default)]
pub struct SpoolCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub built: AtomicU64,
    pub evicted: AtomicU64,
    pub damaged: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Spool {
    dir: tempfile::TempDir,
    /// The directory opened and `flock`ed for the daemon's life (see Leftovers).
    _lock: File,
    budget: u64,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Set after a failed write is logged, so a full disk logs once, not per array.
    failing: AtomicBool,
    pub counters: SpoolCounters,
}

impl Spool {
    /// Creates the mount's private spool directory (0700) under `cfg.dir`.
    pub fn new(cfg: &SpoolConfig) -> std::io::Result<Spool> {
        let parent = cfg.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&parent)?;
        let prefix = format!("{SPOOL_PREFIX}{}-", std::process::id());
        let dir = tempfile::Builder::new().prefix(&prefix).permissions(std::fs::Permissions::from_mode(0o700)).tempdir_in(&parent)?;
        let lock = File::open(dir.path())?;
        if !try_lock(&lock)? {
            return Err(std::io::Error::other(format!("{}: just created, yet locked by another process", dir.path().display())));
        }
        remove_stale(&parent);
        Ok(Spool {
            dir,
            _lock: lock,
            budget: cfg.budget,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            failing: AtomicBool::new(false),
            counters: SpoolCounters::default(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held by finished entries and builds under way.
    pub fn used(&self) -> u64 {
        self.state.lock().used
    }

    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spool file of `key` at `generation`, if it is there and undamaged.
    pub fn get(&self, key: &SpoolKey, generation: u64) -> Option<SpoolFile> {
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let e = st.entries.get_mut(key)?;
        if e.generation != generation {
            return None;
        }
        match Stamp::of(&e.file.file) {
            Ok(s) if s == e.stamp => {
                e.last_use = tick;
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(e.file.clone())
            }
            _ => {
                tracing::warn!(dataset = %key.0, array = %key.1, path = %e.path.display(), "spool file changed since it was written; dropping it and decoding again");
                self.counters.damaged.fetch_add(1, Ordering::Relaxed);
                Self::remove_locked(&mut st, key);
                None
            }
        }
    }

    /// Drops the entry of `key` (the array changed). Descriptors that have it open
    /// keep reading it.
    pub fn invalidate(&self, key: &SpoolKey) {
        Self::remove_locked(&mut self.state.lock(), key);
    }

    /// Drops the entries of every array of dataset `ds`.
    pub fn invalidate_dataset(&self, ds: &str) {
        let mut st = self.state.lock();
        let keys: Vec<SpoolKey> = st.entries.keys().filter(|(d, _)| d == ds).cloned().collect();
        for k in keys {
            Self::remove_locked(&mut st, &k);
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut st = self.state.lock();
        let keys: Vec<SpoolKey> = st.entries.keys().cloned().collect();
        for k in keys {
            Self::remove_locked(&mut st, &k);
        }
    }

    fn remove_locked(st: &mut State, key: &SpoolKey) {
        if let Some(e) = st.entries.remove(key) {
            st.used = st.used.saturating_sub(e.file.len);
            let _ = std::fs::remove_file(&e.path);
        }
    }

    /// Starts building the entry of `key` at `generation`, `len` bytes long: room
    /// is made for it (evicting the least recently used entries). None when it is
    /// already being built, already there, or too large for the budget.
    pub fn begin(self: &Arc<Self>, key: &SpoolKey, generation: u64, len: u64) -> Option<SpoolBuild> {
        if len > self.budget / 4 {
            return None;
        }
        let mut st = self.state.lock();
        if st.building.contains(key) || st.entries.get(key).is_some_and(|e| e.generation == generation) {
            return None;
        }
        Self::remove_locked(&mut st, key);
        while st.used + len > self.budget {
            let Some(victim) = st.entries.iter().min_by_key(|(_, e)| e.last_use).map(|(k, _)| k.clone()) else { break };
            Self::remove_locked(&mut st, &victim);
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        if st.used + len > self.budget {
            return None;
        }
        let file = match tempfile::Builder::new().prefix("build-").tempfile_in(self.dir.path()) {
            Ok(f) => f,
            Err(e) => {
                self.failed(key, &e);
                return None;
            }
        };
        st.used += len;
        st.building.insert(key.clone());
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        Some(SpoolBuild { spool: self.clone(), key: key.clone(), generation, len, file: Some(file), installed: false })
    }

    fn failed(&self, key: &SpoolKey, e: &std::io::Error) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(dataset = %key.0, array = %key.1, error = %e, dir = %self.dir.path().display(), "cannot write to the spool; reads take the decoded path (logged once until a spool write succeeds)");
        }
    }
}

/// Every spool directory's name starts with this, then the daemon's pid and `-`.
const SPOOL_PREFIX: &str = "atlasfs-spool-";

/// Takes an exclusive `flock` on `f` without waiting; false if another open file
/// description holds one.
fn try_lock(f: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(e) }
}

/// Whether a process with this pid exists (in our pid namespace).
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Removes spool directories under `parent` left by daemons that are no longer
/// running: named `atlasfs-spool-<pid>-*`, not locked, and their pid not running.
/// Directories of live daemons, and anything else, are left alone. Returns the
/// directories removed.
pub fn remove_stale(parent: &Path) -> Vec<PathBuf> {
    let mut removed = vec![];
    let Ok(entries) = std::fs::read_dir(parent) else { return removed };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(SPOOL_PREFIX)).and_then(|rest| rest.split_once('-')).and_then(|(pid, _)| pid.parse::<i32>().ok()) else {
            continue;
        };
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Another user's spool (0700) cannot be opened: not ours to remove. A lock
        // taken here fails while any daemon, this one included, holds the directory.
        let Ok(dir) = File::open(&path) else { continue };
        if !matches!(try_lock(&dir), Ok(true)) || pid_alive(pid) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), pid, "removed the spool directory of an atlasfs daemon that is no longer running");
                removed.push(path);
            }
            Err(e) => tracing::warn!(dir = %path.display(), error = %e, "cannot remove a stale spool directory"),
        }
    }
    removed
}

/// A spool file being written. Dropped unfinished, it gives its room back.
pub struct SpoolBuild {
    spool: Arc<Spool>,
    key: SpoolKey,
    generation: u64,
    len: u64,
    file: Option<tempfile::NamedTempFile>,
    installed: bool,
}

impl SpoolBuild {
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let f = self.file.as_ref().expect("unfinished build");
        f.as_file().write_all_at(data, offset).inspect_err(|e| self.spool.failed(&self.key, e))
    }

    /// Installs the file, unless the array changed meanwhile (`current` is its
    /// generation now): then the bytes may mix two versions, and are dropped.
    pub fn finish(mut self, current: u64) -> Option<SpoolFile> {
        if current != self.generation {
            return None;
        }
        let tmp = self.file.take().expect("unfinished build");
        let id = self.spool.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.spool.dir.path().join(format!("{id}.npy"));
        let file = match tmp.persist(&path) {
            Ok(f) => f,
            Err(e) => {
                self.spool.failed(&self.key, &e.error);
                return None;
            }
        };
        let stamp = match Stamp::of(&file) {
            Ok(s) if s.size == self.len => s,
            Ok(s) => {
                self.spool.failed(&self.key, &std::io::Error::other(format!("spool file is {} bytes, expected {}", s.size, self.len)));
                let _ = std::fs::remove_file(&path);
                return None;
            }
            Err(e) => {
                self.spool.failed(&self.key, &e);
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        let sf = SpoolFile { id, file: Arc::new(file), len: self.len };
        let mut st = self.spool.state.lock();
        st.building.remove(&self.key);
        st.tick += 1;
        let tick = st.tick;
        // The room reserved at `begin` becomes the entry's.
        st.entries.insert(self.key.clone(), Entry { file: sf.clone(), path, generation: self.generation, stamp, last_use: tick });
        self.installed = true;
        self.spool.failing.store(false, Ordering::Relaxed);
        self.spool.counters.built.fetch_add(1, Ordering::Relaxed);
        Some(sf)
    }
}

impl Drop for SpoolBuild {
    fn drop(&mut self) {
        if !self.installed {
            let mut st = self.spool.state.lock();
            st.building.remove(&self.key);
            st.used = st.used.saturating_sub(self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(budget: u64) -> Arc<Spool> {
        Arc::new(Spool::new(&SpoolConfig { dir: None, budget }).unwrap())
    }

    fn key(a: &str) -> SpoolKey {
        ("ds".into(), a.into())
    }

    fn build(s: &Arc<Spool>, a: &str, generation: u64, bytes: &[u8]) -> Option<SpoolFile> {
        let mut b = s.begin(&key(a), generation, bytes.len() as u64)?;
        b.write_at(bytes, 0).unwrap();
        b.finish(generation)
    }

    #[test]
    fn stale_spool_dirs_of_dead_daemons_are_removed_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig { dir: Some(parent.path().to_path_buf()), budget: 1 << 20 };
        // A daemon that died: its pid is gone and nothing holds its directory.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = parent.path().join(format!("{SPOOL_PREFIX}{dead}-abc123"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("1.npy"), b"old").unwrap();
        // A live daemon's spool (locked), and a directory of a running pid that is not
        // locked yet (a daemon between creating its directory and locking it).
        let live = Spool::new(&cfg).unwrap();
        let unlocked = parent.path().join(format!("{SPOOL_PREFIX}{}-creating", std::process::id()));
        std::fs::create_dir(&unlocked).unwrap();
        // Not spool directories: never touched.
        let other = parent.path().join("atlasfs-spool-notapid");
        std::fs::create_dir(&other).unwrap();
        assert!(!stale.exists(), "the first spool made in the parent removed the stale directory");
        std::fs::create_dir(&stale).unwrap();
        let second = Spool::new(&cfg).unwrap();
        assert!(!stale.exists(), "a stale spool directory was left");
        for kept in [live.path(), second.path(), unlocked.as_path(), other.as_path()] {
            assert!(kept.is_dir(), "{} was removed", kept.display());
        }
        assert!(remove_stale(parent.path()).is_empty());
        drop(live);
        // Unlocked by an unmount, its directory is gone anyway (removed at drop).
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 3);
    }

    #[test]
    fn serves_only_the_generation_it_was_built_at() {
        let s = spool(1 << 20);
        let f = build(&s, "x", 3, b"abc").unwrap();
        assert_eq!(s.get(&key("x"), 3), Some(f));
        assert_eq!(s.get(&key("x"), 4), None);
        s.invalidate(&key("x"));
        assert_eq!(s.get(&key("x"), 3), None);
        assert_eq!(s.used(), 0);
    }

    #[test]
    fn a_build_overtaken_by_a_change_is_dropped() {
        let s = spool(1 << 20);
        let mut b = s.begin(&key("x"), 1, 3).unwrap();
        b.write_at(b"old", 0).unwrap();
        assert!(b.finish(2).is_none());
        assert_eq!((s.len(), s.used()), (0, 0));
    }

    #[test]
    fn budget_holds_by_evicting_least_recently_used() {
        let s = spool(1000);
        let data = vec![7u8; 250];
        build(&s, "a", 0, &data).unwrap();
        build(&s, "b", 0, &data).unwrap();
        build(&s, "c", 0, &data).unwrap();
        s.get(&key("a"), 0).unwrap();
        build(&s, "d", 0, &data).unwrap();
        build(&s, "e", 0, &data).unwrap();
        assert!(s.used() <= 1000);
        assert!(s.get(&key("a"), 0).is_some(), "recently used entry kept");
        assert!(s.get(&key("b"), 0).is_none(), "least recently used entry evicted");
        let on_disk: u64 = std::fs::read_dir(s.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(on_disk <= 1000, "{on_disk} bytes on disk");
        // Larger than a quarter of the budget: never spooled.
        assert!(s.begin(&key("big"), 0, 251).is_none());
    }

    #[test]
    fn a_damaged_file_is_dropped_not_served() {
        let s = spool(1 << 20);
        let f = build(&s, "x", 0, &[1u8; 4096]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let path = s.path().join(format!("{}.npy", f.id));
        let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        other.write_all_at(b"garbage", 100).unwrap();
        drop(other);
        assert_eq!(s.get(&key("x"), 0), None);
        assert_eq!(s.counters.damaged.load(Ordering::Relaxed), 1);
        assert!(!path.exists());
        // And it can be built again.
        assert!(build(&s, "x", 0, &[1u8; 4096]).is_some());
    }

    #[test]
    fn files_are_private_to_the_daemon_user() {
        let s = spool(1 << 20);
        let f = build(&s, "x", 0, b"abc").unwrap();
        let dir_mode = std::fs::metadata(s.path()).unwrap().mode() & 0o777;
        let file_mode = std::fs::metadata(s.path().join(format!("{}.npy", f.id))).unwrap().mode() & 0o777;
        assert_eq!((dir_mode, file_mode), (0o700, 0o600));
    }

    #[test]
    fn an_abandoned_build_gives_its_room_back() {
        let s = spool(1000);
        let b = s.begin(&key("x"), 0, 200).unwrap();
        assert_eq!(s.used(), 200);
        assert!(s.begin(&key("x"), 0, 200).is_none(), "one build per key at a time");
        drop(b);
        assert_eq!(s.used(), 0);
        assert!(s.begin(&key("x"), 0, 200).is_some());
    }
}
