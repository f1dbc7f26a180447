//! The block cache shared by every array file of an [`Atlas`](super::Atlas).
//!
//! Decoding is the expensive part of a read: one chunk lives inside a block of up
//! to ~8 MiB that must be fetched and decompressed whole. The decoded cache keeps
//! whole decompressed blocks, weighted by their size, so neighbouring chunks and
//! repeated reads cost a hash lookup. An optional raw cache keeps compressed bytes
//! (useful when the store is remote and decoded blocks get evicted).
//!
//! Keys are `(layer id, block id)`. A layer id is handed out once per loaded or
//! written layer *version*, never per path: when compaction rewrites `data.af` the
//! new base gets a new id, so stale blocks cannot be served (0.10's defect D2).
//! Concurrent loads of one key are merged into one fetch and one decode.
//!
//! Memory: the budget (`--cache-size`) covers what the cache holds *and* the blocks
//! being fetched and decoded outside it: the decoded cache gets the budget less a
//! reserve for that in-flight work (see [`in_flight_reserve`]), entries weigh the
//! capacity of their buffers, and eviction runs as each block is inserted rather than
//! whenever moka's housekeeping gets to it. Evicted blocks' buffers go to a small
//! pool that the next decodes take from: a scan streams through a full cache without
//! allocating, so the allocator's heaps neither grow nor fragment and no fresh pages
//! are faulted in (a fresh 8 MiB mapping per block made cold reads ~2× slower).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use object_store::ObjectStore;

use super::disk_cache::DiskCache;
use super::layer::Layer;
use super::{Error, ErrorDetail, Result};
use crate::format::codec::decompress_block_into;
use crate::format::{BlockMeta, CodecId};

static NEXT_LAYER_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh cache identity for a layer version.
pub fn next_layer_id() -> u64 {
    NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed)
}

/// Counters reported through the control files and `atlasfs info`.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_decoded: AtomicU64,
}

/// A decoded block and the bytes its buffer takes (its capacity, not its length).
#[derive(Clone)]
struct Block {
    bytes: Bytes,
    held: u64,
}

pub struct BlockCache {
    decoded: moka::future::Cache<(u64, u32), Block>,
    pool: Arc<BufferPool>,
    raw: Option<moka::future::Cache<(u64, u32), Bytes>>,
    /// Compressed blocks on local disk, across mounts (`--cache-dir`).
    pub disk: Option<Arc<DiskCache>>,
    pub counters: CacheCounters,
    /// Decoded blocks larger than this are never cached nor decoded whole for a
    /// read (see `big_block`).
    block_limit: u64,
    /// Paused decoders of blocks over `block_limit` (see `big_block`).
    pub(crate) cursors: super::big_block::Cursors,
}

/// Largest request made by coalescing adjacent blocks.
const COALESCE_BYTES: u64 = 8 << 20;

fn run_len(run: &[&BlockMeta]) -> u64 {
    run.iter().map(|b| b.compressed_size).sum()
}

/// Blocks at least this large are decompressed on the blocking pool.
const BLOCKING_DECODE_BYTES: u64 = 256 * 1024;

fn weigh(_k: &(u64, u32), v: &Bytes) -> u32 {
    v.len().try_into().unwrap_or(u32::MAX)
}

fn weigh_block(_k: &(u64, u32), v: &Block) -> u32 {
    v.held.try_into().unwrap_or(u32::MAX)
}

/// The part of a budget kept for blocks outside the decoded cache: those being
/// fetched and decoded (the default 16 MiB read-ahead keeps up to three ~8 MiB
/// atlas blocks in flight, each with its compressed bytes: 48 MiB), the pool's free
/// buffers (half the reserve) and evicted blocks readers still hold. A
/// quarter of the budget, at least 16 MiB, at most 64 MiB.
pub fn in_flight_reserve(budget: u64) -> u64 {
    (budget / 4).clamp(16 << 20, 64 << 20).min(budget / 2)
}

/// Free buffers of evicted decoded blocks, for the next decodes to reuse. Bounded in
/// bytes; buffers under `BLOCKING_DECODE_BYTES` are not kept (cheap to allocate).
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_bytes: u64,
}

