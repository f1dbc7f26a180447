//! Blocks too big for the block cache: read only the bytes a read needs.
//!
//! A store written elsewhere may hold a chunk of hundreds of MiB in one block
//! (atlas-python with `chunks = shape`, or an old `atlasfs put`). Decoding such a
//! block whole for every read, and keeping it, is what blew a 256 MiB
//! `--cache-size` to 3 GB of RSS. So a block over [`BlockCache::too_big`] never
//! enters the cache: each read fetches and decodes it as a stream and keeps only
//! the byte range of the chunk it needs.
//!
//! - Uncompressed blocks: one ranged GET of exactly those bytes.
//! - zstd blocks: the compressed bytes are streamed (a ranged GET, never held
//!   whole) through a streaming decoder, in slices of [`DECODE_SLICE`] on the
//!   blocking pool; decoding stops once the range is out. Memory: one slice in,
//!   one slice out, and the range itself. CPU: a read near the end of a block
//!   decodes everything before it, every time (that is the price of one huge
//!   chunk; `atlasfs put` now chunks automatically, and `compact` keeps a store's
//!   chunks as they are) — except for a sequential reader: the decoder is paused
//!   after each read ([`Cursors`]) and the next read continues it.
//! - lz4 blocks (a single lz4 block, not a frame, so not streamable): fetched and
//!   decoded whole, then dropped at once — bounded by one block, not cached.
//!
//! Used by `ArrayFile::read_region` for fixed-width entries; read-ahead and the
//! coalesced loads skip these blocks. Not used (the block is decoded whole) by the
//! stacked view, strings, compaction and statistics.
//!
//! [`BlockCache::too_big`]: super::cache::BlockCache::too_big

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::ObjectStore;

use super::layer::Layer;
use super::{Error, ErrorDetail, Result};
use crate::format::BlockMeta;
use crate::format::footer::CodecId;

/// Compressed bytes decoded per step of a streamed block.
const DECODE_SLICE: usize = 4 << 20;

fn corrupt(layer: &Layer, msg: String) -> Error {
    ErrorDetail::Corrupt { path: layer.path.to_string(), source: crate::format::FormatError::Codec(msg) }.into()
}

/// Bytes `range` of the decompressed block `b` of `layer`, without decoding or
/// holding more of it than needed.
pub(crate) async fn read_range(cursors: &Cursors, store: &dyn ObjectStore, layer: &Arc<Layer>, b: &BlockMeta, range: Range<u64>) -> Result<Vec<u8>> {
    if range.end > b.uncompressed_size || range.start > range.end {
        return Err(corrupt(layer, format!("bytes {range:?} outside block {} of {} bytes", b.id.0, b.uncompressed_size)));
    }
    match &b.codec {
        CodecId::None => {
            let got = layer.fetch_range(store, b.file_offset + range.start..b.file_offset + range.end).await?;
            if got.len() as u64 != range.end - range.start {
                return Err(corrupt(layer, format!("short read of block {}", b.id.0)));
            }
            Ok(got.to_vec())
        }
        CodecId::Named(c) if c == "zstd" => zstd_range(cursors, store, layer, b, range).await,
        _ => {
            let z = layer.fetch_block(store, b).await?;
            let mut out = vec![];
            let (codec, n) = (b.codec.clone(), b.uncompressed_size as usize);
            let out = tokio::task::spawn_blocking(move || crate::format::codec::decompress_block_into(&codec, &z, n, &mut out).map(|_| out))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?
                .map_err(|source| ErrorDetail::Corrupt { path: layer.path.to_string(), source })?;
            Ok(out[range.start as usize..range.end as usize].to_vec())
        }
    }
}

/// Paused decoders of big zstd blocks, so that a sequential reader (`cp`, numpy
/// reading the file in order) continues where its last read stopped instead of
/// decoding the block from its start for every READ (quadratic). At most
/// [`CURSORS`] are kept; each holds at most about 20 MiB (a slice of compressed
/// input, up to [`KEEP_BEHIND`] decoded bytes behind the last read and a slice
/// ahead of it, the decoder's window).
#[derive(Default)]
pub(crate) struct Cursors {
    slots: parking_lot::Mutex<Vec<((u64, u32), Slot)>>,
}

