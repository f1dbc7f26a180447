//! One committed layer file (`data.af` or a sidecar `data.N.af`), with its footer
//! indexed by hash maps: entry by dataset name, chunk by coordinate, block by id.
//! (0.10 scanned lists linearly for each chunk; with thousands of datasets per
//! file that dominates reads.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use super::{Error, ErrorDetail, Result};
use crate::format::footer::{LAYER_MAGIC, TRAILER_LEN, decode_footer, trailer_archive_len};
use crate::format::{BlockMeta, ChunkAddress, EntryMeta, Footer, FormatError};

/// How much of a file's tail the first footer read fetches; most footers fit.
pub(crate) const TAIL_GUESS: u64 = 64 * 1024;
/// Data up to this size (or the footer's size) is fetched with a footer that did
/// not fit in the tail; a listed file no larger than this is fetched whole.
const FETCH_DATA_WITH_FOOTER: u64 = 1024 * 1024;
/// Data bytes kept with footers (`Layer::tail`) in all layers of the process. They
/// live as long as their array file stays open, outside the block cache's budget, so
/// they are capped: past the cap a layer keeps its footer only, fetches just that, and
/// its blocks are fetched when read.
const HELD_DATA_CAP: u64 = 16 * 1024 * 1024;
static HELD_DATA: AtomicU64 = AtomicU64::new(0);

/// Whether `n` more data bytes may be kept with a footer (a hint: the count may
/// move before they are; [`hold`] decides).
fn may_hold(n: u64) -> bool {
    HELD_DATA.load(Ordering::Relaxed) + n <= HELD_DATA_CAP
}

/// Counts `n` data bytes as kept, unless that would pass the cap.
fn hold(n: u64) -> bool {
    HELD_DATA.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| (h + n <= HELD_DATA_CAP).then_some(h + n)).is_ok()
}

#[derive(Debug)]
pub struct Layer {
    /// Cache identity of this file version (see `cache`).
    pub id: u64,
    pub path: Path,
    /// 0 for `data.af`, N for `data.N.af`.
    pub overlay: u32,
    /// File size in bytes.
    pub size: u64,
    /// The object's entity tag when known: block reads are conditional on it, so a
    /// file replaced by another writer (a compaction) is noticed, never misread.
    pub e_tag: Option<String>,
    pub footer: Footer,
    blocks: HashMap<u32, usize>,
    entries: HashMap<String, usize>,
    chunks: Vec<HashMap<Vec<u32>, ChunkAddress>>,
    /// The data bytes the footer read fetched along with the footer: file bytes
    /// `tail.0 ..` (up to where the footer starts). Blocks inside are served from
    /// here, so a small array's first read costs no request beyond the footer's.
    /// Counted in `HELD_DATA` (given back on drop).
    tail: (u64, Bytes),
}

impl Drop for Layer {
    fn drop(&mut self) {
        HELD_DATA.fetch_sub(self.tail.1.len() as u64, Ordering::Relaxed);
    }
}

/// The last bytes of a layer file, as one suffix GET returns them.
pub struct Tail {
    pub size: u64,
    pub e_tag: Option<String>,
    pub bytes: Bytes,
}

/// How [`Layer::load`] describes a file that does not end in the `ARRF` trailer.
const INCOMPLETE: &str = "no ARRF trailer: an incomplete write";

/// Whether `e` says a layer file lacks its trailer. Every layer is written in one PUT
/// (or one completed multipart upload), trailer last, so such a file is what a store
/// that tore a write left behind, never a layer some writer committed.
pub fn is_incomplete(e: &Error) -> bool {
    matches!(e.detail(), Some(ErrorDetail::Corrupt { source: FormatError::InvalidFooter(m), .. }) if m.starts_with(INCOMPLETE))
}

