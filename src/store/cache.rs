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

use super::{Error, Result};
use crate::format::CodecId;
use crate::format::codec::decompress_block;

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
    pub counters: CacheCounters,
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
        BlockCache { decoded, raw, counters: CacheCounters::default() }
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
            let codec = codec.clone();
            let decode = move || decompress_block(&codec, &compressed, uncompressed as usize).map(Bytes::from);
            let out = if uncompressed >= BLOCKING_DECODE_BYTES { tokio::task::spawn_blocking(decode).await.map_err(|e| Error::Io(std::io::Error::other(e)))? } else { decode() };
            let out = out.map_err(|source| Error::Corrupt { path: what.to_string(), source })?;
            self.counters.bytes_decoded.fetch_add(out.len() as u64, Ordering::Relaxed);
            Ok::<_, Error>(out)
        };
        self.decoded.try_get_with(key, load).await.map_err(unwrap_arc)
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
