//! Block and metadata compression: zstd frames, lz4_flex blocks with a u32 LE
//! size prefix (not the LZ4 frame format), or raw bytes.

use serde::{Deserialize, Serialize};

use super::{CodecId, FormatError};

/// Compression of array blocks and of the metadata file. The JSON strings are the
/// variant names (`"Zstd"`, `"Lz4"`, `"Uncompressed"`), as atlas 0.10 wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Codec {
    #[default]
    Zstd,
    Lz4,
    Uncompressed,
}

/// zstd level for array blocks (atlas 0.10 uses 3).
const BLOCK_ZSTD_LEVEL: i32 = 3;

/// Largest block a footer may declare: a chunk is addressed by a u32 offset and a
/// u32 size inside its block, so nothing honest is larger.
pub const MAX_BLOCK_BYTES: u64 = 2 * u32::MAX as u64;
/// Largest metadata file accepted after decompression (10,000 datasets take ~10 MB).
pub const MAX_META_BYTES: usize = 1 << 30;

/// Most bytes `compressed` bytes of zstd can expand to: a block is at most 128 KiB
/// and takes at least 4 bytes (an RLE block), so sizes read from a footer or frame
/// header that claim more are lies, refused before anything is allocated.
fn zstd_bound(compressed: usize) -> u64 {
    (compressed as u64 / 4 + 1).saturating_mul(128 << 10)
}

/// The same for lz4 blocks: one input byte encodes at most 255 bytes of match.
fn lz4_bound(compressed: usize) -> u64 {
    (compressed as u64).saturating_mul(255).saturating_add(64)
}

/// zstd decoding that allocates only as output appears, and at most `limit` bytes.
fn zstd_stream_limited(data: &[u8], limit: u64) -> Result<Vec<u8>, FormatError> {
    use std::io::Read;
    let dec = zstd::stream::Decoder::new(data).map_err(|e| FormatError::Codec(format!("zstd: {e}")))?;
    let mut out = Vec::new();
    dec.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|e| FormatError::Codec(format!("zstd: {e}")))?;
    if out.len() as u64 > limit {
        return Err(FormatError::Codec(format!("zstd data expands past the {limit}-byte limit")));
    }
    Ok(out)
}

/// lz4 with a u32 LE size prefix, refusing sizes the input cannot hold or above `limit`.
fn lz4_prepended_limited(data: &[u8], limit: u64) -> Result<Vec<u8>, FormatError> {
    if data.len() < 4 {
        return Err(FormatError::Codec("lz4 data shorter than its size prefix".into()));
    }
    let declared = u32::from_le_bytes(data[..4].try_into().unwrap()) as u64;
    if declared > limit || declared > lz4_bound(data.len() - 4) {
        return Err(FormatError::Codec(format!("lz4 data claims {declared} bytes, more than its {} bytes can hold", data.len())));
    }
    lz4_flex::decompress_size_prepended(data).map_err(|e| FormatError::Codec(format!("lz4: {e}")))
}

/// Compresses blocks one after another into one reused output buffer, with one
/// zstd context: the same bytes as [`Codec::compress_block`] without a fresh context
/// (~1 MiB of zstd workspace) and a fresh ~8 MiB output per block, which the
/// daemon's fixed mmap threshold (src/cli) makes fresh mappings, faulted in page by
/// page.
#[derive(Default)]
pub struct BlockCompressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for BlockCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCompressor").field("out_capacity", &self.out.capacity()).finish_non_exhaustive()
    }
}

impl BlockCompressor {
    /// `raw` compressed with `codec` (for `Uncompressed`, `raw` itself).
    pub fn compress<'a>(&'a mut self, codec: Codec, raw: &'a [u8]) -> &'a [u8] {
        self.out.clear();
        match codec {
            Codec::Zstd => {
                let z = self.zstd.get_or_insert_with(|| zstd::bulk::Compressor::new(BLOCK_ZSTD_LEVEL).expect("a zstd context"));
                self.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                z.compress_to_buffer(raw, &mut self.out).expect("zstd compression into a buffer of the bound's size");
            }
            Codec::Lz4 => {
                // compress_prepend_size's layout: the raw length (u32 LE), then the block.
                self.out.resize(4 + lz4_flex::block::get_maximum_output_size(raw.len()), 0);
                self.out[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
                let n = lz4_flex::block::compress_into(raw, &mut self.out[4..]).expect("lz4 compression into a buffer of the bound's size");
                self.out.truncate(4 + n);
            }
            Codec::Uncompressed => return raw,
        }
        &self.out
    }
}

impl Codec {
    pub fn id(self) -> CodecId {
        match self {
            Codec::Zstd => CodecId::Named("zstd".into()),
            Codec::Lz4 => CodecId::Named("lz4".into()),
            Codec::Uncompressed => CodecId::None,
        }
    }

