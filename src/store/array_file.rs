//! One array file: every dataset's copy of one array name, as a stack of layers.
//!
//! ```text
//! <array>/data.af        base layer (overlay 0)
//! <array>/data.N.af      sidecar N ≥ 1, one per flush that had changes for this array
//! <array>/data.stats     per-entry statistics
//! ```
//! Entries inside a layer are keyed by dataset name. A chunk is resolved newest
//! first: the pending (unflushed) layer, then sidecars from the highest number
//! down, then the base; cells no layer holds read as the fill value.
//!
//! Fixes over atlas 0.10, each pinned by a test:
//! - A tombstone ends the walk (D1). When an entry is re-defined over an older
//!   version, the flush also writes fill chunks for every chunk the new version
//!   did not write, so even 0.10 readers (which walk past tombstones) see no old data.
//! - The next sidecar is the highest existing number + 1, created with
//!   create-if-absent (D5).
//! - Compaction writes the new base first (an atomic PUT), then deletes the
//!   sidecars lowest first, then rewrites stats (D4): every intermediate state
//!   reads the same values (proof sketch in docs/format.md).
//!
//! Pending writes are packed into blocks as they arrive; closed blocks spill to an
//! anonymous temp file, so memory holds at most one open block per array file.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use indexmap::IndexMap;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::cache::{BlockCache, next_layer_id};
use super::disk_cache::DiskCache;
use super::layer::{Layer, Tail};
use super::{Error, ErrorDetail, Result};
use crate::format::cells::Cells;
use crate::format::footer::{ArrayLayout, Attributes, ChunkEntry, StorageLayout, decode_stats, encode_footer, encode_stats};
use crate::format::grid::{Grid, copy_box_bytes, copy_box_cells};
use crate::format::packer::BlockPacker;
use crate::format::stats::{ChunkSummary, summarize};
use crate::format::{ChunkAddress, Codec, DType, EntryMeta, EntryStats, FillValue, Footer, StatsFile};

mod adopt;
mod fold;
mod link;
mod upload;
pub use adopt::{EncodedBlock, EncodedBlocks};
pub use fold::{FoldPlan, FoldedBase, Listed, listed};
pub use link::{sidecars_linked, spill_file};
pub use upload::{EarlyUpload, IN_FLIGHT as EARLY_IN_FLIGHT, PARTS_EARLY, UPLOADS_ABORTED, UPLOADS_EARLY};

/// Sidecars up to this size are uploaded in one create-if-absent PUT.
pub const SINGLE_PUT_LIMIT: u64 = 64 * 1024 * 1024;
const BASE_NAME: &str = "data.af";
const STATS_NAME: &str = "data.stats";

/// What an entry is, in the units the rest of the crate uses.
#[derive(Debug, Clone, PartialEq)]
pub struct EntrySpec {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub chunk_shape: Vec<usize>,
    pub dimension_names: Vec<String>,
    pub fill: Option<FillValue>,
}

impl EntrySpec {
    pub fn grid(&self) -> Grid {
        Grid::new(self.shape.clone(), self.chunk_shape.clone())
    }

    fn from_meta(m: &EntryMeta) -> EntrySpec {
        EntrySpec {
            dtype: m.dtype.clone(),
            shape: m.layout.shape.iter().map(|&x| x as usize).collect(),
            chunk_shape: m.layout.storage.chunk_shape.iter().map(|&x| x as usize).collect(),
            dimension_names: m.layout.dimension_names.clone(),
            fill: m.fill_value.clone(),
        }
    }

    fn to_meta(&self, name: &str, deleted: bool, chunks: Vec<ChunkEntry>) -> EntryMeta {
        EntryMeta {
            name: name.to_string(),
            dtype: self.dtype.clone(),
            layout: ArrayLayout {
                shape: self.shape.iter().map(|&x| x as u32).collect(),
                dimension_names: self.dimension_names.clone(),
                storage: StorageLayout { chunk_shape: self.chunk_shape.iter().map(|&x| x as u32).collect(), chunks },
            },
            fill_value: self.fill.clone(),
            deleted,
            attributes: Attributes::U16(vec![]),
        }
    }

    fn same_grid(&self, other: &EntrySpec) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.chunk_shape == other.chunk_shape
    }
}

#[derive(Debug, Clone)]
struct PendingEntry {
    spec: EntrySpec,
    deleted: bool,
    /// Older layers must not show through (the entry was re-defined over an older version).
    shadows: bool,
    chunks: HashMap<Vec<u32>, ChunkAddress>,
    order: Vec<Vec<u32>>,
    summaries: HashMap<Vec<u32>, ChunkSummary>,
}

impl PendingEntry {
    fn new(spec: EntrySpec, deleted: bool, shadows: bool) -> Self {
        PendingEntry { spec, deleted, shadows, chunks: HashMap::new(), order: vec![], summaries: HashMap::new() }
    }
}

/// The layer being built: blocks of chunks written since the last flush.
#[derive(Debug)]
struct Pending {
    /// Cache identity; kept by the committed layer this becomes.
    id: u64,
    packer: BlockPacker,
    spill: Option<File>,
    /// Where spill files are made (see `link.rs`).
    spill_dir: Option<std::path::PathBuf>,
    /// The spill file was linked as a sidecar (see `link.rs`).
    linked: std::sync::atomic::AtomicBool,
    entries: IndexMap<String, PendingEntry>,
    /// The multipart upload of the next sidecar begun from the spill file while it
    /// was being encoded (`upload.rs`).
    upload: parking_lot::Mutex<Option<EarlyUpload>>,
}

impl Pending {
    fn new(codec: Codec, spill_dir: Option<std::path::PathBuf>) -> Self {
        Pending { id: next_layer_id(), packer: BlockPacker::new(codec), spill: None, spill_dir, linked: Default::default(), entries: IndexMap::new(), upload: Default::default() }
    }

    fn append(&mut self, raw: &[u8]) -> Result<ChunkAddress> {
        let at = self.packer.closed_len();
        let (addr, closed) = self.packer.append(raw);
        if let Some(z) = closed {
            spill_write(&mut self.spill, self.spill_dir.as_deref(), at, z)?;
        }
        Ok(addr)
    }

    fn close_block(&mut self) -> Result<()> {
        let at = self.packer.closed_len();
        if let Some(z) = self.packer.close() {
            spill_write(&mut self.spill, self.spill_dir.as_deref(), at, z)?;
        }
        Ok(())
    }
}

/// Writes a closed block at `at` of the pending layer's spill file, made on first use.
fn spill_write(spill: &mut Option<File>, dir: Option<&std::path::Path>, at: u64, z: &[u8]) -> Result<()> {
    if spill.is_none() {
        *spill = Some(spill_file(dir)?);
    }
    spill.as_ref().unwrap().write_all_at(z, at)?;
    Ok(())
}

/// Where one chunk's bytes come from.
#[derive(Debug, Clone)]
enum ChunkLoc {
    Fill,
    Pending(ChunkAddress),
    Layer(Arc<Layer>, ChunkAddress),
}

/// An entry's current definition and the layers that may hold its chunks, newest first.
#[derive(Debug, Clone)]
struct Resolved {
    spec: EntrySpec,
    in_pending: bool,
    layers: Vec<Arc<Layer>>,
}

/// An entry's pending state, for [`ArrayFile::rollback`].
#[derive(Debug)]
pub struct Checkpoint {
    pending: Option<PendingEntry>,
    stats: Option<EntryStats>,
    stats_dirty: bool,
}

/// Facts about an array file for `atlasfs info`.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub layers: usize,
    pub bytes: u64,
    pub entries: usize,
    pub pending_entries: usize,
}