/// One block's paused decoder; reads of the block take turns with it (the kernel
/// sends a sequential reader's READs a few at a time and slightly out of order:
/// each would otherwise start over from the block's start).
type Slot = Arc<tokio::sync::Mutex<Option<Cursor>>>;

const CURSORS: usize = 2;

/// Decoded bytes a cursor keeps behind its position, for READs that arrive out of order.
const KEEP_BEHIND: usize = 8 << 20;

impl Cursors {
    /// The slot of block `key`, made (evicting the oldest) if missing.
    fn slot(&self, key: (u64, u32)) -> Slot {
        let mut slots = self.slots.lock();
        if let Some((_, s)) = slots.iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        if slots.len() >= CURSORS {
            slots.remove(0);
        }
        let s = Slot::default();
        slots.push((key, s.clone()));
        s
    }

    /// Drops the cursors of a layer version that no longer exists.
    pub(crate) fn forget_layer(&self, layer_id: u64) {
        self.slots.lock().retain(|(k, _)| k.0 != layer_id);
    }
}

struct Cursor {
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    ended: bool,
    dec: zstd::stream::raw::Decoder<'static>,
    /// Compressed bytes not yet given to the decoder.
    input: Bytes,
    /// Decoded bytes `carry_start .. carry_start + carry.len()`, not yet handed out.
    carry_start: u64,
    carry: Vec<u8>,
}

impl Cursor {
    /// Decodes from `input` until it is used up or a slice of output is ready.
    fn step(mut self) -> std::io::Result<Cursor> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut scratch = vec![0u8; 1 << 20];
        let mut inb = InBuffer::around(&self.input[..]);
        loop {
            let mut outb = OutBuffer::around(&mut scratch[..]);
            self.dec.run(&mut inb, &mut outb)?;
            let n = outb.pos();
            self.carry.extend_from_slice(&scratch[..n]);
            if (inb.pos() == self.input.len() && n < scratch.len()) || self.carry.len() >= KEEP_BEHIND + DECODE_SLICE {
                break;
            }
        }
        let used = inb.pos();
        self.input = self.input.slice(used..);
        Ok(self)
    }
}

/// Streams a zstd block through a decoder, keeping only `range` of its output;
/// continues a paused decoder of the block when one has not passed the range.
async fn zstd_range(cursors: &Cursors, store: &dyn ObjectStore, layer: &Arc<Layer>, b: &BlockMeta, range: Range<u64>) -> Result<Vec<u8>> {
    let slot = cursors.slot((layer.id, b.id.0));
    let mut guard = slot.lock().await;
    let mut c = match guard.take() {
        Some(c) if c.carry_start <= range.start => c,
        _ => Cursor {
            stream: layer.stream_range(store, b.file_offset..b.file_offset + b.compressed_size).await?,
            ended: false,
            dec: zstd::stream::raw::Decoder::new().map_err(Error::Io)?,
            input: Bytes::new(),
            carry_start: 0,
            carry: vec![],
        },
    };
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    // `out` holds the range up to `next`.
    let mut next = range.start;
    loop {
        let pos = c.carry_start + c.carry.len() as u64;
        let (a, z) = (next.max(c.carry_start), range.end.min(pos));
        if a < z {
            out.extend_from_slice(&c.carry[(a - c.carry_start) as usize..(z - c.carry_start) as usize]);
            next = z;
        }
        if pos >= range.end {
            *guard = Some(c);
            return Ok(out);
        }
        // Keep the last KEEP_BEHIND bytes for READs that come a little out of order.
        let drop = c.carry.len().saturating_sub(KEEP_BEHIND);
        c.carry.drain(..drop);
        c.carry_start += drop as u64;
        if c.input.is_empty() && !c.ended {
            let mut more = BytesMut::new();
            while more.len() < DECODE_SLICE {
                match c.stream.next().await {
                    Some(part) => more.extend_from_slice(&part?),
                    None => {
                        c.ended = true;
                        break;
                    }
                }
            }
            c.input = more.freeze();
        }
        let was = c.carry.len();
        c = tokio::task::spawn_blocking(move || c.step())
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
            .map_err(|e| corrupt(layer, format!("zstd block {}: {e}", b.id.0)))?;
        if c.carry.len() == was && c.input.is_empty() && c.ended {
            return Err(corrupt(layer, format!("zstd block {} ended after {pos} of its {} bytes", b.id.0, b.uncompressed_size)));
        }
    }
}
