//! Pipelined encoding: the chunks of a `.npy` being written are compressed on every
//! core while its `WRITE`s still arrive, instead of on one core after close.
//!
//! - A staged `<array>.npy` (see `write`) gets an [`Encoder`]. Each `WRITE` records
//!   its byte range once the bytes are in the staged file; the contiguous prefix from
//!   offset 0 is what a sequential writer (`np.save`, `cp`) has finished.
//! - Once the prefix holds the `.npy` header, the geometry is fixed by the rule the
//!   commit uses (dtype, shape, the old array's chunk shape if dtype and shape are
//!   unchanged, else ~`chunk_target_bytes` chunks; the old fill value). C-order
//!   fixed-width data only: Fortran order, strings, empty arrays and arrays under
//!   one block (nothing to spread over cores) leave the encoder idle, and the commit
//!   encodes them as it always did.
//! - Chunks taken in C order of their coordinates complete in the order a sequential
//!   writer writes them. As soon as the prefix covers the chunks for one block (8 MiB
//!   raw, atlas's block size, whole chunks, as the packer closes blocks), they become
//!   a job: read back from the staged file (page cache), byte order fixed,
//!   summarised, packed, compressed on a blocking thread, and the compressed block
//!   appended to the encoder's own temp file. At most one job per core runs at a
//!   time (one process-wide semaphore); a waiting job holds no bytes, so memory is a
//!   few blocks per core whatever the file's size, and a writer faster than the
//!   encoder only lets the staged file (on disk) run ahead.
//! - A write into bytes a job has taken (a rewrite, or out-of-order writes) marks
//!   that job superseded: its chunks are encoded again at close, and its block, if
//!   already written, stays in the file unreferenced (as the chunks a rollback leaves
//!   in the pending layer do). A truncation, or a write into the header, starts the
//!   encoder over.
//! - Close (`commit_staged`): if the commit's geometry is the encoder's, the chunks
//!   not encoded yet (all of them for a random-order writer, which so still gets
//!   every core) are submitted at once, every job is awaited, and the store adopts
//!   the blocks (`DatasetView::replace_array_encoded`, `store/array_file/adopt.rs`):
//!   the same single step under the array file's write lock as before, now without
//!   encoding inside it. Otherwise the serial path encodes the staged bytes.
//! - Reads of the file while it is open still read the staged file, which the
//!   encoder only reads; what is committed is exactly the staged bytes at close.
//! - Once a job's block is written, its bytes are punched out of the staged file
//!   (`fallocate(PUNCH_HOLE)`): the kernel drops those dirty pages instead of writing
//!   them back to disk while the rest arrives (a 4 GiB `np.save` wrote 5.8 GiB to disk
//!   before, the staged file and the blocks). Only where the job's block holds exactly
//!   those bytes (whole-row chunks, little-endian numbers). Anything but appending
//!   (a read of the open file, a write below what jobs have taken, a truncation, a
//!   commit that cannot adopt the blocks) first puts every punched range back from its
//!   block ([`Encoder::restore`]) and stops the punching for that file, so the staged
//!   file reads as written whenever anyone looks. Writes and punches exclude each other
//!   (both under the encoder's lock), so a punched block always holds what the staged
//!   file held, and a job superseded after its punch gets its bytes back before its
//!   chunks are encoded again.
//! - On a remote store, an array larger than one PUT also starts the multipart
//!   upload of the sidecar its blocks will become once the geometry is known
//!   (`store/array_file/upload.rs`): each write of a block reports the temp file's
//!   contiguous written prefix, whose whole parts go out at once; the upload travels
//!   with the blocks into the pending layer and the flush completes it.

use std::ops::Range;
use std::sync::OnceLock;

use tokio::task::JoinHandle;

use super::*;
use crate::format::codec::BlockCompressor;
use crate::format::grid::{Grid, for_each_run};
use crate::format::packer::BLOCK_TARGET;
use crate::format::stats::{ChunkSummary, summarize};
use crate::format::{Codec, DType, FillValue};
use crate::store::array_file::{EarlyUpload, EncodedBlock, EncodedBlocks, PARTS_EARLY, SINGLE_PUT_LIMIT, UPLOADS_ABORTED, UPLOADS_EARLY};

