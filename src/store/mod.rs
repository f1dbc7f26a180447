//! The atlas store: many named datasets, each a set of named N-d arrays with
//! attributes, laid out variable-first (one array file per array name, shared by
//! every dataset that has that array).
//!
//! Owns: [`Atlas`] and [`DatasetView`] (the public API), the metadata file
//! ([`meta`]), array files with their layers and pending writes ([`array_file`]),
//! the shared block cache ([`cache`]), and backend selection ([`backend`]).
//! May call: [`crate::format`] only.

mod api_mut;
pub mod array_file;
mod atlas;
pub mod attr;
pub mod autocompact;
pub mod backend;
mod big_block;
pub mod cache;
pub mod dataset;
pub mod disk_cache;
mod element;
pub mod error_detail;
#[cfg(test)]
mod flush_race;
mod huge_pages;
pub mod layer;
pub mod lease;
mod merged;
pub mod meta;
mod meta_json;
pub mod progress;
mod ranged;
pub mod remote_error;
pub mod stream_fetch;

pub use atlas::{ArrayFileInfo, Atlas, StoreConfig, StoreInfo, StoreOptions};
pub use attr::Attr;
pub use dataset::{ArrayDef, DatasetView, clamp_region};
pub use element::{ArrayElement, TimestampNs};
pub use error_detail::ErrorDetail;
pub use merged::{DeltaCache, MergedArrayMeta};
pub use meta::{ArraySchema, DatasetMeta, MetaFormat};

pub use crate::format::cells::Cells;
pub use crate::format::{Codec, DType, EntryStats as ArrayStats, FillValue, StatValue};

use crate::format::FormatError;

/// atlas 0.10's `Result<T>`; the second parameter, defaulted, serves internal code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store API can fail with: atlas-rust 0.10's `Error`, variant for
/// variant (names, payloads, order, messages; not `#[non_exhaustive]`), so a 0.10
/// caller's exhaustive `match` and `?` conversions compile unchanged.
///
/// atlasfs's further failure kinds (a store that already exists, bad arguments,
/// corrupt files, remote conflicts, stale files, …) arrive as `Io` holding an
/// [`ErrorDetail`]: ask [`Error::detail`] (module `error_detail`, docs/migrating.md).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dataset not found: {0}")]
    DatasetNotFound(String),
    #[error("dataset already exists: {0}")]
    DatasetAlreadyExists(String),
    #[error("array not found: {0}")]
    ArrayNotFound(String),
    #[error("array already exists: {0}")]
    ArrayAlreadyExists(String),
    /// `open_path` of a directory that does not exist (0.10 declared this and gave
    /// `ObjectStore` instead). The path is in the log line.
    #[error("store not found at path")]
    StoreNotFound,
    /// 0.10's message; `.` is refused too, as in 0.10.
    #[error("invalid name '{0}': must be non-empty, no '/', no '..', no leading '_'")]
    InvalidName(String),
    /// A file in the store failed to decode without a path to name (0.10 wrapped
    /// its `array-format` errors here). atlasfs reports files with `ErrorDetail::Corrupt`.
    #[error("array format error: {0}")]
    ArrayFormat(#[from] FormatError),
    /// A local I/O failure, or one of atlasfs's own failure kinds ([`Error::detail`]).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// JSON metadata could not be encoded or decoded (atlasfs names the file with
    /// `ErrorDetail::MetaFile` instead; this one comes from `?` on a `serde_json` result).
    #[error("metadata error: {0}")]
    Meta(#[from] serde_json::Error),
    #[error("metadata encode error: {0}")]
    MetaEncode(#[from] rmp_serde::encode::Error),
    #[error("metadata decode error: {0}")]
    MetaDecode(#[from] rmp_serde::decode::Error),
    #[error("metadata lz4 decompress error: {0}")]
    MetaLz4Decompress(#[from] lz4_flex::block::DecompressError),
    /// Shown on one line, the server's XML error body shortened (`remote_error`).
    #[error("object store error: {}", remote_error::one_line(&.0.to_string()))]
    ObjectStore(#[from] object_store::Error),
}

/// Dataset and array names: non-empty, no `/`, not `.` or `..`, no leading `_`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('_') || name.contains('/') || name == "." || name == ".." {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["temperature", "my-array", "x1", "lat.lon", "a", "a..b", ".hidden", "t[K]"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "_hidden", "_", "a/b", "/abs", "..", "."] {
            assert!(matches!(validate_name(bad), Err(Error::InvalidName(_))), "{bad}");
        }
    }
}