/// Reads and indexes the footers of `(overlay number, path)` layers, a few at once, in order.
/// Files without a trailer (torn writes, see [`super::layer::is_incomplete`]) are
/// returned apart, so that one crashed flush cannot make the array unreadable.
/// `base_tail` is the tail of `data.af` when it was fetched already (see [`ArrayFile::open`]).
/// `sizes` holds the files' sizes as listed (their tails are then bounded ranges).
async fn load_layers(
    store: &Arc<dyn ObjectStore>,
    disk: Option<&Arc<DiskCache>>,
    to_load: Vec<(u32, Path)>,
    mut base_tail: Option<Tail>,
    listed: &HashMap<Path, (u64, Option<String>)>,
) -> Result<(Vec<Arc<Layer>>, Vec<(u32, Path)>)> {
    let loaded: Vec<(u32, Path, Result<Layer>)> = futures::stream::iter(to_load)
        .map(|(n, p)| {
            let (size, tag) = listed.get(&p).cloned().map_or((None, None), |(s, t)| (Some(s), t));
            let store = store.clone();
            let disk = disk.cloned();
            let tail = if n == 0 { base_tail.take() } else { None };
            async move {
                let r = match (tail, size, tag, disk) {
                    (Some(t), ..) => Layer::from_tail(&*store, p.clone(), n, t).await,
                    (None, Some(size), Some(tag), Some(disk)) => load_through_disk(&store, &disk, &p, n, size, tag).await,
                    (None, size, ..) => Layer::load(&*store, p.clone(), n, size).await,
                };
                (n, p, r)
            }
        })
        .buffered(8)
        .collect()
        .await;
    let (mut layers, mut incomplete) = (vec![], vec![]);
    let empty_base = encode_footer(&Footer::empty()).len() as u64;
    for (n, p, r) in loaded {
        // A base holds every compacted value, and compaction replaces it by a checked
        // rename, so a base without its trailer is damage to report, not a leftover to
        // skip, except when it is shorter than the empty base: that is the one base a
        // flush writes (empty, before the first sidecar), torn, and it held nothing.
        let skip = match &r {
            Err(e) if super::layer::is_incomplete(e) => n > 0 || store.head(&p).await.is_ok_and(|m| m.size < empty_base),
            _ => false,
        };
        match r {
            Ok(l) => layers.push(Arc::new(l)),
            Err(_) if skip => {
                tracing::warn!(file = %p, "layer file without its trailer (a torn write of a flush that did not complete): ignored; the next compaction removes it");
                incomplete.push((n, p));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((layers, incomplete))
}

/// A listed layer whose footer read (`Layer::fetch_tail_sized`) the disk cache keeps
/// under the version the LIST names: a second mount with `--cache-dir` then opens an
/// array file in one round trip (the LIST, with the base's tail and the stats) where
/// each sidecar's footer would be a second.
async fn load_through_disk(store: &Arc<dyn ObjectStore>, disk: &Arc<DiskCache>, path: &Path, n: u32, size: u64, tag: String) -> Result<Layer> {
    let key = disk.tail_key(path.as_ref(), &tag, size);
    let (d, k) = (disk.clone(), key.clone());
    let tail = match tokio::task::spawn_blocking(move || d.get(&k)).await.ok().flatten() {
        Some(bytes) => Tail { size, e_tag: Some(tag), bytes },
        None => {
            let t = Layer::fetch_tail_sized(&**store, path, size).await?;
            if t.size == size && t.e_tag.as_ref() == Some(&tag) {
                let (d, payload) = (disk.clone(), t.bytes.clone());
                tokio::task::spawn_blocking(move || d.put(&key, &payload));
            }
            t
        }
    };
    Layer::from_tail(&**store, path.clone(), n, tail).await
}

/// What the metadata file says one dataset's entry is: dtype, shape, chunk shape.
pub type CommittedGrid = (DType, Vec<usize>, Vec<usize>);

pub struct ArrayFile {
    pub array: String,
    dir: Path,
    store: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    codec: Codec,
    /// Committed layers, ascending overlay number; `layers[0]` is the base when it exists.
    layers: Vec<Arc<Layer>>,
    base_exists: bool,
    pending: Pending,
    stats: IndexMap<String, EntryStats>,
    stats_error: Option<String>,
    stats_dirty: bool,
    /// Datasets another writer wrote (seen by a refresh) while they had unflushed
    /// changes here, with the overlays that hold the other writer's version: the
    /// next flush saves the changes made here as a conflicted copy (`fork_entry`).
    clashes: std::collections::BTreeMap<String, BTreeSet<u32>>,
    /// Entries the last refresh loaded new sidecars for, with those sidecars: what
    /// a reader that opened before it read is that entry without them.
    recent: HashMap<String, BTreeSet<u32>>,
    /// Sidecars of a flush that did not complete (see [`Self::set_aside_uncommitted`]).
    set_aside: Vec<Arc<Layer>>,
    /// Files ignored by refreshes: set-aside sidecars and torn layer files, by overlay
    /// number, with their ETags (a changed file is looked at again).
    ignored: std::collections::BTreeMap<u32, (Path, Option<String>)>,
    /// The sidecar [`Self::stage`] wrote, until the metadata file commits it
    /// ([`Self::commit_staged`]) or a conflict withdraws it ([`Self::abort_staged`]).
    /// Its changes stay pending meanwhile, so a withdrawn flush loses nothing.
    staged: Option<u32>,
    /// Overlay numbers up to this one were used by withdrawn sidecars: not reused, so
    /// no reader mistakes a new file for one it saw before.
    withdrawn: u32,
    /// Sidecars this process's flushes committed (a fold may take them at once; see `fold`).
    committed_here: BTreeSet<u32>,
    /// A local store's root: spill files are made there and linked as sidecars (`link.rs`).
    spill_dir: Option<std::path::PathBuf>,
}

/// The committed blocks behind `locs`, each once, grouped by layer: what one read
/// or read-ahead loads (fill and pending chunks have none).
fn blocks_by_layer<'a>(locs: impl IntoIterator<Item = &'a ChunkLoc>) -> HashMap<u64, (Arc<Layer>, Vec<crate::format::BlockMeta>)> {
    let mut seen = HashSet::new();
    let mut by_layer: HashMap<u64, (Arc<Layer>, Vec<crate::format::BlockMeta>)> = HashMap::new();
    for loc in locs {
        if let ChunkLoc::Layer(l, a) = loc
            && seen.insert((l.id, a.block_id.0))
        {
            let b = l.block(a.block_id.0).expect("addresses were validated when the layer was indexed").clone();
            by_layer.entry(l.id).or_insert_with(|| (l.clone(), vec![])).1.push(b);
        }
    }
    by_layer
}

/// A file that was listed (or read) a moment ago is gone or replaced: another
/// process compacted the array file. Listing again and retrying is the answer.
pub(crate) fn vanished(e: &Error) -> bool {
    matches!(e.detail(), Some(ErrorDetail::Stale(_))) || matches!(e, Error::ObjectStore(object_store::Error::NotFound { .. }))
}

/// Reads that find a layer replaced or gone (another process compacting the array
/// file, deleting its folded sidecars one by one) reload the layers and read again,
/// up to this many times.
pub(crate) const STALE_RETRIES: usize = 8;

/// `read_fresh!(file, |f| read)`: awaits `read` (a future using `f: &ArrayFile`, the
/// file read-locked); when it finds a layer replaced or gone, reloads the layers and
/// reads again (up to [`STALE_RETRIES`] times). Every read of committed data goes
/// through it. A macro, not an `AsyncFnMut`: the futures of a generic async closure
/// taking a reference are not `Send` for every lifetime, and reads run in spawned tasks.
macro_rules! read_fresh {
    ($file:expr, |$f:ident| $read:expr) => {{
        let file = $file;
        let mut tries = 0;
        loop {
            let res = {
                let guard = file.read().await;
                let $f: &$crate::store::array_file::ArrayFile = &guard;
                $read.await
            };
            match res {
                Err(e) if matches!(e.detail(), Some($crate::store::ErrorDetail::Stale(_))) && tries < $crate::store::array_file::STALE_RETRIES => tries += 1,
                r => break r,
            }
            if let Err(e) = file.write().await.refresh().await {
                break Err(e);
            }
        }
    }};
}
pub(crate) use read_fresh;

fn sidecar_number(file_name: &str) -> Option<u32> {
    let n = file_name.strip_prefix("data.")?.strip_suffix(".af")?;
    n.parse::<u32>().ok().filter(|&n| n >= 1)
}

/// The names of the array files on the store: every top-level directory holding a
/// `data.af` or a sidecar, whether or not a dataset still declares it (an array
/// deleted from every dataset keeps its file until a compaction rewrites it).
pub(crate) async fn array_dirs(store: &dyn ObjectStore) -> Result<Vec<String>> {
    let mut out = vec![];
    for dir in store.list_with_delimiter(None).await?.common_prefixes {
        let Some(name) = dir.filename().map(str::to_string) else { continue };
        if super::validate_name(&name).is_err() {
            continue;
        }
        let inner = store.list_with_delimiter(Some(&dir)).await?;
        if inner.objects.iter().any(|o| o.location.filename().is_some_and(|n| n == BASE_NAME || sidecar_number(n).is_some())) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The walk that resolves an entry: from the newest layer down, the layers holding
/// its current version, stopping at a tombstone or at an older definition with
/// another grid; `spec` is the pending definition, if any. Returns the version's
/// definition and those layers, newest first.
pub(super) fn live_layers<'a>(newest_first: impl Iterator<Item = &'a Arc<Layer>>, name: &str, mut spec: Option<EntrySpec>) -> (Option<EntrySpec>, Vec<&'a Arc<Layer>>) {
    let mut held = vec![];
    for l in newest_first {
        let Some(e) = l.entry(name) else { continue };
        if e.deleted {
            break;
        }
        let s = EntrySpec::from_meta(e);
        match &spec {
            None => spec = Some(s),
            // A version with another grid is an older, unrelated definition.
            Some(cur) if !cur.same_grid(&s) => break,
            Some(_) => {}
        }
        held.push(l);
    }
    (spec, held)
}

impl ArrayFile {
    /// Opens the array file under `<array>/`: one LIST, and alongside it (not after
    /// it) the tail of `data.af` and the stats file, which nearly every array file
    /// has; then the footers of the sidecars the LIST found. A small base's blocks
    /// come with its tail, so a cold read of a small array is one round trip, two
    /// with sidecars. A missing directory is an empty file; nothing is written until
    /// the first flush.
    pub async fn open(store: Arc<dyn ObjectStore>, cache: Arc<BlockCache>, array: &str, codec: Codec) -> Result<ArrayFile> {
        let dir = Path::from(array);
        let (base_guess, stats_guess) = (dir.clone().join(BASE_NAME), dir.clone().join(STATS_NAME));
        let (listing, base_tail, stats_got) =
            tokio::join!(store.list_with_delimiter(Some(&dir)), Layer::fetch_tail(&*store, &base_guess), async { Ok::<_, Error>(store.get(&stats_guess).await?.bytes().await?) },);
        let listing = listing?;
        let mut numbered = vec![];
        let mut base = None;
        let mut stats_path = None;
        let mut tags = HashMap::new();
        let mut sizes = HashMap::new();
        for obj in listing.objects {
            tags.insert(obj.location.clone(), obj.e_tag.clone());
            sizes.insert(obj.location.clone(), obj.size);
            let Some(name) = obj.location.filename() else { continue };
            if name == BASE_NAME {
                base = Some(obj.location.clone());
            } else if name == STATS_NAME {
                stats_path = Some(obj.location.clone());
            } else if let Some(n) = sidecar_number(name) {
                numbered.push((n, obj.location.clone()));
            }
        }
        numbered.sort_by_key(|(n, _)| *n);
        // Every writer (atlas 0.10 too) creates the base before the first sidecar, and
        // compaction replaces it in one PUT, so sidecars without a base mean it was
        // lost, with whatever data it held: refuse rather than read older values.
        if base.is_none()
            && let Some((_, first)) = numbered.first()
        {
            let msg = format!("the base layer is missing while sidecar {first} exists; restore data.af from a backup");
            return Err(ErrorDetail::Corrupt { path: dir.clone().join(BASE_NAME).to_string(), source: crate::format::FormatError::Invalid(msg) }.into());
        }
        let base_exists = base.is_some();
        let to_load: Vec<(u32, Path)> = base.map(|p| (0, p)).into_iter().chain(numbered).collect();
        // The LIST is the truth; a guess it contradicts (a file created or removed
        // in between) is dropped, and the listed file fetched as before.
        // A guess that failed otherwise is the open's failure: asking again would
        // wait out the retry bound twice.
        let not_found = |e: &Error| matches!(e, Error::ObjectStore(object_store::Error::NotFound { .. }));
        // Except an answered error for a base shorter than the guessed tail: a server
        // that refuses a suffix longer than the object (s3s-fs answers 500) gets the
        // tail as a bounded range of the listed size.
        let short_base = to_load.first().filter(|(n, _)| *n == 0).and_then(|(_, p)| sizes.get(p)).is_some_and(|&s| s < super::layer::TAIL_GUESS);
        let base_tail = match base_tail {
            Ok(t) => Some(t).filter(|_| base_exists),
            Err(e) if base_exists && !not_found(&e) && !(short_base && !super::backend::is_transport(&e)) => return Err(e),
            Err(_) => None,
        };
        let listed: HashMap<Path, (u64, Option<String>)> = sizes.iter().map(|(p, &s)| (p.clone(), (s, tags.get(p).cloned().flatten()))).collect();
        let (layers, incomplete) = load_layers(&store, cache.disk.as_ref(), to_load, base_tail, &listed).await?;
        let (stats, stats_error) = match stats_path {
            None => (IndexMap::new(), None),
            Some(p) => match async {
                match stats_got {
                    Err(e) if not_found(&e) => Ok::<_, Error>(store.get(&p).await?.bytes().await?),
                    r => r,
                }
            }
            .await
            {
                Ok(bytes) => match decode_stats(&bytes) {
                    Ok(s) => (s.entries.into_iter().map(|e| (e.name.clone(), e)).collect(), None),
                    Err(e) => {
                        tracing::warn!(file = %p, error = %e, "stats file is corrupt; stats unavailable until the next flush");
                        (IndexMap::new(), Some(format!("{p}: {e}")))
                    }
                },
                Err(e) => return Err(e),
            },
        };
        Ok(ArrayFile {
            array: array.to_string(),
            dir,
            store,
            cache,
            codec,
            layers,
            base_exists,
            pending: Pending::new(codec, None),
            spill_dir: None,
            stats,
            stats_error,
            stats_dirty: false,
            clashes: Default::default(),
            recent: HashMap::new(),
            set_aside: vec![],
            ignored: incomplete.into_iter().map(|(n, p)| (n, (p.clone(), tags.get(&p).cloned().flatten()))).collect(),
            staged: None,
            withdrawn: 0,
            committed_here: BTreeSet::new(),
        })
    }

    /// Sets aside the sidecars of a flush whose metadata file was never written (the
    /// writer died between the two): the metadata file is the commit point, but a
    /// sidecar is visible as soon as it exists. One sidecar is one flush of this array
    /// file, so when its entry for a dataset contradicts `committed` (what the metadata
    /// says each dataset's copy of this array is) — another shape, dtype or chunk
    /// shape, or a tombstone of an array the metadata still lists — the whole sidecar
    /// is uncommitted. Without this, such a store read the acknowledged array with the
    /// unacknowledged shape and failed ("read region outside"), and a compaction made
    /// the unacknowledged version permanent. Entries with pending changes are skipped
    /// (the pending layer decides them). Every held layer is judged again, so a
    /// sidecar set aside before a metadata merge comes back once the metadata agrees.
    pub fn set_aside_uncommitted(&mut self, committed: &HashMap<String, CommittedGrid>) {
        for l in std::mem::take(&mut self.set_aside) {
            self.ignored.remove(&l.overlay);
            self.layers.push(l);
        }
        self.layers.sort_by_key(|l| l.overlay);
        loop {
            let mut newest_bad: Option<usize> = None;
            for (name, (dtype, shape, chunk)) in committed {
                if self.pending.entries.contains_key(name) {
                    continue;
                }
                let Some((i, l)) = self.layers.iter().enumerate().rev().find(|(_, l)| l.mentions(name)) else { continue };
                let e = l.entry(name).expect("mentioned");
                let s = EntrySpec::from_meta(e);
                let agrees = !e.deleted && s.dtype == *dtype && s.shape == *shape && s.chunk_shape == *chunk;
                if l.overlay > 0 && !agrees {
                    newest_bad = newest_bad.max(Some(i));
                }
            }
            let Some(i) = newest_bad else { break };
            let l = self.layers.remove(i);
            tracing::warn!(file = %l.path, "sidecar of a flush whose metadata was never written: set aside (its writes were not acknowledged); the next compaction removes it");
            self.ignored.insert(l.overlay, (l.path.clone(), l.e_tag.clone()));
            self.set_aside.push(l);
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.entries.is_empty() || self.stats_dirty
    }

    /// Entries (datasets' copies of this array) with unflushed changes, and the
    /// encoded bytes the next flush will write for them.
    pub fn pending_summary(&self) -> (usize, u64) {
        (self.pending.entries.len(), self.pending.packer.closed_len() + self.pending.packer.open_block().len() as u64)
    }

    pub fn info(&self) -> FileInfo {
        let live: HashSet<&str> = self.layers.iter().flat_map(|l| l.footer.entries.iter().map(|e| e.name.as_str())).collect();
        FileInfo { layers: self.layers.len(), bytes: self.layers.iter().map(|l| l.size).sum(), entries: live.len(), pending_entries: self.pending.entries.len() }
    }

    /// Layers, newest first, that hold `name`'s current version; `None` if deleted or absent.
    fn resolve(&self, name: &str) -> Option<Resolved> {
        self.resolve_excluding(name, &BTreeSet::new())
    }

    /// As [`resolve`](Self::resolve), as if the layers numbered in `skip` did not exist.
    fn resolve_excluding(&self, name: &str, skip: &BTreeSet<u32>) -> Option<Resolved> {
        let mut spec: Option<EntrySpec> = None;
        let mut in_pending = false;
        if let Some(p) = self.pending.entries.get(name) {
            if p.deleted {
                return None;
            }
            spec = Some(p.spec.clone());
            in_pending = true;
            if p.shadows {
                return Some(Resolved { spec: p.spec.clone(), in_pending, layers: vec![] });
            }
        }
        let (spec, held) = live_layers(self.layers.iter().rev().filter(|l| !skip.contains(&l.overlay)), name, spec);
        spec.map(|spec| Resolved { spec, in_pending, layers: held.into_iter().cloned().collect() })
    }

    /// The current definition of an entry, if it is live.
    pub fn entry_spec(&self, name: &str) -> Option<EntrySpec> {
        self.resolve(name).map(|r| r.spec)
    }

    /// Whether any committed or pending layer mentions the entry, live or deleted.
    fn mentioned(&self, name: &str) -> bool {
        self.layers.iter().any(|l| l.mentions(name)) || self.pending.entries.get(name).is_some_and(|p| p.shadows || !p.deleted)
    }

    fn locate(&self, r: &Resolved, name: &str, coord: &[u32]) -> ChunkLoc {
        if r.in_pending
            && let Some(a) = self.pending.entries.get(name).and_then(|p| p.chunks.get(coord))
        {
            return ChunkLoc::Pending(*a);
        }
        for l in &r.layers {
            if let Some(a) = l.chunk(name, coord) {
                return ChunkLoc::Layer(l.clone(), a);
            }
        }
        ChunkLoc::Fill
    }

    async fn chunk_bytes(&self, loc: &ChunkLoc) -> Result<Option<Bytes>> {
        let (block, addr) = match loc {
            ChunkLoc::Fill => return Ok(None),
            ChunkLoc::Pending(a) => {
                let p = &self.pending;
                if a.block_id.0 == p.packer.open_block_id() {
                    let open = p.packer.open_block();
                    return Ok(Some(Bytes::copy_from_slice(&open[a.offset as usize..(a.offset + a.size) as usize])));
                }
                let b = p.packer.blocks[a.block_id.0 as usize].clone();
                let spill = p.spill.as_ref().expect("closed pending blocks live in the spill file");
                let fetch = async {
                    let mut buf = vec![0u8; b.compressed_size as usize];
                    spill.read_exact_at(&mut buf, b.file_offset)?;
                    Ok(Bytes::from(buf))
                };
                let block = self.cache.block((p.id, b.id.0), &b.codec, b.uncompressed_size, "pending writes", fetch).await?;
                (block, *a)
            }
            ChunkLoc::Layer(l, a) => {
                let b = l.block(a.block_id.0).expect("addresses were validated when the layer was indexed").clone();
                let block = self.cache.layer_block(&*self.store, l, &b).await?;
                (block, *a)
            }
        };
        Ok(Some(block.slice(addr.offset as usize..(addr.offset + addr.size) as usize)))
    }

    /// A chunk's cells (the fill value where no layer holds it).
    async fn chunk_cells(&self, r: &Resolved, name: &str, coord: &[u32]) -> Result<Cells> {
        let n = r.spec.grid().chunk_len(coord);
        let loc = self.locate(r, name, coord);
        match self.chunk_bytes(&loc).await? {
            None => Ok(Cells::filled(&r.spec.dtype, r.spec.fill.as_ref(), n)),
            Some(raw) => Cells::decode(&r.spec.dtype, &raw, n).map_err(|source| ErrorDetail::Corrupt { path: self.loc_name(&loc), source }.into()),
        }
    }

    fn loc_name(&self, loc: &ChunkLoc) -> String {
        match loc {
            ChunkLoc::Layer(l, _) => l.path.to_string(),
            _ => format!("{} (pending writes)", self.dir),
        }
    }

    fn not_found(&self, name: &str) -> Error {
        Error::ArrayNotFound(format!("{} (no live entry for dataset {name:?} in {})", self.array, self.dir))
    }

    /// Whether some layer (or the pending writes) holds chunk `coord` of the entry;
    /// `false` where it reads as the fill value. Index lookups only, no block I/O.
    pub fn holds_chunk(&self, name: &str, coord: &[u32]) -> Result<bool> {
        let r = self.resolve(name).ok_or_else(|| self.not_found(name))?;
        Ok(r.spec.grid().contains(coord) && !matches!(self.locate(&r, name, coord), ChunkLoc::Fill))
    }

    /// One chunk of the entry as stored: its decoded cells (edge chunks trimmed to
    /// their in-bounds extent), or `None` where no layer holds it.
    pub async fn stored_chunk(&self, name: &str, coord: &[u32]) -> Result<Option<Cells>> {
        let r = self.resolve(name).ok_or_else(|| self.not_found(name))?;
        if !r.spec.grid().contains(coord) {
            return Ok(None);
        }
        if matches!(self.locate(&r, name, coord), ChunkLoc::Fill) {
            return Ok(None);
        }
        self.chunk_cells(&r, name, coord).await.map(Some)
    }

    /// Reads the box `start .. start+extent` of an entry into C-order cells.
    pub async fn read_region(&self, name: &str, start: &[usize], extent: &[usize]) -> Result<Cells> {
        let r = self.resolve(name).ok_or_else(|| self.not_found(name))?;
        self.read_resolved(&r, name, start, extent).await
    }

    /// Whether the last refresh loaded other writers' data for the entry.
    pub fn refreshed(&self, name: &str) -> bool {
        self.recent.contains_key(name)
    }

    /// Reads a box of the entry as it was before the last refresh loaded other
    /// writers' sidecars for it (the version a descriptor opened earlier shows).
    pub async fn read_region_before_refresh(&self, name: &str, start: &[usize], extent: &[usize]) -> Result<Cells> {
        let skip = self.recent.get(name).cloned().unwrap_or_default();
        let r = self.resolve_excluding(name, &skip).ok_or_else(|| self.not_found(name))?;
        self.read_resolved(&r, name, start, extent).await
    }

    /// The chunks of `r` under the box `start .. start+extent` that some layer holds,
    /// and whether any other chunk under it reads as the fill value.
    fn box_locs(&self, r: &Resolved, name: &str, start: &[usize], extent: &[usize]) -> Result<(Vec<(Vec<u32>, ChunkLoc)>, bool)> {
        let grid = r.spec.grid();
        if start.len() != grid.rank() || extent.len() != grid.rank() || (0..grid.rank()).any(|i| start[i].saturating_add(extent[i]) > r.spec.shape[i]) {
            return Err(ErrorDetail::Invalid(format!("read region {start:?}+{extent:?} outside {name:?}/{} of shape {:?}", self.array, r.spec.shape)).into());
        }
        let coords = grid.overlapping(start, extent);
        let n = coords.len();
        let locs: Vec<(Vec<u32>, ChunkLoc)> = coords.into_iter().map(|c| (c.clone(), self.locate(r, name, &c))).filter(|(_, l)| !matches!(l, ChunkLoc::Fill)).collect();
        let any_fill = locs.len() < n;
        Ok((locs, any_fill))
    }

    /// Fetches the chunks at `locs` (loading their blocks first) and hands each to
    /// `place` with its coordinate and raw bytes, in completion order.
    async fn fetch_chunks(&self, locs: &[(Vec<u32>, ChunkLoc)], mut place: impl FnMut(&[u32], &ChunkLoc, Bytes) -> Result<()>) -> Result<()> {
        self.load_layer_blocks(locs).await?;
        // Futures built in a loop, not by a closure: a closure's higher-ranked argument
        // lifetime would keep callers' futures from being provably `Send`.
        let mut reads = Vec::with_capacity(locs.len());
        for (c, l) in locs {
            reads.push(async move { Ok::<_, Error>((c, l, self.chunk_bytes(l).await?)) });
        }
        let mut fetched = futures::stream::iter(reads).buffer_unordered(16);
        while let Some(item) = fetched.next().await {
            let (coord, loc, raw) = item?;
            let raw = raw.expect("fill locations were filtered out");
            super::progress::advance(raw.len() as u64);
            place(coord, loc, raw)?;
        }
        Ok(())
    }

    /// Where a chunk's part of a box lies: start of that part inside the chunk, start
    /// inside the box, and its extent.
    fn chunk_part(grid: &Grid, coord: &[u32], start: &[usize], extent: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>) {
        let (cstart, cext) = grid.chunk_box(coord);
        let lo: Vec<usize> = cstart.iter().zip(start).map(|(&a, &b)| a.max(b)).collect();
        let ext: Vec<usize> = (0..lo.len()).map(|i| (cstart[i] + cext[i]).min(start[i] + extent[i]) - lo[i]).collect();
        let src_start: Vec<usize> = lo.iter().zip(&cstart).map(|(a, b)| a - b).collect();
        let dst_start: Vec<usize> = lo.iter().zip(start).map(|(a, b)| a - b).collect();
        (cext, src_start, dst_start, ext)
    }

    fn check_chunk_len(&self, loc: &ChunkLoc, name: &str, coord: &[u32], raw: &[u8], cext: &[usize], elsize: usize) -> Result<()> {
        let want = cext.iter().product::<usize>() * elsize;
        if raw.len() == want {
            return Ok(());
        }
        let msg = format!("chunk {coord:?} of {name:?} has {} bytes, expected {want}", raw.len());
        Err(ErrorDetail::Corrupt { path: self.loc_name(loc), source: crate::format::FormatError::CorruptChunk(msg) }.into())
    }

    async fn read_resolved(&self, r: &Resolved, name: &str, start: &[usize], extent: &[usize]) -> Result<Cells> {
        let (mut locs, _) = self.box_locs(r, name, start, extent)?;
        let grid = r.spec.grid();
        let n: usize = extent.iter().product();
        let mut out = Cells::filled(&r.spec.dtype, r.spec.fill.as_ref(), n);
        // Chunks in blocks too big for the cache: only the bytes under the box.
        if let Cells::Fixed { elsize, bytes } = &mut out {
            let mut big = vec![];
            locs.retain(|(c, l)| {
                let is_big = self.too_big(l);
                if is_big {
                    big.push((c.clone(), l.clone()));
                }
                !is_big
            });
            for (coord, loc) in &big {
                self.read_big_part(loc, name, &grid, coord, start, extent, bytes, *elsize).await?;
            }
        }
        self.fetch_chunks(&locs, |coord, loc, raw| {
            let (cext, src_start, dst_start, ext) = Self::chunk_part(&grid, coord, start, extent);
            match &mut out {
                Cells::Fixed { elsize, bytes } => {
                    self.check_chunk_len(loc, name, coord, &raw, &cext, *elsize)?;
                    copy_box_bytes(&raw, &cext, &src_start, bytes, extent, &dst_start, &ext, *elsize);
                }
                Cells::Var(items) => {
                    let corrupt = |source| Error::from(ErrorDetail::Corrupt { path: self.loc_name(loc), source });
                    let Cells::Var(src) = Cells::decode(&r.spec.dtype, &raw, cext.iter().product()).map_err(corrupt)? else { unreachable!() };
                    copy_box_cells(&src, &cext, &src_start, items, extent, &dst_start, &ext);
                }
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Whether a chunk lives in a committed block too big for the cache (`big_block`).
    fn too_big(&self, loc: &ChunkLoc) -> bool {
        match loc {
            ChunkLoc::Layer(l, a) => l.block(a.block_id.0).is_some_and(|b| self.cache.too_big(b.uncompressed_size)),
            _ => false,
        }
    }

    /// Copies the part of a fixed-width chunk under the box `start .. start+extent`
    /// into `dst`, decoding only the chunk bytes from its first to its last element
    /// under the box (see `big_block`).
    #[allow(clippy::too_many_arguments)]
    async fn read_big_part(&self, loc: &ChunkLoc, name: &str, grid: &Grid, coord: &[u32], start: &[usize], extent: &[usize], dst: &mut [u8], elsize: usize) -> Result<()> {
        let ChunkLoc::Layer(l, a) = loc else { unreachable!("only committed chunks are too big") };
        let b = l.block(a.block_id.0).expect("addresses were validated when the layer was indexed").clone();
        let (cext, src_start, dst_start, ext) = Self::chunk_part(grid, coord, start, extent);
        let want = cext.iter().product::<usize>() * elsize;
        if a.size as usize != want {
            let msg = format!("chunk {coord:?} of {name:?} has {} bytes, expected {want}", a.size);
            return Err(ErrorDetail::Corrupt { path: self.loc_name(loc), source: crate::format::FormatError::CorruptChunk(msg) }.into());
        }
        if ext.contains(&0) {
            return Ok(());
        }
        let mut strides = vec![1usize; cext.len()];
        for i in (0..cext.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * cext[i + 1];
        }
        let flat = |idx: &[usize]| idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
        let last: Vec<usize> = src_start.iter().zip(&ext).map(|(s, e)| s + e - 1).collect();
        let (f0, f1) = (flat(&src_start), flat(&last) + 1);
        let at = a.offset as u64;
        let part = super::big_block::read_range(&self.cache.cursors, &*self.store, l, &b, at + (f0 * elsize) as u64..at + (f1 * elsize) as u64).await?;
        crate::format::grid::for_each_run(&cext, &src_start, extent, &dst_start, &ext, |s, d, n| {
            dst[d * elsize..(d + n) * elsize].copy_from_slice(&part[(s - f0) * elsize..(s - f0 + n) * elsize]);
        });
        Ok(())
    }

    /// Reads boxes of fixed-width entries, `(dataset, start, extent)` each, into
    /// consecutive pieces of `dst` (C order, exactly the boxes' bytes): the stacked
    /// view's read, and a `.npy` read's. Every block behind them is loaded once, up to
    /// `concurrency` at a time; then the pieces are copied out with no future per box
    /// (for a thousand small copies those cost more than the copying: a warm 96 KB
    /// read of 1000 datasets spent 4.4 ms, a quarter of it moving futures around).
    /// Chunks in blocks too big for the cache are read part by part (`big_block`).
    pub async fn read_regions_into(&self, parts: &[(&str, &[usize], &[usize])], mut dst: &mut [u8], concurrency: usize) -> Result<()> {
        let mut plan = Vec::with_capacity(parts.len());
        for &(name, start, extent) in parts {
            let r = self.resolve(name).ok_or_else(|| self.not_found(name))?;
            let Some(elsize) = r.spec.dtype.element_size() else { return Err(ErrorDetail::Invalid(format!("{name:?}/{} is not fixed-width", self.array)).into()) };
            let (locs, any_fill) = self.box_locs(&r, name, start, extent)?;
            plan.push((name, start, extent, r, elsize, locs, any_fill));
        }
        // Blocks too big for the cache are read part by part below, never loaded whole.
        let by_layer = blocks_by_layer(plan.iter().flat_map(|p| p.5.iter().map(|(_, loc)| loc)).filter(|loc| !self.too_big(loc)));
        let runs = by_layer.values().filter(|(_, bs)| bs.len() > 1).map(|(l, bs)| self.cache.load_blocks(&*self.store, l, bs));
        futures::future::try_join_all(runs).await?;
        let mut loads = vec![];
        for (l, bs) in by_layer.values() {
            for b in bs {
                loads.push(async move { Ok::<_, Error>(((l.id, b.id.0), self.cache.layer_block(&*self.store, l, b).await?)) });
            }
        }
        let loaded: HashMap<(u64, u32), Bytes> = futures::stream::iter(loads).buffer_unordered(concurrency.max(1)).collect::<Vec<_>>().await.into_iter().collect::<Result<_>>()?;
        for (name, start, extent, r, elsize, locs, any_fill) in plan {
            let piece;
            (piece, dst) = std::mem::take(&mut dst).split_at_mut(extent.iter().product::<usize>() * elsize);
            if any_fill {
                let one = crate::format::cells::fill_element(&r.spec.dtype, r.spec.fill.as_ref());
                piece.chunks_exact_mut(elsize).for_each(|c| c.copy_from_slice(&one));
            }
            let grid = r.spec.grid();
            for (coord, loc) in &locs {
                if self.too_big(loc) {
                    self.read_big_part(loc, name, &grid, coord, start, extent, piece, elsize).await?;
                    continue;
                }
                let raw = match loc {
                    ChunkLoc::Layer(l, a) => loaded[&(l.id, a.block_id.0)].slice(a.offset as usize..(a.offset + a.size) as usize),
                    _ => self.chunk_bytes(loc).await?.expect("fill locations were filtered out"),
                };
                let (cext, src_start, dst_start, ext) = Self::chunk_part(&grid, coord, start, extent);
                self.check_chunk_len(loc, name, coord, &raw, &cext, elsize)?;
                copy_box_bytes(&raw, &cext, &src_start, piece, extent, &dst_start, &ext, elsize);
            }
        }
        if !dst.is_empty() {
            return Err(ErrorDetail::Invalid(format!("{} bytes of the buffer left over after the regions", dst.len())).into());
        }
        Ok(())
    }

    /// Loads the committed blocks behind `locs` with one request per run of adjacent
    /// uncached blocks in a layer (see [`BlockCache::load_blocks`]).
    async fn load_layer_blocks(&self, locs: &[(Vec<u32>, ChunkLoc)]) -> Result<()> {
        let by_layer = blocks_by_layer(locs.iter().map(|(_, loc)| loc));
        let loads = by_layer.values().filter(|(_, bs)| bs.len() > 1).map(|(l, bs)| self.cache.load_blocks(&*self.store, l, bs));
        futures::future::try_join_all(loads).await?;
        Ok(())
    }

    /// Starts loading into the decoded cache the committed blocks under the box
    /// `start .. start+extent` (clamped to the entry), without waiting: read-ahead
    /// for sequential readers, so the next blocks decode on other cores while this
    /// one is served. Returns how many block loads were started.
    pub fn prefetch(&self, name: &str, start: &[usize], extent: &[usize]) -> usize {
        self.prefetch_many([(name, start, extent)])
    }

    /// [`prefetch`](Self::prefetch) of several (dataset, box) pairs at once, each block
    /// started once however many of them it holds chunks of (the stacked view's
    /// datasets share blocks).
    pub fn prefetch_many<'a>(&self, boxes: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [usize])>) -> usize {
        let mut locs = vec![];
        for (name, start, extent) in boxes {
            let Some(r) = self.resolve(name) else { continue };
            if start.len() != r.spec.shape.len() || extent.len() != r.spec.shape.len() {
                continue;
            }
            let lo: Vec<usize> = start.iter().zip(&r.spec.shape).map(|(&s, &n)| s.min(n)).collect();
            let ext: Vec<usize> = (0..lo.len()).map(|i| extent[i].min(r.spec.shape[i] - lo[i])).collect();
            if ext.contains(&0) && !ext.is_empty() {
                continue;
            }
            locs.extend(r.spec.grid().overlapping(&lo, &ext).into_iter().map(|coord| self.locate(&r, name, &coord)));
        }
        let mut by_layer = blocks_by_layer(&locs);
        // Blocks too big for the cache are read part by part, never ahead.
        for (_, bs) in by_layer.values_mut() {
            bs.retain(|b| !self.cache.too_big(b.uncompressed_size));
        }
        let started = by_layer.values().map(|(_, bs)| bs.len()).sum();
        let streams = super::stream_fetch::streams_well(&*self.store);
        for (layer, blocks) in by_layer.into_values() {
            let (cache, store) = (self.cache.clone(), self.store.clone());
            // Remote: long runs as a few streaming GETs (see `stream_fetch`).
            if streams && blocks.iter().map(|b| b.compressed_size).sum::<u64>() >= super::stream_fetch::STREAM_MIN {
                super::stream_fetch::start(cache, store, layer, blocks);
                continue;
            }
            tokio::spawn(async move {
                // Adjacent small blocks in one request first; then every block decodes
                // in its own task, so big ones use all cores.
                if blocks.len() > 1
                    && let Err(e) = cache.load_blocks(&*store, &layer, &blocks).await
                {
                    tracing::debug!(error = %e, "read-ahead of blocks failed; the read itself will retry them");
                }
                for b in blocks {
                    let (cache, store, layer) = (cache.clone(), store.clone(), layer.clone());
                    tokio::spawn(async move {
                        if let Err(e) = cache.layer_block(&*store, &layer, &b).await {
                            tracing::debug!(error = %e, "read-ahead of a block failed; the read itself will retry it");
                        }
                    });
                }
            });
        }
        started
    }

    pub fn has_pending_entry(&self, name: &str) -> bool {
        self.pending.entries.contains_key(name)
    }

    /// Datasets with changes here that another writer also wrote since (see `clashes`).
    pub fn clashing(&self) -> Vec<String> {
        self.clashes.keys().filter(|n| self.pending.entries.contains_key(*n)).cloned().collect()
    }

    /// Resolves a true conflict without losing either side: the entry `from` as seen
    /// here (this writer's changes over the layers it knew, never the other writer's)
    /// is copied whole to the new entry `to`, and this writer's changes to `from` are
    /// dropped, so `from` shows the other writer's version. Returns whether `to` was
    /// made (false when `from` is not live here, e.g. this writer deleted it).
    pub async fn fork_entry(&mut self, from: &str, to: &str) -> Result<bool> {
        let theirs = self.clashes.remove(from).unwrap_or_default();
        let made = match self.resolve_excluding(from, &theirs) {
            Some(r) => {
                let shape = r.spec.shape.clone();
                let cells = self.read_resolved(&r, from, &vec![0; shape.len()], &shape).await?;
                self.define(to, r.spec.clone());
                self.write_region(to, &vec![0; shape.len()], &shape, &cells).await?;
                true
            }
            None => false,
        };
        self.pending.entries.shift_remove(from);
        // The stats held for `from` describe this writer's version: recompute.
        let had = self.stats.shift_remove(from).is_some();
        if self.resolve(from).is_some() {
            let s = self.entry_stats_from(from, &HashMap::new()).await?;
            self.stats.insert(from.to_string(), s);
            self.stats_dirty = true;
        } else if had {
            self.stats_dirty = true;
        }
        Ok(made)
    }

    /// Remembers an entry's pending state, to undo a failed multi-step change.
    pub fn checkpoint(&self, name: &str) -> Checkpoint {
        Checkpoint { pending: self.pending.entries.get(name).cloned(), stats: self.stats.get(name).cloned(), stats_dirty: self.stats_dirty }
    }

    /// Puts an entry back as it was at `cp`. Chunks appended since stay in the spill
    /// file as dead bytes; nothing refers to them.
    pub fn rollback(&mut self, name: &str, cp: Checkpoint) {
        match cp.pending {
            Some(p) => {
                self.pending.entries.insert(name.to_string(), p);
            }
            None => {
                self.pending.entries.shift_remove(name);
            }
        }
        if let Some(s) = cp.stats {
            self.stats.insert(name.to_string(), s);
        }
        self.stats_dirty = cp.stats_dirty;
    }

    /// Defines (or re-defines) an entry in the pending layer.
    pub fn define(&mut self, name: &str, spec: EntrySpec) {
        let shadows = self.mentioned(name);
        self.pending.entries.insert(name.to_string(), PendingEntry::new(spec, false, shadows));
        if self.stats.shift_remove(name).is_some() {
            self.stats_dirty = true;
        }
    }

    /// Deletes an entry: a tombstone in the pending layer if older layers hold it.
    pub fn delete(&mut self, name: &str) {
        let committed = self.layers.iter().any(|l| l.mentions(name));
        let spec = self.resolve(name).map(|r| r.spec);
        match (committed, spec) {
            (true, Some(spec)) => {
                self.pending.entries.insert(name.to_string(), PendingEntry::new(spec, true, true));
            }
            (true, None) => {} // already deleted
            (false, _) => {
                self.pending.entries.shift_remove(name);
            }
        }
        if self.stats.shift_remove(name).is_some() {
            self.stats_dirty = true;
        }
    }

    /// Writes `data` (C order, shape `extent`) at `start`. Partially covered chunks
    /// are read, patched and rewritten whole.
    pub async fn write_region(&mut self, name: &str, start: &[usize], extent: &[usize], data: &Cells) -> Result<()> {
        let r = self.resolve(name).ok_or_else(|| self.not_found(name))?;
        let spec = r.spec.clone();
        let grid = spec.grid();
        if start.len() != grid.rank() || extent.len() != grid.rank() {
            return Err(ErrorDetail::Invalid(format!("write of rank {} into {name:?}/{} of rank {}", extent.len(), self.array, grid.rank())).into());
        }
        for i in 0..grid.rank() {
            if start[i].checked_add(extent[i]).is_none_or(|end| end > spec.shape[i]) {
                return Err(
                    ErrorDetail::Invalid(format!("write region [{}, {}) exceeds array size {} on axis {i}", start[i], start[i].saturating_add(extent[i]), spec.shape[i])).into()
                );
            }
        }
        if data.len() != extent.iter().product::<usize>() {
            return Err(ErrorDetail::Invalid(format!("{} elements given for a region of {}", data.len(), extent.iter().product::<usize>())).into());
        }
        for coord in grid.overlapping(start, extent) {
            let (cstart, cext) = grid.chunk_box(&coord);
            let lo: Vec<usize> = cstart.iter().zip(start).map(|(&a, &b)| a.max(b)).collect();
            let ext: Vec<usize> = (0..lo.len()).map(|i| (cstart[i] + cext[i]).min(start[i] + extent[i]) - lo[i]).collect();
            let src_start: Vec<usize> = lo.iter().zip(start).map(|(a, b)| a - b).collect();
            let dst_start: Vec<usize> = lo.iter().zip(&cstart).map(|(a, b)| a - b).collect();
            let covered = ext == cext;
            let mut chunk = if covered {
                Cells::filled(&spec.dtype, None, cext.iter().product())
            } else {
                let r = self.resolve(name).expect("resolved above");
                self.chunk_cells(&r, name, &coord).await?
            };
            match (&mut chunk, data) {
                (Cells::Fixed { elsize, bytes }, Cells::Fixed { bytes: src, .. }) => copy_box_bytes(src, extent, &src_start, bytes, &cext, &dst_start, &ext, *elsize),
                (Cells::Var(dst), Cells::Var(src)) => copy_box_cells(src, extent, &src_start, dst, &cext, &dst_start, &ext),
                _ => return Err(ErrorDetail::Invalid(format!("cells of the wrong kind for {:?}", spec.dtype)).into()),
            }
            let summary = summarize(&spec.dtype, spec.fill.as_ref(), &chunk);
            let raw = chunk.encode();
            self.put_chunk(name, &spec, coord, &raw, summary)?;
            super::progress::advance(raw.len() as u64);
        }
        Ok(())
    }

    fn put_chunk(&mut self, name: &str, spec: &EntrySpec, coord: Vec<u32>, raw: &[u8], summary: ChunkSummary) -> Result<()> {
        if raw.len() > u32::MAX as usize {
            return Err(ErrorDetail::Invalid(format!("chunk {coord:?} of {name:?} is {} bytes; a chunk is limited to 4 GiB", raw.len())).into());
        }
        let addr = self.pending.append(raw)?;
        let e = self.pending.entries.entry(name.to_string()).or_insert_with(|| PendingEntry::new(spec.clone(), false, false));
        if e.chunks.insert(coord.clone(), addr).is_none() {
            e.order.push(coord.clone());
        }
        e.summaries.insert(coord, summary);
        Ok(())
    }

    fn next_overlay(&self) -> u32 {
        let ignored = self.ignored.keys().next_back().map(|n| n + 1).unwrap_or(1);
        self.layers.last().map(|l| l.overlay + 1).unwrap_or(1).max(1).max(ignored).max(self.withdrawn + 1)
    }

    /// Brings the layer list up to date with the store: sidecars other writers
    /// added are loaded; if the base was replaced or a sidecar vanished (another
    /// writer compacted), every layer is reloaded. Pending writes are kept.
    /// Returns the dataset names mentioned by layers that are new to us.
    pub async fn refresh(&mut self) -> Result<Vec<String>> {
        // A compactor elsewhere deletes the sidecars it folded: one listed a moment
        // ago may be gone when its footer is read. List again (a few times).
        for attempt in 0.. {
            match self.refresh_listed().await {
                Err(e) if vanished(&e) && attempt < 5 => tracing::debug!(array = %self.array, error = %e, "a layer vanished while loading; listing again"),
                r => return r,
            }
        }
        unreachable!()
    }

    async fn refresh_listed(&mut self) -> Result<Vec<String>> {
        let listing = self.store.list_with_delimiter(Some(&self.dir)).await?;
        let mut now: std::collections::BTreeMap<u32, (Path, Option<String>)> = Default::default();
        let mut stats_tag = None;
        let listed: HashMap<Path, (u64, Option<String>)> = listing.objects.iter().map(|o| (o.location.clone(), (o.size, o.e_tag.clone()))).collect();
        for obj in listing.objects {
            let Some(name) = obj.location.filename() else { continue };
            if name == BASE_NAME {
                now.insert(0, (obj.location.clone(), obj.e_tag.clone()));
            } else if name == STATS_NAME {
                stats_tag = Some(obj.e_tag.clone());
            } else if let Some(n) = sidecar_number(name) {
                now.insert(n, (obj.location.clone(), obj.e_tag.clone()));
            }
        }
        let mut known: HashMap<u32, Option<String>> = self.layers.iter().map(|l| (l.overlay, l.e_tag.clone())).collect();
        // Files we ignore stay ignored while they are unchanged.
        self.ignored.retain(|n, (_, tag)| now.get(n).is_some_and(|(_, t)| t == tag));
        self.set_aside.retain(|l| self.ignored.contains_key(&l.overlay));
        known.extend(self.ignored.iter().map(|(n, (_, tag))| (*n, tag.clone())));
        // A layer we know that is gone or different: the file was rewritten elsewhere.
        let rewritten = self.layers.iter().any(|l| match now.get(&l.overlay) {
            None => true,
            Some((_, tag)) => l.e_tag.is_some() && tag.is_some() && &l.e_tag != tag,
        });
        let to_load: Vec<(u32, Path)> = now.iter().filter(|(n, _)| rewritten || !known.contains_key(n)).map(|(n, (p, _))| (*n, p.clone())).collect();
        if to_load.is_empty() {
            return Ok(vec![]);
        }
        let (loaded, incomplete) = load_layers(&self.store, self.cache.disk.as_ref(), to_load, None, &listed).await?;
        self.ignored.extend(incomplete.into_iter().map(|(n, p)| (n, (p, now.get(&n).and_then(|(_, t)| t.clone())))));
        let mut seen: Vec<String> = loaded.iter().filter(|l| rewritten || l.overlay > 0).flat_map(|l| l.footer.entries.iter().map(|e| e.name.clone())).collect();
        seen.sort();
        seen.dedup();
        self.recent.clear();
        if !rewritten {
            for l in loaded.iter().filter(|l| l.overlay > 0) {
                for e in &l.footer.entries {
                    self.recent.entry(e.name.clone()).or_default().insert(l.overlay);
                }
            }
            for l in loaded.iter().filter(|l| l.overlay > 0) {
                for e in l.footer.entries.iter().filter(|e| self.pending.entries.contains_key(&e.name)) {
                    self.clashes.entry(e.name.clone()).or_default().insert(l.overlay);
                }
            }
        }
        if rewritten {
            tracing::info!(array = %self.array, "array file was rewritten by another writer; reloaded");
            for l in &self.layers {
                self.cache.forget_layer(l.id);
            }
            self.layers = loaded;
            self.committed_here.clear();
            // After a compaction elsewhere we cannot tell which datasets it carried
            // new data for; only sidecars are evidence of concurrent writes.
            seen.clear();
        } else {
            self.layers.extend(loaded);
            self.layers.sort_by_key(|l| l.overlay);
        }
        self.base_exists = self.layers.first().is_some_and(|l| l.overlay == 0);
        if stats_tag.is_some()
            && !self.stats_dirty
            && let Ok(bytes) = async { Ok::<_, Error>(self.store.get(&self.dir.clone().join(STATS_NAME)).await?.bytes().await?) }.await
            && let Ok(st) = decode_stats(&bytes)
        {
            self.stats = st.entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        }
        Ok(seen)
    }

    /// Writes the pending layer as the next sidecar, then the stats file, without a
    /// metadata file: for compaction, which rewrites everything anyway.
    pub async fn flush(&mut self) -> Result<bool> {
        let wrote = self.stage().await?;
        self.commit_staged().await?;
        Ok(wrote)
    }

    /// First half of a flush: writes the pending layer as the next sidecar, which
    /// readers see at once, but keeps the changes pending until the metadata file is
    /// written (the commit point): then [`Self::commit_staged`] drops them, or, if
    /// another writer's flush got in first with changes to the same datasets,
    /// [`Self::abort_staged`] removes the sidecar again. On error nothing is staged
    /// and everything stays pending. Returns whether a sidecar was written.
    pub async fn stage(&mut self) -> Result<bool> {
        debug_assert!(self.staged.is_none(), "stage twice without commit or abort");
        if self.pending.entries.is_empty() {
            return Ok(false);
        }
        // Another writer's new sidecars for a dataset we also changed: a true conflict.
        // Refuse before writing anything, so neither side's data is shadowed; the
        // clash stays recorded, so the retried flush forks those datasets.
        self.refresh().await?;
        let clash = self.clashing();
        if !clash.is_empty() {
            self.pending.upload.lock().take(); // aborted: the retried flush forks and uploads anew
            return Err(ErrorDetail::Conflict(format!(
                "array {:?} of dataset(s) {} was written by another writer since this store read it; the changes here stay unflushed",
                self.array,
                clash.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
        // Re-defined entries get explicit fill chunks so no older version shows through.
        let shadowing: Vec<String> = self.pending.entries.iter().filter(|(_, e)| e.shadows && !e.deleted).map(|(n, _)| n.clone()).collect();
        for name in shadowing {
            let spec = self.pending.entries[&name].spec.clone();
            let grid = spec.grid();
            for coord in grid.all_chunks() {
                if self.pending.entries[&name].chunks.contains_key(&coord) {
                    continue;
                }
                let cells = Cells::filled(&spec.dtype, spec.fill.as_ref(), grid.chunk_len(&coord));
                let summary = summarize(&spec.dtype, spec.fill.as_ref(), &cells);
                self.put_chunk(&name, &spec, coord, &cells.encode(), summary)?;
            }
        }
        self.pending.close_block()?;
        if !self.base_exists {
            // 0.10 readers expect the base to exist before any sidecar.
            let base = self.dir.clone().join(BASE_NAME);
            let empty = encode_footer(&Footer::empty());
            let size = empty.len() as u64;
            match self.store.put_opts(&base, PutPayload::from(empty), PutOptions::from(PutMode::Create)).await {
                Ok(r) => {
                    self.layers.insert(0, Arc::new(Layer::from_footer(next_layer_id(), base, 0, size, r.e_tag, Footer::empty())?));
                    self.base_exists = true;
                }
                // Another writer made it first; its contents are read at the next open.
                Err(object_store::Error::AlreadyExists { .. }) => self.base_exists = true,
                Err(e) => return Err(e.into()),
            }
        }
        let mut overlay = self.next_overlay();
        let (footer, path, e_tag) = loop {
            let footer = self.pending_footer(overlay);
            let path = self.dir.clone().join(format!("data.{overlay}.af"));
            match self.upload_pending(&path, &footer).await {
                Ok(e_tag) => break (footer, path, e_tag),
                // Another writer took this number: take the next one.
                Err(Error::ObjectStore(object_store::Error::AlreadyExists { .. })) if overlay < self.next_overlay() + 64 => overlay += 1,
                Err(e) => return Err(e),
            }
        };
        let size = self.pending.packer.closed_len() + encode_footer(&footer).len() as u64;
        let layer = Arc::new(Layer::from_footer(self.pending.id, path, overlay, size, e_tag, footer)?);
        self.layers.push(layer);
        self.base_exists = true;
        self.staged = Some(overlay);
        Ok(true)
    }

    /// Second half of a flush, once the metadata file is written: the staged sidecar
    /// holds the pending changes, which are dropped; then the stats file is written.
    pub async fn commit_staged(&mut self) -> Result<()> {
        let Some(overlay) = self.staged.take() else {
            if self.stats_dirty {
                self.write_stats().await?;
            }
            return Ok(());
        };
        self.committed_here.insert(overlay);
        let done = std::mem::replace(&mut self.pending, Pending::new(self.codec, self.spill_dir.clone()));
        self.clashes.clear();
        // Stats for entries that received chunks, reusing the summaries taken at write time.
        for (name, e) in done.entries {
            if e.deleted || e.chunks.is_empty() {
                continue;
            }
            let s = self.entry_stats_from(&name, &e.summaries).await?;
            self.stats.insert(name, s);
            self.stats_dirty = true;
        }
        if self.stats_dirty {
            self.write_stats().await?;
        }
        Ok(())
    }

    /// Withdraws the staged sidecar after another writer's flush committed first
    /// with changes to the same datasets: the file is deleted (it would shadow their
    /// version) and the changes stay pending for the retried flush to fork.
    pub async fn abort_staged(&mut self) {
        let Some(overlay) = self.staged.take() else { return };
        self.withdrawn = self.withdrawn.max(overlay);
        let Some(i) = self.layers.iter().position(|l| l.overlay == overlay) else { return };
        let l = self.layers.remove(i);
        self.cache.forget_layer(l.id);
        match self.store.delete(&l.path).await {
            Ok(()) => self.pending.linked.store(false, std::sync::atomic::Ordering::Relaxed),
            Err(e) => {
                // Left behind it would shadow the other writer's version of the datasets
                // both changed, for every reader; at least this one ignores it.
                tracing::error!(file = %l.path, error = %e, "could not remove the sidecar of a flush that lost a conflict; remove it by hand or compact");
                self.ignored.insert(l.overlay, (l.path.clone(), l.e_tag.clone()));
                if let Err(e) = self.detach_spill() {
                    tracing::error!(file = %l.path, error = %e, "could not copy the pending blocks away from a withdrawn sidecar's file");
                }
            }
        }
    }

    /// Makes spill files in `dir`, a local store's root, so that a flush can link
    /// them into place (`link.rs`). Call before anything is written.
    pub fn set_spill_dir(&mut self, dir: Option<std::path::PathBuf>) {
        self.pending.spill_dir = dir.clone();
        self.spill_dir = dir;
    }

    /// Whether a sidecar awaits [`Self::commit_staged`] or [`Self::abort_staged`].
    pub fn is_staged(&self) -> bool {
        self.staged.is_some()
    }

    fn pending_footer(&self, overlay: u32) -> Footer {
        let mut f = Footer::empty();
        f.blocks = self.pending.packer.blocks.clone();
        f.overlay_index = overlay;
        f.base_file_hint = self.dir.clone().join(BASE_NAME).to_string();
        for (name, e) in &self.pending.entries {
            let chunks = e.order.iter().map(|c| ChunkEntry { coord: c.clone(), address: e.chunks[c] }).collect();
            f.entries.push(e.spec.to_meta(name, e.deleted, chunks));
        }
        f
    }

    async fn upload_pending(&self, path: &Path, footer: &Footer) -> Result<Option<String>> {
        let tail = encode_footer(footer);
        if let Some(e_tag) = self.link_pending(path, &tail).await? {
            return Ok(e_tag);
        }
        let data_len = self.pending.packer.closed_len();
        let read_spill = |off: u64, len: usize| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; len];
            if len > 0 {
                self.pending.spill.as_ref().expect("blocks were spilled").read_exact_at(&mut buf, off)?;
            }
            Ok(buf)
        };
        let early = self.pending.upload.lock().take();
        if let Some(up) = early
            && let upload::Finished::Done(e_tag) = up.finish(path, data_len, &tail).await?
        {
            return Ok(e_tag);
        }
        if data_len + tail.len() as u64 <= SINGLE_PUT_LIMIT {
            let mut body = read_spill(0, data_len as usize)?;
            body.extend_from_slice(&tail);
            let len = body.len() as u64;
            let r = self.store.put_opts(path, PutPayload::from(body), PutOptions::from(PutMode::Create)).await?;
            super::progress::advance(len);
            return Ok(r.e_tag);
        }
        // Large layers stream as a multipart upload, which cannot be create-if-absent;
        // check first so that two writers at least rarely collide.
        if self.store.head(path).await.is_ok() {
            return Err(Error::ObjectStore(object_store::Error::AlreadyExists { path: path.to_string(), source: "sidecar exists".into() }));
        }
        let upload = self.store.put_multipart(path).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
        let step = 8 * 1024 * 1024u64;
        let mut off = 0;
        while off < data_len {
            let len = step.min(data_len - off);
            w.wait_for_capacity(4).await?;
            w.write(&read_spill(off, len as usize)?);
            off += len;
            super::progress::advance(len);
        }
        w.write(&tail);
        Ok(w.finish().await?.e_tag)
    }

    /// Stats of an entry over every chunk it has, using `known` summaries where given.
    async fn entry_stats_from(&self, name: &str, known: &HashMap<Vec<u32>, ChunkSummary>) -> Result<EntryStats> {
        let r = self.resolve(name).ok_or_else(|| self.not_found(name))?;
        let mut total = ChunkSummary::default();
        for coord in self.coords_of(&r, name) {
            // `known` holds summaries of chunks in the newest layer, so they are current.
            let s = match known.get(&coord) {
                Some(s) => s.clone(),
                None => summarize(&r.spec.dtype, r.spec.fill.as_ref(), &self.chunk_cells(&r, name, &coord).await?),
            };
            total.merge(&s);
        }
        Ok(total.into_stats(name, &r.spec.shape))
    }

    /// Every chunk coordinate the entry holds in any of its layers, oldest layer first.
    fn coords_of(&self, r: &Resolved, name: &str) -> Vec<Vec<u32>> {
        let grid = r.spec.grid();
        let mut seen = HashSet::new();
        let mut out = vec![];
        for l in r.layers.iter().rev() {
            if let Some(e) = l.entry(name) {
                for c in &e.layout.storage.chunks {
                    if grid.contains(&c.coord) && seen.insert(c.coord.clone()) {
                        out.push(c.coord.clone());
                    }
                }
            }
        }
        if r.in_pending
            && let Some(p) = self.pending.entries.get(name)
        {
            for c in &p.order {
                if seen.insert(c.clone()) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    async fn write_stats(&mut self) -> Result<()> {
        let file = StatsFile { entries: self.stats.values().cloned().collect() };
        self.store.put(&self.dir.clone().join(STATS_NAME), PutPayload::from(encode_stats(&file))).await?;
        self.stats_dirty = false;
        self.stats_error = None;
        Ok(())
    }

    /// Stats of a live entry as of the last flush; an error if `data.stats` is corrupt.
    pub fn entry_stats(&self, name: &str) -> Result<Option<EntryStats>> {
        if let Some(e) = &self.stats_error {
            return Err(ErrorDetail::MetaFile { path: self.dir.clone().join(STATS_NAME).to_string(), msg: e.clone() }.into());
        }
        Ok(self.resolve(name).and(self.stats.get(name).cloned()))
    }

    /// Rewrites the file as one base layer holding only live entries, then removes
    /// the sidecars. Requires an empty pending layer (the caller flushes first).
    pub async fn compact(&mut self) -> Result<()> {
        if !self.pending.entries.is_empty() {
            return Err(ErrorDetail::Invalid(format!("{}: compaction with unflushed writes", self.dir)).into());
        }
        // Progress: the file's bytes, spread over the chunks copied.
        let mut share = super::progress::Share::new(self.info().bytes);
        if self.layers.len() <= 1 && self.ignored.is_empty() && !self.layers.first().is_some_and(|l| l.footer.entries.iter().any(|e| e.deleted)) {
            return Ok(());
        }
        // Live entries in first-seen order; a delete drops one, a re-define re-appends it.
        let mut order: IndexMap<String, ()> = IndexMap::new();
        for l in &self.layers {
            for e in &l.footer.entries {
                if e.deleted {
                    order.shift_remove(&e.name);
                } else if !order.contains_key(&e.name) {
                    order.insert(e.name.clone(), ());
                }
            }
        }
        share.set_parts(order.keys().filter_map(|n| self.resolve(n).map(|r| self.coords_of(&r, n).len() as u64)).sum());
        let mut packer = BlockPacker::new(self.codec);
        let mut spill = tempfile::tempfile()?;
        let mut entries = vec![];
        let mut stats = IndexMap::new();
        for name in order.keys() {
            let Some(r) = self.resolve(name) else { continue };
            let mut chunks = vec![];
            let mut total = ChunkSummary::default();
            for coord in self.coords_of(&r, name) {
                share.step();
                let loc = self.locate(&r, name, &coord);
                let Some(raw) = self.chunk_bytes(&loc).await? else { continue };
                let cells = Cells::decode(&r.spec.dtype, &raw, r.spec.grid().chunk_len(&coord)).map_err(|source| ErrorDetail::Corrupt { path: self.loc_name(&loc), source })?;
                total.merge(&summarize(&r.spec.dtype, r.spec.fill.as_ref(), &cells));
                let (address, closed) = packer.append(&raw);
                if let Some(z) = closed {
                    spill.write_all(z)?;
                }
                chunks.push(ChunkEntry { coord, address });
            }
            stats.insert(name.clone(), total.into_stats(name, &r.spec.shape));
            entries.push(r.spec.to_meta(name, false, chunks));
        }
        if let Some(z) = packer.close() {
            spill.write_all(z)?;
        }
        let mut footer = Footer::empty();
        footer.blocks = packer.blocks.clone();
        footer.entries = entries;
        footer.attr_keys = self.layers.iter().flat_map(|l| l.footer.attr_keys.clone()).collect::<Vec<_>>();
        footer.attr_values = self.layers.iter().flat_map(|l| l.footer.attr_values.clone()).collect::<Vec<_>>();
        if footer.attr_keys.len() != footer.attr_values.len() {
            footer.attr_keys.clear();
            footer.attr_values.clear();
        }
        let tail = encode_footer(&footer);
        let base = self.dir.clone().join(BASE_NAME);
        let data_len = packer.closed_len();
        // 1. The new base replaces data.af atomically (a checked rename, or a completed multipart).
        let e_tag = if data_len + tail.len() as u64 <= SINGLE_PUT_LIMIT {
            let mut body = vec![0u8; data_len as usize];
            spill.read_exact_at(&mut body, 0)?;
            body.extend_from_slice(&tail);
            // Through a temporary name, checked, then renamed over data.af: on a store
            // whose PUT can tear, a crash leaves a stray temporary file (not a layer
            // name; the next compaction overwrites it), never a torn data.af, whose old
            // version may hold the only copy of compacted data.
            let tmp = self.dir.clone().join(format!("{BASE_NAME}.compacting"));
            let want = body.len() as u64;
            self.store.put(&tmp, PutPayload::from(body)).await?;
            let got = self.store.head(&tmp).await?.size;
            if got != want {
                let source = crate::format::FormatError::Invalid(format!("the store kept {got} of the {want} bytes written"));
                return Err(ErrorDetail::Corrupt { path: tmp.to_string(), source }.into());
            }
            self.store.rename(&tmp, &base).await?;
            self.store.head(&base).await?.e_tag
        } else {
            let upload = self.store.put_multipart(&base).await?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
            let mut off = 0u64;
            while off < data_len {
                let len = (8u64 << 20).min(data_len - off);
                let mut buf = vec![0u8; len as usize];
                spill.read_exact_at(&mut buf, off)?;
                w.wait_for_capacity(4).await?;
                w.write(&buf);
                off += len;
            }
            w.write(&tail);
            w.finish().await?.e_tag
        };
        let size = data_len + tail.len() as u64;
        let new_base = Arc::new(Layer::from_footer(next_layer_id(), base, 0, size, e_tag, footer)?);
        // 2. Sidecars go lowest first: each remaining suffix over the new base reads the same.
        // Files of flushes that never committed (torn, set aside) go before them.
        let old = std::mem::replace(&mut self.layers, vec![new_base]);
        self.committed_here.clear();
        self.base_exists = true;
        self.ignored.remove(&0); // a torn data.af was just replaced
        let uncommitted: Vec<(u32, Path)> = self.ignored.iter().map(|(n, (p, _))| (*n, p.clone())).collect();
        for (n, path) in uncommitted {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            self.ignored.remove(&n);
        }
        for l in std::mem::take(&mut self.set_aside) {
            self.cache.forget_layer(l.id);
        }
        for l in &old {
            if l.overlay > 0 {
                match self.store.delete(&l.path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.cache.forget_layer(l.id);
        }
        // 3. Stats for every live entry.
        self.stats = stats;
        self.write_stats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names() {
        assert_eq!(sidecar_number("data.1.af"), Some(1));
        assert_eq!(sidecar_number("data.12.af"), Some(12));
        assert_eq!(sidecar_number("data.0.af"), None);
        assert_eq!(sidecar_number("data.af"), None);
        assert_eq!(sidecar_number("data.x.af"), None);
        assert_eq!(sidecar_number("data.stats"), None);
    }
}