/// What `.atlasfs/stats` shows of the encoders (process-wide).
static BLOCKS_ENCODED: AtomicU64 = AtomicU64::new(0);
static BLOCKS_SUPERSEDED: AtomicU64 = AtomicU64::new(0);
static COMMITS_PIPELINED: AtomicU64 = AtomicU64::new(0);
static COMMITS_SERIAL: AtomicU64 = AtomicU64::new(0);

/// Encode jobs running at once, process-wide: one per core.
fn permits() -> &'static tokio::sync::Semaphore {
    static P: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    P.get_or_init(|| tokio::sync::Semaphore::new(permits_total()))
}

fn permits_total() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// What one job works in: the block's raw bytes, one chunk, the compressor and its
/// output. Kept between jobs (one set per permit), so a large write does not map and
/// fault in ~20 MiB of fresh buffers per 8 MiB block (src/cli fixes glibc's mmap
/// threshold at 2 MiB, so every such buffer is a fresh mapping).
#[derive(Default)]
struct Scratch {
    raw: Vec<u8>,
    chunk: Vec<u8>,
    compressor: BlockCompressor,
}

static SCRATCH: parking_lot::Mutex<Vec<Scratch>> = parking_lot::Mutex::new(Vec::new());

/// Staged bytes punched out once encoded, and punched ranges put back, process-wide.
pub(super) static STAGED_PUNCHED: AtomicU64 = AtomicU64::new(0);
pub(super) static STAGED_RESTORED: AtomicU64 = AtomicU64::new(0);

/// Deallocates `len` bytes at `off` of `file` (they read as zeros; the size stays).
fn punch_hole(file: &File, off: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off as libc::off_t, len as libc::off_t) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// What the chunks of the file being written will be.
struct Geo {
    hl: u64,
    et: npy::ElementType,
    dtype: DType,
    shape: Vec<usize>,
    grid: Grid,
    per_axis: Vec<usize>,
    strides: Vec<usize>,
    nchunks: usize,
    fill: Option<FillValue>,
    codec: Codec,
}

impl Geo {
    fn coord(&self, mut k: usize) -> Vec<u32> {
        let mut c = vec![0u32; self.per_axis.len()];
        for i in (0..c.len()).rev() {
            c[i] = (k % self.per_axis[i]) as u32;
            k /= self.per_axis[i];
        }
        c
    }

    /// File bytes from the chunk's first element to just past its last.
    fn span(&self, k: usize) -> (u64, u64) {
        let (start, ext) = self.grid.chunk_box(&self.coord(k));
        let first: usize = start.iter().zip(&self.strides).map(|(s, k)| s * k).sum();
        let last: usize = start.iter().zip(&ext).zip(&self.strides).map(|((s, e), k)| (s + e - 1) * k).sum();
        let isz = self.et.itemsize as u64;
        (self.hl + first as u64 * isz, self.hl + (last as u64 + 1) * isz)
    }

