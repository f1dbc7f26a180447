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
            Codec::Zstd => zstd::stream::decode_all(data).map_err(|e| FormatError::Codec(format!("zstd: {e}"))),
            Codec::Lz4 => lz4_flex::decompress_size_prepended(data).map_err(|e| FormatError::Codec(format!("lz4: {e}"))),
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
    let out = match codec {
        CodecId::None => data.to_vec(),
        CodecId::Named(n) if n == "zstd" => zstd::bulk::decompress(data, uncompressed_size).map_err(|e| FormatError::Codec(format!("zstd block: {e}")))?,
        CodecId::Named(n) if n == "lz4" => {
            if data.len() < 4 {
                return Err(FormatError::Codec("lz4 block shorter than its size prefix".into()));
            }
            let declared = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
            if declared != uncompressed_size {
                return Err(FormatError::Codec(format!("lz4 block says {declared} bytes, footer says {uncompressed_size}")));
            }
            lz4_flex::decompress_size_prepended(data).map_err(|e| FormatError::Codec(format!("lz4 block: {e}")))?
        }
        CodecId::Named(n) => return Err(FormatError::Codec(format!("unknown block codec {n:?}"))),
    };
    if out.len() != uncompressed_size {
        return Err(FormatError::Codec(format!("block decompressed to {} bytes, footer says {uncompressed_size}", out.len())));
    }
    Ok(out)
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

    #[test]
    fn corrupt_block_is_an_error_not_a_panic() {
        let raw = vec![7u8; 4096];
        let z = Codec::Zstd.compress_block(&raw);
        assert!(decompress_block(&Codec::Zstd.id(), &z[..z.len() / 2], raw.len()).is_err());
        assert!(decompress_block(&Codec::Lz4.id(), &[1, 2], 10).is_err());
        assert!(decompress_block(&CodecId::Named("brotli".into()), &z, raw.len()).is_err());
        assert!(decompress_block(&CodecId::None, &raw, 5).is_err());
    }
}
