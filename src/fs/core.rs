//! The filesystem view of a store, without FUSE: `MOUNT/<dataset>/<array>.npy`.
//!
//! Every operation here is what one FUSE request does, in store terms, returning an
//! [`FsError`] that carries the errno. The `fuse` adapter only translates.
//!
//! - **Names.** The root lists datasets and the control directory `.atlasfs`; a
//!   dataset directory lists `<array>.npy` for each array, plus files being written.
//! - **Reads** build the `.npy` header from metadata and map the byte range onto
//!   array boxes ([`layout`](super::layout)); only chunks under those boxes decode.
//!   String arrays appear as `<U{max chars}`, sized once per version and cached.
//! - **Writes.** Creating or truncating `<name>.npy` stages the bytes in a temp
//!   file; on close (`flush`) they are parsed and the array replaced in one step
//!   under the array's lock, so readers see the old or the new array, never a mix.
//!   Opening an existing array for writing without truncation keeps an overlay of
//!   the written ranges; on close only the chunks under them are rewritten.
//!   Hidden names (`.name.XXXXXX`, rsync's temp files) are held until renamed.
//! - **Durability.** `fsync` and writes to `.atlasfs/flush` flush the store;
//!   `.atlasfs/compact` compacts it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::error::{FsError, FsResult};
use super::layout::{auto_chunk_shape, element_range_boxes};
use super::npy;
use super::stacked::Stack;
use crate::format::cells::Cells;
use crate::store::{ArrayDef, ArraySchema, Atlas, Attr, validate_name};

pub const ROOT_INO: u64 = 1;
pub const CONTROL_DIR_INO: u64 = 2;
pub const CONTROL_DIR: &str = ".atlasfs";
pub const STACKED_DIR_INO: u64 = 6;
pub const STACKED_DIR: &str = "stacked";
const FIRST_DYNAMIC_INO: u64 = 16;
/// Bytes per slab when streaming a staged file into the store.
const SLAB_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    /// Target bytes per chunk for arrays written through the filesystem.
    pub chunk_target_bytes: usize,
    /// How long the kernel may cache attributes and names.
    pub ttl: Duration,
    /// Largest read-ahead window of a sequential reader (see `READ_AHEAD_START`).
    pub read_ahead_bytes: u64,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            read_only: false,
            uid: unsafe { libc::geteuid() },
            gid: unsafe { libc::getegid() },
            chunk_target_bytes: 4 << 20,
            ttl: Duration::from_secs(1),
            read_ahead_bytes: 16 << 20,
        }
    }
}

/// Files of the control directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlFile {
    Compact,
    Flush,
    Stats,
}

impl ControlFile {
    pub const ALL: [ControlFile; 3] = [ControlFile::Compact, ControlFile::Flush, ControlFile::Stats];
    pub fn name(self) -> &'static str {
        match self {
            ControlFile::Compact => "compact",
            ControlFile::Flush => "flush",
            ControlFile::Stats => "stats",
        }
    }
    fn ino(self) -> u64 {
        3 + self as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeKey {
    Root,
    ControlDir,
    Control(ControlFile),
    Dataset(String),
    /// A file in a dataset directory: (dataset, file name).
    File(String, String),
    /// `.atlasfs/stacked/`
    StackedDir,
    /// `.atlasfs/stacked/<array>.npy`
    StackedNpy(String),
    /// `.atlasfs/stacked/<array>.datasets`
    StackedList(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeAttr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

/// What `open` tells the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (control files, whose size is not known up front).
    pub direct_io: bool,
    /// Cached pages of this file are still valid.
    pub keep_cache: bool,
    /// Opened for reading only: its close has nothing to commit.
    pub read_only: bool,
}

/// Bytes written to a new or truncated file, held until close.
struct Staged {
    file: File,
    len: u64,
    mtime: SystemTime,
    dirty: bool,
    /// Unlinked while open: its descriptors' closes commit nothing.
    dropped: bool,
    /// Why its commit failed: every later close and fsync of its descriptors
    /// reports it again, until they write anew. numpy's `tofile` writes through a
    /// dup'd descriptor and ignores that close's error; the last close must not
    /// then report success for bytes the store refused.
    rejected: Option<FsError>,
}

/// The bytes an open descriptor of an array read before the array was replaced
/// (renamed over) or deleted under it: it goes on reading them, as on a local
/// filesystem, instead of a mix of two versions.
enum Frozen {
    Bytes {
        file: File,
        len: u64,
    },
    /// Too large to copy ([`FREEZE_MAX_BYTES`]) or unreadable: reads fail with ESTALE.
    Gone,
}

/// The largest array whose old version is copied for descriptors that still read it
/// when it is replaced; past this they get ESTALE instead.
const FREEZE_MAX_BYTES: u64 = 1 << 30;

/// A path walk that found an inode just before a rename replaced it still opens that
/// inode (FUSE_OPEN comes after the walk); on a local filesystem that open succeeds
/// with the old file. So when an array that was opened in the last [`TOMBSTONE_SECS`]
/// is renamed over, its old version (up to [`TOMBSTONE_MAX_BYTES`]) is kept that long
/// for such opens, which would otherwise get ESTALE twice in a row (the kernel retries
/// once) when two renames come back to back.
const TOMBSTONE_SECS: u64 = 2;
const TOMBSTONE_MAX_BYTES: u64 = 64 << 20;

/// The old version of a renamed-over array, for late opens of its inode.
struct Tombstone {
    ds: String,
    arr: String,
    frozen: Arc<Frozen>,
    at: std::time::Instant,
}

/// Writes to an existing array opened without truncation.
struct Overlay {
    file: File,
    /// Sorted, merged byte ranges written so far.
    ranges: Vec<(u64, u64)>,
}

impl Overlay {
    fn add(&mut self, lo: u64, hi: u64) {
        self.ranges.push((lo, hi));
        self.ranges.sort();
        let mut merged: Vec<(u64, u64)> = vec![];
        for (a, b) in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
    }
}

enum Handle {
    Array {
        ds: String,
        arr: String,
        read_ahead: Mutex<ReadAhead>,
        /// Set when the array is replaced or deleted while this descriptor is open.
        frozen: Mutex<Option<Arc<Frozen>>>,
        /// The inode opened, which `fstat` asks about after a rename over it.
        ino: u64,
    },
    /// A file being written. Each truncating open or create stages its own bytes
    /// (two writers of one name must not write into one temp file: the last close
    /// wins, whole); other opens share the name's current staged file.
    Staged {
        ds: String,
        name: String,
        writable: bool,
        staged: Arc<Mutex<Staged>>,
    },
    Update {
        ds: String,
        arr: String,
        overlay: Mutex<Overlay>,
    },
    Control {
        file: ControlFile,
        snapshot: Vec<u8>,
    },
    /// The stack as it was at open: a consistent view for the life of the descriptor.
    Stacked {
        array: String,
        stack: Arc<Stack>,
        read_ahead: Mutex<ReadAhead>,
    },
    /// Read-only bytes fixed at open.
    Bytes(Vec<u8>),
    /// An open directory: its listing, taken at the first read from offset 0 and
    /// served from here for the reads that continue it (a 10,000-entry directory
    /// takes ~100 reads; listing it afresh for each would be quadratic).
    Dir(Mutex<Option<Listing>>),
}

pub type Listing = Arc<Vec<(String, NodeAttr)>>;

/// How far ahead of a sequential reader blocks are fetched and decoded: a window that
/// starts here and doubles with every sequential read up to `FsConfig::read_ahead_bytes`
/// (16 MiB, two of atlas's 8 MiB blocks, so both cores decode while the reader
/// consumes; more for remote stores, to cover the round trip). A seek closes it:
/// random readers fetch only what they ask for.
const READ_AHEAD_START: u64 = 2 << 20;

/// Read-ahead of one descriptor (an array's `.npy` or a `.atlasfs/stacked` file). The
/// kernel sends several READs of one sequential reader at once, so they arrive a
/// little out of order: a read counts as sequential if it starts where the last one
/// ended or anywhere up to what has been read ahead. Each one starts only the part of
/// the window not started before, so blocks are not asked for again on every READ.
#[derive(Default)]
struct ReadAhead {
    /// The furthest byte read so far.
    next: u64,
    window: u64,
    /// Bytes below this have been read ahead.
    ahead: u64,
}

impl ReadAhead {
    /// Records a read of `[offset, end)`; returns the byte range to read ahead, if any.
    fn advance(&mut self, offset: u64, end: u64, max_window: u64) -> Option<(u64, u64)> {
        let sequential = end > offset && (offset == self.next || (self.window > 0 && offset + self.window >= self.next && offset <= self.ahead));
        if !sequential {
            *self = ReadAhead { next: end, window: 0, ahead: 0 };
            return None;
        }
        self.next = self.next.max(end);
        self.window = if self.window == 0 { READ_AHEAD_START } else { (self.window * 2).min(max_window) };
        let (from, to) = (self.ahead.max(self.next), self.next + self.window);
        self.ahead = self.ahead.max(to);
        (from < to).then_some((from, to))
    }
}

/// A `.npy` rendering of a string array, computed once per store version.
struct StringNpy {
    version: u64,
    bytes: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Inodes {
    next: u64,
    by_ino: HashMap<u64, NodeKey>,
    by_key: HashMap<NodeKey, u64>,
}

impl Inodes {
    fn ino(&mut self, key: NodeKey) -> u64 {
        match &key {
            NodeKey::Root => return ROOT_INO,
            NodeKey::ControlDir => return CONTROL_DIR_INO,
            NodeKey::Control(c) => return c.ino(),
            NodeKey::StackedDir => return STACKED_DIR_INO,
            _ => {}
        }
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        self.next = self.next.max(FIRST_DYNAMIC_INO);
        let i = self.next;
        self.next += 1;
        self.by_ino.insert(i, key.clone());
        self.by_key.insert(key, i);
        i
    }

    fn key(&self, ino: u64) -> Option<NodeKey> {
        match ino {
            ROOT_INO => Some(NodeKey::Root),
            CONTROL_DIR_INO => Some(NodeKey::ControlDir),
            3..=5 => Some(NodeKey::Control(ControlFile::ALL[(ino - 3) as usize])),
            STACKED_DIR_INO => Some(NodeKey::StackedDir),
            _ => self.by_ino.get(&ino).cloned(),
        }
    }

    /// Moves an inode to a new name, as rename(2) does: the kernel keeps using the
    /// same inode under the new name. A replaced target's inode is forgotten.
    fn rename(&mut self, from: &NodeKey, to: NodeKey) {
        if let Some(old) = self.by_key.remove(&to) {
            self.by_ino.remove(&old);
        }
        if let Some(i) = self.by_key.remove(from) {
            self.by_ino.insert(i, to.clone());
            self.by_key.insert(to, i);
        }
    }

    /// A dataset rename moves the directory and every file under it.
    fn rename_dataset(&mut self, from: &str, to: &str) {
        self.rename(&NodeKey::Dataset(from.to_string()), NodeKey::Dataset(to.to_string()));
        let files: Vec<NodeKey> = self.by_key.keys().filter(|k| matches!(k, NodeKey::File(d, _) if d == from)).cloned().collect();
        for k in files {
            if let NodeKey::File(_, n) = &k {
                let dst = NodeKey::File(to.to_string(), n.clone());
                self.rename(&k, dst);
            }
        }
    }

    /// Forgets a name so that a later file of the same name gets a new inode.
    fn remove(&mut self, key: &NodeKey) {
        if let Some(i) = self.by_key.remove(key) {
            self.by_ino.remove(&i);
        }
    }
}

/// A kernel cache entry that the core made stale on its own (not as the direct
/// result of the request being answered), for the adapter to invalidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    /// The name `name` in directory `parent`.
    Entry { parent: u64, name: String },
    /// Attributes and cached pages of an inode.
    Inode(u64),
}

pub type Invalidator = Arc<dyn Fn(Invalidate) + Send + Sync>;

/// Counters reported by `.atlasfs/stats`.
#[derive(Default)]
pub struct FsCounters {
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
    pub writes: AtomicU64,
    pub bytes_written: AtomicU64,
    pub commits: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    /// Refreshes that found another writer's changes.
    pub refreshes: AtomicU64,
    pub last_flush_unix: AtomicU64,
    pub last_compaction_unix: AtomicU64,
}

pub struct AtlasFs {
    atlas: Atlas,
    cfg: FsConfig,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    staged: Mutex<HashMap<(String, String), Arc<Mutex<Staged>>>>,
    strings: Mutex<HashMap<(String, String), StringNpy>>,
    mtimes: Mutex<HashMap<(String, String), SystemTime>>,
    /// Bumped when an array's content changes through this mount.
    generations: Mutex<HashMap<(String, String), u64>>,
    /// Generation each inode's pages were cached at.
    cached_gen: Mutex<HashMap<u64, u64>>,
    pub counters: FsCounters,
    started: SystemTime,
    stacks: Mutex<HashMap<String, (u64, Option<Arc<Stack>>)>>,
    invalidator: std::sync::OnceLock<Invalidator>,
    /// Serializes replacements by rename, so each runs its steps (name to the new
    /// inode, freeze open readers, commit) without another one in between.
    replacing: tokio::sync::Mutex<()>,
    /// A sequence count of those renames' moves of a name to its new inode: odd while
    /// one is under way. Lookups, attributes, listings and opens that saw it change
    /// are done again, so none pairs an inode with the other version's size or bytes
    /// (see [`AtlasFs::stable`]).
    swaps: AtomicU64,
    /// Replaced inodes that may still be opened (see [`Tombstone`]).
    tombstones: Mutex<HashMap<u64, Tombstone>>,
    /// When each array was last opened for reading.
    opened: Mutex<HashMap<(String, String), std::time::Instant>>,
}

/// `<array>.npy` → `<array>`.
fn array_of(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".npy").filter(|a| validate_name(a).is_ok())
}

/// Hidden names are tools' temp files (rsync's `.name.XXXXXX`, editors' swap files).
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.len() > 1 && name != ".."
}

