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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use object_store::ObjectStore;

use super::disk_cache::DiskCache;
use super::layer::Layer;
use super::{Error, Result};
use crate::format::codec::decompress_block;
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

pub struct BlockCache {
    decoded: moka::future::Cache<(u64, u32), Bytes>,
    raw: Option<moka::future::Cache<(u64, u32), Bytes>>,
    /// Compressed blocks on local disk, across mounts (`--cache-dir`).
    pub disk: Option<Arc<DiskCache>>,
    pub counters: CacheCounters,
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

impl BlockCache {
    pub fn new(decoded_bytes: u64, raw_bytes: u64) -> Self {
        // LRU, not moka's default TinyLFU: a scan's freshly decoded block has been seen
        // once, and TinyLFU would refuse to admit it in favour of older, hotter blocks,
        // so the scan would decode it again for each of its chunks.
        let lru = moka::policy::EvictionPolicy::lru;
        let decoded = moka::future::Cache::builder().max_capacity(decoded_bytes).weigher(weigh).eviction_policy(lru()).build();
        let raw = (raw_bytes > 0).then(|| moka::future::Cache::builder().max_capacity(raw_bytes).weigher(weigh).eviction_policy(lru()).build());
        BlockCache { decoded, raw, disk: None, counters: CacheCounters::default() }
    }

    pub fn with_disk(mut self, disk: Option<Arc<DiskCache>>) -> Self {
        self.disk = disk;
        self
    }

    /// The decompressed block `b` of a committed layer: from memory, else from the
    /// disk cache, else fetched from the store (and then kept on disk).
    pub async fn layer_block(&self, store: &dyn ObjectStore, layer: &Arc<Layer>, b: &BlockMeta) -> Result<Bytes> {
        let fetch = async {
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
            return Ok(b);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let load = async {
            let compressed = match &self.raw {
                Some(raw) => raw.try_get_with(key, fetch).await.map_err(unwrap_arc)?,
                None => fetch.await?,
            };
            self.counters.bytes_fetched.fetch_add(compressed.len() as u64, Ordering::Relaxed);
            // Uncompressed blocks are kept as fetched: a copy would only cost time and page faults.
            if *codec == CodecId::None && compressed.len() as u64 == uncompressed {
                self.counters.bytes_decoded.fetch_add(uncompressed, Ordering::Relaxed);
                return Ok(compressed);
            }
            let codec = codec.clone();
            let decode = move || decompress_block(&codec, &compressed, uncompressed as usize).map(Bytes::from);
            let out = if uncompressed >= BLOCKING_DECODE_BYTES { tokio::task::spawn_blocking(decode).await.map_err(|e| Error::Io(std::io::Error::other(e)))? } else { decode() };
            let out = out.map_err(|source| Error::Corrupt { path: what.to_string(), source })?;
            self.counters.bytes_decoded.fetch_add(out.len() as u64, Ordering::Relaxed);
            Ok::<_, Error>(out)
        };
        self.decoded.try_get_with(key, load).await.map_err(unwrap_arc)
    }

    /// Loads the given blocks of one layer into the decoded cache, fetching runs of
    /// adjacent blocks that are not cached with one ranged GET each (up to
    /// `COALESCE_BYTES` per request: small blocks are latency-bound, big ones
    /// bandwidth-bound and better fetched in parallel). Used before a read that
    /// needs several blocks, so it pays one round trip per run, not per block.
    pub async fn load_blocks(&self, store: &dyn ObjectStore, layer: &Arc<Layer>, blocks: &[BlockMeta]) -> Result<()> {
        let mut todo: Vec<&BlockMeta> = blocks.iter().filter(|b| !self.decoded.contains_key(&(layer.id, b.id.0))).collect();
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
                return Err(Error::Corrupt { path: layer.path.to_string(), source: crate::format::FormatError::InvalidFooter(format!("short read of bytes {start}..{end}")) });
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

    /// Drops every block of a layer version that no longer exists.
    pub fn forget_layer(&self, layer_id: u64) {
        // Entries keyed by a dead id can never be asked for again; this only frees memory early.
        let _ = self.decoded.invalidate_entries_if(move |k, _| k.0 == layer_id);
        if let Some(raw) = &self.raw {
            let _ = raw.invalidate_entries_if(move |k, _| k.0 == layer_id);
        }
    }

    /// Decoded bytes currently held.
    pub fn weighted_size(&self) -> u64 {
        self.decoded.weighted_size()
    }
}

fn unwrap_arc(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|e| match &*e {
        Error::Corrupt { path, source } => Error::Corrupt { path: path.clone(), source: crate::format::FormatError::Codec(source.to_string()) },
        Error::ObjectStore(o) => Error::Io(std::io::Error::other(o.to_string())),
        other => Error::Io(std::io::Error::other(other.to_string())),
    })
}
