//! Read-ahead of a remote layer as a few long streaming GETs, decoded while they stream.
//!
//! A sequential reader's read-ahead (`fs::core::read`) asks for half a window at a time
//! (32 MiB of a 64 MiB remote window). Fetching that as ranged parts of one
//! bandwidth-delay product (see [`super::ranged`]) costs a request per 1–4 MiB, and a
//! server pays something per request: moto reads the whole object for every ranged
//! GET, so 512 MiB in ~140 parts took 8× rclone's one streamed GET. Here each run of
//! adjacent uncached blocks is cut into a few pieces of about [`PIECE`] (whole blocks),
//! each fetched with one ranged GET whose body is consumed as it arrives: every block
//! goes to the decoded cache as soon as its last byte is in, while the rest of the
//! piece is still streaming, and the pieces stream concurrently ([`STREAMS`] at once
//! per process), so the link stays full across the round trip.
//!
//! Each block is registered in [`IN_FLIGHT`] before its piece is requested, and the
//! cache's block load looks there first, so a read that reaches a block still in
//! flight waits for it instead of fetching it again. If a piece's GET fails or is cut short,
//! the blocks it had not delivered fall back to the ordinary fetch of one block
//! (ranged parts, each retried within `--retries`); nothing fails because of a stream.
//!
//! Only for remote stores: a local directory's ranged GET streams in 8 KiB reads.
//! A read-ahead whose reader went away runs to the end of the pieces it started (at
//! most half a window) and starts nothing after.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;

use super::cache::BlockCache;
use super::layer::Layer;
use crate::format::BlockMeta;

/// About how many bytes one streaming GET covers (whole blocks; a bigger block alone).
pub const PIECE: u64 = 32 << 20;
/// Runs shorter than this go as ranged parts instead (one block of a few MiB is
/// fetched faster in parallel parts than over one connection).
pub const STREAM_MIN: u64 = 8 << 20;
/// Streaming GETs in flight at once, across the process.
pub const STREAMS: usize = 4;

static STREAM_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(STREAMS);

/// Whether `store` serves a ranged GET as a stream worth using (remote stores); a
/// local directory or memory is read directly, block by block.
pub fn streams_well(store: &dyn ObjectStore) -> bool {
    let name = store.to_string();
    !(name.starts_with("LocalFileSystem") || name.starts_with("InMemory"))
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

/// Starts loading `blocks` of `layer` into the decoded cache through streaming GETs
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
    for piece in pieces(todo, PIECE) {
        let mut senders = Vec::with_capacity(piece.len());
        {
            let mut map = IN_FLIGHT.lock();
            for b in &piece {
                let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
                senders.push(tx);
                let fut: futures::future::BoxFuture<'static, Option<Bytes>> = Box::pin(async move { rx.await.ok() });
                map.insert((layer.id, b.id.0), fut.shared());
            }
        }
        let (cache, store, layer) = (cache.clone(), store.clone(), layer.clone());
        tokio::spawn(async move {
            let keys: Vec<(u64, u32)> = piece.iter().map(|b| (layer.id, b.id.0)).collect();
            let decodes = stream_piece(&cache, &*store, &layer, &piece, senders).await;
            // Blocks the stream did not bring: readers fetch them themselves.
            {
                let delivered: std::collections::HashSet<u32> = decodes.iter().map(|(id, _)| *id).collect();
                let mut map = IN_FLIGHT.lock();
                for k in keys.iter().filter(|k| !delivered.contains(&k.1)) {
                    map.remove(k);
                }
            }
            for (_, d) in decodes {
                let _ = d.await;
            }
        });
    }
}

/// One streaming GET of the adjacent blocks `piece`, handing each block's bytes to
/// its waiters and its decode as soon as they are complete. Stops at the first
/// error; the senders left are dropped, so their blocks are fetched one by one.
/// Returns the decodes started, by block id.
async fn stream_piece(
    cache: &Arc<BlockCache>,
    store: &dyn ObjectStore,
    layer: &Arc<Layer>,
    piece: &[BlockMeta],
    senders: Vec<tokio::sync::oneshot::Sender<Bytes>>,
) -> Vec<(u32, tokio::task::JoinHandle<()>)> {
    let mut decodes = vec![];
    let _permit = STREAM_PERMITS.acquire().await.expect("the semaphore is never closed");
    let (start, end) = (piece[0].file_offset, piece[piece.len() - 1].file_offset + piece[piece.len() - 1].compressed_size);
    let mut body = match layer.stream_range(store, start..end).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(file = %layer.path, error = %e, "streaming read-ahead failed; its blocks are fetched one by one");
            return decodes;
        }
    };
    let mut senders = senders.into_iter();
    let mut blocks = piece.iter();
    let mut current = blocks.next();
    let mut buf = BytesMut::with_capacity(current.map_or(0, |b| b.compressed_size as usize));
    while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(file = %layer.path, error = %e, "streaming read-ahead cut short; the rest of its blocks are fetched one by one");
                return decodes;
            }
        };
        while !chunk.is_empty() {
            let Some(b) = current else { return decodes };
            let want = b.compressed_size as usize - buf.len();
            let take = want.min(chunk.len());
            let done = if buf.is_empty() && take == b.compressed_size as usize {
                // A whole block inside one chunk: no copy.
                Some(chunk.split_to(take))
            } else {
                buf.extend_from_slice(&chunk.split_to(take));
                (buf.len() == b.compressed_size as usize).then(|| std::mem::take(&mut buf).freeze())
            };
            if let Some(bytes) = done {
                decodes.push((b.id.0, deliver(cache, layer, b, senders.next(), bytes)));
                current = blocks.next();
                if let Some(n) = current {
                    buf.reserve(n.compressed_size as usize);
                }
            }
        }
    }
    decodes
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