    fn raw_len(&self, k: usize) -> usize {
        self.grid.chunk_len(&self.coord(k)) * self.et.itemsize
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the header bytes.
    Header,
    /// Header read; the geometry is being looked up.
    Resolving,
    Ready,
    /// Nothing to pipeline (not C-order fixed-width data, or a bad header).
    Off,
}

struct Job {
    chunks: Range<usize>,
    /// File bytes the job reads (its chunks' spans).
    lo: u64,
    hi: u64,
    superseded: std::sync::atomic::AtomicBool,
}

struct State {
    /// Merged byte ranges written so far.
    ranges: Vec<(u64, u64)>,
    phase: Phase,
    /// Bumped by every restart: a geometry looked up before one is not used.
    epoch: u64,
    /// Header bytes, once known (a write into them restarts the encoder).
    hl: u64,
    geo: Option<Arc<Geo>>,
    /// First chunk not yet in a job.
    next: usize,
    jobs: Vec<Arc<Job>>,
    /// Chunks of superseded jobs, encoded again at close.
    redo: Vec<Range<usize>>,
    handles: Vec<JoinHandle<()>>,
    /// The compressed blocks, and how far they fill it.
    out: Option<Arc<File>>,
    out_len: u64,
    done: Vec<(Arc<Job>, EncodedBlock)>,
    failed: Option<String>,
    /// Byte ranges of `out` written so far, and the early upload fed from it.
    written: Vec<(u64, u64)>,
    upload: Option<EarlyUpload>,
    upload_tried: bool,
    /// Ranges punched out of the staged file, each with the block that holds its bytes
    /// (kept past `reset_output`: the committed blocks' file stays open for them).
    punched: Vec<Punched>,
    /// Set once the staged file was touched other than by appending: no more punching.
    keep_staged: bool,
    /// End of the highest job's bytes: a write below it is not an append.
    taken_hi: u64,
}

/// Staged bytes `lo..lo + raw` punched out; they are block `at..at + zlen` of `out`.
struct Punched {
    out: Arc<File>,
    at: u64,
    zlen: u64,
    raw: u64,
    lo: u64,
    codec: Codec,
}

/// The pipelined encoder of one staged file.
pub(super) struct Encoder {
    /// The staged file (a second descriptor of it).
    file: Arc<File>,
    /// Where the blocks' file is made (a local store's directory: the flush links it).
    spill_dir: Option<std::path::PathBuf>,
    st: Mutex<State>,
}

impl Encoder {
    pub(super) fn new(file: &File, spill_dir: Option<std::path::PathBuf>) -> std::io::Result<Arc<Encoder>> {
        let st = State {
            ranges: vec![],
            phase: Phase::Header,
            epoch: 0,
            hl: 0,
            geo: None,
            next: 0,
            jobs: vec![],
            redo: vec![],
            handles: vec![],
            out: None,
            out_len: 0,
            done: vec![],
            failed: None,
            written: vec![],
            upload: None,
            upload_tried: false,
            punched: vec![],
            keep_staged: false,
            taken_hi: 0,
        };
        Ok(Arc::new(Encoder { file: Arc::new(file.try_clone()?), spill_dir, st: Mutex::new(st) }))
    }

    /// The file the compressed blocks go to, made on first use (in the store's
    /// directory when the flush can link it there).
    fn out_file(&self, st: &mut State) -> std::io::Result<Arc<File>> {
        if st.out.is_none() {
            st.out = Some(Arc::new(crate::store::array_file::spill_file(self.spill_dir.as_deref())?));
        }
        Ok(st.out.clone().expect("made above"))
    }

    /// The staged file was truncated to `len`: start over.
    pub(super) fn truncated(&self, len: u64) {
        let mut st = self.st.lock();
        for r in st.ranges.iter_mut() {
            r.1 = r.1.min(len);
        }
        st.ranges.retain(|r| r.0 < r.1);
        Self::restart(&mut st);
    }

    fn restart(st: &mut State) {
        for j in &st.jobs {
            j.superseded.store(true, Ordering::Relaxed);
        }
        st.redo.clear();
        st.next = 0;
        st.geo = None;
        st.phase = Phase::Header;
        st.hl = 0;
        st.epoch += 1;
    }

    /// Writes `data` at `lo` into the staged file, under the encoder's lock so that no
    /// punch runs meanwhile. A write below what jobs have taken is not an append, so
    /// the punched bytes come back first and punching stops (a job encoded now must
    /// not punch out bytes this write replaces).
    pub(super) fn write_staged(&self, file: &File, data: &[u8], lo: u64) -> std::io::Result<()> {
        let mut st = self.st.lock();
        if lo < st.taken_hi {
            st.keep_staged = true;
            Self::restore(&mut st, &self.file)?;
        }
        file.write_all_at(data, lo)
    }

    /// Puts every punched range of the staged file back and stops punching: before
    /// the staged file is read (a `READ` of the open file, a commit that cannot adopt
    /// the blocks) or truncated.
    pub(super) fn keep_staged(&self) -> std::io::Result<()> {
        let mut st = self.st.lock();
        st.keep_staged = true;
        Self::restore(&mut st, &self.file)
    }