impl BufferPool {
    /// A buffer for a block of `n` bytes: the smallest free one that fits without
    /// wasting more than a quarter of itself, else a new one.
    fn take(&self, n: usize) -> Vec<u8> {
        let mut free = self.free.lock();
        let fits = |b: &Vec<u8>| b.capacity() >= n && b.capacity() - n <= b.capacity() / 4;
        match free.iter().enumerate().filter(|(_, b)| fits(b)).min_by_key(|(_, b)| b.capacity()).map(|(i, _)| i) {
            Some(i) => free.swap_remove(i),
            // Fresh memory: faulted in 2 MiB at a time where it can be (`huge_pages`).
            None => super::huge_pages::vec_with_capacity(n),
        }
    }

    fn put(&self, buf: Vec<u8>) {
        let mut free = self.free.lock();
        let held: u64 = free.iter().map(|b| b.capacity() as u64).sum();
        if buf.capacity() as u64 >= BLOCKING_DECODE_BYTES && held + buf.capacity() as u64 <= self.max_bytes {
            free.push(buf);
        }
    }

    fn free_bytes(&self) -> u64 {
        self.free.lock().iter().map(|b| b.capacity() as u64).sum()
    }
}

/// A pooled buffer behind a `Bytes`: back to the pool when the last slice of it goes.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

impl BlockCache {
    /// A cache whose decoded blocks, with those in flight, stay within `budget` bytes;
    /// `raw_bytes` more for compressed blocks (0: no raw cache).
    pub fn new(budget: u64, raw_bytes: u64) -> Self {
        // LRU, not moka's default TinyLFU: a scan's freshly decoded block has been seen
        // once, and TinyLFU would refuse to admit it in favour of older, hotter blocks,
        // so the scan would decode it again for each of its chunks.
        let lru = moka::policy::EvictionPolicy::lru;
        let reserve = in_flight_reserve(budget);
        let decoded = moka::future::Cache::builder().max_capacity(budget - reserve).weigher(weigh_block).eviction_policy(lru()).build();
        let raw = (raw_bytes > 0).then(|| moka::future::Cache::builder().max_capacity(raw_bytes).weigher(weigh).eviction_policy(lru()).build());
        // Half the reserve: two 16 MiB buffers at the default budget, so a cold scan
        // streaming 16 MiB blocks (one compressed and one decoded buffer per block)
        // reuses the same few buffers instead of freeing one to glibc and taking a
        // fresh one per block (peak RSS of the 512 MiB remote cold read 280-296 MiB
        // against 366-411 with a quarter, interleaved A/B).
        let pool = Arc::new(BufferPool { free: Mutex::new(vec![]), max_bytes: reserve / 2 });
        let block_limit = ((budget - reserve) / 2).max(16 << 20);
        BlockCache { decoded, pool, raw, disk: None, counters: CacheCounters::default(), block_limit, cursors: Default::default() }
    }

    /// Whether a block of `uncompressed` bytes is too big to cache under the budget:
    /// half the decoded cache's share, at least 16 MiB (atlas writes blocks of about
    /// 8 MiB; only chunks bigger than that make bigger blocks).
    pub fn too_big(&self, uncompressed: u64) -> bool {
        uncompressed > self.block_limit
    }

    pub fn with_disk(mut self, disk: Option<Arc<DiskCache>>) -> Self {
        self.disk = disk;
        self
    }