impl Layer {
    /// Indexes a footer and checks that every address it holds points inside the file.
    pub fn from_footer(id: u64, path: Path, overlay: u32, size: u64, e_tag: Option<String>, footer: Footer) -> Result<Layer> {
        let corrupt = |msg: String| Error::from(ErrorDetail::Corrupt { path: path.to_string(), source: FormatError::InvalidFooter(msg) });
        let mut blocks = HashMap::with_capacity(footer.blocks.len());
        for (i, b) in footer.blocks.iter().enumerate() {
            if b.file_offset.checked_add(b.compressed_size).is_none_or(|end| end > size) {
                return Err(corrupt(format!("block {} lies outside the {size}-byte file", b.id.0)));
            }
            blocks.insert(b.id.0, i);
        }
        let mut entries = HashMap::with_capacity(footer.entries.len());
        let mut chunks = Vec::with_capacity(footer.entries.len());
        for (i, e) in footer.entries.iter().enumerate() {
            // Reads divide by the chunk shape and index by the coordinates: a damaged
            // layout must be refused here, not panic a reader later.
            let (shape, chunk) = (&e.layout.shape, &e.layout.storage.chunk_shape);
            if !e.deleted && (shape.len() != chunk.len() || shape.iter().zip(chunk).any(|(&s, &c)| c == 0 && s > 0)) {
                return Err(corrupt(format!("entry {:?} has shape {shape:?} and chunk shape {chunk:?}", e.name)));
            }
            let grid = (!e.deleted).then(|| crate::format::grid::Grid::new(shape.iter().map(|&x| x as usize).collect(), chunk.iter().map(|&x| x as usize).collect()));
            let mut map = HashMap::with_capacity(e.layout.storage.chunks.len());
            for c in &e.layout.storage.chunks {
                if grid.as_ref().is_some_and(|g| !g.contains(&c.coord)) {
                    return Err(corrupt(format!("entry {:?} chunk {:?} lies outside its grid of shape {shape:?}", e.name, c.coord)));
                }
                let b = blocks
                    .get(&c.address.block_id.0)
                    .map(|&j| &footer.blocks[j])
                    .ok_or_else(|| corrupt(format!("entry {:?} points at missing block {}", e.name, c.address.block_id.0)))?;
                if c.address.offset as u64 + c.address.size as u64 > b.uncompressed_size {
                    return Err(corrupt(format!("entry {:?} chunk {:?} overruns block {}", e.name, c.coord, b.id.0)));
                }
                map.insert(c.coord.clone(), c.address);
            }
            // Later duplicates win, as in a file rewritten by appending.
            entries.insert(e.name.clone(), i);
            chunks.push(map);
        }
        Ok(Layer { id, path, overlay, size, e_tag, footer, blocks, entries, chunks, tail: (size, Bytes::new()) })
    }

    /// Reads and indexes the footer of an existing layer file; `size` is the file's
    /// size when a LIST gave it (the tail is then asked for as a bounded range).
    pub async fn load(store: &dyn ObjectStore, path: Path, overlay: u32, size: Option<u64>) -> Result<Layer> {
        let tail = match size {
            Some(size) => Self::fetch_tail_sized(store, &path, size).await?,
            None => Self::fetch_tail(store, &path).await?,
        };
        Self::from_tail(store, path, overlay, tail).await
    }

    /// The last `TAIL_GUESS` bytes of a file of `size` bytes (as listed), or all of it
    /// when it is at most `FETCH_DATA_WITH_FOOTER`, asked for as a bounded range, never
    /// as a suffix longer than the file: S3 and moto answer such a suffix with the
    /// whole object, s3s-fs 0.14.1 with `500 InternalError`. A whole small file costs
    /// one round trip where a footer that outgrew the tail (a sidecar shared by ~300
    /// datasets or more) would cost a second, and its blocks come with it; 1 MiB is
    /// what one 50 ms round trip carries at 20 MiB/s. A file that changed size since it
    /// was listed is asked for again at its new size.
    pub async fn fetch_tail_sized(store: &dyn ObjectStore, path: &Path, mut size: u64) -> Result<Tail> {
        for _ in 0..3 {
            let want = if size <= FETCH_DATA_WITH_FOOTER && may_hold(size) { size } else { TAIL_GUESS.min(size) };
            let range = size - want..size;
            if range.is_empty() {
                // An empty object: no trailer; `from_tail` reports it as incomplete.
                let meta = store.head(path).await?;
                return Ok(Tail { size: meta.size, e_tag: meta.e_tag, bytes: Bytes::new() });
            }
            let got = store.get_opts(path, GetOptions { range: Some(GetRange::Bounded(range)), ..Default::default() }).await?;
            if got.meta.size == size {
                let e_tag = got.meta.e_tag.clone();
                return Ok(Tail { size, e_tag, bytes: got.bytes().await? });
            }
            size = got.meta.size;
        }
        Self::fetch_tail(store, path).await
    }

    /// The last `TAIL_GUESS` bytes of a file (all of a small one), in one GET: what
    /// [`Self::from_tail`] needs. Can be started before the file is known to exist
    /// (the array file's open asks for `data.af` alongside its LIST).
    pub async fn fetch_tail(store: &dyn ObjectStore, path: &Path) -> Result<Tail> {
        let got = store.get_opts(path, GetOptions { range: Some(GetRange::Suffix(TAIL_GUESS)), ..Default::default() }).await?;
        let (size, e_tag) = (got.meta.size, got.meta.e_tag.clone());
        Ok(Tail { size, e_tag, bytes: got.bytes().await? })
    }

