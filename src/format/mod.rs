//! The atlas 0.10 file formats: what bytes mean, nothing about where they live.
//!
//! Owns: the rkyv footer and stats archives ([`footer`]), block codecs ([`codec`]),
//! dtypes and their JSON names ([`dtype`]), chunk-grid maths and region copies
//! ([`grid`]), chunk cell encodings ([`cells`]), statistics ([`stats`]) and the
//! block packer that lays chunks out in a layer ([`packer`]).
//! May call: nothing else in this crate. Pure functions over byte slices.

pub mod cells;
pub mod codec;
pub mod dtype;
pub mod footer;
pub mod grid;
pub mod packer;
pub mod stats;

pub use codec::Codec;
pub use footer::{BlockId, BlockMeta, ChunkAddress, CodecId, DType, EntryMeta, EntryStats, FillValue, Footer, StatValue, StatsFile};

/// Errors in decoding or validating atlas file contents.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("invalid footer: {0}")]
    InvalidFooter(String),
    #[error("unsupported footer version {0} (atlas 0.10 files are version 4)")]
    UnsupportedVersion(u32),
    #[error("codec error: {0}")]
    Codec(String),
    #[error("block {0} not found in layer")]
    BlockOutOfRange(u32),
    #[error("corrupt chunk: {0}")]
    CorruptChunk(String),
    #[error("{0}")]
    Invalid(String),
}