    /// Compresses one array block.
    pub fn compress_block(self, raw: &[u8]) -> Vec<u8> {
        match self {
            Codec::Zstd => zstd::bulk::compress(raw, BLOCK_ZSTD_LEVEL).expect("zstd compression of an in-memory buffer"),
            Codec::Lz4 => lz4_flex::compress_prepend_size(raw),
            Codec::Uncompressed => raw.to_vec(),
        }
    }

    /// Compresses the metadata file (zstd at the library default level).
    pub fn compress_meta(self, raw: &[u8]) -> Vec<u8> {
        match self {
            Codec::Zstd => zstd::stream::encode_all(raw, 0).expect("zstd compression of an in-memory buffer"),
            Codec::Lz4 => lz4_flex::compress_prepend_size(raw),
            Codec::Uncompressed => raw.to_vec(),
        }
    }

    pub fn decompress_meta(self, data: &[u8]) -> Result<Vec<u8>, FormatError> {
        match self {
            Codec::Zstd => zstd_stream_limited(data, MAX_META_BYTES as u64),
            Codec::Lz4 => lz4_prepended_limited(data, MAX_META_BYTES as u64),
            Codec::Uncompressed => Ok(data.to_vec()),
        }
    }

    pub fn parse(s: &str) -> Option<Codec> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Some(Codec::Zstd),
            "lz4" => Some(Codec::Lz4),
            "none" | "uncompressed" => Some(Codec::Uncompressed),
            _ => None,
        }
    }
}

/// Decompresses one block by the codec recorded in its `BlockMeta`, checking the size.
pub fn decompress_block(codec: &CodecId, data: &[u8], uncompressed_size: usize) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    decompress_block_into(codec, data, uncompressed_size, &mut out)?;
    Ok(out)
}