    fn restore(st: &mut State, file: &File) -> std::io::Result<()> {
        while let Some(p) = st.punched.last() {
            let mut z = vec![0u8; p.zlen as usize];
            p.out.read_exact_at(&mut z, p.at)?;
            let raw = crate::format::codec::decompress_block(&p.codec.id(), &z, p.raw as usize).map_err(std::io::Error::other)?;
            file.write_all_at(&raw, p.lo)?;
            st.punched.pop();
            STAGED_RESTORED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a job's block holds exactly the staged bytes `lo..hi` in order: each
    /// chunk one contiguous run (whole rows), each following the last, bytes unchanged.
    fn block_is_staged_bytes(geo: &Geo, chunks: &Range<usize>) -> bool {
        if !geo.et.fix_is_identity() {
            return false;
        }
        let mut at = None;
        for k in chunks.clone() {
            let (lo, hi) = geo.span(k);
            if hi - lo != geo.raw_len(k) as u64 || at.is_some_and(|a| a != lo) {
                return false;
            }
            at = Some(hi);
        }
        true
    }

    fn prefix(st: &State) -> u64 {
        st.ranges.first().filter(|r| r.0 == 0).map_or(0, |r| r.1)
    }

    /// Records a write of `lo..hi`; supersedes the jobs that read bytes in it.
    fn note(&self, lo: u64, hi: u64) {
        let mut st = self.st.lock();
        if hi > lo {
            add_range(&mut st.ranges, lo, hi);
        }
        if st.phase == Phase::Off || hi <= lo {
            return;
        }
        if lo < st.hl {
            Self::restart(&mut st);
            return;
        }
        let mut redo = vec![];
        for j in &st.jobs {
            if j.lo < hi && lo < j.hi && !j.superseded.swap(true, Ordering::Relaxed) {
                redo.push(j.chunks.clone());
            }
        }
        // A job taken just before this write landed may have been punched since: its
        // chunks are encoded again from the staged file, so its bytes come back (its
        // block holds what the staged file held when it was punched).
        if !redo.is_empty() && !st.punched.is_empty() {
            st.keep_staged = true;
            if let Err(e) = Self::restore(&mut st, &self.file) {
                st.failed.get_or_insert(format!("putting punched staged bytes back: {e}"));
            }
        }
        st.redo.extend(redo);
    }

    /// The header, once the prefix (or with `all`, the whole file) holds it.
    fn header(&self, all: bool, len: u64) -> Option<Result<(npy::NpyHeader, u64), ()>> {
        let mut st = self.st.lock();
        if st.phase != Phase::Header {
            return None;
        }
        let have = if all { len } else { Self::prefix(&st) };
        if have < 10 {
            return None;
        }
        let mut buf = vec![0u8; have.min(1 << 16) as usize];
        if self.file.read_exact_at(&mut buf, 0).is_err() {
            st.phase = Phase::Off;
            return Some(Err(()));
        }
        match npy::read_header(&mut &buf[..]) {
            Ok(h) => {
                let fixed = h.element_type().is_ok_and(|et| et.is_fixed_width());
                let empty = h.shape.is_empty() || h.shape.contains(&0);
                if h.fortran_order || !fixed || empty || h.data_len().is_err() {
                    st.phase = Phase::Off;
                    return Some(Err(()));
                }
                st.phase = Phase::Resolving;
                st.hl = h.header_len as u64;
                Some(Ok((h, st.epoch)))
            }
            Err(npy::NpyError::Truncated(_)) if !all => None,
            Err(_) => {
                st.phase = Phase::Off;
                Some(Err(()))
            }
        }
    }

    /// Forms and starts the jobs the prefix (or with `all`, the whole file) allows.
    fn advance(self: &Arc<Self>, all: bool) {
        let mut st = self.st.lock();
        let Some(geo) = st.geo.clone() else { return };
        let prefix = Self::prefix(&st);
        let complete = |k: usize| all || geo.span(k).1 <= prefix;
        let mut groups = vec![];
        if all {
            for r in std::mem::take(&mut st.redo) {
                groups.extend(Self::blocks_of(&geo, r, &|_| true, true));
            }
        }
        let fresh = Self::blocks_of(&geo, st.next..geo.nchunks, &complete, all);
        if let Some(last) = fresh.last() {
            st.next = last.end;
        }
        groups.extend(fresh);
        for chunks in groups {
            self.start(&mut st, &geo, chunks);
        }
    }

    /// Splits `range` into blocks' worth of complete chunks; a short last group
    /// only at the end of the array (or with `all`).
    fn blocks_of(geo: &Geo, range: Range<usize>, complete: &dyn Fn(usize) -> bool, all: bool) -> Vec<Range<usize>> {
        let mut out = vec![];
        let mut k = range.start;
        while k < range.end {
            let (mut end, mut raw) = (k, 0);
            while end < range.end && raw < BLOCK_TARGET && complete(end) {
                raw += geo.raw_len(end);
                end += 1;
            }
            if end == k || (raw < BLOCK_TARGET && end < geo.nchunks && !all) {
                break;
            }
            out.push(k..end);
            k = end;
        }
        out
    }

    fn start(self: &Arc<Self>, st: &mut State, geo: &Arc<Geo>, chunks: Range<usize>) {
        let (lo, hi) = (geo.span(chunks.start).0, geo.span(chunks.end - 1).1);
        let job = Arc::new(Job { chunks, lo, hi, superseded: Default::default() });
        st.jobs.push(job.clone());
        st.taken_hi = st.taken_hi.max(hi);
        let (me, geo) = (self.clone(), geo.clone());
        st.handles.push(tokio::spawn(async move {
            let Ok(_permit) = permits().acquire().await else { return };
            if job.superseded.load(Ordering::Relaxed) {
                return;
            }
            let me2 = me.clone();
            let j = job.clone();
            let res = tokio::task::spawn_blocking(move || me2.encode(&geo, &j)).await;
            let err = match res {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            me.st.lock().failed.get_or_insert(err);
        }));
    }

    /// One job: its chunks read back, packed into one block, compressed, appended.
    fn encode(&self, geo: &Geo, job: &Arc<Job>) -> std::io::Result<()> {
        let mut scratch = SCRATCH.lock().pop().unwrap_or_default();
        let res = self.encode_with(geo, job, &mut scratch);
        let mut pool = SCRATCH.lock();
        if pool.len() < permits_total() {
            pool.push(scratch);
        }
        res
    }

    fn encode_with(&self, geo: &Geo, job: &Arc<Job>, scratch: &mut Scratch) -> std::io::Result<()> {
        let isz = geo.et.itemsize;
        let zeros = vec![0usize; geo.shape.len()];
        let Scratch { raw, chunk, compressor } = scratch;
        raw.clear();
        let mut chunks = vec![];
        for k in job.chunks.clone() {
            let coord = geo.coord(k);
            let (cstart, cext) = geo.grid.chunk_box(&coord);
            let mut buf = std::mem::take(chunk);
            buf.clear();
            buf.resize(cext.iter().product::<usize>() * isz, 0);
            let mut res = Ok(());
            for_each_run(&geo.shape, &cstart, &cext, &zeros, &cext, |s, d, n| {
                if res.is_ok() {
                    res = self.file.read_exact_at(&mut buf[d * isz..(d + n) * isz], geo.hl + (s * isz) as u64);
                }
            });
            geo.et.fix_in_place(&mut buf);
            let cells = Cells::Fixed { elsize: isz, bytes: buf };
            let summary: ChunkSummary = summarize(&geo.dtype, geo.fill.as_ref(), &cells);
            let Cells::Fixed { bytes, .. } = cells else { unreachable!() };
            *chunk = bytes;
            res?;
            let off = raw.len();
            raw.extend_from_slice(chunk);
            chunks.push((coord, off as u32, (raw.len() - off) as u32, summary));
        }
        let z = compressor.compress(geo.codec, raw);
        let (out, at) = {
            let mut st = self.st.lock();
            let out = self.out_file(&mut st)?;
            let at = st.out_len;
            st.out_len += z.len() as u64;
            (out, at)
        };
        let written = out.write_all_at(z, at);
        let mut st = self.st.lock();
        if let Err(e) = written {
            st.failed.get_or_insert(e.to_string());
            return Ok(());
        }
        // Only blocks in the file that is still this encoder's count.
        BLOCKS_ENCODED.fetch_add(1, Ordering::Relaxed);
        if st.out.as_ref().is_some_and(|o| Arc::ptr_eq(o, &out)) {
            add_range(&mut st.written, at, at + z.len() as u64);
            let prefix = Self::prefix_of(&st.written);
            if let Some(up) = &st.upload {
                up.ready(prefix);
            }
            st.done.push((job.clone(), EncodedBlock { file_offset: at, compressed_size: z.len() as u64, raw_size: raw.len() as u64, chunks }));
            // The block now holds these staged bytes: drop them from the temp file
            // before the kernel writes them back (see the design note).
            if !st.keep_staged && !job.superseded.load(Ordering::SeqCst) && Self::block_is_staged_bytes(geo, &job.chunks) {
                match punch_hole(&self.file, job.lo, job.hi - job.lo) {
                    Ok(()) => {
                        st.punched.push(Punched { out: out.clone(), at, zlen: z.len() as u64, raw: raw.len() as u64, lo: job.lo, codec: geo.codec });
                        STAGED_PUNCHED.fetch_add(job.hi - job.lo, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // A filesystem without hole punching: the staged file stays whole.
                        tracing::debug!(error = %e, "cannot punch encoded bytes out of the staged file; keeping them");
                        st.keep_staged = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets everything encoded (the blocks were adopted, or will not be).
    fn reset_output(st: &mut State) {
        Self::restart(st);
        st.jobs.clear();
        st.out = None;
        st.out_len = 0;
        st.done.clear();
        st.failed = None;
        st.written.clear();
        st.upload = None; // dropped: aborted, unless collected
        st.upload_tried = false;
    }

    fn prefix_of(ranges: &[(u64, u64)]) -> u64 {
        ranges.first().filter(|r| r.0 == 0).map_or(0, |r| r.1)
    }
}

impl AtlasFs {
    /// Makes an encoder for a newly staged file of an array name.
    pub(super) fn new_encoder(&self, name: &str, file: &File) -> Option<Arc<Encoder>> {
        array_of(name)?;
        Encoder::new(file, self.atlas.spill_dir()).map_err(|e| tracing::debug!(error = %e, "no pipelined encoder; the file is encoded at close")).ok()
    }

    /// After a write of `lo..hi` into the staged `ds/name`: starts the jobs it completes.
    pub(super) async fn encoder_wrote(&self, ds: &str, name: &str, enc: &Arc<Encoder>, lo: u64, hi: u64) {
        enc.note(lo, hi);
        self.encoder_advance(ds, name, enc, false, 0).await;
    }

    async fn encoder_advance(&self, ds: &str, name: &str, enc: &Arc<Encoder>, all: bool, len: u64) {
        if let Some(Ok((h, epoch))) = enc.header(all, len) {
            let geo = self.encoder_geometry(ds, name, &h).await;
            let mut st = enc.st.lock();
            if st.phase == Phase::Resolving && st.epoch == epoch {
                match geo {
                    Some(g) => {
                        st.geo = Some(Arc::new(g));
                        st.phase = Phase::Ready;
                    }
                    None => st.phase = Phase::Off,
                }
            }
        }
        if !all {
            self.encoder_early_upload(name, enc);
        }
        enc.advance(all);
    }

    /// Starts the early multipart upload of the sidecar (remote stores, arrays over
    /// one PUT; `store/array_file/upload.rs`), once, in the background.
    fn encoder_early_upload(&self, name: &str, enc: &Arc<Encoder>) {
        let (out, file) = {
            let mut st = enc.st.lock();
            let Some(geo) = st.geo.clone() else { return };
            if st.phase != Phase::Ready || st.upload_tried {
                return;
            }
            st.upload_tried = true;
            let raw = geo.shape.iter().product::<usize>() as u64 * geo.et.itemsize as u64;
            if raw <= SINGLE_PUT_LIMIT {
                return;
            }
            let Ok(out) = enc.out_file(&mut st) else { return };
            let Ok(file) = out.try_clone() else { return };
            (out, file)
        };
        let Some(arr) = array_of(name).map(str::to_string) else { return };
        let (atlas, enc) = (self.atlas.clone(), enc.clone());
        tokio::spawn(async move {
            let up = atlas.early_upload(&arr, file).await;
            let mut st = enc.st.lock();
            if let Some(up) = up
                && st.out.as_ref().is_some_and(|o| Arc::ptr_eq(o, &out))
            {
                up.ready(Encoder::prefix_of(&st.written));
                st.upload = Some(up);
            }
        });
    }

    /// The geometry the commit will give the file (see `commit_staged`).
    async fn encoder_geometry(&self, ds: &str, name: &str, h: &npy::NpyHeader) -> Option<Geo> {
        let arr = array_of(name)?;
        // Less than a block: one job either way, and the close's serial path has no
        // temp file of blocks to copy (a `cp -r` of many small files).
        if h.data_len().ok()? < BLOCK_TARGET {
            return None;
        }
        let et = h.element_type().ok()?;
        let shape = h.shape.clone();
        let (chunk, fill) = self.staged_chunking(ds, arr, &et.dtype, &shape).await.ok()?;
        let grid = Grid::new(shape.clone(), chunk.clone());
        let per_axis = grid.chunks_per_axis();
        let nchunks = per_axis.iter().product();
        if chunk.iter().product::<usize>().checked_mul(et.itemsize).is_none_or(|n| n > u32::MAX as usize) {
            return None;
        }
        let mut strides = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        Some(Geo { hl: h.header_len as u64, dtype: et.dtype.clone(), et, shape, grid, per_axis, strides, nchunks, fill, codec: self.atlas.codec() })
    }

    /// At the commit of a staged file of `len` bytes whose header is `h` and whose
    /// new definition is `def`: every chunk's block, encoded on every core, or None
    /// if the encoder's geometry is not the commit's (the caller then encodes).
    pub(super) async fn encoded_blocks(&self, ds: &str, name: &str, enc: &Arc<Encoder>, h: &npy::NpyHeader, def: &ArrayDef, len: u64) -> Option<EncodedBlocks> {
        self.encoder_advance(ds, name, enc, true, len).await;
        let handles = std::mem::take(&mut enc.st.lock().handles);
        for hd in handles {
            let _ = hd.await;
        }
        let mut st = enc.st.lock();
        let ready = st.phase == Phase::Ready;
        let res = Self::collect(&mut st, h, def);
        Encoder::reset_output(&mut st);
        match &res {
            Some(_) => COMMITS_PIPELINED.fetch_add(1, Ordering::Relaxed),
            None if ready => COMMITS_SERIAL.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        res
    }

    /// The encoders' part of `.atlasfs/stats`.
    pub(super) fn encoder_stats(&self) -> serde_json::Value {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "blocks_encoded": l(&BLOCKS_ENCODED), "blocks_superseded": l(&BLOCKS_SUPERSEDED),
            "commits_pipelined": l(&COMMITS_PIPELINED), "commits_encoded_at_close": l(&COMMITS_SERIAL),
            "early_uploads": l(&UPLOADS_EARLY), "early_upload_parts": l(&PARTS_EARLY), "early_uploads_aborted": l(&UPLOADS_ABORTED),
            "sidecars_linked": crate::store::array_file::sidecars_linked(),
            "staged_bytes_punched": l(&STAGED_PUNCHED), "staged_ranges_restored": l(&STAGED_RESTORED),
        })
    }

    fn collect(st: &mut State, h: &npy::NpyHeader, def: &ArrayDef) -> Option<EncodedBlocks> {
        let geo = st.geo.clone()?;
        let same = st.phase == Phase::Ready
            && st.failed.is_none()
            && geo.hl == h.header_len as u64
            && h.element_type().ok().as_ref() == Some(&geo.et)
            && geo.shape == def.shape
            && def.chunk_shape.as_ref() == Some(&geo.grid.chunk)
            && def.fill == geo.fill
            && def.dtype == geo.dtype;
        if !same {
            return None;
        }
        let mut done = std::mem::take(&mut st.done);
        done.sort_by_key(|(_, b)| b.file_offset);
        let mut covered = 0;
        let mut blocks = Vec::with_capacity(done.len());
        for (job, mut b) in done {
            if job.superseded.load(Ordering::Relaxed) {
                BLOCKS_SUPERSEDED.fetch_add(1, Ordering::Relaxed);
                b.chunks.clear();
            }
            covered += b.chunks.len();
            blocks.push(b);
        }
        let end = blocks.last().map_or(0, |b| b.file_offset + b.compressed_size);
        if covered != geo.nchunks || end != st.out_len {
            tracing::debug!(covered, chunks = geo.nchunks, "pipelined blocks incomplete; encoding at close");
            return None;
        }
        let file = st.out.as_ref()?.try_clone().ok()?;
        Some(EncodedBlocks { codec: geo.codec, file, blocks, upload: st.upload.take() })
    }
}
