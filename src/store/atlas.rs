//! [`Atlas`]: a store of named datasets, with one durability boundary, [`Atlas::flush`].
//!
//! Mutations change the in-memory metadata and the pending layers of array files;
//! `flush` writes every array file with pending changes (concurrently), then the
//! metadata file. Array files are opened lazily, on first use, at most once.
//!
//! State sits behind locks, so the work is done by `&self` methods and one `Atlas`
//! can be shared across threads (the FUSE daemon does). The public `create_dataset`,
//! `delete_dataset`, `flush` and `compact` take `&mut self` as in atlas 0.10; they
//! are thin wrappers (module `api_mut`) over the `*_shared` methods here.

use std::collections::{BTreeSet, HashMap};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use ndarray::{ArcArray, ArrayD, IxDyn};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parking_lot::{Mutex, RwLock};
use tokio::sync::OnceCell;

use super::array_file::{ArrayFile, CommittedGrid};
use super::cache::BlockCache;
use super::dataset::DatasetView;
use super::element::ArrayElement;
use super::meta::{ArraySchema, DatasetMeta, MetaFile, MetaFormat, StoreMeta, changed_datasets, merge, merge_keep_ours, same_dataset};
use super::{Error, ErrorDetail, Result, validate_name};
use crate::format::{Codec, DType};

/// How a new store is written (only `create` reads this; `open` detects everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub codec: Codec,
    pub meta_format: MetaFormat,
    pub meta_compression: Codec,
}

impl Default for StoreConfig {
    /// zstd blocks, plain JSON metadata (as atlas 0.10).
    fn default() -> Self {
        StoreConfig { codec: Codec::Zstd, meta_format: MetaFormat::Json, meta_compression: Codec::Uncompressed }
    }
}

/// Runtime knobs of an open store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Budget of the decoded-block cache, bytes.
    pub block_cache_bytes: u64,
    /// Budget of the compressed-block cache, bytes (0 disables it; worth it for remote stores).
    pub io_cache_bytes: u64,
    /// Datasets read at once by the bulk reads.
    pub read_concurrency: usize,
    /// Keep fetched blocks in this directory across mounts, bounded to this many bytes.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { block_cache_bytes: 256 << 20, io_cache_bytes: 0, read_concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 2, disk_cache: None }
    }
}

type FileSlot = Arc<OnceCell<Arc<tokio::sync::RwLock<ArrayFile>>>>;

pub(crate) struct Shared {
    pub store: Arc<dyn ObjectStore>,
    pub location: String,
    pub meta: Mutex<StoreMeta>,
    pub meta_file: MetaFile,
    /// Whether a metadata file existed at open (or was written by create).
    pub found: bool,
    /// The metadata as last read from or written to the store: the base of merges
    /// with other writers' changes.
    base: Mutex<StoreMeta>,
    /// The stored metadata file's version, for conditional updates.
    meta_version: Mutex<Option<UpdateVersion>>,
    /// Datasets a refresh found changed both here (unflushed) and by another
    /// writer: the next flush reports them as a conflict, once.
    meta_clashes: Mutex<std::collections::BTreeSet<String>>,
    /// The JSON text of each dataset as last written, reused for those a flush
    /// did not change (`meta_json`).
    json_fragments: Mutex<super::meta::JsonFragments>,
    /// Datasets a flush found changed by other writers, or forked into conflicted
    /// copies: upper layers drop what they cached of them (`take_noticed`).
    noticed: Mutex<Vec<String>>,
    /// Set by every metadata change, cleared when a flush takes its snapshot.
    pub meta_dirty: AtomicBool,
    /// Bumped by every mutation; lets upper layers notice change cheaply.
    pub version: AtomicU64,
    files: RwLock<HashMap<String, FileSlot>>,
    pub cache: Arc<BlockCache>,
    pub options: StoreOptions,
    /// The directory of a store opened on a local path: where spill files are made,
    /// so that a flush links them into place (`array_file/link.rs`).
    pub local_root: Option<std::path::PathBuf>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Held shared by every change that touches an array file and the metadata
    /// together (define, replace, delete), from its first step to its last, and
    /// exclusively by a flush while it takes its metadata snapshot and write-locks
    /// the array files it stages: so the metadata file a flush writes and the
    /// sidecars it writes describe the same instant. Without it, a change caught
    /// half-way (its array file changed, its metadata not yet, or the reverse)
    /// committed an array declared with no live entry, and a `kill -9` before the
    /// next flush left it unreadable (`store::flush_race`).
    pub(crate) commit_gate: tokio::sync::RwLock<()>,
}

/// A store of named datasets. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Atlas {
    pub(crate) inner: Arc<Shared>,
}

/// Per-array-file facts for `atlasfs info`.
#[derive(Debug, Clone)]
pub struct ArrayFileInfo {
    pub array: String,
    pub layers: usize,
    pub bytes: u64,
    pub entries: usize,
}

#[derive(Debug, Clone)]
pub struct StoreInfo {
    pub location: String,
    pub meta_file: &'static str,
    pub codec: Codec,
    pub datasets: usize,
    pub arrays: Vec<ArrayFileInfo>,
}

async fn find_meta_file(store: &dyn ObjectStore) -> Result<(Option<MetaFile>, bool)> {
    let listing = store.list_with_delimiter(None).await?;
    let names: BTreeSet<String> = listing.objects.iter().filter_map(|o| o.location.filename().map(str::to_string)).collect();
    let present: Vec<MetaFile> = MetaFile::ALL.into_iter().filter(|m| names.contains(m.file_name())).collect();
    if present.len() > 1 {
        tracing::warn!(files = ?present.iter().map(|m| m.file_name()).collect::<Vec<_>>(), "several metadata files; using the first");
    }
    let empty = listing.objects.is_empty() && listing.common_prefixes.is_empty();
    Ok((present.first().copied(), empty))
}

