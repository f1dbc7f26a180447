//! Read-ahead of a remote layer as one long streaming GET per sequential reader,
//! paced by the reader and decoded while it streams.
//!
//! A sequential reader's read-ahead (`fs::core::read`) asks for half a window at a time
//! (32 MiB of a 64 MiB remote window). Profiled on moto (512 MiB array, loopback): a
//! ranged GET of a 512 MiB object costs moto ~1 s however short the range (it reads
//! the whole object), and concurrent GETs do not overlap (one Python process), so
//! time grew with the number of GETs: 16 pieces of 32 MiB took 8.7 s where rclone's 3
//! GETs took 5.6 s. So the first read-ahead of a run of adjacent blocks opens one
//! ranged GET from its first block to the end of the layer's blocks, and the later
//! read-ahead requests of the same reader that continue it (the next blocks in file
//! order, gaps of up to [`GAP_MAX`] skipped) are queued onto that stream instead of
//! becoming new GETs: one GET per reader and layer, however long the file.
//!
//! The stream reads its body only as far as the blocks asked for: once they are all
//! in, it stops reading (TCP holds the server back), so memory stays within the
//! reader's window. Every block goes to the decoded cache as soon as its last byte is
//! in, while the rest streams. A stream nobody extends for [`IDLE`] ends (the
//! connection is dropped), as does one whose [`Owner`] is cancelled: the descriptor's
//! read-ahead owner cancels on its last close, so a read-ahead no reader will use
//! stops at once (blocks already decoded stay in the cache, within its budget). At
//! most [`STREAMS`] GETs stream at once per process; a stream waiting for its reader
//! to ask for more gives its permit back meanwhile.
//!
//! Each block is registered in [`IN_FLIGHT`] before it is queued, and the cache's
//! block load looks there first, so a read that reaches a block still in flight
//! waits for it instead of fetching it again. If the GET fails, is cut short or is
//! cancelled, the blocks it had not delivered fall back to the ordinary fetch of one
//! block (ranged parts, each retried within `--retries`); nothing fails because of a
//! stream.
//!
//! Only for remote stores: a local directory's ranged GET streams in 8 KiB reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;

use super::cache::BlockCache;
use super::layer::Layer;
use crate::format::BlockMeta;

/// Runs shorter than this go as ranged parts instead (one block of a few MiB is
/// fetched faster in parallel parts than over one connection), unless they continue
/// a stream.
pub const STREAM_MIN: u64 = 8 << 20;
/// Streaming GETs in flight at once, across the process.
pub const STREAMS: usize = 4;
/// A request that starts at most this far past the end of a stream's last block joins
/// it (the bytes between are read and dropped) instead of opening a GET.
pub const GAP_MAX: u64 = 8 << 20;
/// A stream with nothing asked of it for this long ends.
pub const IDLE: Duration = Duration::from_secs(2);

static STREAM_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(STREAMS);

/// Whether `store` serves a ranged GET as a stream worth using (remote stores); a
/// local directory or memory is read directly, block by block.
pub fn streams_well(store: &dyn ObjectStore) -> bool {
    let name = store.to_string();
    !(name.starts_with("LocalFileSystem") || name.starts_with("InMemory"))
}

/// Whom a read-ahead works for: streams started under an owner (see [`Owner::scope`])
/// are its own, joined only by its later read-ahead, and end when it is cancelled.
#[derive(Clone)]
pub struct Owner(Arc<OwnerInner>);

struct OwnerInner {
    id: u64,
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
}

static OWNER_IDS: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    static OWNER: Owner;
}

impl Owner {
    fn new() -> Self {
        Owner(Arc::new(OwnerInner { id: OWNER_IDS.fetch_add(1, Ordering::Relaxed), cancelled: AtomicBool::new(false), notify: Default::default() }))
    }

    /// Runs `f` (a read-ahead) on behalf of this owner.
    pub fn scope<F: std::future::Future>(&self, f: F) -> impl std::future::Future<Output = F::Output> {
        OWNER.scope(self.clone(), f)
    }

    fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    async fn cancelled(&self) {
        loop {
            let n = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            n.await;
        }
    }
}

/// The read-ahead owner of one descriptor: dropping it (the descriptor's last close)
/// cancels the streams it started.
pub struct ReadAheadOwner(Owner);

impl Default for ReadAheadOwner {
    fn default() -> Self {
        ReadAheadOwner(Owner::new())
    }
}

impl ReadAheadOwner {
    pub fn owner(&self) -> Owner {
        self.0.clone()
    }
}

