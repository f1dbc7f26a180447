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
//!   `.atlasfs/compact` compacts it. Other changes are flushed by the write-back
//!   timer within `writeback_delay`.
//!
//! One room per concern, each an `impl AtlasFs` block: `namespace` (lookups,
//! listings, mkdir/rmdir/unlink/rename/setattr), `open` (which handle a descriptor
//! gets), `read` (byte ranges → chunks, read-ahead), `read_into` (a READ's boxes
//! straight into the reply), `write` (staging, commits,
//! flush), `versions` (what open readers keep when an array changes under them),
//! `xattr`, `control` (`.atlasfs/` files), `writeback` (the flush timer), `encoder`
//! (chunks of a file being written, compressed while it arrives). This file holds the shared state: the
//! inode table, handles and the small lookups every room uses.

mod autocompact;
mod control;
mod encoder;
mod forget;
mod namespace;
mod open;
mod passthrough;
mod read;
mod read_into;
mod versions;
mod write;
mod writeback;
mod xattr;
mod zarr_view;

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
use super::spool::{Spool, SpoolConfig, SpoolFile};
use super::stacked::Stack;
use crate::format::cells::Cells;
use crate::store::{ArrayDef, ArraySchema, Atlas, Attr, validate_name};

use encoder::Encoder;
use passthrough::*;
use read::*;
use versions::*;
use write::*;

pub use xattr::{XATTR_ARRAY, XATTR_ATTR};

pub const ROOT_INO: u64 = 1;
pub const CONTROL_DIR_INO: u64 = 2;
pub const CONTROL_DIR: &str = ".atlasfs";
pub const STACKED_DIR_INO: u64 = 6;
pub const STACKED_DIR: &str = "stacked";
const FIRST_DYNAMIC_INO: u64 = 16;

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
    /// Decoded arrays on local disk for passthrough reads (see [`super::spool`]);
    /// None turns passthrough off.
    pub spool: Option<SpoolConfig>,
    /// Arrays whose `.npy` is smaller than this are not passed through: a warm read
    /// of a small file from the FUSE page cache costs fewer round trips than
    /// passthrough, whose reads make the kernel ask for attributes again.
    pub passthrough_min_bytes: u64,
    /// How long a change made through the mount may wait before a flush writes it
    /// (see `writeback`); zero flushes in the request that made it.
    pub writeback_delay: Duration,
    /// Sidecars an array file may have before it is compacted in the background
    /// (see `autocompact`); 0 never compacts automatically.
    pub max_layers: usize,
    /// Bytes a `.atlasfs/zarr/_stacked` chunk aims at (as many datasets' chunks as
    /// fit); 0: one dataset's chunk per zarr chunk (see `zarr`).
    pub zarr_stack_chunk_bytes: usize,
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
            spool: None,
            passthrough_min_bytes: 1 << 20,
            writeback_delay: Duration::from_secs(2),
            max_layers: 16,
            zarr_stack_chunk_bytes: crate::fs::zarr::STACK_CHUNK_BYTES,
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
    /// `.atlasfs/zarr/` and everything under it: the path components below it.
    Zarr(Vec<String>),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (control files, whose size is not known up front).
    pub direct_io: bool,
    /// Cached pages of this file are still valid.
    pub keep_cache: bool,
    /// Opened for reading only: its close has nothing to commit.
    pub read_only: bool,
    /// The kernel may read this spool file itself (FUSE passthrough): the adapter
    /// registers it as the open's backing file, or calls
    /// [`AtlasFs::passthrough_refused`] if it cannot.
    pub backing: Option<SpoolFile>,
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
        /// The spool file this descriptor's reads are filling, if it is the first
        /// reader of this version (see [`passthrough`]).
        filling: Mutex<Option<Filling>>,
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
    /// Decoded arrays for passthrough opens; None when passthrough is off.
    spool: Option<Arc<Spool>>,
    /// How the kernel does I/O on each open file (see [`passthrough`]).
    io: Mutex<IoModes>,
    /// Passthrough is on (cleared when the kernel refuses it).
    passthrough_on: std::sync::atomic::AtomicBool,
    /// One background spool fill at a time.
    fills: Arc<tokio::sync::Semaphore>,
    /// This filesystem, for work it starts in the background.
    me: std::sync::OnceLock<std::sync::Weak<AtlasFs>>,
    /// The zarr view's cached group models.
    zarr: crate::fs::zarr::ZarrView,
    /// Kernel references to the zarr view's inodes, which FORGET releases (see `forget`).
    lookups: forget::Lookups,
    /// The write-back timer (see `writeback`).
    writeback: writeback::Writeback,
    /// The automatic compaction task (see `autocompact`).
    autocompact: autocompact::AutoCompact,
}

/// `<array>.npy` → `<array>`.
fn array_of(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".npy").filter(|a| validate_name(a).is_ok())
}

/// Hidden names are tools' temp files (rsync's `.name.XXXXXX`, editors' swap files).
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.len() > 1 && name != ".."
}

/// Adds `lo..hi` to sorted, merged byte ranges, keeping them sorted and merged
/// (the written ranges of an overlay or a staged file, the filled ranges of a spool file).
fn add_range(ranges: &mut Vec<(u64, u64)>, lo: u64, hi: u64) {
    ranges.push((lo, hi));
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *ranges = merged;
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AtlasFs {
    pub fn new(atlas: Atlas, cfg: FsConfig) -> Self {
        let zarr_stack_chunk_bytes = cfg.zarr_stack_chunk_bytes;
        let spool = cfg.spool.as_ref().and_then(|c| match Spool::new(c) {
            Ok(s) => {
                tracing::debug!(dir = %s.path().display(), budget = c.budget, "spool for passthrough reads");
                Some(Arc::new(s))
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = ?c.dir, "cannot create the spool directory; passthrough reads are off");
                None
            }
        });
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
            passthrough_on: std::sync::atomic::AtomicBool::new(spool.is_some()),
            spool,
            io: Mutex::new(IoModes::default()),
            fills: Arc::new(tokio::sync::Semaphore::new(1)),
            me: std::sync::OnceLock::new(),
            zarr: crate::fs::zarr::ZarrView::new(zarr_stack_chunk_bytes),
            lookups: Default::default(),
            writeback: Default::default(),
            autocompact: Default::default(),
        }
    }

    /// Lets the filesystem start work in the background (spool fills); call once
    /// it is shared.
    pub fn attach(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
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
        if let Some(s) = &self.spool {
            s.invalidate(&(ds.to_string(), arr.to_string()));
        }
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

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned().ok_or_else(|| FsError::new(libc::EBADF, format!("no open file {fh}")))
    }
}
