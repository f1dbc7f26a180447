//! atlasfs: the atlas 0.10 array store in our own code, and a FUSE view of it.
//!
//! Layers, lowest first; each may call only the ones below it:
//! `format` (bytes) → `store` (`Atlas`, `DatasetView`) → `fs` (filesystem core) → `fuse` → `cli`.

pub mod format;
pub mod fs;
pub mod fuse;
pub mod store;

pub use store::{Atlas, Attr, DatasetView, Error, Result, StoreConfig, StoreOptions};

/// The README's library example, compiled and run as a doctest so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