    /// The decompressed block `b` of a committed layer: from memory, else from the
    /// disk cache, else fetched from the store (and then kept on disk).
    pub async fn layer_block(&self, store: &dyn ObjectStore, layer: &Arc<Layer>, b: &BlockMeta) -> Result<Bytes> {
        let fetch = async {
            // A block a read-ahead stream is bringing comes from there (see `stream_fetch`).
            if let Some(w) = super::stream_fetch::waiting(layer.id, b.id.0)
                && let Some(bytes) = w.await
            {
                return Ok(bytes);
            }
            let (Some(disk), Some(e_tag)) = (&self.disk, &layer.e_tag) else { return layer.fetch_block(store, b).await };
            let key = disk.key(layer.path.as_ref(), e_tag, b.file_offset, b.compressed_size);
            let d = disk.clone();
            let k = key.clone();
            let cached = tokio::task::spawn_blocking(move || d.get(&k)).await.ok().flatten();
            if let Some(bytes) = cached.filter(|c| c.len() as u64 == b.compressed_size) {
                return Ok(bytes);
            }
            let bytes = layer.fetch_block(store, b).await?;
            let (d, payload) = (disk.clone(), bytes.clone());
            // Off the read's path: the caller has its bytes already.
            tokio::task::spawn_blocking(move || d.put(&key, &payload));
            Ok(bytes)
        };
        self.block((layer.id, b.id.0), &b.codec, b.uncompressed_size, layer.path.as_ref(), fetch).await
    }