/// Reads and decodes the metadata file, with its version for conditional updates.
async fn read_meta(store: &dyn ObjectStore, file: MetaFile) -> Result<(StoreMeta, Option<UpdateVersion>)> {
    let got = store.get(&Path::from(file.file_name())).await?;
    let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
    let bytes = got.bytes().await?;
    Ok((file.decode(&bytes)?, Some(version)))
}

/// Replaces the metadata file through a temporary name, checked, then renamed over it
/// (the lock-file path: stores without conditional PUTs). On a store whose PUT can
/// tear, a crash then leaves a stray `<name>.saving` (no metadata name: ignored), never
/// a torn metadata file, which would make the whole store unopenable.
async fn replace_checked(store: &dyn ObjectStore, path: &Path, bytes: bytes::Bytes) -> Result<ObjectMeta> {
    let tmp = Path::from(format!("{path}.saving"));
    let want = bytes.len() as u64;
    store.put(&tmp, PutPayload::from(bytes)).await?;
    let got = store.head(&tmp).await?.size;
    if got != want {
        return Err(ErrorDetail::MetaFile { path: tmp.to_string(), msg: format!("the store kept {got} of the {want} bytes written") }.into());
    }
    store.rename(&tmp, path).await?;
    Ok(store.head(path).await?)
}

/// `atlas.lock`, created if absent, held while the metadata file is read, merged and
/// rewritten on backends without conditional updates (a local directory). It names
/// its holder (`pid N host H`): a lock whose holder is a dead process on this host is
/// broken at once; any other lock older than `STALE_LOCK` is taken to belong to a
/// writer that died elsewhere.
struct MetaLock {
    store: Arc<dyn ObjectStore>,
    released: bool,
}