/// [`decompress_block`] into `out`, whose allocation is reused (the block cache
/// recycles evicted blocks' buffers). The size comes from a footer, so it is
/// checked against what the compressed bytes can hold before it is used to allocate.
pub fn decompress_block_into(codec: &CodecId, data: &[u8], uncompressed_size: usize, out: &mut Vec<u8>) -> Result<(), FormatError> {
    if uncompressed_size as u64 > MAX_BLOCK_BYTES {
        return Err(FormatError::Codec(format!("block claims {uncompressed_size} bytes, more than the {MAX_BLOCK_BYTES}-byte limit")));
    }
    // Resizing a reused buffer writes only the bytes it did not hold yet.
    let n = uncompressed_size;
    match codec {
        CodecId::None => {
            out.clear();
            out.extend_from_slice(data);
        }
        CodecId::Named(c) if c == "zstd" => {
            if n as u64 > zstd_bound(data.len()) {
                return Err(FormatError::Codec(format!("zstd block of {} bytes cannot hold the {n} bytes the footer says", data.len())));
            }
            match zstd::zstd_safe::get_frame_content_size(data) {
                Ok(Some(m)) if m != n as u64 => return Err(FormatError::Codec(format!("zstd block says {m} bytes, footer says {n}"))),
                Ok(Some(_)) => {
                    out.resize(n, 0);
                    let got = zstd::bulk::decompress_to_buffer(data, out).map_err(|e| FormatError::Codec(format!("zstd block: {e}")))?;
                    out.truncate(got);
                }
                // No size in the frame header: decode without trusting one.
                _ => *out = zstd_stream_limited(data, n as u64).map_err(|e| FormatError::Codec(format!("block: {e}")))?,
            }
        }
        CodecId::Named(c) if c == "lz4" => {
            if data.len() < 4 {
                return Err(FormatError::Codec("lz4 block shorter than its size prefix".into()));
            }
            let declared = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
            if declared != n {
                return Err(FormatError::Codec(format!("lz4 block says {declared} bytes, footer says {n}")));
            }
            if declared as u64 > lz4_bound(data.len() - 4) {
                return Err(FormatError::Codec(format!("block: lz4 data claims {declared} bytes, more than its {} bytes can hold", data.len())));
            }
            out.resize(n, 0);
            let got = lz4_flex::block::decompress_into(&data[4..], out).map_err(|e| FormatError::Codec(format!("block: lz4: {e}")))?;
            out.truncate(got);
        }
        CodecId::Named(c) => return Err(FormatError::Codec(format!("unknown block codec {c:?}"))),
    }
    if out.len() != n {
        return Err(FormatError::Codec(format!("block decompressed to {} bytes, footer says {n}", out.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trip_every_codec() {
        let raw: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
        for c in [Codec::Zstd, Codec::Lz4, Codec::Uncompressed] {
            let z = c.compress_block(&raw);
            assert_eq!(decompress_block(&c.id(), &z, raw.len()).unwrap(), raw, "{c:?}");
            assert_eq!(c.decompress_meta(&c.compress_meta(&raw)).unwrap(), raw);
        }
    }

    /// A reused compressor writes the bytes a fresh one does, block after block of
    /// other sizes (its buffer longer or shorter than the next output).
    #[test]
    fn a_reused_block_compressor_writes_what_compress_block_does() {
        let blocks: Vec<Vec<u8>> = [40_000u32, 3_000, 100_000, 7].iter().map(|&n| (0..n).flat_map(|i| (i.wrapping_mul(2_654_435_761) % 251).to_le_bytes()).collect()).collect();
        for c in [Codec::Zstd, Codec::Lz4, Codec::Uncompressed] {
            let mut bc = BlockCompressor::default();
            for raw in &blocks {
                assert!(bc.compress(c, raw) == c.compress_block(raw).as_slice(), "{c:?}, {} bytes", raw.len());
            }
        }
    }

    /// The cache decodes into buffers of evicted blocks, longer or shorter than the new one.
    #[test]
    fn decoding_into_a_used_buffer_leaves_only_the_block() {
        let raw: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 89).to_le_bytes()).collect();
        for c in [Codec::Zstd, Codec::Lz4, Codec::Uncompressed] {
            let z = c.compress_block(&raw);
            for used in [vec![5u8; 100], vec![5u8; 2 * raw.len()]] {
                let mut buf = used;
                decompress_block_into(&c.id(), &z, raw.len(), &mut buf).unwrap();
                assert_eq!(buf, raw, "{c:?}");
            }
        }
    }

    #[test]
    fn corrupt_block_is_an_error_not_a_panic() {
        let raw = vec![7u8; 4096];
        let z = Codec::Zstd.compress_block(&raw);
        assert!(decompress_block(&Codec::Zstd.id(), &z[..z.len() / 2], raw.len()).is_err());
        assert!(decompress_block(&Codec::Lz4.id(), &[1, 2], 10).is_err());
        assert!(decompress_block(&CodecId::Named("brotli".into()), &z, raw.len()).is_err());
        assert!(decompress_block(&CodecId::None, &raw, 5).is_err());
    }

    /// Found by fuzz/block: a footer's size went straight into an allocation
    /// (`capacity overflow` panic for 0x9292929292929292, an abort for 4 GiB).
    #[test]
    fn sizes_from_footers_are_bounded_before_allocating() {
        let z = Codec::Zstd.compress_block(&[7u8; 4096]);
        for size in [0x9292_9292_9292_9292usize, usize::MAX, 1 << 40, 1 << 31] {
            let e = decompress_block(&Codec::Zstd.id(), &z, size).unwrap_err();
            assert!(e.to_string().contains("bytes"), "{e}");
        }
        // a frame header whose content size disagrees with the footer
        assert!(decompress_block(&Codec::Zstd.id(), &z, 4095).unwrap_err().to_string().contains("footer says 4095"));
        // an lz4 prefix of 4 GiB over 10 bytes of data
        let mut l = u32::MAX.to_le_bytes().to_vec();
        l.extend_from_slice(&[0u8; 10]);
        assert!(decompress_block(&Codec::Lz4.id(), &l, u32::MAX as usize).is_err());
        // a zstd frame without a content size still decodes (streamed, bounded)
        let mut framed = vec![];
        let mut enc = zstd::stream::Encoder::new(&mut framed, 3).unwrap();
        std::io::Write::write_all(&mut enc, &[9u8; 1000]).unwrap();
        enc.finish().unwrap();
        assert_eq!(decompress_block(&Codec::Zstd.id(), &framed, 1000).unwrap(), vec![9u8; 1000]);
        assert!(decompress_block(&Codec::Zstd.id(), &framed, 999).is_err());
    }

    /// Found by fuzz/meta: `atlas.json.lz4` whose 4-byte prefix says ~4 GiB made
    /// lz4_flex allocate it; zstd metadata could expand without limit.
    #[test]
    fn metadata_decompression_is_bounded() {
        assert!(Codec::Lz4.decompress_meta(&[0xed, 0x23, 0xdd, 0xec]).is_err());
        let bomb = zstd::bulk::compress(&vec![b' '; 8 << 20], 19).unwrap();
        assert_eq!(Codec::Zstd.decompress_meta(&bomb).unwrap().len(), 8 << 20);
        assert!(zstd_stream_limited(&bomb, 1 << 20).unwrap_err().to_string().contains("limit"));
    }
}