/// A read from the frozen version of an array (see [`Frozen`]).
fn read_frozen(f: &Frozen, offset: u64, size: u32) -> FsResult<Vec<u8>> {
    match f {
        Frozen::Bytes { file, len } => {
            let end = (offset + size as u64).min(*len);
            let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        }
        Frozen::Gone => Err(FsError::new(libc::ESTALE, "the array was replaced or deleted since this descriptor opened it")),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AtlasFs {
    pub fn new(atlas: Atlas, cfg: FsConfig) -> Self {
        AtlasFs {
            atlas,
            cfg,
            inodes: Mutex::new(Inodes::default()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            staged: Mutex::new(HashMap::new()),
            strings: Mutex::new(HashMap::new()),
            mtimes: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            cached_gen: Mutex::new(HashMap::new()),
            counters: FsCounters::default(),
            started: SystemTime::now(),
            stacks: Mutex::new(HashMap::new()),
            invalidator: std::sync::OnceLock::new(),
            replacing: tokio::sync::Mutex::new(()),
            swaps: AtomicU64::new(0),
            tombstones: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// Installs the adapter's way of telling the kernel to drop stale cache entries.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    fn invalidate(&self, what: Invalidate) {
        if let Some(f) = self.invalidator.get() {
            f(what);
        }
    }

    fn file_inodes(&self, ds: &str, name: &str) -> (u64, u64) {
        let mut i = self.inodes.lock();
        (i.ino(NodeKey::Dataset(ds.to_string())), i.ino(NodeKey::File(ds.to_string(), name.to_string())))
    }

    pub fn atlas(&self) -> &Atlas {
        &self.atlas
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    fn key(&self, ino: u64) -> FsResult<NodeKey> {
        // An inode forgotten by a rename over it or an unlink: ESTALE makes the kernel
        // look the name up again (open(2) and stat(2) retry once) instead of failing
        // with ENOENT a path that exists under a new inode.
        self.inodes.lock().key(ino).ok_or_else(|| FsError::new(libc::ESTALE, format!("inode {ino} was replaced or removed")))
    }

    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only { Err(FsError::rofs()) } else { Ok(()) }
    }

    fn attr(&self, ino: u64, kind: Kind, size: u64, mtime: SystemTime) -> NodeAttr {
        let (perm, nlink) = match kind {
            Kind::Dir => (0o755, 2),
            Kind::File => (if self.cfg.read_only { 0o444 } else { 0o644 }, 1),
        };
        NodeAttr { ino, kind, size, perm, nlink, mtime, uid: self.cfg.uid, gid: self.cfg.gid }
    }

    fn bump_generation(&self, ds: &str, arr: &str) {
        *self.generations.lock().entry((ds.to_string(), arr.to_string())).or_default() += 1;
        self.mtimes.lock().insert((ds.to_string(), arr.to_string()), SystemTime::now());
    }

    fn schema(&self, ds: &str, arr: &str) -> Option<ArraySchema> {
        self.atlas.dataset_meta(ds).and_then(|m| m.arrays.get(arr).cloned())
    }

    /// Header bytes and total size of an array's `.npy` form (fixed-width dtypes).
    fn npy_layout(&self, schema: &ArraySchema) -> FsResult<(Vec<u8>, usize, u64)> {
        let descr = npy::descr_for(&schema.dtype).ok_or_else(|| FsError::io(format!("dtype {} has no .npy form", schema.dtype.name())))?;
        let el = schema.dtype.element_size().expect("fixed width");
        let header = npy::header_bytes(descr, &schema.shape);
        let size = header.len() as u64 + (schema.element_count() * el) as u64;
        Ok((header, el, size))
    }

    /// The whole `.npy` of a string array, cached until the store changes.
    async fn string_npy(&self, ds: &str, arr: &str) -> FsResult<Arc<Vec<u8>>> {
        let version = self.atlas.version();
        let key = (ds.to_string(), arr.to_string());
        if let Some(s) = self.strings.lock().get(&key)
            && s.version == version
        {
            return Ok(s.bytes.clone());
        }
        let view = self.atlas.open_dataset(ds).await?;
        let (shape, cells) = view.read_cells(arr, &[], &[]).await?.ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        let Cells::Var(items) = cells else { return Err(FsError::io("string array with fixed cells")) };
        let (descr, data) = npy::encode_strings(&items);
        let mut bytes = npy::header_bytes(&descr, &shape);
        bytes.extend_from_slice(&data);
        let bytes = Arc::new(bytes);
        self.strings.lock().insert(key, StringNpy { version, bytes: bytes.clone() });
        Ok(bytes)
    }

    async fn npy_size(&self, ds: &str, arr: &str, schema: &ArraySchema) -> FsResult<u64> {
        if schema.dtype.is_variable_length() {
            return Ok(self.string_npy(ds, arr).await?.len() as u64);
        }
        Ok(self.npy_layout(schema)?.2)
    }

    /// The stack of `array`, recomputed when the store has changed.
    fn stack(&self, array: &str) -> Option<Arc<Stack>> {
        let version = self.atlas.version();
        if let Some((v, st)) = self.stacks.lock().get(array)
            && *v == version
        {
            return st.clone();
        }
        let st = Stack::of(&self.atlas, array).map(Arc::new);
        self.stacks.lock().insert(array.to_string(), (version, st.clone()));
        st
    }

    fn staged_entry(&self, ds: &str, name: &str) -> Option<Arc<Mutex<Staged>>> {
        self.staged.lock().get(&(ds.to_string(), name.to_string())).cloned()
    }

    /// Forgets `name`'s staged file if it is still `s` (not a newer writer's).
    fn unstage(&self, ds: &str, name: &str, s: &Arc<Mutex<Staged>>) {
        let mut staged = self.staged.lock();
        let key = (ds.to_string(), name.to_string());
        if staged.get(&key).is_some_and(|t| Arc::ptr_eq(t, s)) {
            staged.remove(&key);
        }
    }

    /// Before `ds/arr` is replaced or deleted: descriptors that read it now get a copy
    /// of its current bytes to go on reading (one copy shared by all of them).
    async fn freeze_readers(&self, ds: &str, arr: &str) {
        self.freeze_readers_keeping(ds, arr, None).await
    }

    /// [`Self::freeze_readers`], and when `replaced` (an inode just renamed over) was
    /// opened lately, keep the old version for late opens of it too ([`Tombstone`]).
    async fn freeze_readers_keeping(&self, ds: &str, arr: &str, replaced: Option<u64>) {
        let now = std::time::Instant::now();
        let keep = Duration::from_secs(TOMBSTONE_SECS);
        self.tombstones.lock().retain(|_, t| now.duration_since(t.at) < keep);
        let recent = self.opened.lock().get(&(ds.to_string(), arr.to_string())).is_some_and(|t| now.duration_since(*t) < keep);
        let tomb = replaced.filter(|_| recent);
        let open: Vec<Arc<Handle>> = self
            .handles
            .lock()
            .values()
            .filter(|h| matches!(&***h, Handle::Array { ds: d, arr: a, frozen, .. } if d == ds && a == arr && frozen.lock().is_none()))
            .cloned()
            .collect();
        if open.is_empty() {
            let small = match self.schema(ds, arr) {
                Some(schema) => self.npy_size(ds, arr, &schema).await.is_ok_and(|n| n <= TOMBSTONE_MAX_BYTES),
                None => false,
            };
            if tomb.is_none() || !small {
                return;
            }
        }
        let frozen = match self.copy_out(ds, arr).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dataset = ds, array = arr, error = %e, "cannot keep the old version for descriptors still reading it; their reads fail with ESTALE");
                Frozen::Gone
            }
        };
        let frozen = Arc::new(frozen);
        for h in open {
            if let Handle::Array { frozen: f, .. } = &*h {
                f.lock().get_or_insert_with(|| frozen.clone());
            }
        }
        if let Some(ino) = tomb {
            self.tombstones.lock().insert(ino, Tombstone { ds: ds.to_string(), arr: arr.to_string(), frozen, at: now });
        }
    }

    /// The whole `.npy` of `ds/arr` as it is now, in a temp file.
    async fn copy_out(&self, ds: &str, arr: &str) -> FsResult<Frozen> {
        let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        self.copy_out_as(ds, arr, &schema, false).await
    }

    /// [`copy_out`](Self::copy_out) of the version `schema` describes (see `read_array_bytes_as`).
    async fn copy_out_as(&self, ds: &str, arr: &str, schema: &ArraySchema, before_refresh: bool) -> FsResult<Frozen> {
        let len = self.npy_size(ds, arr, schema).await?;
        if len > FREEZE_MAX_BYTES {
            return Err(FsError::new(libc::EFBIG, format!("{ds}/{arr}.npy is {len} bytes, over the {FREEZE_MAX_BYTES} kept aside")));
        }
        let file = tempfile::tempfile()?;
        let mut off = 0u64;
        while off < len {
            let part = self.read_array_bytes_as(ds, arr, schema, off, (len - off).min(8 << 20), before_refresh).await?;
            if part.is_empty() {
                break;
            }
            file.write_all_at(&part, off)?;
            off += part.len() as u64;
        }
        Ok(Frozen::Bytes { file, len: off })
    }

    /// Attributes of a node, or ENOENT if it no longer exists.
    pub async fn getattr(&self, ino: u64) -> FsResult<NodeAttr> {
        self.getattr_fh(ino, None).await
    }

    /// `getattr`, also of an inode a rename or unlink made the kernel forget while a
    /// descriptor still reads it (`fstat` asks by inode): the size of the version that
    /// descriptor reads. `fh` is the kernel's descriptor when it names one.
    pub async fn getattr_fh(&self, ino: u64, fh: Option<u64>) -> FsResult<NodeAttr> {
        self.stable(|| self.getattr_once(ino, fh)).await
    }

    async fn getattr_once(&self, ino: u64, fh: Option<u64>) -> FsResult<NodeAttr> {
        let err = match self.key(ino) {
            Ok(key) => return self.attr_of(ino, &key).await,
            Err(e) => e,
        };
        let by_fh = fh.and_then(|f| self.handle(f).ok()).filter(|h| matches!(&**h, Handle::Array { ino: i, .. } if *i == ino));
        let open = by_fh.or_else(|| self.handles.lock().values().find(|h| matches!(&***h, Handle::Array { ino: i, .. } if *i == ino)).cloned());
        if let Some(t) = self.tombstones.lock().get(&ino)
            && t.at.elapsed() < Duration::from_secs(TOMBSTONE_SECS)
            && let Frozen::Bytes { len, .. } = &*t.frozen
        {
            return Ok(self.attr(ino, Kind::File, *len, self.started));
        }
        if let Some(h) = open
            && let Handle::Array { ds, arr, frozen, .. } = &*h
        {
            let size = match frozen.lock().clone().as_deref() {
                Some(Frozen::Bytes { len, .. }) => Some(*len),
                Some(Frozen::Gone) => None,
                // Not frozen yet: the store still holds the version it reads (a
                // replacement freezes its readers before it commits).
                None => match self.schema(ds, arr) {
                    Some(schema) => Some(self.npy_size(ds, arr, &schema).await?),
                    None => None,
                },
            };
            if let Some(size) = size {
                let mtime = self.mtimes.lock().get(&(ds.clone(), arr.clone())).copied().unwrap_or(self.started);
                return Ok(self.attr(ino, Kind::File, size, mtime));
            }
        }
        Err(err)
    }

    async fn attr_of(&self, ino: u64, key: &NodeKey) -> FsResult<NodeAttr> {
        match key {
            NodeKey::Root | NodeKey::ControlDir | NodeKey::StackedDir => Ok(self.attr(ino, Kind::Dir, 0, self.started)),
            NodeKey::StackedNpy(a) => Ok(self.attr(ino, Kind::File, self.stack(a).ok_or_else(|| FsError::noent(format!("stacked/{a}.npy")))?.size(), self.started)),
            NodeKey::StackedList(a) => {
                Ok(self.attr(ino, Kind::File, self.stack(a).ok_or_else(|| FsError::noent(format!("stacked/{a}.datasets")))?.listing().len() as u64, self.started))
            }
            NodeKey::Control(c) => {
                let size = if *c == ControlFile::Stats { self.stats_json().len() as u64 } else { 0 };
                Ok(self.attr(ino, Kind::File, size, SystemTime::now()))
            }
            NodeKey::Dataset(ds) => {
                if self.atlas.dataset_exists(ds) {
                    Ok(self.attr(ino, Kind::Dir, 0, self.started))
                } else {
                    Err(FsError::noent(ds))
                }
            }
            NodeKey::File(ds, name) => {
                if let Some(s) = self.staged_entry(ds, name) {
                    let s = s.lock();
                    return Ok(self.attr(ino, Kind::File, s.len, s.mtime));
                }
                let arr = array_of(name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
                let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
                let size = self.npy_size(ds, arr, &schema).await?;
                let mtime = self.mtimes.lock().get(&(ds.clone(), arr.to_string())).copied().unwrap_or(self.started);
                Ok(self.attr(ino, Kind::File, size, mtime))
            }
        }
    }

    fn child_key(&self, parent: u64, name: &str) -> FsResult<NodeKey> {
        match self.key(parent)? {
            NodeKey::Root if name == CONTROL_DIR => Ok(NodeKey::ControlDir),
            NodeKey::Root => Ok(NodeKey::Dataset(name.to_string())),
            NodeKey::ControlDir if name == STACKED_DIR => Ok(NodeKey::StackedDir),
            NodeKey::ControlDir => ControlFile::ALL.into_iter().find(|c| c.name() == name).map(NodeKey::Control).ok_or_else(|| FsError::noent(format!("{CONTROL_DIR}/{name}"))),
            NodeKey::StackedDir => match (name.strip_suffix(".npy"), name.strip_suffix(".datasets")) {
                (Some(a), _) => Ok(NodeKey::StackedNpy(a.to_string())),
                (_, Some(a)) => Ok(NodeKey::StackedList(a.to_string())),
                _ => Err(FsError::noent(format!("{CONTROL_DIR}/{STACKED_DIR}/{name}"))),
            },
            NodeKey::Dataset(ds) => Ok(NodeKey::File(ds, name.to_string())),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<NodeAttr> {
        self.stable(|| async {
            let key = self.child_key(parent, name)?;
            let ino = self.inodes.lock().ino(key.clone());
            self.attr_of(ino, &key).await
        })
        .await
    }

    /// Runs `f` until no rename moved a name to a new inode while it ran (see `swaps`).
    async fn stable<T, F: std::future::Future<Output = FsResult<T>>>(&self, mut f: impl FnMut() -> F) -> FsResult<T> {
        loop {
            let seq = self.swaps.load(Ordering::Acquire);
            if seq % 2 == 1 {
                tokio::task::yield_now().await;
                continue;
            }
            let res = f().await;
            if self.swaps.load(Ordering::Acquire) == seq {
                return res;
            }
        }
    }

    /// Entries of a directory with their attributes, `.` and `..` excluded.
    pub async fn readdir(&self, ino: u64) -> FsResult<Vec<(String, NodeAttr)>> {
        self.stable(|| self.readdir_once(ino)).await
    }

    async fn readdir_once(&self, ino: u64) -> FsResult<Vec<(String, NodeAttr)>> {
        let mut out = vec![];
        match self.key(ino)? {
            NodeKey::Root => {
                out.push((CONTROL_DIR.to_string(), self.attr(CONTROL_DIR_INO, Kind::Dir, 0, self.started)));
                let names = self.atlas.list_datasets();
                let mut inodes = self.inodes.lock();
                for n in names {
                    let i = inodes.ino(NodeKey::Dataset(n.clone()));
                    out.push((n, self.attr(i, Kind::Dir, 0, self.started)));
                }
            }
            NodeKey::ControlDir => {
                out.push((STACKED_DIR.to_string(), self.attr(STACKED_DIR_INO, Kind::Dir, 0, self.started)));
                for c in ControlFile::ALL {
                    out.push((c.name().to_string(), self.attr_of(c.ino(), &NodeKey::Control(c)).await?));
                }
            }
            NodeKey::StackedDir => {
                for a in self.atlas.list_arrays() {
                    let Some(st) = self.stack(&a) else { continue };
                    let mut inodes = self.inodes.lock();
                    let (i, j) = (inodes.ino(NodeKey::StackedNpy(a.clone())), inodes.ino(NodeKey::StackedList(a.clone())));
                    drop(inodes);
                    out.push((format!("{a}.npy"), self.attr(i, Kind::File, st.size(), self.started)));
                    out.push((format!("{a}.datasets"), self.attr(j, Kind::File, st.listing().len() as u64, self.started)));
                }
            }
            NodeKey::Dataset(ds) => {
                let meta = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?;
                for (arr, schema) in &meta.arrays {
                    let name = format!("{arr}.npy");
                    if self.staged_entry(&ds, &name).is_some() {
                        continue;
                    }
                    let i = self.inodes.lock().ino(NodeKey::File(ds.clone(), name.clone()));
                    let size = match self.npy_size(&ds, arr, schema).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(dataset = %ds, array = %arr, error = %e, "cannot size array; listing it as empty");
                            0
                        }
                    };
                    let mtime = self.mtimes.lock().get(&(ds.clone(), arr.clone())).copied().unwrap_or(self.started);
                    out.push((name, self.attr(i, Kind::File, size, mtime)));
                }
                let staged: Vec<(String, Arc<Mutex<Staged>>)> = self.staged.lock().iter().filter(|((d, _), _)| d == &ds).map(|((_, n), s)| (n.clone(), s.clone())).collect();
                for (name, s) in staged {
                    let i = self.inodes.lock().ino(NodeKey::File(ds.clone(), name.clone()));
                    let s = s.lock();
                    out.push((name, self.attr(i, Kind::File, s.len, s.mtime)));
                }
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
        Ok(out)
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned().ok_or_else(|| FsError::new(libc::EBADF, format!("no open file {fh}")))
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        match self.key(ino)? {
            NodeKey::Root | NodeKey::ControlDir | NodeKey::StackedDir | NodeKey::Dataset(_) => Ok(self.new_handle(Handle::Dir(Mutex::new(None)))),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    /// Opens a file. `flags` are the open(2) flags.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        loop {
            let seq = self.swaps.load(Ordering::Acquire);
            if seq % 2 == 1 {
                tokio::task::yield_now().await;
                continue;
            }
            let res = self.open_once(ino, flags).await;
            if self.swaps.load(Ordering::Acquire) == seq {
                return res;
            }
            // A rename moved a name meanwhile: this descriptor may pair the inode with
            // the other version. Open again (a replaced inode then gets ESTALE).
            if let Ok(o) = res {
                self.handles.lock().remove(&o.fh);
            }
        }
    }

    async fn open_once(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let key = match self.key(ino) {
            Ok(k) => k,
            Err(e) => return self.open_tombstone(ino, flags).ok_or(e),
        };
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let trunc = flags & libc::O_TRUNC != 0;
        if write {
            self.writable()?;
        }
        match key {
            NodeKey::Control(c) => {
                if write && c == ControlFile::Stats {
                    return Err(FsError::new(libc::EACCES, "stats is read-only"));
                }
                let snapshot = if c == ControlFile::Stats { self.stats_json().into_bytes() } else { vec![] };
                Ok(Opened { fh: self.new_handle(Handle::Control { file: c, snapshot }), direct_io: true, keep_cache: false, read_only: !write })
            }
            NodeKey::StackedNpy(_) | NodeKey::StackedList(_) if write => Err(FsError::new(libc::EACCES, "the stacked view is read-only")),
            NodeKey::StackedNpy(a) => {
                let stack = self.stack(&a).ok_or_else(|| FsError::noent(format!("stacked/{a}.npy")))?;
                let version = self.atlas.version();
                let keep_cache = self.cached_gen.lock().insert(ino, version) == Some(version);
                Ok(Opened { fh: self.new_handle(Handle::Stacked { array: a, stack, read_ahead: Mutex::default() }), direct_io: false, keep_cache, read_only: !write })
            }
            NodeKey::StackedList(a) => {
                let stack = self.stack(&a).ok_or_else(|| FsError::noent(format!("stacked/{a}.datasets")))?;
                Ok(Opened { fh: self.new_handle(Handle::Bytes(stack.listing().into_bytes())), direct_io: true, keep_cache: false, read_only: !write })
            }
            NodeKey::File(ds, name) => {
                if let Some(s) = self.staged_entry(&ds, &name) {
                    // A truncating open starts its own staged file (see Handle::Staged).
                    let staged = if write && trunc { self.stage(&ds, &name)? } else { s };
                    return Ok(Opened { fh: self.new_handle(Handle::Staged { ds, name, writable: write, staged }), direct_io: false, keep_cache: false, read_only: !write });
                }
                let arr = array_of(&name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?.to_string();
                if self.schema(&ds, &arr).is_none() {
                    // A name the kernel still caches (e.g. after a rejected write) opened
                    // with O_TRUNC: the kernel strips O_CREAT, but this is a create.
                    if write && trunc && self.atlas.dataset_exists(&ds) {
                        let staged = self.stage(&ds, &name)?;
                        return Ok(Opened { fh: self.new_handle(Handle::Staged { ds, name, writable: true, staged }), direct_io: false, keep_cache: false, read_only: false });
                    }
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                if write && trunc {
                    let staged = self.stage(&ds, &name)?;
                    self.cached_gen.lock().remove(&ino);
                    return Ok(Opened { fh: self.new_handle(Handle::Staged { ds, name, writable: true, staged }), direct_io: false, keep_cache: false, read_only: false });
                }
                if write {
                    let overlay = Overlay { file: tempfile::tempfile()?, ranges: vec![] };
                    return Ok(Opened { fh: self.new_handle(Handle::Update { ds, arr, overlay: Mutex::new(overlay) }), direct_io: false, keep_cache: false, read_only: false });
                }
                // Cached pages stay valid while the array has not changed through this mount.
                let generation = self.generations.lock().get(&(ds.clone(), arr.clone())).copied().unwrap_or(0);
                let keep_cache = self.cached_gen.lock().insert(ino, generation) == Some(generation);
                self.opened.lock().insert((ds.clone(), arr.clone()), std::time::Instant::now());
                Ok(Opened {
                    fh: self.new_handle(Handle::Array { ds, arr, read_ahead: Mutex::default(), frozen: Mutex::new(None), ino }),
                    direct_io: false,
                    keep_cache,
                    read_only: !write,
                })
            }
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// A read-only open of an inode renamed over a moment ago: its old version.
    fn open_tombstone(&self, ino: u64, flags: i32) -> Option<Opened> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return None;
        }
        let t = self.tombstones.lock();
        let t = t.get(&ino).filter(|t| t.at.elapsed() < Duration::from_secs(TOMBSTONE_SECS))?;
        let h = Handle::Array { ds: t.ds.clone(), arr: t.arr.clone(), read_ahead: Mutex::default(), frozen: Mutex::new(Some(t.frozen.clone())), ino };
        Some(Opened { fh: self.new_handle(h), direct_io: false, keep_cache: false, read_only: true })
    }

    fn stage(&self, ds: &str, name: &str) -> FsResult<Arc<Mutex<Staged>>> {
        let s = Arc::new(Mutex::new(Staged { file: tempfile::tempfile()?, len: 0, mtime: SystemTime::now(), dirty: true, dropped: false, rejected: None }));
        self.staged.lock().insert((ds.to_string(), name.to_string()), s.clone());
        Ok(s)
    }

    /// Creates a file in a dataset directory and opens it for writing.
    pub async fn create(&self, parent: u64, name: &str, flags: i32) -> FsResult<(NodeAttr, Opened)> {
        self.writable()?;
        super::names::check_new_name(name)?;
        let key = self.child_key(parent, name)?;
        let NodeKey::File(ds, name) = key.clone() else {
            return Err(FsError::new(libc::EPERM, format!("files can only be created inside a dataset directory, not here ({name})")));
        };
        if !self.atlas.dataset_exists(&ds) {
            return Err(FsError::noent(&ds));
        }
        if array_of(&name).is_none() && !is_temp_name(&name) {
            return Err(FsError::inval(format!("{ds}/{name}: only <array>.npy files (array names: non-empty, no leading '_') and hidden temp files can be created")));
        }
        let exists = self.staged_entry(&ds, &name).is_some() || array_of(&name).is_some_and(|a| self.schema(&ds, a).is_some());
        if exists && flags & libc::O_EXCL != 0 {
            return Err(FsError::new(libc::EEXIST, format!("{ds}/{name} exists")));
        }
        let staged = self.stage(&ds, &name)?;
        let ino = self.inodes.lock().ino(key);
        self.cached_gen.lock().remove(&ino);
        let fh = self.new_handle(Handle::Staged { ds, name, writable: true, staged });
        Ok((self.attr(ino, Kind::File, 0, SystemTime::now()), Opened { fh, direct_io: false, keep_cache: false, read_only: false }))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let h = self.handle(fh)?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let out = match &*h {
            Handle::Array { ds, arr, read_ahead, frozen, .. } => {
                if let Some(f) = frozen.lock().clone() {
                    return read_frozen(&f, offset, size);
                }
                let out = self.read_array_bytes(ds, arr, offset, size as u64).await?;
                // A replacement freezes open descriptors before it commits: if this one
                // was frozen meanwhile, the bytes just read may be the new version's.
                if let Some(f) = frozen.lock().clone() {
                    return read_frozen(&f, offset, size);
                }
                let next = read_ahead.lock().advance(offset, offset + out.len() as u64, self.cfg.read_ahead_bytes.max(READ_AHEAD_START));
                if let Some((from, to)) = next {
                    self.read_ahead(ds, arr, from, to).await;
                }
                out
            }
            Handle::Staged { staged, .. } => {
                let s = staged.lock();
                let end = (offset + size as u64).min(s.len);
                let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
                s.file.read_exact_at(&mut buf, offset)?;
                buf
            }
            Handle::Update { ds, arr, overlay } => {
                let mut buf = self.read_array_bytes(ds, arr, offset, size as u64).await?;
                let o = overlay.lock();
                let end = offset + buf.len() as u64;
                for &(a, b) in &o.ranges {
                    let (lo, hi) = (a.max(offset), b.min(end));
                    if lo < hi {
                        o.file.read_exact_at(&mut buf[(lo - offset) as usize..(hi - offset) as usize], lo)?;
                    }
                }
                buf
            }
            Handle::Control { snapshot, .. } | Handle::Bytes(snapshot) => {
                let start = (offset as usize).min(snapshot.len());
                let end = (start + size as usize).min(snapshot.len());
                snapshot[start..end].to_vec()
            }
            Handle::Stacked { array, stack, read_ahead } => {
                let out = stack.read(&self.atlas, array, offset, size as u64, self.atlas.read_concurrency()).await?;
                let next = read_ahead.lock().advance(offset, offset + out.len() as u64, self.cfg.read_ahead_bytes.max(READ_AHEAD_START));
                if let Some((from, to)) = next {
                    stack.prefetch(&self.atlas, array, from, to).await;
                }
                out
            }
            Handle::Dir(_) => return Err(FsError::new(libc::EISDIR, "is a directory")),
        };
        self.counters.bytes_read.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Bytes `[offset, offset+len)` of an array's `.npy` form.
    /// A sequential reader of `ds/arr.npy` will get to bytes `[from, to)`: start
    /// decoding their blocks so they are ready when it gets there.
    async fn read_ahead(&self, ds: &str, arr: &str, from: u64, to: u64) {
        let Some(schema) = self.schema(ds, arr) else { return };
        let Ok((header, el, size)) = self.npy_layout(&schema) else { return };
        let h = header.len() as u64;
        let (d0, d1) = (from.max(h) - h, to.min(size).saturating_sub(h));
        if d0 >= d1 {
            return;
        }
        let boxes = element_range_boxes(&schema.shape, (d0 / el as u64) as usize, d1.div_ceil(el as u64) as usize);
        if let Ok(view) = self.atlas.open_dataset(ds).await
            && let Err(e) = view.prefetch(arr, &boxes).await
        {
            tracing::debug!(dataset = ds, array = arr, error = %e, "read-ahead failed");
        }
    }

    pub async fn read_array_bytes(&self, ds: &str, arr: &str, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        self.read_array_bytes_as(ds, arr, &schema, offset, len, false).await
    }

    /// Bytes of the `.npy` form of `ds/arr` with the shape `schema`; with
    /// `before_refresh`, of the data as it was before the last refresh.
    async fn read_array_bytes_as(&self, ds: &str, arr: &str, schema: &ArraySchema, offset: u64, len: u64, before_refresh: bool) -> FsResult<Vec<u8>> {
        if schema.dtype.is_variable_length() {
            let all = self.string_npy(ds, arr).await?;
            let start = (offset as usize).min(all.len());
            let end = (start + len as usize).min(all.len());
            return Ok(all[start..end].to_vec());
        }
        let (header, el, size) = self.npy_layout(schema)?;
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(vec![]);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let h = header.len() as u64;
        if offset < h {
            out.extend_from_slice(&header[offset as usize..end.min(h) as usize]);
        }
        if end <= h {
            return Ok(out);
        }
        let d0 = offset.max(h) - h;
        let d1 = end - h;
        let (e0, e1) = ((d0 / el as u64) as usize, (d1.div_ceil(el as u64)) as usize);
        let view = self.atlas.open_dataset(ds).await?;
        let mut data = Vec::with_capacity((e1 - e0) * el);
        for (start, extent) in element_range_boxes(&schema.shape, e0, e1) {
            match view.read_region_as(arr, &start, &extent, before_refresh).await? {
                Cells::Fixed { bytes, .. } => data.extend_from_slice(&bytes),
                Cells::Var(_) => return Err(FsError::io("fixed-width array returned string cells")),
            }
        }
        let skip = (d0 - e0 as u64 * el as u64) as usize;
        out.extend_from_slice(&data[skip..skip + (d1 - d0) as usize]);
        Ok(out)
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.writable()?;
        let h = self.handle(fh)?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
        match &*h {
            Handle::Staged { ds, name, writable, staged } => {
                if !writable {
                    return Err(FsError::new(libc::EBADF, "file not open for writing"));
                }
                let mut s = staged.lock();
                if s.dropped {
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                s.file.write_all_at(data, offset)?;
                s.len = s.len.max(offset + data.len() as u64);
                s.dirty = true;
                s.rejected = None;
                s.mtime = SystemTime::now();
            }
            Handle::Update { ds, arr, overlay } => {
                let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
                let size = self.npy_size(ds, arr, &schema).await?;
                if offset + data.len() as u64 > size {
                    return Err(FsError::new(
                        libc::EFBIG,
                        format!("{ds}/{arr}.npy: writes past the end of an existing array ({size} bytes) cannot change its shape; truncate and rewrite the file instead"),
                    ));
                }
                let mut o = overlay.lock();
                o.file.write_all_at(data, offset)?;
                o.add(offset, offset + data.len() as u64);
            }
            Handle::Control { file: ControlFile::Compact, .. } => {
                self.compact().await?;
            }
            Handle::Control { file: ControlFile::Flush, .. } => {
                self.flush_store().await?;
            }
            Handle::Control { .. } | Handle::Array { .. } | Handle::Stacked { .. } | Handle::Bytes(_) | Handle::Dir(_) => {
                return Err(FsError::new(libc::EBADF, "file not open for writing"));
            }
        }
        Ok(data.len() as u32)
    }

    /// Runs a compaction now (flushing first).
    pub async fn compact(&self) -> FsResult<()> {
        self.writable()?;
        self.atlas.compact().await?;
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters.last_compaction_unix.store(unix_now(), Ordering::Relaxed);
        Ok(())
    }

    /// Picks up what other writers flushed to the store (see `Atlas::refresh`): the
    /// arrays of every dataset that changed get a new generation, so the kernel drops
    /// their cached pages and attributes. Returns the datasets that changed.
    pub async fn refresh(&self) -> FsResult<Vec<String>> {
        // Descriptors open on arrays, with the shape they opened with: if a refresh
        // brings another writer's version, they go on reading the one they opened.
        let open: Vec<(Arc<Handle>, String, String, Option<ArraySchema>)> = self
            .handles
            .lock()
            .values()
            .filter_map(|h| match &**h {
                Handle::Array { ds, arr, frozen, .. } if frozen.lock().is_none() => Some((h.clone(), ds.clone(), arr.clone(), self.schema(ds, arr))),
                _ => None,
            })
            .collect();
        let changed = self.atlas.refresh().await?;
        if !changed.is_empty() && !open.is_empty() {
            self.freeze_for_refresh(open, &changed).await;
        }
        self.forget_datasets(&changed);
        if !changed.is_empty() {
            self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(datasets = changed.len(), "picked up changes flushed by another writer");
        }
        Ok(changed)
    }

    /// After a refresh: descriptors open on an array it changed get a copy of the
    /// version they opened (one per array), as on a local filesystem where a file
    /// replaced by rename keeps its old contents for those who have it open.
    async fn freeze_for_refresh(&self, open: Vec<(Arc<Handle>, String, String, Option<ArraySchema>)>, changed: &[String]) {
        let mut copies: HashMap<(String, String), Arc<Frozen>> = HashMap::new();
        for (h, ds, arr, old) in open {
            if !changed.contains(&ds) {
                continue;
            }
            let Some(old) = old else { continue };
            let now = self.schema(&ds, &arr);
            let data_changed = match self.atlas.file(&arr).await {
                Ok(f) => f.read().await.refreshed(&ds),
                Err(_) => true,
            };
            if now.as_ref() == Some(&old) && !data_changed {
                continue;
            }
            let key = (ds.clone(), arr.clone());
            let cached = copies.get(&key).cloned();
            let frozen = match cached {
                Some(f) => f,
                None => {
                    let f = Arc::new(match self.copy_out_as(&ds, &arr, &old, true).await {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!(dataset = %ds, array = %arr, error = %e, "cannot keep the version open descriptors read; their reads fail with ESTALE");
                            Frozen::Gone
                        }
                    });
                    copies.insert(key, f.clone());
                    f
                }
            };
            if let Handle::Array { frozen: f, .. } = &*h {
                f.lock().get_or_insert(frozen);
            }
        }
    }

    /// Drops what the kernel cached of datasets that changed under us.
    fn forget_datasets(&self, changed: &[String]) {
        for ds in changed {
            let mut arrays: Vec<String> = self.atlas.dataset_meta(ds).map(|m| m.arrays.keys().cloned().collect()).unwrap_or_default();
            // Arrays the other writer removed were known here by their generation.
            arrays.extend(self.generations.lock().keys().filter(|(d, _)| d == ds).map(|(_, a)| a.clone()));
            arrays.sort();
            arrays.dedup();
            for arr in arrays {
                self.bump_generation(ds, &arr);
                let name = format!("{arr}.npy");
                let (dir, file) = self.file_inodes(ds, &name);
                self.invalidate(Invalidate::Inode(file));
                self.invalidate(Invalidate::Entry { parent: dir, name });
                self.invalidate(Invalidate::Inode(dir));
            }
            // A new dataset may sit in the kernel's cache as a negative entry.
            self.invalidate(Invalidate::Entry { parent: ROOT_INO, name: ds.clone() });
        }
    }

    /// The durability boundary.
    pub async fn flush_store(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Ok(());
        }
        // A flush first picks up other writers' flushes; doing it here, through the
        // refresh that keeps open descriptors on their version, costs one HEAD.
        if let Err(e) = self.refresh().await {
            tracing::debug!(error = %e, "refresh before flush failed; the flush retries it");
        }
        let flushed = self.atlas.flush().await;
        // A flush also picks up other writers' changes (and may fork conflicted copies).
        self.forget_datasets(&self.atlas.take_noticed());
        flushed?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.counters.last_flush_unix.store(unix_now(), Ordering::Relaxed);
        Ok(())
    }

    /// close(2) of one descriptor: commits what it wrote. Its error is close's error.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        // Shells open, dup2 and close the original descriptor before writing: a
        // flush of a still-empty staged file is that, not the end of the writing.
        // (The last close, `release`, commits it regardless.)
        if let Handle::Staged { staged, .. } = &*h
            && staged.lock().len == 0
        {
            return Ok(());
        }
        Self::rejected(&h)?;
        self.commit_handle(&h).await
    }

    /// What close or fsync of `h` reports before committing anything new: the error
    /// of its staged bytes' failed commit (see [`Staged::rejected`]).
    fn rejected(h: &Handle) -> FsResult<()> {
        match h {
            Handle::Staged { staged, .. } => staged.lock().rejected.clone().map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }

    async fn commit_handle(&self, h: &Handle) -> FsResult<()> {
        match h {
            Handle::Staged { ds, name, writable: true, staged } => {
                let Some(arr) = array_of(name) else { return Ok(()) }; // temp files wait for rename
                let s = staged;
                if !s.lock().dirty || s.lock().dropped {
                    return Ok(());
                }
                let res = self.commit_staged(ds, arr, s).await;
                if let Err(e) = &res {
                    s.lock().rejected = Some(e.clone());
                }
                // Success or not, the staged bytes are done with: the array is either
                // replaced or, on error, left exactly as it was. (A later truncating
                // open of the name has its own staged file, which stays.)
                self.unstage(ds, name, s);
                let (dir, file) = self.file_inodes(ds, name);
                match &res {
                    Ok(()) => self.invalidate(Invalidate::Inode(file)),
                    Err(e) => {
                        tracing::warn!(dataset = %ds, file = %name, error = %e, "rejected a written .npy; the store is unchanged");
                        if self.schema(ds, arr).is_none() {
                            // The name the kernel knows from create() no longer exists. The
                            // inode number stays valid, so that a truncating open through
                            // the kernel's cached entry can start over (see `open`).
                            self.invalidate(Invalidate::Entry { parent: dir, name: name.clone() });
                        } else {
                            self.invalidate(Invalidate::Inode(file));
                        }
                    }
                }
                res
            }
            Handle::Update { ds, arr, overlay } => {
                let ranges = std::mem::take(&mut overlay.lock().ranges);
                if ranges.is_empty() {
                    return Ok(());
                }
                let res = self.commit_overlay(ds, arr, overlay, &ranges).await;
                if let Err(e) = &res {
                    tracing::warn!(dataset = %ds, array = %arr, error = %e, "could not apply in-place writes");
                }
                res
            }
            _ => Ok(()),
        }
    }

    /// Parses a staged `.npy` and replaces the array with it.
    async fn commit_staged(&self, ds: &str, arr: &str, staged: &Arc<Mutex<Staged>>) -> FsResult<()> {
        let (file, len) = {
            let mut s = staged.lock();
            s.dirty = false;
            (s.file.try_clone()?, s.len)
        };
        let bad = |e: npy::NpyError| FsError::inval(format!("{ds}/{arr}.npy: {e}"));
        let mut reader = std::io::BufReader::new(ReadAt { file: &file, pos: 0 });
        let header = npy::read_header(&mut reader).map_err(bad)?;
        let et = header.element_type().map_err(bad)?;
        let data_len = header.data_len().map_err(bad)?;
        let have = len.saturating_sub(header.header_len as u64);
        if have < data_len as u64 {
            return Err(bad(npy::NpyError::ShortPayload { expected: data_len, actual: have as usize }));
        }
        if have > data_len as u64 {
            return Err(bad(npy::NpyError::TrailingBytes((have - data_len as u64) as usize)));
        }
        let shape = header.shape.clone();
        let old = self.schema(ds, arr);
        let dims = match &old {
            Some(s) if s.shape.len() == shape.len() => s.dimension_names.clone(),
            _ => (0..shape.len()).map(|i| format!("dim_{i}")).collect(),
        };
        let elsize = et.dtype.element_size().unwrap_or(16);
        let chunk = match &old {
            Some(s) if s.shape == shape && s.dtype == et.dtype => s.chunk_shape.clone(),
            _ => auto_chunk_shape(&shape, elsize, self.cfg.chunk_target_bytes),
        };
        let fill = match &old {
            Some(s) if s.dtype == et.dtype => self.atlas.open_dataset(ds).await?.array_fill_value(arr).await?,
            _ => None,
        };
        let def = ArrayDef { dtype: et.dtype.clone(), dimension_names: dims, shape: shape.clone(), chunk_shape: Some(chunk), fill };
        let view = self.atlas.open_dataset(ds).await?;
        let hl = header.header_len as u64;
        // C-order fixed-width data streams in slabs of whole leading rows (byte order
        // and bools fixed per slab); Fortran order and strings are decoded whole.
        let streamable = !header.fortran_order && et.is_fixed_width() && !shape.is_empty();
        if streamable {
            // Checked: with a zero first axis the header's data length (0) bounds nothing.
            let row = shape[1..].iter().try_fold(et.itemsize, |r, &d| r.checked_mul(d)).ok_or_else(|| bad(npy::NpyError::ShapeOverflow(shape.clone())))?;
            let rows_per = (SLAB_BYTES / row.max(1)).max(1);
            let file = &file;
            let n0 = shape[0];
            let rest = shape[1..].to_vec();
            let slabs = (0..n0).step_by(rows_per).map(move |i| {
                let n = rows_per.min(n0 - i);
                let mut bytes = vec![0u8; n * row];
                file.read_exact_at(&mut bytes, hl + (i * row) as u64).map_err(crate::store::Error::Io)?;
                et.fix_in_place(&mut bytes);
                let mut start = vec![i];
                start.extend(std::iter::repeat_n(0, rest.len()));
                let mut extent = vec![n];
                extent.extend_from_slice(&rest);
                Ok((start, extent, Cells::Fixed { elsize: et.itemsize, bytes }))
            });
            view.replace_array(arr, def, slabs).await?;
        } else {
            let mut payload = vec![0u8; data_len];
            file.read_exact_at(&mut payload, hl)?;
            let decoded = npy::decode_payload(&header, payload).map_err(bad)?;
            let start = vec![0; shape.len()];
            view.replace_array(arr, def, [Ok((start, shape.clone(), decoded.cells))]).await?;
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.bump_generation(ds, arr);
        Ok(())
    }

    /// Applies in-place writes: each written byte range, widened to whole elements,
    /// is rewritten from the current data with the written bytes laid over it.
    async fn commit_overlay(&self, ds: &str, arr: &str, overlay: &Mutex<Overlay>, ranges: &[(u64, u64)]) -> FsResult<()> {
        let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        if schema.dtype.is_variable_length() {
            return Err(FsError::inval(format!("{ds}/{arr}.npy: string arrays cannot be edited in place; rewrite the whole file")));
        }
        let (header, el, _) = self.npy_layout(&schema)?;
        let h = header.len() as u64;
        let view = self.atlas.open_dataset(ds).await?;
        for &(a, b) in ranges {
            if a < h {
                let mut written = vec![0u8; (b.min(h) - a) as usize];
                overlay.lock().file.read_exact_at(&mut written, a)?;
                if written != header[a as usize..b.min(h) as usize] {
                    return Err(FsError::inval(format!("{ds}/{arr}.npy: the header cannot be changed in place (dtype and shape are fixed); rewrite the whole file")));
                }
            }
            if b <= h {
                continue;
            }
            let (d0, d1) = (a.max(h) - h, b - h);
            let (e0, e1) = ((d0 / el as u64) as usize, d1.div_ceil(el as u64) as usize);
            for (start, extent) in element_range_boxes(&schema.shape, e0, e1) {
                let n: usize = extent.iter().product();
                let first = {
                    let mut strides = vec![1usize; schema.shape.len()];
                    for i in (0..schema.shape.len().saturating_sub(1)).rev() {
                        strides[i] = strides[i + 1] * schema.shape[i + 1];
                    }
                    start.iter().zip(&strides).map(|(s, k)| s * k).sum::<usize>()
                };
                // Current bytes of the box, then the written bytes over them.
                let file_lo = h + (first * el) as u64;
                let mut bytes = self.read_array_bytes(ds, arr, file_lo, (n * el) as u64).await?;
                let o = overlay.lock();
                for &(ra, rb) in ranges {
                    let (lo, hi) = (ra.max(file_lo), rb.min(file_lo + bytes.len() as u64));
                    if lo < hi {
                        o.file.read_exact_at(&mut bytes[(lo - file_lo) as usize..(hi - file_lo) as usize], lo)?;
                    }
                }
                drop(o);
                view.write_cells(arr, &start, &extent, &Cells::Fixed { elsize: el, bytes }).await?;
            }
        }
        self.bump_generation(ds, arr);
        Ok(())
    }

    /// Last close of a descriptor.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let h = self.handles.lock().remove(&fh);
        match h {
            Some(h) => self.commit_handle(&h).await,
            None => Ok(()),
        }
    }

    /// The listing of directory `ino` for a read at `offset` through handle `fh`:
    /// fresh at offset 0 (a rewinddir sees changes), the handle's copy after that.
    pub async fn readdir_handle(&self, fh: u64, ino: u64, offset: u64) -> FsResult<Listing> {
        let h = self.handle(fh)?;
        let Handle::Dir(cached) = &*h else { return Err(FsError::new(libc::ENOTDIR, "not a directory handle")) };
        if offset > 0
            && let Some(l) = cached.lock().clone()
        {
            return Ok(l);
        }
        let listing: Listing = Arc::new(self.readdir(ino).await?);
        *cached.lock() = Some(listing.clone());
        Ok(listing)
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    /// fsync(2): commits what this descriptor wrote, then flushes the store.
    pub async fn fsync(&self, fh: Option<u64>) -> FsResult<()> {
        if let Some(fh) = fh
            && let Ok(h) = self.handle(fh)
        {
            Self::rejected(&h)?;
            self.commit_handle(&h).await?;
        }
        self.flush_store().await
    }

    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<NodeAttr> {
        self.writable()?;
        super::names::check_new_name(name)?;
        match self.child_key(parent, name)? {
            NodeKey::Dataset(ds) => {
                self.atlas.create_dataset(&ds).await?;
                let ino = self.inodes.lock().ino(NodeKey::Dataset(ds));
                Ok(self.attr(ino, Kind::Dir, 0, SystemTime::now()))
            }
            NodeKey::ControlDir => Err(FsError::new(libc::EEXIST, format!("{CONTROL_DIR} is reserved"))),
            _ => Err(FsError::new(libc::EPERM, format!("{name}: directories can only be made at the top level (one per dataset)"))),
        }
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        match self.child_key(parent, name)? {
            NodeKey::Dataset(ds) => {
                let meta = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?;
                let staged = self.staged.lock().keys().any(|(d, _)| d == &ds);
                if !meta.arrays.is_empty() || staged {
                    return Err(FsError::new(libc::ENOTEMPTY, format!("{ds}: dataset holds {} arrays; remove them first", meta.arrays.len())));
                }
                self.atlas.delete_dataset(&ds).await?;
                self.inodes.lock().remove(&NodeKey::Dataset(ds));
                Ok(())
            }
            NodeKey::ControlDir | NodeKey::StackedDir => Err(FsError::new(libc::EBUSY, format!("{CONTROL_DIR} cannot be removed"))),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        match self.child_key(parent, name)? {
            NodeKey::File(ds, name) => {
                if let Some(s) = self.staged.lock().remove(&(ds.clone(), name.clone())) {
                    s.lock().dropped = true;
                    self.inodes.lock().remove(&NodeKey::File(ds, name));
                    return Ok(());
                }
                let arr = array_of(&name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
                if self.schema(&ds, arr).is_none() {
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                // Descriptors still open keep reading what they opened, as on a local
                // filesystem; new opens of the old inode get ESTALE, then ENOENT.
                self.inodes.lock().remove(&NodeKey::File(ds.clone(), name.clone()));
                self.freeze_readers(&ds, arr).await;
                self.atlas.open_dataset(&ds).await?.delete_array(arr).await?;
                self.bump_generation(&ds, arr);
                Ok(())
            }
            NodeKey::Control(_) | NodeKey::StackedNpy(_) | NodeKey::StackedList(_) => Err(FsError::new(libc::EPERM, "control files cannot be removed")),
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// Copies an array (definition and data) to another name, possibly in another dataset.
    async fn copy_array(&self, src_ds: &str, src: &str, dst_ds: &str, dst: &str) -> FsResult<()> {
        let schema = self.schema(src_ds, src).ok_or_else(|| FsError::noent(format!("{src_ds}/{src}.npy")))?;
        let from = self.atlas.open_dataset(src_ds).await?;
        let fill = from.array_fill_value(src).await?;
        let (shape, cells) = from.read_cells(src, &[], &[]).await?.ok_or_else(|| FsError::noent(format!("{src_ds}/{src}.npy")))?;
        let def = ArrayDef {
            dtype: schema.dtype.clone(),
            dimension_names: schema.dimension_names.clone(),
            shape: schema.shape.clone(),
            chunk_shape: Some(schema.chunk_shape.clone()),
            fill,
        };
        let to = self.atlas.open_dataset(dst_ds).await?;
        to.replace_array(dst, def, [Ok((vec![0; shape.len()], shape, cells))]).await?;
        self.bump_generation(dst_ds, dst);
        Ok(())
    }

    pub async fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) -> FsResult<()> {
        self.writable()?;
        super::names::check_new_name(new_name)?;
        let from = self.child_key(parent, name)?;
        let to = self.child_key(new_parent, new_name)?;
        match (from, to) {
            (NodeKey::File(ds, name), NodeKey::File(nds, nname)) => {
                if !self.atlas.dataset_exists(&nds) {
                    return Err(FsError::noent(&nds));
                }
                if let Some(s) = self.staged_entry(&ds, &name) {
                    // A staged file (typically a tool's temp file) moves into place. A
                    // replacement of an array under readers, step by step (one at a time):
                    // 1. the name goes to the temp file's inode, which shows the staged
                    //    bytes (its size is theirs) until the commit is in; the replaced
                    //    inode is forgotten, so opens through it get ESTALE and look again;
                    // 2. descriptors still reading the old version are frozen on it;
                    // 3. the staged bytes are committed.
                    // So every descriptor reads one version whole, as with rename(2) on a
                    // local filesystem.
                    if ds == nds && name == nname {
                        return Ok(());
                    }
                    let _one_at_a_time = self.replacing.lock().await;
                    let Some(s) = self.staged_entry(&ds, &name).filter(|t| Arc::ptr_eq(t, &s)) else { return Err(FsError::noent(format!("{ds}/{name}"))) };
                    let replaced;
                    {
                        // The new name, its staged bytes and its inode change together.
                        let mut inodes = self.inodes.lock();
                        replaced = inodes.by_key.get(&NodeKey::File(nds.clone(), nname.clone())).copied();
                        self.swaps.fetch_add(1, Ordering::AcqRel);
                        if array_of(&nname).is_some() {
                            self.staged.lock().insert((nds.clone(), nname.clone()), s.clone());
                        }
                        inodes.rename(&NodeKey::File(ds.clone(), name.clone()), NodeKey::File(nds.clone(), nname.clone()));
                        self.swaps.fetch_add(1, Ordering::AcqRel);
                    }
                    self.unstage(&ds, &name, &s);
                    match array_of(&nname) {
                        Some(arr) => {
                            self.freeze_readers_keeping(&nds, arr, replaced).await;
                            let res = self.commit_staged(&nds, arr, &s).await;
                            self.unstage(&nds, &nname, &s);
                            if let Err(e) = &res {
                                tracing::warn!(dataset = %nds, file = %nname, error = %e, "rejected a .npy renamed into place; the store is unchanged");
                            }
                            return res;
                        }
                        None if is_temp_name(&nname) => {
                            self.staged.lock().insert((nds, nname), s);
                            return Ok(());
                        }
                        None => return Err(FsError::inval(format!("{nds}/{nname}: only <array>.npy or hidden temp names"))),
                    }
                }
                let src = array_of(&name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?.to_string();
                if self.schema(&ds, &src).is_none() {
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                let dst = array_of(&nname).ok_or_else(|| FsError::inval(format!("{nds}/{nname}: an array must be named <array>.npy")))?.to_string();
                if ds == nds && src == dst {
                    return Ok(());
                }
                self.freeze_readers(&nds, &dst).await;
                self.freeze_readers(&ds, &src).await;
                self.copy_array(&ds, &src, &nds, &dst).await?;
                self.atlas.open_dataset(&ds).await?.delete_array(&src).await?;
                self.bump_generation(&ds, &src);
                self.inodes.lock().rename(&NodeKey::File(ds, name), NodeKey::File(nds, nname));
                Ok(())
            }
            (NodeKey::Dataset(ds), NodeKey::Dataset(nds)) => {
                if ds == nds {
                    return Ok(());
                }
                let meta = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?;
                if let Some(target) = self.atlas.dataset_meta(&nds) {
                    if !target.arrays.is_empty() {
                        return Err(FsError::new(libc::ENOTEMPTY, format!("{nds} is not empty")));
                    }
                    self.atlas.delete_dataset(&nds).await?;
                }
                let view = self.atlas.create_dataset(&nds).await?;
                for (k, v) in &meta.attributes {
                    view.set_attribute(k, v.clone())?;
                }
                for arr in meta.arrays.keys() {
                    self.copy_array(&ds, arr, &nds, arr).await?;
                }
                self.atlas.delete_dataset(&ds).await?;
                self.inodes.lock().rename_dataset(&ds, &nds);
                Ok(())
            }
            (NodeKey::Control(_) | NodeKey::ControlDir | NodeKey::StackedDir | NodeKey::StackedNpy(_) | NodeKey::StackedList(_), _)
            | (_, NodeKey::Control(_) | NodeKey::ControlDir | NodeKey::StackedDir | NodeKey::StackedNpy(_) | NodeKey::StackedList(_)) => {
                Err(FsError::new(libc::EPERM, "control files cannot be renamed"))
            }
            _ => Err(FsError::new(libc::EXDEV, "a dataset and an array cannot take each other's place")),
        }
    }

    /// truncate/ftruncate and metadata changes. Modes and owners are fixed by the
    /// mount; times are kept for rsync and cp -p.
    pub async fn setattr(&self, ino: u64, size: Option<u64>, mtime: Option<SystemTime>) -> FsResult<NodeAttr> {
        let key = self.key(ino)?;
        if let NodeKey::File(ds, name) = &key {
            if let Some(size) = size {
                self.writable()?;
                if let Some(s) = self.staged_entry(ds, name) {
                    let mut s = s.lock();
                    s.file.set_len(size)?;
                    s.len = size;
                    s.dirty = true;
                    s.rejected = None;
                } else if size == 0 && array_of(name).is_some_and(|a| self.schema(ds, a).is_some()) {
                    // truncate(2) to zero starts a rewrite; the old array stays until the new bytes are committed.
                    self.stage(ds, name)?;
                } else {
                    let cur = self.attr_of(ino, &key).await?.size;
                    if cur != size {
                        return Err(FsError::inval(format!("{ds}/{name}: an array's size follows from its shape; truncate to 0 and rewrite it instead")));
                    }
                }
            }
            if let Some(t) = mtime {
                if let Some(s) = self.staged_entry(ds, name) {
                    s.lock().mtime = t;
                } else if let Some(arr) = array_of(name) {
                    self.mtimes.lock().insert((ds.clone(), arr.to_string()), t);
                }
            }
        }
        self.attr_of(ino, &key).await
    }

    // ---- extended attributes ----

    /// Names of a node's extended attributes.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        Ok(match self.key(ino)? {
            NodeKey::Dataset(ds) => self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?.attributes.keys().map(|k| format!("{XATTR_ATTR}{k}")).collect(),
            NodeKey::File(ds, name) => match array_of(&name).and_then(|a| self.schema(&ds, a)) {
                Some(_) => ARRAY_XATTRS.iter().map(|k| format!("{XATTR_ARRAY}{k}")).collect(),
                None => vec![],
            },
            _ => vec![],
        })
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        let nodata = || FsError::new(libc::ENODATA, format!("no attribute {name}"));
        match self.key(ino)? {
            NodeKey::Dataset(ds) => {
                let key = name.strip_prefix(XATTR_ATTR).ok_or_else(nodata)?;
                let v = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?.attributes.get(key).cloned().ok_or_else(nodata)?;
                Ok(serde_json::to_vec(&v).map_err(|e| FsError::io(e.to_string()))?)
            }
            NodeKey::File(ds, fname) => {
                let key = name.strip_prefix(XATTR_ARRAY).ok_or_else(nodata)?;
                let arr = array_of(&fname).ok_or_else(nodata)?;
                let s = self.schema(&ds, arr).ok_or_else(nodata)?;
                let view = self.atlas.open_dataset(&ds).await?;
                let json = match key {
                    "dtype" => serde_json::json!(s.dtype.name()),
                    "shape" => serde_json::json!(s.shape),
                    "chunk_shape" => serde_json::json!(s.chunk_shape),
                    "dimension_names" => serde_json::json!(s.dimension_names),
                    "codec" => serde_json::json!(format!("{:?}", s.codec)),
                    "fill_value" => fill_json(view.array_fill_value(arr).await?.as_ref()),
                    "stats" => match view.array_stats(arr).await? {
                        None => serde_json::Value::Null,
                        Some(st) => {
                            serde_json::json!({"row_count": st.row_count, "null_count": st.null_count, "min": stat_json(st.min.as_ref()), "max": stat_json(st.max.as_ref())})
                        }
                    },
                    _ => return Err(nodata()),
                };
                Ok(json.to_string().into_bytes())
            }
            _ => Err(nodata()),
        }
    }

    /// Sets a dataset attribute. The value is JSON (`1`, `2.5`, `true`, `"text"`,
    /// `"2024-01-01T00:00:00Z"`); anything that is not JSON is stored as a string.
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8]) -> FsResult<()> {
        self.writable()?;
        match self.key(ino)? {
            NodeKey::Dataset(ds) => {
                let key = name.strip_prefix(XATTR_ATTR).ok_or_else(|| FsError::new(libc::ENOTSUP, format!("dataset attributes are named {XATTR_ATTR}<key>")))?;
                if key.is_empty() {
                    return Err(FsError::inval("empty attribute key"));
                }
                let text = std::str::from_utf8(value).map_err(|_| FsError::inval("attribute values must be UTF-8"))?;
                let attr = match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Bool(b)) => Attr::Bool(b),
                    Ok(serde_json::Value::Number(n)) => n.as_i64().map(Attr::Int64).unwrap_or_else(|| Attr::Float64(n.as_f64().unwrap_or(f64::NAN))),
                    Ok(serde_json::Value::String(s)) => Attr::parse_timestamp(&s).map(Attr::TimestampNanoseconds).unwrap_or(Attr::String(s)),
                    Ok(_) => return Err(FsError::inval("attribute values are a bool, number or string")),
                    Err(_) => Attr::String(text.to_string()),
                };
                self.atlas.open_dataset(&ds).await?.set_attribute(key, attr)?;
                Ok(())
            }
            NodeKey::File(..) => Err(FsError::new(libc::EPERM, "array facts are read-only")),
            _ => Err(FsError::new(libc::ENOTSUP, "no attributes here")),
        }
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        match self.key(ino)? {
            NodeKey::Dataset(ds) => {
                let key = name.strip_prefix(XATTR_ATTR).ok_or_else(|| FsError::new(libc::ENODATA, format!("no attribute {name}")))?;
                if self.atlas.open_dataset(&ds).await?.remove_attribute(key)? { Ok(()) } else { Err(FsError::new(libc::ENODATA, format!("no attribute {name}"))) }
            }
            NodeKey::File(..) => Err(FsError::new(libc::EPERM, "array facts are read-only")),
            _ => Err(FsError::new(libc::ENODATA, format!("no attribute {name}"))),
        }
    }

    /// JSON counters for `.atlasfs/stats`.
    pub fn stats_json(&self) -> String {
        let c = &self.counters;
        let bc = &self.atlas.block_cache().counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let v = serde_json::json!({
            "store": self.atlas.location(),
            "datasets": self.atlas.list_datasets().len(),
            "cache": {
                "hits": l(&bc.hits), "misses": l(&bc.misses),
                "bytes_fetched": l(&bc.bytes_fetched), "bytes_decoded": l(&bc.bytes_decoded),
                "decoded_bytes_held": self.atlas.block_cache().weighted_size(),
                "pooled_bytes": self.atlas.block_cache().pooled_bytes(),
            },
            "disk_cache": self.atlas.block_cache().disk.as_ref().map(|d| serde_json::json!({
                "hits": l(&d.counters.hits), "misses": l(&d.counters.misses),
                "bytes_written": l(&d.counters.bytes_written), "evictions": l(&d.counters.evictions),
                "bytes_held": d.size(),
            })),
            "reads": l(&c.reads), "bytes_read": l(&c.bytes_read),
            "writes": l(&c.writes), "bytes_written": l(&c.bytes_written),
            "arrays_committed": l(&c.commits),
            "files_being_written": self.staged.lock().len(),
            "flushes": l(&c.flushes), "refreshes": l(&c.refreshes), "last_flush_unix": l(&c.last_flush_unix),
            "compactions": l(&c.compactions), "last_compaction_unix": l(&c.last_compaction_unix),
        });
        let mut s = serde_json::to_string_pretty(&v).expect("json");
        s.push('\n');
        s
    }
}

/// Extended attribute prefixes.
pub const XATTR_ATTR: &str = "user.atlas.attr.";
pub const XATTR_ARRAY: &str = "user.atlas.";
const ARRAY_XATTRS: [&str; 7] = ["dtype", "shape", "chunk_shape", "dimension_names", "codec", "fill_value", "stats"];

fn fill_json(f: Option<&crate::format::FillValue>) -> serde_json::Value {
    use crate::format::FillValue as F;
    match f {
        None => serde_json::Value::Null,
        Some(F::Bool(b)) => serde_json::json!(b),
        Some(F::Int(i)) | Some(F::TimestampNs(i)) => serde_json::json!(i),
        Some(F::UInt(u)) => serde_json::json!(u),
        Some(F::Float(x)) if x.is_finite() => serde_json::json!(x),
        Some(F::Float(x)) => serde_json::json!(x.to_string()),
        Some(F::String(s)) => serde_json::json!(s),
    }
}

fn stat_json(s: Option<&crate::format::StatValue>) -> serde_json::Value {
    use crate::format::StatValue as S;
    match s {
        None => serde_json::Value::Null,
        Some(S::Int(i)) | Some(S::TimestampNs(i)) => serde_json::json!(i),
        Some(S::UInt(u)) => serde_json::json!(u),
        Some(S::Float(x)) if x.is_finite() => serde_json::json!(x),
        Some(S::Float(x)) => serde_json::json!(x.to_string()),
        Some(S::Bytes(b)) => serde_json::json!(String::from_utf8_lossy(b)),
    }
}

/// `Read` over a file at an advancing offset, without moving a shared cursor.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_read_ahead_follows_out_of_order_sequential_reads() {
        let mb = 1 << 20;
        let mut ra = ReadAhead::default();
        assert_eq!(ra.advance(0, mb, 16 * mb), Some((mb, 3 * mb)));
        // Out of order, inside what was read ahead: still sequential, only the new part.
        assert_eq!(ra.advance(2 * mb, 3 * mb, 16 * mb), Some((3 * mb, 7 * mb)));
        assert_eq!(ra.advance(mb, 2 * mb, 16 * mb), Some((7 * mb, 11 * mb)));
        // A seek closes the window; reading on from there opens it again.
        assert_eq!(ra.advance(100 * mb, 101 * mb, 16 * mb), None);
        assert_eq!(ra.advance(101 * mb, 102 * mb, 16 * mb), Some((102 * mb, 104 * mb)));
        // An empty read (end of file) starts nothing.
        assert_eq!(ra.advance(102 * mb, 102 * mb, 16 * mb), None);
    }
}
