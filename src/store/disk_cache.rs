//! An on-disk cache of fetched (compressed) blocks, kept across mounts: `--cache-dir`.
//!
//! A remote block costs a round trip and its transfer; the second mount of the same
//! bucket should not pay again. Entries are whole blocks exactly as stored, keyed by
//! (store, file, entity tag, byte range), and sidecars' footer reads, keyed by (store,
//! file, entity tag, size): a file rewritten by another writer has a new entity tag,
//! so a stale entry is never found (files without one are not cached).
//!
//! Layout: `DIR/<2 hex>/<32 hex>` per entry, written to `DIR/tmp/` and renamed into
//! place, so a crash leaves a whole entry or none. Each entry starts with a header
//! holding its full key and an xxh3 checksum of the payload: a torn or bit-rotted
//! file, or a hash collision, reads as a miss and is removed. Size is bounded by
//! evicting the least recently used entries (recency survives restarts as mtime).
//! One mount at a time owns a directory (`DIR/lock`, flock), so two daemons never
//! evict under each other.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use twox_hash::{XxHash3_64, XxHash3_128};

const MAGIC: &[u8; 8] = b"ATLCACH1";
/// magic, key length (u32), payload length (u64), payload checksum (u64).
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

#[derive(Debug, thiserror::Error)]
pub enum DiskCacheError {
    #[error("cache directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cache directory {0} is in use by another atlasfs mount (one mount per --cache-dir)")]
    InUse(String),
}

/// Counters for `atlasfs info` / the control files.
#[derive(Debug, Default)]
pub struct DiskCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_written: AtomicU64,
    pub evictions: AtomicU64,
}

pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Distinguishes stores sharing one directory across mounts.
    namespace: String,
    state: Mutex<State>,
    pub counters: DiskCounters,
    _lock: File,
}

#[derive(Default)]
struct State {
    /// File name → (size on disk, recency tick).
    entries: HashMap<String, (u64, u64)>,
    by_tick: BTreeMap<u64, String>,
    tick: u64,
    total: u64,
}

impl State {
    fn touch(&mut self, name: &str) {
        if let Some((_, t)) = self.entries.get_mut(name) {
            self.by_tick.remove(t);
            self.tick += 1;
            *t = self.tick;
            self.by_tick.insert(self.tick, name.to_string());
        }
    }

    fn insert(&mut self, name: String, size: u64) {
        self.remove(&name);
        self.tick += 1;
        self.total += size;
        self.by_tick.insert(self.tick, name.clone());
        self.entries.insert(name, (size, self.tick));
    }

    fn remove(&mut self, name: &str) -> bool {
        match self.entries.remove(name) {
            Some((size, t)) => {
                self.by_tick.remove(&t);
                self.total -= size;
                true
            }
            None => false,
        }
    }
}

