//! The one error type the filesystem core returns: an errno plus a message.
//! Engine errors map onto errnos here, so the FUSE adapter only replies.

use std::fmt;

use crate::store::{Error as StoreError, ErrorDetail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub errno: i32,
    pub msg: String,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: i32, msg: impl Into<String>) -> Self {
        FsError { errno, msg: msg.into() }
    }
    pub fn noent(what: impl fmt::Display) -> Self {
        Self::new(libc::ENOENT, format!("{what}: no such file or directory"))
    }
    pub fn inval(msg: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, msg)
    }
    pub fn rofs() -> Self {
        Self::new(libc::EROFS, "read-only mount")
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(libc::EIO, msg)
    }
    /// Errors the user caused are logged at debug; the store's own failures at warn.
    pub fn is_user_error(&self) -> bool {
        !matches!(self.errno, libc::EIO | libc::ENOSPC | libc::ENOMEM)
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.msg, self.errno)
    }
}

impl std::error::Error for FsError {}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        // atlasfs's own failure kinds travel inside `Io` (store::error_detail).
        let errno = match e.detail() {
            Some(ErrorDetail::StoreAlreadyExists(_)) => libc::EEXIST,
            Some(ErrorDetail::Invalid(_) | ErrorDetail::DTypeMismatch { .. } | ErrorDetail::NonFiniteAttribute(_)) => libc::EINVAL,
            Some(ErrorDetail::Unsupported(_)) => libc::EINVAL,
            Some(ErrorDetail::Conflict(_)) => libc::EBUSY,
            Some(ErrorDetail::Stale(_)) => libc::ESTALE,
            Some(ErrorDetail::Corrupt { .. } | ErrorDetail::MetaFile { .. } | ErrorDetail::DiskCache(_)) => libc::EIO,
            None => match &e {
                StoreError::DatasetNotFound(_) | StoreError::ArrayNotFound(_) | StoreError::StoreNotFound => libc::ENOENT,
                StoreError::DatasetAlreadyExists(_) | StoreError::ArrayAlreadyExists(_) => libc::EEXIST,
                StoreError::InvalidName(_) => libc::EINVAL,
                StoreError::Io(_) | StoreError::ObjectStore(_) => libc::EIO,
                StoreError::ArrayFormat(_) | StoreError::Meta(_) | StoreError::MetaEncode(_) | StoreError::MetaDecode(_) | StoreError::MetaLz4Decompress(_) => libc::EIO,
            },
        };
        FsError::new(errno, e.message())
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string())
    }
}
