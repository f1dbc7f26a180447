//! [`Atlas`]: a store of named datasets, with one durability boundary, [`Atlas::flush`].
//!
//! Mutations change the in-memory metadata and the pending layers of array files;
//! `flush` writes every array file with pending changes (concurrently), then the
//! metadata file. Array files are opened lazily, on first use, at most once.
//!
//! Unlike atlas 0.10's Rust API, every method takes `&self` (state sits behind
//! locks), so one `Atlas` can be shared across threads, e.g. by the FUSE daemon.

use std::collections::{BTreeSet, HashMap};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use ndarray::{ArrayD, IxDyn};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::{Mutex, RwLock};
use tokio::sync::OnceCell;

use super::array_file::ArrayFile;
use super::cache::BlockCache;
use super::dataset::DatasetView;
use super::element::ArrayElement;
use super::meta::{DatasetMeta, MetaFile, MetaFormat, StoreMeta};
use super::{Error, Result, validate_name};
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 256 << 20,
            io_cache_bytes: 0,
            read_concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 2,
        }
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
    /// Set by every metadata change, cleared when a flush takes its snapshot.
    pub meta_dirty: AtomicBool,
    /// Bumped by every mutation; lets upper layers notice change cheaply.
    pub version: AtomicU64,
    files: RwLock<HashMap<String, FileSlot>>,
    pub cache: Arc<BlockCache>,
    pub options: StoreOptions,
    flush_lock: tokio::sync::Mutex<()>,
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
        let (meta, meta_file) = match file {
            None => (StoreMeta::empty_default(), MetaFile::default()),
            Some(f) => {
                let bytes = store.get(&Path::from(f.file_name())).await?.bytes().await?;
                (f.decode(&bytes)?, f)
            }
        };
        Ok(Self::from_parts(store, location, meta, meta_file, file.is_some(), options))
    }

    fn from_parts(store: Arc<dyn ObjectStore>, location: String, meta: StoreMeta, meta_file: MetaFile, found: bool, options: StoreOptions) -> Atlas {
        let cache = Arc::new(BlockCache::new(options.block_cache_bytes, options.io_cache_bytes));
        Atlas {
            inner: Arc::new(Shared {
                store,
                location,
                meta: Mutex::new(meta),
                meta_file,
                found,
                meta_dirty: AtomicBool::new(false),
                version: AtomicU64::new(0),
                files: RwLock::new(HashMap::new()),
                cache,
                options,
                flush_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Creates a new store and writes its metadata file at once. Refuses a location
    /// that already holds a store (0.10 silently reset it, leaving orphans: D6).
    pub async fn create(store: Arc<dyn ObjectStore>, prefix: Path, config: StoreConfig) -> Result<Atlas> {
        Self::create_with(store, prefix, config, StoreOptions::default()).await
    }

    pub async fn create_with(store: Arc<dyn ObjectStore>, prefix: Path, config: StoreConfig, options: StoreOptions) -> Result<Atlas> {
        let location = prefix.to_string();
        let store = prefixed(store, prefix);
        let (file, _) = find_meta_file(&*store).await?;
        if let Some(f) = file {
            return Err(Error::StoreAlreadyExists(format!("{location} ({} present)", f.file_name())));
        }
        let listing = store.list_with_delimiter(None).await?;
        for dir in listing.common_prefixes {
            let inner = store.list_with_delimiter(Some(&dir)).await?;
            if inner.objects.iter().any(|o| o.location.filename().is_some_and(|n| n.ends_with(".af"))) {
                return Err(Error::StoreAlreadyExists(format!("{location} (array files under {dir}/)")));
            }
        }
        let meta_file = MetaFile::new(config.meta_format, config.meta_compression);
        let meta = StoreMeta::new(config.codec);
        let bytes = meta_file.encode(&meta)?;
        match store.put_opts(&Path::from(meta_file.file_name()), PutPayload::from(bytes), PutOptions::from(PutMode::Create)).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Err(Error::StoreAlreadyExists(location)),
            Err(e) => return Err(e.into()),
        }
        Ok(Self::from_parts(store, location, meta, meta_file, true, options))
    }

    /// Opens a store in a local directory, which must exist.
    pub async fn open_path(path: impl AsRef<FsPath>) -> Result<Atlas> {
        Self::open_path_with(path, StoreOptions::default()).await
    }

    pub async fn open_path_with(path: impl AsRef<FsPath>, options: StoreOptions) -> Result<Atlas> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Err(Error::StoreNotFound(path.display().to_string()));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(path)?);
        let mut a = Self::open_with(store, Path::default(), options).await?;
        Arc::get_mut(&mut a.inner).expect("fresh").location = path.display().to_string();
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
        let mut a = Self::create_with(store, Path::default(), config, options).await?;
        Arc::get_mut(&mut a.inner).expect("fresh").location = path.display().to_string();
        Ok(a)
    }

    /// Whether the location held a store when opened (a metadata file was found).
    /// `open` of a location without one gives an empty store, as atlas 0.10 does;
    /// callers that want "no store here" to be an error check this.
    pub fn exists(&self) -> bool {
        self.inner.found
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
            let f = ArrayFile::open(self.inner.store.clone(), self.inner.cache.clone(), array, codec).await?;
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

    fn loaded_files(&self) -> Vec<Arc<tokio::sync::RwLock<ArrayFile>>> {
        self.inner.files.read().values().filter_map(|s| s.get().cloned()).collect()
    }

    /// How many reads the bulk paths keep in flight.
    pub fn read_concurrency(&self) -> usize {
        self.inner.options.read_concurrency
    }

    pub fn block_cache(&self) -> &BlockCache {
        &self.inner.cache
    }

    pub async fn create_dataset(&self, name: &str) -> Result<DatasetView> {
        validate_name(name)?;
        {
            let mut m = self.inner.meta.lock();
            if m.datasets.contains_key(name) {
                return Err(Error::DatasetAlreadyExists(name.to_string()));
            }
            m.datasets.insert(name.to_string(), DatasetMeta::default());
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
    pub async fn delete_dataset(&self, name: &str) -> Result<()> {
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

    /// A snapshot of one dataset's metadata.
    pub fn dataset_meta(&self, name: &str) -> Option<DatasetMeta> {
        self.inner.meta.lock().datasets.get(name).cloned()
    }

    /// Reads the same region of `array` from many datasets, in parallel with bounded
    /// concurrency. Names that are unknown or lack the array give `None`.
    pub async fn read_array_across<T: ArrayElement>(&self, array: &str, names: &[String], start: &[usize], shape: &[usize]) -> Result<Vec<Option<ArrayD<T>>>> {
        let present: Vec<bool> = {
            let m = self.inner.meta.lock();
            names.iter().map(|n| m.datasets.get(n).is_some_and(|d| d.arrays.contains_key(array))).collect()
        };
        if !present.iter().any(|&p| p) {
            return Err(Error::ArrayNotFound(array.to_string()));
        }
        let views: Vec<Option<DatasetView>> = names.iter().zip(&present).map(|(n, &p)| p.then(|| DatasetView::new(self.clone(), n))).collect();
        futures::stream::iter(views)
            .map(|v| async move {
                match v {
                    None => Ok(None),
                    Some(v) => v.read_array::<T>(array, start, shape).await,
                }
            })
            .buffered(self.inner.options.read_concurrency)
            .try_collect()
            .await
    }

    /// Reads the same region of `array` from every listed dataset into one
    /// `[N, *shape]` array. Every dataset must declare the array; differing result
    /// shapes are an error (0.10 panicked: D9).
    pub async fn read_array_across_stacked<T: ArrayElement>(&self, array: &str, names: &[String], start: &[usize], shape: &[usize]) -> Result<ArrayD<T>> {
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
                return Err(Error::Invalid(format!("dataset {n} gives {array} the shape {:?}, but {} gives {:?}; stacked reads need equal shapes", p.shape(), names[0], first_shape)));
            }
            data.extend(p.into_iter());
        }
        let mut full = vec![names.len()];
        full.extend(first_shape);
        Ok(ArrayD::from_shape_vec(IxDyn(&full), data).expect("sizes checked"))
    }

    /// The durability boundary: writes every array file with pending changes
    /// (concurrently), then the metadata file. On error nothing pending is dropped.
    pub async fn flush(&self) -> Result<()> {
        let _g = self.inner.flush_lock.lock().await;
        let meta_dirty = self.inner.meta_dirty.swap(false, Ordering::AcqRel);
        let snapshot = self.inner.meta.lock().clone();
        let files = self.loaded_files();
        let results: Vec<Result<()>> = futures::stream::iter(files).map(|f| async move { f.write().await.flush().await }).buffer_unordered(8).collect().await;
        if let Some(e) = results.into_iter().find_map(|r| r.err()) {
            self.inner.meta_dirty.store(meta_dirty || self.inner.meta_dirty.load(Ordering::Acquire), Ordering::Release);
            return Err(e);
        }
        if meta_dirty {
            let bytes = self.inner.meta_file.encode(&snapshot)?;
            if let Err(e) = self.inner.store.put(&Path::from(self.inner.meta_file.file_name()), PutPayload::from(bytes)).await {
                self.inner.meta_dirty.store(true, Ordering::Release);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Python's `close`: a flush.
    pub async fn close(&self) -> Result<()> {
        self.flush().await
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

    /// Flushes, then rewrites every array file as a single base layer without
    /// deleted entries or dead bytes.
    pub async fn compact(&self) -> Result<()> {
        self.flush().await?;
        let _g = self.inner.flush_lock.lock().await;
        let mut names: BTreeSet<String> = self.list_arrays().into_iter().collect();
        names.extend(self.inner.files.read().keys().cloned());
        let names: Vec<String> = names.into_iter().collect();
        futures::stream::iter(names)
            .map(|a| async move {
                let f = self.file(&a).await?;
                let mut g = f.write().await;
                // A write that slipped in after the flush above goes out first.
                g.flush().await?;
                g.compact().await
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
