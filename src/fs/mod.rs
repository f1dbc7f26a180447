//! fs core: the filesystem view of a store; testable without FUSE.
//!
//! Owns: the NumPy `.npy` mapping of arrays ([`npy`]), the byte-range → array-box
//! mapping ([`layout`]), the cross-dataset stack view ([`stacked`]), the zarr v3 view ([`zarr`]), and the
//! rules for names it creates ([`names`]), and the
//! filesystem operations themselves ([`core`]):
//! inodes, open files, write staging, control files, extended attributes.
//! Errors leave as [`FsError`], which carries the errno.
//! May call: [`crate::store`] and [`crate::format`] only.

pub mod core;
pub mod error;
pub mod layout;
pub mod names;
pub mod npy;
pub mod spool;
pub mod stacked;
pub mod zarr;

pub use core::{AtlasFs, FsConfig, Invalidate, Invalidator, Kind, NodeAttr, Opened};
pub use error::{FsError, FsResult};