    /// The decompressed block `key`, fetching its compressed bytes with `fetch` on a miss.
    pub async fn block<F>(&self, key: (u64, u32), codec: &CodecId, uncompressed: u64, what: &str, fetch: F) -> Result<Bytes>
    where
        F: Future<Output = Result<Bytes>>,
    {
        if let Some(b) = self.decoded.get(&key).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b.bytes);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let load = async {
            let compressed = match &self.raw {
                Some(raw) => raw.try_get_with(key, fetch).await.map_err(unwrap_arc)?,
                None => fetch.await?,
            };
            self.counters.bytes_fetched.fetch_add(compressed.len() as u64, Ordering::Relaxed);
            // Uncompressed blocks are copied too: kept as fetched, their buffers would go
            // back to the allocator on eviction, not to the pool (peak RSS 283-329 MiB
            // on the 1 GiB read instead of 252-276 as for lz4).
            let (codec, pool) = (codec.clone(), self.pool.clone());
            let decode = move || {
                let mut buf = pool.take(uncompressed as usize);
                decompress_block_into(&codec, &compressed, uncompressed as usize, &mut buf)?;
                let held = buf.capacity() as u64;
                Ok(Block { bytes: Bytes::from_owner(Pooled { buf, pool }), held })
            };
            let out = if uncompressed >= BLOCKING_DECODE_BYTES { tokio::task::spawn_blocking(decode).await.map_err(|e| Error::Io(std::io::Error::other(e)))? } else { decode() };
            let out = out.map_err(|source| ErrorDetail::Corrupt { path: what.to_string(), source })?;
            self.counters.bytes_decoded.fetch_add(uncompressed, Ordering::Relaxed);
            Ok::<_, Error>(out)
        };
        let block = self.decoded.try_get_with(key, load).await.map_err(unwrap_arc)?;
        // Evict now, not at moka's next housekeeping (up to 64 operations or 300 ms
        // later, which a fast scan turns into tens of MiB over the budget).
        self.decoded.run_pending_tasks().await;
        Ok(block.bytes)
    }

    /// Loads the given blocks of one layer into the decoded cache, fetching runs of
    /// adjacent blocks that are not cached with one ranged GET each (up to
    /// `COALESCE_BYTES` per request: small blocks are latency-bound, big ones
    /// bandwidth-bound and better fetched in parallel). Used before a read that
    /// needs several blocks, so it pays one round trip per run, not per block.
    pub async fn load_blocks(&self, store: &dyn ObjectStore, layer: &Arc<Layer>, blocks: &[BlockMeta]) -> Result<()> {
        let mut todo: Vec<&BlockMeta> = blocks
            .iter()
            .filter(|b| !self.too_big(b.uncompressed_size) && !self.decoded.contains_key(&(layer.id, b.id.0)) && !super::stream_fetch::in_flight(layer.id, b.id.0))
            .collect();
        if let (Some(disk), Some(tag)) = (&self.disk, &layer.e_tag) {
            todo.retain(|b| !disk.contains(&disk.key(layer.path.as_ref(), tag, b.file_offset, b.compressed_size)));
        }
        todo.sort_by_key(|b| b.file_offset);
        todo.dedup_by_key(|b| b.id.0);
        let mut runs: Vec<Vec<&BlockMeta>> = vec![];
        for b in todo {
            match runs.last_mut() {
                Some(run) if run.last().is_some_and(|p| p.file_offset + p.compressed_size == b.file_offset) && run_len(run) + b.compressed_size <= COALESCE_BYTES => run.push(b),
                _ => runs.push(vec![b]),
            }
        }
        let fetches = runs.into_iter().filter(|r| r.len() > 1).map(|run| async move {
            let (start, end) = (run[0].file_offset, run[run.len() - 1].file_offset + run[run.len() - 1].compressed_size);
            let bytes = layer.fetch_range(store, start..end).await?;
            if bytes.len() as u64 != end - start {
                return Err(ErrorDetail::Corrupt {
                    path: layer.path.to_string(),
                    source: crate::format::FormatError::InvalidFooter(format!("short read of bytes {start}..{end}")),
                }
                .into());
            }
            // The run's blocks decode concurrently (big ones on the blocking pool), not
            // one after another on one core.
            let decodes = run.into_iter().map(|b| {
                let part = bytes.slice((b.file_offset - start) as usize..(b.file_offset - start + b.compressed_size) as usize);
                if let (Some(disk), Some(tag)) = (&self.disk, &layer.e_tag) {
                    let (d, key, payload) = (disk.clone(), disk.key(layer.path.as_ref(), tag, b.file_offset, b.compressed_size), part.clone());
                    tokio::task::spawn_blocking(move || d.put(&key, &payload));
                }
                self.block((layer.id, b.id.0), &b.codec, b.uncompressed_size, layer.path.as_ref(), async { Ok(part) })
            });
            futures::future::try_join_all(decodes).await?;
            Ok::<_, Error>(())
        });
        futures::future::try_join_all(fetches).await?;
        Ok(())
    }

    /// Whether block `b` of `layer` is decoded in memory now.
    pub(crate) fn holds(&self, layer: &Layer, b: &BlockMeta) -> bool {
        self.decoded.contains_key(&(layer.id, b.id.0))
    }

    /// Whether block `b` of `layer` is in the `--cache-dir` (no GET needed).
    pub(crate) fn on_disk(&self, layer: &Layer, b: &BlockMeta) -> bool {
        match (&self.disk, &layer.e_tag) {
            (Some(disk), Some(tag)) => disk.contains(&disk.key(layer.path.as_ref(), tag, b.file_offset, b.compressed_size)),
            _ => false,
        }
    }

    /// Drops every block of a layer version that no longer exists.
    pub fn forget_layer(&self, layer_id: u64) {
        // Entries keyed by a dead id can never be asked for again; this only frees memory early.
        let _ = self.decoded.invalidate_entries_if(move |k, _| k.0 == layer_id);
        self.cursors.forget_layer(layer_id);
        if let Some(raw) = &self.raw {
            let _ = raw.invalidate_entries_if(move |k, _| k.0 == layer_id);
        }
    }

    /// Decoded bytes currently held.
    pub fn weighted_size(&self) -> u64 {
        self.decoded.weighted_size()
    }

    /// An empty buffer with room for `n` bytes from the pool of block buffers, for
    /// a block's compressed bytes assembled from a stream's chunks; give it back as
    /// [`Self::pooled`]. A cold remote scan then reuses a few buffers instead of
    /// asking the allocator for 8-16 MiB per block (glibc serves those from its heap
    /// once its mmap threshold has grown, and the heap keeps them: RSS over budget).
    pub(crate) fn buffer(&self, n: usize) -> Vec<u8> {
        let mut b = self.pool.take(n);
        b.clear();
        b
    }

    /// `buf` as `Bytes` that return it to the pool when the last slice of it goes.
    pub(crate) fn pooled(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self.pool.clone() })
    }

    /// Bytes of free buffers kept for reuse.
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.free_bytes()
    }
}