impl DiskCache {
    /// Opens (creating if needed) the cache in `dir`, bounded to `limit` bytes, for
    /// blocks of the store `namespace`. Scans the directory once to learn its size.
    pub fn open(dir: &Path, limit: u64, namespace: &str) -> Result<Arc<DiskCache>, DiskCacheError> {
        let io = |source| DiskCacheError::Io { path: dir.display().to_string(), source };
        std::fs::create_dir_all(dir.join("tmp")).map_err(io)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DiskCacheError::InUse(dir.display().to_string()));
        }
        // Leftovers of writes a crash interrupted.
        for e in std::fs::read_dir(dir.join("tmp")).map_err(io)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        for sub in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = sub.file_name().to_string_lossy().into_owned();
            if name.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            for e in std::fs::read_dir(sub.path()).map_err(io)?.flatten() {
                if let Ok(m) = e.metadata() {
                    found.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), format!("{name}/{}", e.file_name().to_string_lossy()), m.len()));
                }
            }
        }
        found.sort();
        let mut state = State::default();
        for (_, name, size) in found {
            state.insert(name, size);
        }
        let cache = DiskCache { dir: dir.to_path_buf(), limit, namespace: namespace.to_string(), state: Mutex::new(state), counters: DiskCounters::default(), _lock: lock };
        cache.evict_to(limit);
        Ok(Arc::new(cache))
    }

    /// The cache key of a byte range of one version of a file.
    pub fn key(&self, path: &str, e_tag: &str, offset: u64, len: u64) -> String {
        format!("{}\n{path}\n{e_tag}\n{offset}+{len}", self.namespace)
    }

    /// The cache key of the footer read of one version of a file of `size` bytes (its
    /// tail, or all of a small file: whatever `Layer::fetch_tail_sized` fetched).
    pub fn tail_key(&self, path: &str, e_tag: &str, size: u64) -> String {
        format!("{}\n{path}\n{e_tag}\ntail of {size}", self.namespace)
    }

    fn file_name(key: &str) -> String {
        let h = format!("{:032x}", XxHash3_128::oneshot(key.as_bytes()));
        format!("{}/{}", &h[..2], &h[2..])
    }

    /// Bytes held on disk.
    pub fn size(&self) -> u64 {
        self.state.lock().total
    }

    /// Whether an entry for `key` is held (it may still fail its checksum).
    pub fn contains(&self, key: &str) -> bool {
        self.state.lock().entries.contains_key(&Self::file_name(key))
    }

    /// The cached payload for `key`, if present and intact.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let name = Self::file_name(key);
        if !self.state.lock().entries.contains_key(&name) {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let path = self.dir.join(&name);
        match std::fs::read(&path).ok().and_then(|b| decode(key, b)) {
            Some(payload) => {
                self.state.lock().touch(&name);
                // Recency across restarts; best effort.
                if let Ok(f) = File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(payload)
            }
            None => {
                tracing::warn!(entry = %path.display(), "dropping an unreadable or mismatched disk-cache entry");
                self.state.lock().remove(&name);
                let _ = std::fs::remove_file(&path);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `payload` under `key`, evicting older entries to stay within the limit.
    /// Failures (a full disk) only cost future misses: logged, never returned.
    pub fn put(&self, key: &str, payload: &[u8]) {
        let size = (HEADER_LEN + key.len() + payload.len()) as u64;
        if size > self.limit {
            return;
        }
        let name = Self::file_name(key);
        if let Err(e) = self.write_entry(&name, key, payload) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write a disk-cache entry");
            return;
        }
        self.counters.bytes_written.fetch_add(size, Ordering::Relaxed);
        self.state.lock().insert(name, size);
        self.evict_to(self.limit);
    }

    fn write_entry(&self, name: &str, key: &str, payload: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join("tmp").join(format!("{}.{}", name.replace('/', ""), std::process::id()));
        let mut f = File::create(&tmp)?;
        let mut header = Vec::with_capacity(HEADER_LEN + key.len());
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(key.len() as u32).to_le_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&XxHash3_64::oneshot(payload).to_le_bytes());
        header.extend_from_slice(key.as_bytes());
        f.write_all(&header)?;
        f.write_all(payload)?;
        drop(f);
        let dest = self.dir.join(name);
        std::fs::create_dir_all(dest.parent().expect("entries live in a subdirectory"))?;
        std::fs::rename(&tmp, &dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    fn evict_to(&self, limit: u64) {
        loop {
            let victim = {
                let mut s = self.state.lock();
                if s.total <= limit {
                    return;
                }
                let Some((_, name)) = s.by_tick.pop_first() else { return };
                if let Some((size, _)) = s.entries.remove(&name) {
                    s.total -= size;
                }
                name
            };
            let _ = std::fs::remove_file(self.dir.join(&victim));
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The payload of an entry file if its header matches `key` and its checksum holds.
fn decode(key: &str, bytes: Vec<u8>) -> Option<Bytes> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return None;
    }
    let key_len = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    let len = u64::from_le_bytes(bytes[12..20].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(bytes[20..28].try_into().ok()?);
    let body = HEADER_LEN.checked_add(key_len)?;
    if bytes.len() != body.checked_add(len)? || &bytes[HEADER_LEN..body] != key.as_bytes() {
        return None;
    }
    let payload = Bytes::from(bytes).slice(body..);
    (XxHash3_64::oneshot(&payload) == sum).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_eviction_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 3000, "s3://b/p").unwrap();
        let k: Vec<String> = (0..4).map(|i| c.key("a/data.af", "etag1", i * 1000, 1000)).collect();
        for (i, key) in k.iter().enumerate() {
            c.put(key, &vec![i as u8; 1000]);
        }
        // Three fit; the oldest went.
        assert!(c.size() <= 3000);
        assert_eq!(c.get(&k[0]), None);
        assert_eq!(c.get(&k[3]).unwrap(), vec![3u8; 1000]);
        // Another entity tag is another version: a miss.
        assert_eq!(c.get(&c.key("a/data.af", "etag2", 3000, 1000)), None);
        let held = c.size();
        drop(c);
        let c = DiskCache::open(dir.path(), 3000, "s3://b/p").unwrap();
        assert_eq!(c.size(), held, "the size is learnt from the directory at open");
        assert_eq!(c.get(&k[3]).unwrap(), vec![3u8; 1000]);
        // Another store's key never matches.
        let other = DiskCache::key(&c, "a/data.af", "etag1", 3000, 1000);
        drop(c);
        let c2 = DiskCache::open(dir.path(), 3000, "s3://other/p").unwrap();
        assert_ne!(c2.key("a/data.af", "etag1", 3000, 1000), other);
        assert_eq!(c2.get(&c2.key("a/data.af", "etag1", 3000, 1000)), None);
    }

    #[test]
    fn corrupt_entries_are_misses_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20, "x").unwrap();
        let key = c.key("v/data.af", "e", 0, 5);
        c.put(&key, b"hello");
        let file = dir.path().join(DiskCache::file_name(&key));
        let mut bytes = std::fs::read(&file).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(c.get(&key), None);
        assert!(!file.exists());
        // Truncated to the header.
        c.put(&key, b"hello");
        std::fs::write(&file, &bytes[..HEADER_LEN]).unwrap();
        assert_eq!(c.get(&key), None);
        assert_eq!(c.size(), 0);
    }

    #[test]
    fn one_mount_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _c = DiskCache::open(dir.path(), 1 << 20, "x").unwrap();
        assert!(matches!(DiskCache::open(dir.path(), 1 << 20, "x"), Err(DiskCacheError::InUse(_))));
    }
}