    /// Indexes the footer found in `tail` (one more ranged GET when it is larger
    /// than the tail). The data bytes before the footer in the tail are kept: blocks
    /// there are read without a request.
    pub async fn from_tail(store: &dyn ObjectStore, path: Path, overlay: u32, tail: Tail) -> Result<Layer> {
        let corrupt = |source: FormatError| Error::from(ErrorDetail::Corrupt { path: path.to_string(), source });
        let Tail { size, e_tag, bytes: mut tail } = tail;
        if !tail.ends_with(LAYER_MAGIC) {
            return Err(corrupt(FormatError::InvalidFooter(format!("{INCOMPLETE} ({size} bytes)"))));
        }
        let len = trailer_archive_len(&tail, LAYER_MAGIC).map_err(corrupt)?;
        let need = len
            .checked_add(TRAILER_LEN as u64)
            .filter(|&n| n <= size)
            .ok_or_else(|| corrupt(FormatError::InvalidFooter(format!("footer length {len} exceeds the {size}-byte file"))))?;
        let data;
        if need > tail.len() as u64 {
            // The footer outgrew the tail (an array file shared by ~300 datasets or
            // more). When the data before it is no larger than the footer itself
            // (small arrays) or 1 MiB, it comes in the same request: the read that
            // follows then needs no third round trip for its block.
            let footer_start = size - need;
            let start = if footer_start <= need.max(FETCH_DATA_WITH_FOOTER) && may_hold(footer_start) { 0 } else { footer_start };
            let opts = GetOptions { range: Some(GetRange::Bounded(start..size)), if_match: e_tag.clone(), ..Default::default() };
            let got = store.get_opts(&path, opts).await.map_err(|e| stale_or(e, &path))?.bytes().await?;
            let split = (footer_start - start) as usize;
            if got.len() != (size - start) as usize {
                return Err(corrupt(FormatError::InvalidFooter(format!("asked for bytes {start}..{size}, got {}", got.len()))));
            }
            data = got.slice(..split);
            tail = got.slice(split..);
        } else {
            data = tail.slice(..tail.len() - need as usize);
        }
        let footer = decode_footer(&tail).map_err(corrupt)?;
        let mut layer = Layer::from_footer(super::cache::next_layer_id(), path, overlay, size, e_tag, footer)?;
        let footer_start = size - need;
        // A copy, so that the footer's bytes fetched with the data are not kept too.
        if !data.is_empty() && hold(data.len() as u64) {
            layer.tail = (footer_start - data.len() as u64, Bytes::copy_from_slice(&data));
        }
        Ok(layer)
    }

    pub fn entry(&self, name: &str) -> Option<&EntryMeta> {
        self.entries.get(name).map(|&i| &self.footer.entries[i])
    }

    pub fn mentions(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn chunk(&self, name: &str, coord: &[u32]) -> Option<ChunkAddress> {
        self.entries.get(name).and_then(|&i| self.chunks[i].get(coord).copied())
    }

    pub fn block(&self, id: u32) -> Option<&BlockMeta> {
        self.blocks.get(&id).map(|&i| &self.footer.blocks[i])
    }

    /// Compressed bytes of one block.
    pub async fn fetch_block(self: &Arc<Self>, store: &dyn ObjectStore, b: &BlockMeta) -> Result<Bytes> {
        self.fetch_range(store, b.file_offset..b.file_offset + b.compressed_size).await
    }

    /// Bytes `range` of this version of the file (conditional on its entity tag),
    /// from the tail read with the footer when it lies there.
    pub async fn fetch_range(&self, store: &dyn ObjectStore, range: std::ops::Range<u64>) -> Result<Bytes> {
        let (at, held) = &self.tail;
        if range.start >= *at && range.end <= at + held.len() as u64 {
            return Ok(held.slice((range.start - at) as usize..(range.end - at) as usize));
        }
        // Long ranges go as concurrent parts (see `ranged`).
        super::ranged::get_range(store, &self.path, range, self.e_tag.clone()).await.map_err(|e| stale_or(e, &self.path))
    }
}

impl Layer {
    /// Bytes `range` of this version of the file as a stream (for blocks too big to
    /// hold: see `big_block`).
    pub(crate) async fn stream_range(&self, store: &dyn ObjectStore, range: std::ops::Range<u64>) -> Result<futures::stream::BoxStream<'static, object_store::Result<Bytes>>> {
        let opts = GetOptions { range: Some(GetRange::Bounded(range)), if_match: self.e_tag.clone(), ..Default::default() };
        let got = store.get_opts(&self.path, opts).await.map_err(|e| stale_or(e, &self.path))?;
        Ok(got.into_stream())
    }
}