/// The error of a load that several readers waited on (moka shares it as an `Arc`).
/// Each waiter gets its own copy that keeps what callers decide by: a stale file
/// must stay `Stale`, or the reader that joined a read-ahead's failed load answers
/// `EIO` instead of refreshing and reading again (seen while another daemon
/// compacted the same array file).
fn unwrap_arc(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|e| match (&*e, e.detail()) {
        (_, Some(ErrorDetail::Corrupt { path, source })) => ErrorDetail::Corrupt { path: path.clone(), source: crate::format::FormatError::Codec(source.to_string()) }.into(),
        (_, Some(ErrorDetail::Stale(path))) => ErrorDetail::Stale(path.clone()).into(),
        (Error::ObjectStore(object_store::Error::NotFound { path, .. }), _) => ErrorDetail::Stale(path.clone()).into(),
        (Error::ObjectStore(o), _) => Error::Io(std::io::Error::other(o.to_string())),
        (other, _) => Error::Io(std::io::Error::other(other.message())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::codec::Codec;
    use std::collections::HashSet;

    #[test]
    fn a_shared_load_error_stays_stale_for_every_waiter() {
        let e = Arc::new(Error::from(ErrorDetail::Stale("x/data.af".into())));
        let other_waiter = e.clone();
        let mine = unwrap_arc(e);
        assert!(matches!(mine.detail(), Some(ErrorDetail::Stale(p)) if p == "x/data.af"), "{mine:?}");
        assert!(super::super::array_file::vanished(&unwrap_arc(other_waiter)));
        let gone = Arc::new(Error::ObjectStore(object_store::Error::NotFound { path: "x/data.1.af".into(), source: "gone".into() }));
        let _keep = gone.clone();
        assert!(matches!(unwrap_arc(gone).detail(), Some(ErrorDetail::Stale(_))));
    }

    #[test]
    fn the_pool_reuses_buffers_that_fit_and_is_bounded() {
        let pool = Arc::new(BufferPool { free: Mutex::new(vec![]), max_bytes: 3 << 20 });
        let buf = vec![7u8; 1 << 20];
        let at = buf.as_ptr();
        drop(Bytes::from_owner(Pooled { buf, pool: pool.clone() }));
        assert_eq!(pool.free_bytes(), 1 << 20);
        // a slightly smaller block takes it; a much smaller one does not (it gets a fresh buffer)
        let small = pool.take(1000);
        assert!(small.is_empty() && small.as_ptr() != at);
        assert_eq!(pool.free_bytes(), 1 << 20);
        let again = pool.take((1 << 20) - 4096);
        assert_eq!(again.as_ptr(), at);
        assert_eq!(pool.free_bytes(), 0);
        for _ in 0..5 {
            pool.put(vec![0; 1 << 20]);
        }
        pool.put(vec![0; 4096]);
        assert_eq!(pool.free_bytes(), 3 << 20, "full at 3 MiB; small buffers are not kept");
    }

    /// A scan through more blocks than fit: the cache never weighs more than its share
    /// of the budget (evicting as it inserts), and once full, new blocks decode into
    /// the buffers of evicted ones.
    #[tokio::test]
    async fn decoded_blocks_stay_within_the_budget_and_reuse_buffers() {
        let budget = 64 << 20;
        let cache = BlockCache::new(budget, 0);
        let raw = vec![1u8; 4 << 20];
        let z = Bytes::from(Codec::Lz4.compress_block(&raw));
        let fits = ((budget - in_flight_reserve(budget)) / raw.len() as u64) as u32;
        let mut seen = HashSet::new();
        let mut reused = 0;
        for i in 0..3 * fits {
            let b = cache.block((1, i), &Codec::Lz4.id(), raw.len() as u64, "test", async { Ok(z.clone()) }).await.unwrap();
            assert_eq!(b, raw);
            reused += !seen.insert(b.as_ptr()) as u32;
            drop(b);
            assert!(cache.weighted_size() <= budget - in_flight_reserve(budget), "block {i}: {} bytes held", cache.weighted_size());
            assert!(cache.pooled_bytes() <= in_flight_reserve(budget) / 4);
        }
        assert_eq!(cache.decoded.entry_count(), fits as u64);
        assert!(reused >= fits, "{reused} of {} blocks reused a buffer", 3 * fits);
    }
}
