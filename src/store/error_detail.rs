//! atlasfs's own failure kinds, carried inside atlas 0.10's `Error`.
//!
//! Design: [`Error`] has exactly atlas-rust 0.10's thirteen variants, so a 0.10
//! program's exhaustive `match` (no `_` arm) compiles unchanged. What atlasfs can
//! report beyond them (a store that already exists, bad arguments, corrupt files,
//! another writer's conflicting flush, a file changed under us, …) is an
//! [`ErrorDetail`] inside `Error::Io`: an `std::io::Error` whose [`ErrorKind`] says
//! the class (`AlreadyExists`, `InvalidInput`, `InvalidData`, `Unsupported`,
//! `ResourceBusy`, `StaleNetworkFileHandle`) and whose source downcasts to the
//! detail. A 0.10 caller sees an I/O error with a clear message and a kind; our own
//! layers (errno mapping in the fs core, the CLI's messages, the tests) ask
//! [`Error::detail`]. One error type from the format layer's callers up to the
//! crate root: no internal twin to keep in step, no conversion at the boundary.
//!
//! Build one with `ErrorDetail::X(..).into()` (or `?` on a `Result<_, ErrorDetail>`).

use std::io::ErrorKind;

use super::Error;
use super::disk_cache::DiskCacheError;
use crate::format::FormatError;

/// A failure atlas 0.10's `Error` has no variant for; reaches callers as
/// `Error::Io(e)` with `e.get_ref()` downcastable to this type ([`Error::detail`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorDetail {
    /// `create` over an existing store (0.10 silently reset it: D6). Kind `AlreadyExists`.
    #[error("a store already exists at {0} (open it instead, or choose an empty location)")]
    StoreAlreadyExists(String),
    /// Bad arguments: rank, bounds, chunk shape, limits, store URLs. Kind `InvalidInput`.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Reading or writing an array as another element type. Kind `InvalidInput`.
    #[error("dtype mismatch: expected {expected}, got {actual}")]
    DTypeMismatch { expected: String, actual: String },
    /// A dtype or backend this build cannot handle. Kind `Unsupported`.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// NaN or ±Inf as an attribute of a JSON store (0.10 wrote `null`: D7). Kind `InvalidInput`.
    #[error("attribute '{0}': non-finite floats cannot be stored in JSON metadata (use msgpack metadata)")]
    NonFiniteAttribute(String),
    /// A file in the store could not be decoded; names the file. Kind `InvalidData`.
    #[error("{path}: {source}")]
    Corrupt { path: String, source: FormatError },
    /// The metadata file (or a stats file) could not be encoded or decoded. Kind `InvalidData`.
    #[error("{path}: metadata error: {msg}")]
    MetaFile { path: String, msg: String },
    /// A file changed under us (another writer compacted); refresh and retry.
    /// Kind `StaleNetworkFileHandle`.
    #[error("{0}: changed by another writer since it was opened")]
    Stale(String),
    /// Another writer changed the same dataset; our changes stay pending in memory
    /// or were saved as a conflicted copy. Kind `ResourceBusy`.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The on-disk block cache (`--cache-dir`) could not be used. Kind `Other`, or
    /// the kind of the underlying I/O error.
    #[error(transparent)]
    DiskCache(#[from] DiskCacheError),
}

impl ErrorDetail {
    /// The `std::io::ErrorKind` the detail travels under.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ErrorDetail::StoreAlreadyExists(_) => ErrorKind::AlreadyExists,
            ErrorDetail::Invalid(_) | ErrorDetail::DTypeMismatch { .. } | ErrorDetail::NonFiniteAttribute(_) => ErrorKind::InvalidInput,
            ErrorDetail::Unsupported(_) => ErrorKind::Unsupported,
            ErrorDetail::Corrupt { .. } | ErrorDetail::MetaFile { .. } => ErrorKind::InvalidData,
            ErrorDetail::Stale(_) => ErrorKind::StaleNetworkFileHandle,
            ErrorDetail::Conflict(_) => ErrorKind::ResourceBusy,
            ErrorDetail::DiskCache(DiskCacheError::Io { source, .. }) => source.kind(),
            ErrorDetail::DiskCache(_) => ErrorKind::Other,
        }
    }
}

impl From<ErrorDetail> for Error {
    fn from(d: ErrorDetail) -> Self {
        Error::Io(std::io::Error::new(d.kind(), d))
    }
}

impl From<DiskCacheError> for Error {
    fn from(e: DiskCacheError) -> Self {
        ErrorDetail::DiskCache(e).into()
    }
}

impl Error {
    /// atlasfs's detail of an `Error::Io`, if it carries one (see [`ErrorDetail`]).
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            Error::Io(e) => e.get_ref()?.downcast_ref::<ErrorDetail>(),
            _ => None,
        }
    }

    /// The message for a log line or the CLI: the detail's own words when there is
    /// one (0.10's `Display` prefixes it with `I/O error: `, which it is not).
    pub fn message(&self) -> String {
        match self.detail() {
            Some(d) => d.to_string(),
            None => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_travel_inside_io_and_come_back() {
        let e: Error = ErrorDetail::Conflict("d".into()).into();
        assert!(matches!(&e, Error::Io(io) if io.kind() == ErrorKind::ResourceBusy));
        assert!(matches!(e.detail(), Some(ErrorDetail::Conflict(m)) if m == "d"));
        assert_eq!(e.to_string(), "I/O error: conflict: d");
        assert_eq!(e.message(), "conflict: d");
        let plain = Error::Io(std::io::Error::other("disk on fire"));
        assert!(plain.detail().is_none());
        assert_eq!(plain.message(), "I/O error: disk on fire");
        assert!(Error::DatasetNotFound("x".into()).detail().is_none());
    }
}