/// A failed precondition means the file was replaced since we read its footer.
fn stale_or(e: object_store::Error, path: &Path) -> Error {
    match e {
        object_store::Error::Precondition { .. } => ErrorDetail::Stale(path.to_string()).into(),
        // The file is gone (a compaction elsewhere deleted this sidecar): stale too.
        object_store::Error::NotFound { .. } => ErrorDetail::Stale(path.to_string()).into(),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::footer::encode_footer;
    use crate::format::footer::{ArrayLayout, Attributes, ChunkEntry, StorageLayout};
    use crate::format::{BlockId, CodecId, DType};

    fn footer(shape: Vec<u32>, chunk_shape: Vec<u32>, coord: Vec<u32>) -> Footer {
        let mut f = Footer::empty();
        f.blocks.push(BlockMeta { id: BlockId(0), file_offset: 0, compressed_size: 8, uncompressed_size: 8, codec: CodecId::None });
        let address = ChunkAddress { block_id: BlockId(0), offset: 0, size: 8 };
        let storage = StorageLayout { chunk_shape, chunks: vec![ChunkEntry { coord, address }] };
        f.entries.push(EntryMeta {
            name: "a".into(),
            dtype: DType::Float64,
            layout: ArrayLayout { shape, dimension_names: vec![], storage },
            fill_value: None,
            deleted: false,
            attributes: Attributes::U16(vec![]),
        });
        f
    }

    /// Layer files of 1 MiB or less come whole with their footer and keep their data
    /// for the reads that follow, but never more than `HELD_DATA_CAP` in all: past it
    /// a layer keeps its footer only, and its blocks still read exactly (fetched).
    #[test]
    fn data_kept_with_footers_stays_within_the_cap() {
        use object_store::{PutPayload, memory::InMemory};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = InMemory::new();
        let n = 20; // 20 files of ~1 MiB: over the 16 MiB cap in all
        let len = (FETCH_DATA_WITH_FOOTER - 4096) as usize;
        let data = |i: usize| (0..len).map(|j| (j * 31 + i * 7) as u8).collect::<Vec<u8>>();
        let layers: Vec<Layer> = rt.block_on(async {
            let mut layers = vec![];
            for i in 0..n {
                let mut f = footer(vec![4], vec![2], vec![1]);
                f.blocks[0].compressed_size = len as u64;
                f.blocks[0].uncompressed_size = len as u64;
                let mut file = data(i);
                file.extend(encode_footer(&f));
                let (path, size) = (Path::from(format!("a/data.{}.af", i + 1)), file.len() as u64);
                store.put(&path, PutPayload::from(file)).await.unwrap();
                layers.push(Layer::load(&store, path, i as u32 + 1, Some(size)).await.unwrap());
            }
            layers
        });
        let held: Vec<usize> = layers.iter().map(|l| l.tail.1.len()).collect();
        assert!(held.iter().sum::<usize>() as u64 <= HELD_DATA_CAP, "kept {held:?}, over the cap");
        assert!(held.contains(&len), "the first files keep their data: {held:?}");
        // Past the cap a file keeps its footer, and of its data at most what the tail
        // read brought while room was left (the cap is process-wide: other tests
        // running at the same time hold and release their share).
        assert!(held.iter().any(|&h| h < len), "past the cap a file does not keep all its data: {held:?}");
        rt.block_on(async {
            for (i, l) in layers.iter().enumerate() {
                let b = l.block(0).unwrap().clone();
                assert!(l.fetch_range(&store, b.file_offset..b.file_offset + b.compressed_size).await.unwrap() == data(i), "block of file {i}");
            }
        });
        // Dropped layers give their share back: the last file, which kept nothing,
        // keeps its data when loaded again.
        let last = layers.last().unwrap().path.clone();
        drop(layers);
        let again = rt.block_on(async { Layer::load(&store, last.clone(), n as u32, Some(store.head(&last).await.unwrap().size)).await }).unwrap();
        assert_eq!(again.tail.1.len(), len, "a layer loaded after the others were dropped keeps its data");
    }

    /// A chunk shape of 0 (a division by zero in every read) or coordinates outside
    /// the grid (an index past the array) are refused when the footer is indexed.
    #[test]
    fn damaged_layouts_are_refused() {
        let ok = |f| Layer::from_footer(1, Path::from("a/data.af"), 0, 100, None, f);
        ok(footer(vec![4], vec![2], vec![1])).unwrap();
        for (shape, chunk, coord) in [(vec![4], vec![0], vec![0]), (vec![4, 2], vec![2], vec![0]), (vec![4], vec![2], vec![2]), (vec![4], vec![2], vec![0, 0])] {
            let e = ok(footer(shape.clone(), chunk.clone(), coord.clone())).unwrap_err().message();
            assert!(e.starts_with("a/data.af: invalid footer: entry \"a\""), "{shape:?} {chunk:?} {coord:?}: {e}");
        }
    }
}