impl Drop for ReadAheadOwner {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Streams in flight and counters (tests and `.atlasfs/stats`-style checks).
static STREAMS_OPEN: AtomicU64 = AtomicU64::new(0);
static STREAMS_CANCELLED: AtomicU64 = AtomicU64::new(0);

/// (streaming GETs open now, streams ended by their owner's cancellation so far).
pub fn stream_counts() -> (u64, u64) {
    (STREAMS_OPEN.load(Ordering::Relaxed), STREAMS_CANCELLED.load(Ordering::Relaxed))
}

/// Cuts `blocks` (one layer's, uncached) into runs of adjacent blocks in file order,
/// each run into pieces of about `piece` bytes of whole blocks.
pub fn pieces(mut blocks: Vec<BlockMeta>, piece: u64) -> Vec<Vec<BlockMeta>> {
    blocks.sort_by_key(|b| b.file_offset);
    blocks.dedup_by_key(|b| b.id.0);
    let mut out: Vec<Vec<BlockMeta>> = vec![];
    for b in blocks {
        match out.last_mut() {
            Some(p)
                if p.last().is_some_and(|l| l.file_offset + l.compressed_size == b.file_offset)
                    && p.iter().map(|x| x.compressed_size).sum::<u64>() + b.compressed_size <= piece.max(1) =>
            {
                p.push(b)
            }
            _ => out.push(vec![b]),
        }
    }
    out
}

type Waiting = futures::future::Shared<futures::future::BoxFuture<'static, Option<Bytes>>>;

/// Blocks a stream has been started for and not yet decoded, by (layer id, block
/// id): a read that needs one waits for its bytes here instead of fetching it again.
static IN_FLIGHT: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashMap<(u64, u32), Waiting>>> = std::sync::LazyLock::new(Default::default);

/// The bytes of block `(layer, block)` when a stream is bringing them: `None` from
/// the future if the stream failed before it (fetch it then).
pub fn waiting(layer: u64, block: u32) -> Option<Waiting> {
    IN_FLIGHT.lock().get(&(layer, block)).cloned()
}

/// Whether a stream is bringing block `(layer, block)`.
pub fn in_flight(layer: u64, block: u32) -> bool {
    IN_FLIGHT.lock().contains_key(&(layer, block))
}

type Ask = Vec<(BlockMeta, tokio::sync::oneshot::Sender<Bytes>)>;

/// A stream open for (layer id, owner id): where its last queued block ends, and its queue.
struct Live {
    serial: u64,
    end: u64,
    tx: tokio::sync::mpsc::UnboundedSender<Ask>,
}

static LIVE: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashMap<(u64, u64), Live>>> = std::sync::LazyLock::new(Default::default);
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Starts loading `blocks` of `layer` into the decoded cache through a streaming GET
/// (see the module note), without waiting. Blocks held, in `--cache-dir` (decoded
/// ahead from there) or already in a stream are skipped. Every block is registered
/// before this returns, so the read that follows waits for the stream.
pub fn start(cache: Arc<BlockCache>, store: Arc<dyn ObjectStore>, layer: Arc<Layer>, blocks: Vec<BlockMeta>) {
    let (on_disk, todo): (Vec<BlockMeta>, Vec<BlockMeta>) =
        blocks.into_iter().filter(|b| !cache.holds(&layer, b) && !in_flight(layer.id, b.id.0)).partition(|b| cache.on_disk(&layer, b));
    for b in on_disk {
        let (cache, store, layer) = (cache.clone(), store.clone(), layer.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.layer_block(&*store, &layer, &b).await {
                tracing::debug!(error = %e, "read-ahead of a block failed; the read itself will retry it");
            }
        });
    }
    let owner = OWNER.try_with(|o| o.clone()).ok();
    if owner.as_ref().is_some_and(|o| o.is_cancelled()) {
        return;
    }
    let owner_id = owner.as_ref().map_or(0, |o| o.0.id);
    for run in pieces(todo, u64::MAX) {
        let mut ask: Ask = Vec::with_capacity(run.len());
        {
            let mut map = IN_FLIGHT.lock();
            for b in run {
                let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
                let fut: futures::future::BoxFuture<'static, Option<Bytes>> = Box::pin(async move { rx.await.ok() });
                map.insert((layer.id, b.id.0), fut.shared());
                ask.push((b, tx));
            }
        }
        let (first, end) = (ask[0].0.file_offset, ask[ask.len() - 1].0.file_offset + ask[ask.len() - 1].0.compressed_size);
        let mut live = LIVE.lock();
        let key = (layer.id, owner_id);
        // Continues this owner's stream of this layer: queue it there.
        let ask = match live.get_mut(&key) {
            Some(l) if first >= l.end && first - l.end <= GAP_MAX => match l.tx.send(ask) {
                Ok(()) => {
                    l.end = end;
                    continue;
                }
                Err(e) => e.0,
            },
            _ => ask,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(ask);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        live.insert(key, Live { serial, end, tx });
        drop(live);
        let data_end = layer.footer.blocks.iter().map(|b| b.file_offset + b.compressed_size).max().unwrap_or(end).max(end);
        let (cache, store, layer, owner) = (cache.clone(), store.clone(), layer.clone(), owner.clone());
        tokio::spawn(async move {
            let mut rx = rx;
            let mut pending: VecDeque<(BlockMeta, tokio::sync::oneshot::Sender<Bytes>)> = VecDeque::new();
            let decodes = stream(&cache, &*store, &layer, first..data_end, &mut rx, &mut pending, owner.as_ref()).await;
            // No more joins; blocks the stream did not bring: readers fetch them themselves.
            rx.close();
            while let Ok(a) = rx.try_recv() {
                pending.extend(a);
            }
            {
                let mut live = LIVE.lock();
                if live.get(&key).is_some_and(|l| l.serial == serial) {
                    live.remove(&key);
                }
            }
            {
                let mut map = IN_FLIGHT.lock();
                for (b, _) in &pending {
                    map.remove(&(layer.id, b.id.0));
                }
            }
            drop(pending);
            for d in decodes {
                let _ = d.await;
            }
        });
    }
}

/// Why a stream stopped waiting for its next block.
enum Next {
    Block(BlockMeta, tokio::sync::oneshot::Sender<Bytes>),
    Stop,
}

/// The next block queued on the stream, waiting for one if none is; an idle stream
/// gives its `permit` back while it waits (a reader of another file may need it) and
/// takes one again before it reads on.
async fn next_block(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Ask>,
    pending: &mut VecDeque<(BlockMeta, tokio::sync::oneshot::Sender<Bytes>)>,
    owner: Option<&Owner>,
    permit: &mut Option<tokio::sync::SemaphorePermit<'static>>,
) -> Next {
    loop {
        if owner.is_some_and(|o| o.is_cancelled()) {
            return Next::Stop;
        }
        if let Some((b, tx)) = pending.pop_front() {
            if permit.is_none() {
                let cancelled = async {
                    match owner {
                        Some(o) => o.cancelled().await,
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    p = STREAM_PERMITS.acquire() => *permit = Some(p.expect("the semaphore is never closed")),
                    _ = cancelled => {
                        pending.push_front((b, tx));
                        return Next::Stop;
                    }
                }
            }
            return Next::Block(b, tx);
        }
        *permit = None;
        let cancelled = async {
            match owner {
                Some(o) => o.cancelled().await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            got = tokio::time::timeout(IDLE, rx.recv()) => match got {
                Ok(Some(a)) => pending.extend(a),
                _ => return Next::Stop,
            },
            _ = cancelled => return Next::Stop,
        }
    }
}

/// One streaming GET of `range`, handing each block queued on `rx` its bytes and its
/// decode as soon as they are complete, reading the body no further than the blocks
/// queued. Stops at the first error, when idle for [`IDLE`] or when `owner` is
/// cancelled; what is left in `pending` is the caller's. Returns the decodes started.
async fn stream(
    cache: &Arc<BlockCache>,
    store: &dyn ObjectStore,
    layer: &Arc<Layer>,
    range: std::ops::Range<u64>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Ask>,
    pending: &mut VecDeque<(BlockMeta, tokio::sync::oneshot::Sender<Bytes>)>,
    owner: Option<&Owner>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut decodes = vec![];
    let cancelled = || async {
        match owner {
            Some(o) => o.cancelled().await,
            None => futures::future::pending().await,
        }
    };
    let mut permit = tokio::select! {
        p = STREAM_PERMITS.acquire() => Some(p.expect("the semaphore is never closed")),
        _ = cancelled() => {
            STREAMS_CANCELLED.fetch_add(1, Ordering::Relaxed);
            return decodes;
        }
    };
    let mut body = match layer.stream_range(store, range.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(file = %layer.path, error = %e, "streaming read-ahead failed; its blocks are fetched one by one");
            return decodes;
        }
    };
    STREAMS_OPEN.fetch_add(1, Ordering::Relaxed);
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            STREAMS_OPEN.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _open = Open;
    let mut pos = range.start;
    let mut carry = Bytes::new();
    loop {
        let (b, tx) = match next_block(rx, pending, owner, &mut permit).await {
            Next::Block(b, tx) => (b, tx),
            Next::Stop => {
                if owner.is_some_and(|o| o.is_cancelled()) {
                    STREAMS_CANCELLED.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(file = %layer.path, "read-ahead stream cancelled: its reader closed the file");
                }
                return decodes;
            }
        };
        if b.file_offset < pos {
            // Cannot happen (joins only continue the stream); fetched one by one instead.
            pending.push_front((b, tx));
            return decodes;
        }
        let mut buf: Vec<u8> = Vec::new();
        let size = b.compressed_size as usize;
        let block_end = b.file_offset + b.compressed_size;
        while pos < block_end {
            if carry.is_empty() {
                let chunk = tokio::select! {
                    c = body.next() => c,
                    _ = cancelled() => {
                        STREAMS_CANCELLED.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(file = %layer.path, "read-ahead stream cancelled: its reader closed the file");
                        pending.push_front((b, tx));
                        return decodes;
                    }
                };
                carry = match chunk {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        tracing::debug!(file = %layer.path, error = %e, "streaming read-ahead cut short; the rest of its blocks are fetched one by one");
                        pending.push_front((b, tx));
                        return decodes;
                    }
                    None => {
                        pending.push_front((b, tx));
                        return decodes;
                    }
                };
                continue;
            }
            if pos < b.file_offset {
                // A gap (blocks held already): read past it.
                let skip = ((b.file_offset - pos) as usize).min(carry.len());
                let _ = carry.split_to(skip);
                pos += skip as u64;
                continue;
            }
            let take = (size - buf.len()).min(carry.len());
            if buf.is_empty() && take == size {
                // A whole block inside one chunk: no copy.
                pos += take as u64;
                let bytes = carry.split_to(take);
                decodes.push(deliver(cache, layer, &b, Some(tx), bytes));
                break;
            }
            if buf.capacity() == 0 {
                // As large as the decoded block when that is larger: then the pool's
                // buffers are of one size and every one fits the next block, compressed
                // or decoded (pages not written are not resident).
                buf = cache.buffer(size.max(b.uncompressed_size as usize));
            }
            buf.extend_from_slice(&carry.split_to(take));
            pos += take as u64;
            if buf.len() == size {
                decodes.push(deliver(cache, layer, &b, Some(tx), cache.pooled(std::mem::take(&mut buf))));
                break;
            }
        }
        decodes.retain(|d| !d.is_finished());
    }
}

/// Hands one block's compressed bytes to its waiters (and to `--cache-dir`) and
/// decodes it into the cache; it leaves [`IN_FLIGHT`] once decoded.
fn deliver(cache: &Arc<BlockCache>, layer: &Arc<Layer>, b: &BlockMeta, to: Option<tokio::sync::oneshot::Sender<Bytes>>, bytes: Bytes) -> tokio::task::JoinHandle<()> {
    if let (Some(disk), Some(tag)) = (&cache.disk, &layer.e_tag) {
        let (d, key, payload) = (disk.clone(), disk.key(layer.path.as_ref(), tag, b.file_offset, b.compressed_size), bytes.clone());
        tokio::task::spawn_blocking(move || d.put(&key, &payload));
    }
    if let Some(tx) = to {
        let _ = tx.send(bytes.clone());
    }
    let (cache, layer, b) = (cache.clone(), layer.clone(), b.clone());
    tokio::spawn(async move {
        let key = (layer.id, b.id.0);
        if let Err(e) = cache.block(key, &b.codec, b.uncompressed_size, layer.path.as_ref(), async { Ok(bytes) }).await {
            tracing::debug!(file = %layer.path, block = b.id.0, error = %e, "a streamed block did not decode; the read itself reports it");
        }
        IN_FLIGHT.lock().remove(&key);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlockId, CodecId};

    fn b(id: u32, at: u64, len: u64) -> BlockMeta {
        BlockMeta { id: BlockId(id), file_offset: at, compressed_size: len, uncompressed_size: len, codec: CodecId::None }
    }

    #[test]
    fn runs_are_cut_into_pieces_of_whole_adjacent_blocks() {
        let got = pieces(vec![b(3, 30, 10), b(0, 0, 10), b(1, 10, 10), b(2, 20, 10), b(5, 60, 10), b(9, 200, 50)], 25);
        let ids: Vec<Vec<u32>> = got.iter().map(|p| p.iter().map(|b| b.id.0).collect()).collect();
        assert_eq!(ids, vec![vec![0, 1], vec![2, 3], vec![5], vec![9]]);
    }
}