const LOCK_NAME: &str = "atlas.lock";
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Whether a lock body names a process of this host that no longer exists.
pub(crate) fn holder_is_dead(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace();
    let (Some("pid"), Some(pid), Some("host"), Some(host)) = (words.next(), words.next(), words.next(), words.next()) else { return false };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host != host_name() || pid <= 0 {
        return false;
    }
    // kill(pid, 0) probes without signalling; ESRCH means no such process.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

impl MetaLock {
    async fn acquire(store: Arc<dyn ObjectStore>) -> Result<MetaLock> {
        let path = Path::from(LOCK_NAME);
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(2);
        let me = format!("pid {} host {}\n", std::process::id(), host_name());
        loop {
            match store.put_opts(&path, PutPayload::from(me.clone().into_bytes()), PutOptions::from(PutMode::Create)).await {
                Ok(_) => return Ok(MetaLock { store, released: false }),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    if let Ok(got) = store.get(&path).await {
                        let age = (chrono::Utc::now() - got.meta.last_modified).to_std().unwrap_or_default();
                        let body = got.bytes().await.unwrap_or_default();
                        if holder_is_dead(&body) || age > STALE_LOCK {
                            tracing::warn!(lock = LOCK_NAME, holder = %String::from_utf8_lossy(&body).trim(), "breaking a metadata lock left by a writer that died");
                            let _ = store.delete(&path).await;
                            continue;
                        }
                    }
                    if started.elapsed() > STALE_LOCK + std::time::Duration::from_secs(5) {
                        return Err(ErrorDetail::Conflict(format!("{LOCK_NAME} is held by another writer and was not released")).into());
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn release(mut self) {
        self.released = true;
        if let Err(e) = self.store.delete(&Path::from(LOCK_NAME)).await {
            tracing::warn!(lock = LOCK_NAME, error = %e, "could not release the metadata lock");
        }
    }
}

impl Drop for MetaLock {
    /// Only reached when the holder was cancelled mid-save: release in the background.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let store = self.store.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = store.delete(&Path::from(LOCK_NAME)).await;
            });
        }
    }
}

/// An array file held write-locked from staging its sidecar to committing it.
type StagedFile = tokio::sync::OwnedRwLockWriteGuard<ArrayFile>;

fn conflict(names: Vec<String>) -> Error {
    ErrorDetail::Conflict(format!(
        "dataset(s) {} changed here and by another writer while this flush ran; the sidecars it wrote were withdrawn and its changes stay pending",
        names.join(", ")
    ))
    .into()
}

fn prefixed(store: Arc<dyn ObjectStore>, prefix: Path) -> Arc<dyn ObjectStore> {
    if prefix.as_ref().is_empty() { store } else { Arc::new(PrefixStore::new(store, prefix)) }
}

impl Atlas {
    /// Opens a store. A location with no metadata file opens as an empty store.
    pub async fn open(store: Arc<dyn ObjectStore>, prefix: Path) -> Result<Atlas> {
        Self::open_with(store, prefix, StoreOptions::default()).await
    }

    pub async fn open_with(store: Arc<dyn ObjectStore>, prefix: Path, options: StoreOptions) -> Result<Atlas> {
        let location = prefix.to_string();
        let store = prefixed(store, prefix);
        let (file, _) = find_meta_file(&*store).await?;
        let (meta, meta_file, version) = match file {
            None => (StoreMeta::empty_default(), MetaFile::default(), None),
            Some(f) => {
                let (meta, version) = read_meta(&*store, f).await?;
                (meta, f, version)
            }
        };
        Self::from_parts(store, location, meta, meta_file, file.is_some(), version, options)
    }

    fn from_parts(
        store: Arc<dyn ObjectStore>,
        location: String,
        meta: StoreMeta,
        meta_file: MetaFile,
        found: bool,
        version: Option<UpdateVersion>,
        options: StoreOptions,
    ) -> Result<Atlas> {
        let disk = match &options.disk_cache {
            Some((dir, limit)) => Some(super::disk_cache::DiskCache::open(dir, *limit, &location)?),
            None => None,
        };
        let cache = Arc::new(BlockCache::new(options.block_cache_bytes, options.io_cache_bytes).with_disk(disk));
        Ok(Atlas {
            inner: Arc::new(Shared {
                store,
                location,
                meta: Mutex::new(meta.clone()),
                meta_file,
                found,
                base: Mutex::new(meta.clone()),
                meta_version: Mutex::new(version),
                meta_clashes: Mutex::new(Default::default()),
                json_fragments: Mutex::new(Default::default()),
                noticed: Mutex::new(vec![]),
                meta_dirty: AtomicBool::new(false),
                version: AtomicU64::new(0),
                files: RwLock::new(HashMap::new()),
                cache,
                options,
                local_root: None,
                flush_lock: tokio::sync::Mutex::new(()),
                commit_gate: tokio::sync::RwLock::new(()),
            }),
        })
    }

    /// Creates a new store and writes its metadata file at once. Refuses a location
    /// that already holds a store (0.10 silently reset it, leaving orphans: D6).
    pub async fn create(store: Arc<dyn ObjectStore>, prefix: Path, config: StoreConfig) -> Result<Atlas> {
        Self::create_with(store, prefix, config, StoreOptions::default()).await
    }

    pub async fn create_with(store: Arc<dyn ObjectStore>, prefix: Path, config: StoreConfig, options: StoreOptions) -> Result<Atlas> {
        let location = prefix.to_string();
        Self::create_named(store, prefix, location.clone(), &location, config, options).await
    }

    /// [`Atlas::create_with`], naming the store `shown` in messages (a local store's
    /// prefix is empty: its path, or the URL, is what the user typed).
    pub(crate) async fn create_named(store: Arc<dyn ObjectStore>, prefix: Path, location: String, shown: &str, config: StoreConfig, options: StoreOptions) -> Result<Atlas> {
        let store = prefixed(store, prefix);
        let (file, _) = find_meta_file(&*store).await?;
        if let Some(f) = file {
            return Err(ErrorDetail::StoreAlreadyExists(format!("{shown} ({} present)", f.file_name())).into());
        }
        let listing = store.list_with_delimiter(None).await?;
        for dir in listing.common_prefixes {
            let inner = store.list_with_delimiter(Some(&dir)).await?;
            if inner.objects.iter().any(|o| o.location.filename().is_some_and(|n| n.ends_with(".af"))) {
                return Err(ErrorDetail::StoreAlreadyExists(format!("{shown} (array files under {dir}/)")).into());
            }
        }
        let meta_file = MetaFile::new(config.meta_format, config.meta_compression);
        let meta = StoreMeta::new(config.codec);
        let bytes = meta_file.encode(&meta)?;
        let version = match store.put_opts(&Path::from(meta_file.file_name()), PutPayload::from(bytes), PutOptions::from(PutMode::Create)).await {
            Ok(r) => UpdateVersion { e_tag: r.e_tag, version: r.version },
            Err(object_store::Error::AlreadyExists { .. }) => return Err(ErrorDetail::StoreAlreadyExists(shown.to_string()).into()),
            Err(e) => return Err(e.into()),
        };
        Self::from_parts(store, location, meta, meta_file, true, Some(version), options)
    }

    /// Opens a store in a local directory, which must exist.
    pub async fn open_path(path: impl AsRef<FsPath>) -> Result<Atlas> {
        Self::open_path_with(path, StoreOptions::default()).await
    }

    pub async fn open_path_with(path: impl AsRef<FsPath>, options: StoreOptions) -> Result<Atlas> {
        let path = path.as_ref();
        if !path.is_dir() {
            tracing::warn!(path = %path.display(), "open_path: no such directory");
            return Err(Error::StoreNotFound);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(path)?);
        let mut a = Self::open_with(store, Path::default(), options).await?;
        let inner = Arc::get_mut(&mut a.inner).expect("fresh");
        inner.location = path.display().to_string();
        inner.local_root = std::fs::canonicalize(path).ok();
        Ok(a)
    }

    /// Creates a store in a local directory (made with `mkdir -p` semantics).
    pub async fn create_path(path: impl AsRef<FsPath>, config: StoreConfig) -> Result<Atlas> {
        Self::create_path_with(path, config, StoreOptions::default()).await
    }

    pub async fn create_path_with(path: impl AsRef<FsPath>, config: StoreConfig, options: StoreOptions) -> Result<Atlas> {
        let path = path.as_ref();
        std::fs::create_dir_all(path)?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(path)?);
        let shown = path.display().to_string();
        let mut a = Self::create_named(store, Path::default(), shown.clone(), &shown, config, options).await?;
        Arc::get_mut(&mut a.inner).expect("fresh").local_root = std::fs::canonicalize(path).ok();
        Ok(a)
    }

    /// Whether the location held a store when opened (a metadata file was found).
    /// `open` of a location without one gives an empty store, as atlas 0.10 does;
    /// callers that want "no store here" to be an error check this.
    pub fn exists(&self) -> bool {
        self.inner.found
    }

    /// Where to make files of encoded blocks that a flush adopts: a local store's
    /// directory, so that the flush links them into place (`array_file/link.rs`).
    pub fn spill_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.local_root.clone()
    }

    /// Where the store lives, for messages.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    pub fn meta_file(&self) -> MetaFile {
        self.inner.meta_file
    }

    /// Codec for new arrays' blocks.
    pub fn codec(&self) -> Codec {
        self.inner.meta.lock().codec
    }

    /// A counter that changes with every mutation of this handle.
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    pub(crate) fn touch_meta(&self) {
        self.inner.meta_dirty.store(true, Ordering::Release);
        self.touch();
    }

    pub(crate) fn touch(&self) {
        self.inner.version.fetch_add(1, Ordering::AcqRel);
    }

    /// What `meta` (default: this handle's metadata) says each dataset's copy of
    /// `array` is, for [`ArrayFile::set_aside_uncommitted`].
    fn committed_grids(&self, meta: Option<&StoreMeta>, array: &str) -> HashMap<String, CommittedGrid> {
        let grids = |m: &StoreMeta| -> HashMap<String, CommittedGrid> {
            m.datasets.iter().filter_map(|(d, dm)| dm.arrays.get(array).map(|s| (d.clone(), (s.dtype.clone(), s.shape.clone(), s.chunk_shape.clone())))).collect()
        };
        match meta {
            Some(m) => grids(m),
            None => grids(&self.inner.meta.lock()),
        }
    }

    /// The array file for `array`, opened on first use.
    pub(crate) async fn file(&self, array: &str) -> Result<Arc<tokio::sync::RwLock<ArrayFile>>> {
        let slot = {
            let existing = self.inner.files.read().get(array).cloned();
            match existing {
                Some(s) => s,
                None => self.inner.files.write().entry(array.to_string()).or_default().clone(),
            }
        };
        let codec = self.codec();
        slot.get_or_try_init(|| async {
            tracing::debug!(array, "opening array file");
            // A layer listed but gone when read: another process compacted; list again.
            let mut attempt = 0;
            let mut f = loop {
                match ArrayFile::open(self.inner.store.clone(), self.inner.cache.clone(), array, codec).await {
                    Err(e) if super::array_file::vanished(&e) && attempt < 5 => attempt += 1,
                    r => break r?,
                }
            };
            f.set_spill_dir(self.inner.local_root.clone());
            f.set_aside_uncommitted(&self.committed_grids(None, array));
            Ok::<_, Error>(Arc::new(tokio::sync::RwLock::new(f)))
        })
        .await
        .cloned()
    }

    /// Array files opened so far (test hook for lazy initialisation).
    pub fn loaded_arrays(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.files.read().iter().filter(|(_, s)| s.initialized()).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    pub(crate) fn loaded_files(&self) -> Vec<Arc<tokio::sync::RwLock<ArrayFile>>> {
        self.inner.files.read().values().filter_map(|s| s.get().cloned()).collect()
    }

    /// How many reads the bulk paths keep in flight.
    pub fn read_concurrency(&self) -> usize {
        self.inner.options.read_concurrency
    }

    pub fn block_cache(&self) -> &BlockCache {
        &self.inner.cache
    }

    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn create_dataset_shared(&self, name: &str) -> Result<DatasetView> {
        validate_name(name)?;
        {
            let mut m = self.inner.meta.lock();
            if m.datasets.contains_key(name) {
                return Err(Error::DatasetAlreadyExists(name.to_string()));
            }
            m.datasets.insert(name.to_string(), Arc::new(DatasetMeta::default()));
        }
        self.touch_meta();
        Ok(DatasetView::new(self.clone(), name))
    }

    pub async fn open_dataset(&self, name: &str) -> Result<DatasetView> {
        if !self.dataset_exists(name) {
            return Err(Error::DatasetNotFound(name.to_string()));
        }
        Ok(DatasetView::new(self.clone(), name))
    }

    /// Deletes a dataset: tombstones its entries in every array file it used, then
    /// drops it from the metadata. Persists at the next flush.
    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn delete_dataset_shared(&self, name: &str) -> Result<()> {
        let _gate = self.inner.commit_gate.read().await;
        let arrays: Vec<String> = {
            let m = self.inner.meta.lock();
            m.datasets.get(name).ok_or_else(|| Error::DatasetNotFound(name.to_string()))?.arrays.keys().cloned().collect()
        };
        // Tombstones first: if one fails the dataset is still listed and a retry finishes the job.
        for a in &arrays {
            self.file(a).await?.write().await.delete(name);
        }
        self.inner.meta.lock().datasets.shift_remove(name);
        self.touch_meta();
        Ok(())
    }

    /// Dataset names in insertion order.
    pub fn list_datasets(&self) -> Vec<String> {
        self.inner.meta.lock().datasets.keys().cloned().collect()
    }

    pub fn dataset_exists(&self, name: &str) -> bool {
        self.inner.meta.lock().datasets.contains_key(name)
    }

    /// Distinct array names declared by any dataset, sorted.
    pub fn list_arrays(&self) -> Vec<String> {
        let m = self.inner.meta.lock();
        let set: BTreeSet<&String> = m.datasets.values().flat_map(|d| d.arrays.keys()).collect();
        set.into_iter().cloned().collect()
    }

    /// The dtype of `array` in the first dataset (insertion order) that declares it.
    pub fn array_dtype(&self, array: &str) -> Option<DType> {
        let m = self.inner.meta.lock();
        m.datasets.values().find_map(|d| d.arrays.get(array).map(|s| s.dtype.clone()))
    }

    /// Every dataset that declares `array`, in store order, with its schema: one
    /// hold of the metadata lock, not a copy of each dataset's whole metadata.
    pub fn array_schemas(&self, array: &str) -> Vec<(String, ArraySchema)> {
        let m = self.inner.meta.lock();
        m.datasets.iter().filter_map(|(d, dm)| dm.arrays.get(array).map(|s| (d.clone(), s.clone()))).collect()
    }

    /// A snapshot of one dataset's metadata.
    pub fn dataset_meta(&self, name: &str) -> Option<DatasetMeta> {
        self.inner.meta.lock().datasets.get(name).map(|d| (**d).clone())
    }

    /// Reads the same region of `array` from many datasets, in parallel with bounded
    /// concurrency. Names that are unknown or lack the array give `None`.
    pub async fn read_array_across<T: ArrayElement + Send + Sync + 'static>(
        &self,
        array: &str,
        names: &[String],
        start: Vec<usize>,
        shape: Vec<usize>,
    ) -> Result<Vec<Option<ArcArray<T, IxDyn>>>> {
        let present: Vec<bool> = {
            let m = self.inner.meta.lock();
            names.iter().map(|n| m.datasets.get(n).is_some_and(|d| d.arrays.contains_key(array))).collect()
        };
        if !present.iter().any(|&p| p) {
            return Err(Error::ArrayNotFound(array.to_string()));
        }
        let views: Vec<Option<DatasetView>> = names.iter().zip(&present).map(|(n, &p)| p.then(|| DatasetView::new(self.clone(), n))).collect();
        let (start, shape) = (&start, &shape);
        futures::stream::iter(views)
            .map(|v| async move {
                match v {
                    None => Ok(None),
                    Some(v) => v.read_array::<T>(array, start.clone(), shape.clone()).await,
                }
            })
            .buffered(self.inner.options.read_concurrency)
            .try_collect()
            .await
    }

    /// Reads the same region of `array` from every listed dataset into one
    /// `[N, *shape]` array. Every dataset must declare the array; differing result
    /// shapes are an error (0.10 panicked: D9).
    pub async fn read_array_across_stacked<T: ArrayElement + Send + Sync + Clone + 'static>(
        &self,
        array: &str,
        names: &[String],
        start: Vec<usize>,
        shape: Vec<usize>,
    ) -> Result<ArrayD<T>> {
        if names.is_empty() {
            return Err(Error::ArrayNotFound(array.to_string()));
        }
        {
            let m = self.inner.meta.lock();
            for n in names {
                if !m.datasets.get(n).is_some_and(|d| d.arrays.contains_key(array)) {
                    return Err(Error::ArrayNotFound(format!("{array} (in dataset {n})")));
                }
            }
        }
        let parts = self.read_array_across::<T>(array, names, start, shape).await?;
        let first_shape = parts[0].as_ref().expect("checked above").shape().to_vec();
        let mut data = Vec::with_capacity(names.len() * first_shape.iter().product::<usize>());
        for (n, p) in names.iter().zip(parts) {
            let p = p.expect("checked above");
            if p.shape() != first_shape.as_slice() {
                return Err(ErrorDetail::Invalid(format!(
                    "dataset {n} gives {array} the shape {:?}, but {} gives {:?}; stacked reads need equal shapes",
                    p.shape(),
                    names[0],
                    first_shape
                ))
                .into());
            }
            data.extend(p.iter().cloned());
        }
        let mut full = vec![names.len()];
        full.extend(first_shape);
        Ok(ArrayD::from_shape_vec(IxDyn(&full), data).expect("sizes checked"))
    }

    /// The durability boundary: writes every array file with pending changes
    /// (concurrently), then the metadata file. On error nothing pending is dropped.
    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn flush_shared(&self) -> Result<()> {
        let _g = self.inner.flush_lock.lock().await;
        let mut forks = vec![];
        // Another writer's flush can land between our check for conflicts and our
        // metadata file; the flush then withdraws what it wrote and goes round again,
        // which forks the datasets both changed. A few rounds end all but a live-lock.
        for round in 0.. {
            forks.extend(self.fork_conflicts().await?);
            match self.flush_locked().await {
                Err(e) if round < 4 && matches!(e.detail(), Some(ErrorDetail::Conflict(_))) => {
                    tracing::info!(round, msg = %e.message(), "another writer flushed concurrently; flushing again")
                }
                r => {
                    r?;
                    break;
                }
            }
        }
        if forks.is_empty() {
            return Ok(());
        }
        let list = forks.iter().map(|(d, c)| format!("{d} (the changes made here are in {c})")).collect::<Vec<_>>().join(", ");
        tracing::warn!(datasets = %list, "conflicting changes: kept the other writer's version, saved ours as a copy");
        self.inner.noticed.lock().extend(forks.into_iter().flat_map(|(d, c)| [d, c]));
        self.touch();
        Err(ErrorDetail::Conflict(format!(
            "dataset(s) changed here and by another writer since this store read them: {list}; each keeps the other writer's version and the copies hold the changes made here (flushed)"
        )).into())
    }

    /// Datasets that flushes since the last call found changed by another writer,
    /// including conflicted copies they made and the datasets they were made from.
    pub fn take_noticed(&self) -> Vec<String> {
        let mut v = std::mem::take(&mut *self.inner.noticed.lock());
        v.sort();
        v.dedup();
        v
    }

    /// Before anything is written: picks up other writers' flushes and, for every
    /// dataset changed both here and there (a true conflict), moves the changes made
    /// here to a new dataset `<name>.conflict-<host>-<unix time>` holding this side's
    /// whole version, so neither side's values are shadowed or lost.
    async fn fork_conflicts(&self) -> Result<Vec<(String, String)>> {
        let mut pending = self.inner.meta_dirty.load(Ordering::Acquire);
        for f in self.loaded_files() {
            pending |= f.read().await.has_pending();
        }
        if !pending {
            return Ok(vec![]);
        }
        let changed = self.refresh_locked().await?;
        self.inner.noticed.lock().extend(changed);
        let mut clashing = std::mem::take(&mut *self.inner.meta_clashes.lock());
        for f in self.loaded_files() {
            clashing.extend(f.read().await.clashing());
        }
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let host: String = host_name().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
        let mut forks = vec![];
        for d in clashing {
            let ours = self.inner.meta.lock().datasets.get(&d).cloned();
            let theirs = self.inner.base.lock().datasets.get(&d).cloned();
            let mut copy = format!("{d}.conflict-{host}-{stamp}");
            for n in 2.. {
                if !self.dataset_exists(&copy) {
                    break;
                }
                copy = format!("{d}.conflict-{host}-{stamp}-{n}");
            }
            let arrays: Vec<String> = ours.as_ref().map(|m| m.arrays.keys().cloned().collect()).unwrap_or_default();
            for arr in &arrays {
                let f = self.file(arr).await?;
                f.write().await.fork_entry(&d, &copy).await?;
            }
            // Changes here to arrays this side no longer lists (deleted here) are dropped:
            // the other writer's version of them stays.
            for f in self.loaded_files() {
                let mut f = f.write().await;
                if !arrays.contains(&f.array) && f.has_pending_entry(&d) {
                    f.fork_entry(&d, &copy).await?;
                }
            }
            let mut m = self.inner.meta.lock();
            match theirs {
                Some(t) => m.datasets.insert(d.clone(), t),
                None => m.datasets.shift_remove(&d),
            };
            if let Some(o) = ours {
                m.datasets.insert(copy.clone(), o);
                forks.push((d, copy));
            }
            self.inner.meta_dirty.store(true, Ordering::Release);
        }
        Ok(forks)
    }

    /// Stages every array file with pending changes (their sidecars), writes the
    /// metadata file, then commits the staged files. The files stay write-locked
    /// from staging to commit, so no write slips between a sidecar and the
    /// pending state it is dropped against. A conflict withdraws the sidecars and
    /// keeps everything pending; any other error after a sidecar was written keeps
    /// it (the metadata write may have landed) and the next flush rewrites metadata.
    async fn flush_locked(&self) -> Result<()> {
        // No define/replace/delete is half-done while the gate is held, so the
        // snapshot and the pending layers of the files locked here agree; changes
        // that start after the gate opens wait for these files or the next flush.
        let gate = self.inner.commit_gate.write().await;
        let mut slots = self.loaded_files();
        slots.sort_by_cached_key(|f| Arc::as_ptr(f) as usize);
        let mut files = vec![];
        for f in slots {
            if f.read().await.has_pending() {
                files.push(f.write_owned().await);
            }
        }
        let meta_dirty = self.inner.meta_dirty.swap(false, Ordering::AcqRel);
        let snapshot = self.inner.meta.lock().clone();
        drop(gate);
        if !files.is_empty() {
            super::progress::start("writing", files.iter().map(|g| g.pending_summary().1).sum());
        }
        let mut results: Vec<Result<bool>> = vec![];
        for some in files.chunks_mut(8) {
            results.extend(futures::future::join_all(some.iter_mut().map(|g| g.stage())).await);
        }
        let wrote = results.iter().any(|r| matches!(r, Ok(true)));
        let mut outcome = match results.into_iter().find_map(|r| r.err()) {
            Some(e) => Err(e),
            None if meta_dirty || wrote => self.save_meta(snapshot, &mut files).await,
            // The metadata file is rewritten after any new sidecar too: its version is
            // what other handles watch to notice changes (see `refresh`).
            None => Ok(false),
        };
        if outcome.as_ref().is_err_and(|e| matches!(e.detail(), Some(ErrorDetail::Conflict(_)))) {
            for g in files.iter_mut() {
                g.abort_staged().await;
            }
        }
        for g in files.iter_mut() {
            if g.is_staged() || outcome.is_ok() {
                let r = g.commit_staged().await;
                if outcome.is_ok() {
                    outcome = r.map(|_| false).and(outcome);
                }
            }
        }
        if outcome.is_err() {
            // The metadata file may not have landed: automatic compaction must not take
            // these sidecars for committed ones (see `array_file::fold`).
            for g in files.iter_mut() {
                g.forget_committed_here();
            }
        }
        drop(files);
        match outcome {
            Ok(merged) => {
                if merged {
                    self.load_merged_layers().await;
                }
                Ok(())
            }
            Err(e) => {
                self.inner.meta_dirty.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Writes the metadata file without losing other writers' changes: a
    /// conditional update on the version we last saw; if another writer got there
    /// first, their file is read and merged with ours (`merge_theirs`) and the
    /// update retried. Backends without conditional updates (a local directory) do
    /// the same under a lock file. Returns whether another writer's file was merged.
    async fn save_meta(&self, snapshot: StoreMeta, files: &mut [StagedFile]) -> Result<bool> {
        let clashes = std::mem::take(&mut *self.inner.meta_clashes.lock());
        if !clashes.is_empty() {
            return Err(conflict(clashes.into_iter().collect()));
        }
        let path = Path::from(self.inner.meta_file.file_name());
        let mut ours = snapshot.clone();
        ours.version = ours.version.max(1);
        let mut merged = false;
        for _attempt in 0..16 {
            let version = self.inner.meta_version.lock().clone();
            ours.generation = ours.generation.max(self.inner.base.lock().generation) + 1;
            let bytes = self.inner.meta_file.encode_with(&ours, &mut self.inner.json_fragments.lock())?;
            let mode = match &version {
                Some(v) => PutMode::Update(v.clone()),
                None => PutMode::Create,
            };
            match self.inner.store.put_opts(&path, PutPayload::from(bytes), PutOptions::from(mode)).await {
                Ok(r) => {
                    self.saved(&snapshot, ours, UpdateVersion { e_tag: r.e_tag, version: r.version });
                    return Ok(merged);
                }
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                    let (theirs, v) = read_meta(&*self.inner.store, self.inner.meta_file).await?;
                    ours = self.merge_theirs(&ours, theirs, v, files).await?;
                    merged = true;
                }
                Err(object_store::Error::NotImplemented { .. }) => return self.save_meta_locked(&snapshot, ours, files).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ErrorDetail::Conflict(format!("{}: the metadata file kept changing under 16 attempts to update it", self.inner.location)).into())
    }

    /// After merging another writer's metadata: their datasets' entries live in
    /// sidecars that our array files may have listed before they were written (they
    /// write sidecars before metadata), so loaded files look again.
    async fn load_merged_layers(&self) {
        for f in self.loaded_files() {
            let mut g = f.write().await;
            let r = g.refresh().await;
            let grids = self.committed_grids(None, &g.array);
            g.set_aside_uncommitted(&grids);
            if let Err(e) = r {
                tracing::warn!(error = %e, "reloading layers after a metadata merge failed; the next refresh retries");
                *self.inner.meta_version.lock() = None;
            }
        }
    }

    /// `ours` merged onto another writer's `theirs` (which committed while our
    /// sidecars were staged), which becomes the new base. A conflict is a dataset
    /// both changed, in the metadata or in the data: their new sidecars, loaded
    /// here, hold entries we have pending. Then their version is taken into memory
    /// under our changes (as a refresh does) and the conflict returned, so the
    /// caller withdraws our sidecars and the retried flush forks those datasets.
    async fn merge_theirs(&self, ours: &StoreMeta, theirs: StoreMeta, version: Option<UpdateVersion>, files: &mut [StagedFile]) -> Result<StoreMeta> {
        let mut names = BTreeSet::new();
        for g in files.iter_mut() {
            g.refresh().await?;
            names.extend(g.clashing());
        }
        let base = self.inner.base.lock().clone();
        let merged = merge(&base, ours, &theirs);
        if let Err(n) = &merged {
            names.extend(n.iter().cloned());
        }
        if !names.is_empty() {
            let mut m = self.inner.meta.lock();
            *m = merge_keep_ours(&base, &m, &theirs);
            self.inner.meta_clashes.lock().extend(names.iter().cloned());
        }
        *self.inner.base.lock() = theirs;
        *self.inner.meta_version.lock() = version;
        match merged {
            Ok(m) if names.is_empty() => Ok(m),
            _ => Err(conflict(names.into_iter().collect())),
        }
    }

    /// The lock-file protocol for stores whose backend has no conditional update.
    async fn save_meta_locked(&self, snapshot: &StoreMeta, mut ours: StoreMeta, files: &mut [StagedFile]) -> Result<bool> {
        let lock = MetaLock::acquire(self.inner.store.clone()).await?;
        let saved = async {
            let mut merged = false;
            // Unchanged since we last read or wrote it (the usual case: one writer):
            // no need to read and decode it, which in a store of 50,000 datasets
            // was most of the flush.
            let path = Path::from(self.inner.meta_file.file_name());
            let known = self.inner.meta_version.lock().clone();
            let unchanged = match self.inner.store.head(&path).await {
                Ok(h) => known.is_some_and(|v| v.e_tag.is_some() && v.e_tag == h.e_tag),
                Err(_) => false,
            };
            if !unchanged && let Ok((theirs, v)) = read_meta(&*self.inner.store, self.inner.meta_file).await {
                let base = self.inner.base.lock().clone();
                if !changed_datasets(&base, &theirs).is_empty() || base.codec != theirs.codec {
                    ours = self.merge_theirs(&ours, theirs, v, files).await?;
                    merged = true;
                }
            }
            ours.generation = ours.generation.max(self.inner.base.lock().generation) + 1;
            let bytes = self.inner.meta_file.encode_with(&ours, &mut self.inner.json_fragments.lock())?;
            let r = replace_checked(&*self.inner.store, &Path::from(self.inner.meta_file.file_name()), bytes).await?;
            self.saved(snapshot, ours, UpdateVersion { e_tag: r.e_tag, version: r.version });
            Ok::<bool, Error>(merged)
        }
        .await;
        lock.release().await;
        saved
    }

    /// After a successful save of `written` (which began as `snapshot`): it becomes
    /// the new base, and in-memory metadata takes the merged-in datasets of others,
    /// keeping local changes made since the snapshot.
    fn saved(&self, snapshot: &StoreMeta, written: StoreMeta, version: UpdateVersion) {
        let mut m = self.inner.meta.lock();
        // Local changes since the snapshot win (they are newer than anything written).
        let merged = merge(snapshot, &m, &written).unwrap_or_else(|_| m.clone());
        *m = merged;
        *self.inner.base.lock() = written;
        *self.inner.meta_version.lock() = Some(version);
    }

    /// Picks up other writers' flushed changes: if the metadata file changed since
    /// this handle last read or wrote it, it is merged in (datasets changed here keep
    /// their local version; one changed on both sides is reported by the next flush)
    /// and loaded array files load the new layers. One HEAD when nothing changed.
    /// Returns the datasets whose metadata or data changed, sorted.
    pub async fn refresh(&self) -> Result<Vec<String>> {
        let _g = self.inner.flush_lock.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<Vec<String>> {
        let path = Path::from(self.inner.meta_file.file_name());
        let head = match self.inner.store.head(&path).await {
            Ok(h) => h,
            Err(object_store::Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let known = self.inner.meta_version.lock().clone();
        if known.as_ref().is_some_and(|v| v.e_tag.is_some() && v.e_tag == head.e_tag) {
            return Ok(vec![]);
        }
        let (theirs, version) = read_meta(&*self.inner.store, self.inner.meta_file).await?;
        let mut changed = {
            let base = self.inner.base.lock().clone();
            let mut m = self.inner.meta.lock();
            let theirs_changed = changed_datasets(&base, &theirs);
            let clashes = changed_datasets(&base, &m).into_iter().filter(|n| theirs_changed.contains(n) && !same_dataset(&m, &theirs, n));
            self.inner.meta_clashes.lock().extend(clashes);
            *m = merge_keep_ours(&base, &m, &theirs);
            theirs_changed
        };
        *self.inner.base.lock() = theirs;
        *self.inner.meta_version.lock() = version;
        for f in self.loaded_files() {
            let mut g = f.write().await;
            changed.extend(g.refresh().await?);
            let grids = self.committed_grids(None, &g.array);
            g.set_aside_uncommitted(&grids);
        }
        changed.sort();
        changed.dedup();
        self.touch();
        Ok(changed)
    }

    /// Python's `close`: a flush.
    pub async fn close(&self) -> Result<()> {
        self.flush_shared().await
    }

    /// Whether anything awaits a flush.
    pub async fn has_pending(&self) -> bool {
        if self.inner.meta_dirty.load(Ordering::Acquire) {
            return true;
        }
        for f in self.loaded_files() {
            if f.read().await.has_pending() {
                return true;
            }
        }
        false
    }

    /// What awaits a flush: (datasets' arrays with unflushed changes, their encoded
    /// bytes, whether the metadata file must be rewritten). Waits for a flush under way.
    pub async fn pending_summary(&self) -> (usize, u64, bool) {
        let (mut arrays, mut bytes) = (0, 0);
        for f in self.loaded_files() {
            let (a, b) = f.read().await.pending_summary();
            arrays += a;
            bytes += b;
        }
        (arrays, bytes, self.inner.meta_dirty.load(Ordering::Acquire))
    }

    /// Flushes, then rewrites every array file as a single base layer without
    /// deleted entries or dead bytes.
    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn compact_shared(&self) -> Result<()> {
        self.flush_shared().await?;
        let _g = self.inner.flush_lock.lock().await;
        // Sidecars that contradict the stored metadata file (not only ours, which may
        // lag another writer's flush) are uncommitted: compaction drops them.
        let stored = match read_meta(&*self.inner.store, self.inner.meta_file).await {
            Ok((m, _)) => Some(m),
            Err(Error::ObjectStore(object_store::Error::NotFound { .. })) => None,
            Err(e) => return Err(e),
        };
        let stored = &stored;
        // Every array file: those the metadata declares, those this process opened,
        // and those on the store that no dataset declares any more (deleted from
        // every dataset, possibly by another process): the same set whether the
        // deletes happened in this process (a mount) or an earlier one (the CLI).
        let mut names: BTreeSet<String> = self.list_arrays().into_iter().collect();
        names.extend(self.inner.files.read().keys().cloned());
        names.extend(super::array_file::array_dirs(&*self.inner.store).await?);
        let names: Vec<String> = names.into_iter().collect();
        let mut total = 0;
        for a in &names {
            total += self.file(a).await?.read().await.info().bytes;
        }
        super::progress::start("compacting", total);
        futures::stream::iter(names)
            .map(|a| async move {
                let f = self.file(&a).await?;
                // Never alongside another compactor of this file (an automatic one here
                // or in another process): see `autocompact`.
                let lease = self.compaction_lease(&a).await?;
                let mut g = f.write().await;
                g.set_aside_uncommitted(&self.committed_grids(stored.as_ref(), &a));
                // A write that slipped in after the flush above (another descriptor's
                // close, the write-back timer's window) waits for the next flush and
                // this file for the next compaction: flushing it here would write its
                // sidecar outside a metadata commit, and a crash would then leave a
                // compacted base that the metadata file does not describe.
                if g.pending_summary().0 > 0 {
                    tracing::info!(array = %a, "changed while compacting; compacted next time");
                    super::progress::advance(g.info().bytes);
                    drop(g);
                    lease.release().await;
                    return Ok(());
                }
                let r = g.compact().await;
                drop(g);
                lease.release().await;
                r
            })
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await?;
        self.touch();
        Ok(())
    }

    /// Counts and sizes; opens every array file.
    pub async fn info(&self) -> Result<StoreInfo> {
        let mut arrays = vec![];
        for a in self.list_arrays() {
            let f = self.file(&a).await?;
            let i = f.read().await.info();
            arrays.push(ArrayFileInfo { array: a, layers: i.layers, bytes: i.bytes, entries: i.entries });
        }
        Ok(StoreInfo { location: self.inner.location.clone(), meta_file: self.inner.meta_file.file_name(), codec: self.codec(), datasets: self.list_datasets().len(), arrays })
    }
}
