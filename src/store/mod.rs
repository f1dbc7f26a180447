//! The atlas store: many named datasets, each a set of named N-d arrays with
//! attributes, laid out variable-first (one array file per array name, shared by
//! every dataset that has that array).
//!
//! Owns: [`Atlas`] and [`DatasetView`] (the public API), the metadata file
//! ([`meta`]), array files with their layers and pending writes ([`array_file`]),
//! the shared block cache ([`cache`]), and backend selection ([`backend`]).
//! May call: [`crate::format`] only.

pub mod array_file;
mod atlas;
pub mod attr;
pub mod backend;
mod big_block;
pub mod cache;
pub mod dataset;
pub mod disk_cache;
mod element;
pub mod layer;
pub mod meta;
pub mod remote_error;

pub use atlas::{ArrayFileInfo, Atlas, StoreConfig, StoreInfo, StoreOptions};
pub use attr::Attr;
pub use dataset::{ArrayDef, DatasetView, clamp_region};
pub use element::{ArrayElement, TimestampNs};
pub use meta::{ArraySchema, DatasetMeta, MetaFormat};

pub use crate::format::cells::Cells;
pub use crate::format::{Codec, DType, EntryStats as ArrayStats, FillValue, StatValue};

use crate::format::FormatError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store API can fail with.
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
    #[error("no atlas store at {0}")]
    StoreNotFound(String),
    #[error("a store already exists at {0} (open it instead, or choose an empty location)")]
    StoreAlreadyExists(String),
    #[error("invalid name '{0}': must be non-empty, no '/', not '.' or '..', no leading '_'")]
    InvalidName(String),
    /// Bad arguments: rank, bounds, chunk shape, limits.
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("dtype mismatch: expected {expected}, got {actual}")]
    DTypeMismatch { expected: String, actual: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("attribute '{0}': non-finite floats cannot be stored in JSON metadata (use msgpack metadata)")]
    NonFiniteAttribute(String),
    /// A file in the store could not be decoded; names the file.
    #[error("{path}: {source}")]
    Corrupt { path: String, source: FormatError },
    #[error("{path}: metadata error: {msg}")]
    Meta { path: String, msg: String },
    /// A file changed under us (another writer compacted); refresh and retry.
    #[error("{0}: changed by another writer since it was opened")]
    Stale(String),
    /// Another writer changed the same dataset; our changes stay pending in memory.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Shown on one line, the server's XML error body shortened (`remote_error`).
    #[error("object store error: {}", remote_error::one_line(&.0.to_string()))]
    ObjectStore(#[from] object_store::Error),
    #[error(transparent)]
    DiskCache(#[from] disk_cache::DiskCacheError),
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
