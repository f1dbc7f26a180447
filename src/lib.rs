//! atlasfs: the atlas 0.10 array store in our own code, and a FUSE view of it.
//!
//! # What the library promises
//!
//! The crate root is a drop-in for atlas-rust 0.10's API (library name `atlas`): a
//! program written for 0.10 builds unchanged with
//! `atlas = { package = "atlasfs", path = "…" }` in its Cargo.toml. Every item 0.10
//! exports is here, under the same path, with 0.10's signatures: [`Atlas`],
//! [`DatasetView`], [`StoreConfig`], [`Codec`], [`MetaFormat`], [`Attr`],
//! [`ArraySchema`], [`DatasetMeta`], [`Error`], [`Result`], and the types 0.10
//! re-exported from `array-format`: [`ArrayElement`], [`ArrayStats`], [`DType`],
//! [`DeltaCache`], [`FillValue`], [`MergedArrayMeta`], [`StatValue`],
//! [`TimestampNs`]. Behaviour is 0.10's except where atlasfs fixes one of its
//! defects; docs/migrating.md lists each difference a 0.10 program can notice.
//!
//! [`Error`] has exactly 0.10's variants; what atlasfs reports beyond them arrives as
//! `Error::Io` carrying an [`ErrorDetail`] ([`Error::detail`]; docs/migrating.md).
//! The methods 0.10 declares `&mut self` take `&mut self` here too.
//!
//! atlasfs's additions, promised too: [`ErrorDetail`], [`StoreOptions`] with the `*_with`
//! constructors, remote stores, [`Atlas::refresh`] and conflict reporting at
//! flush, [`Atlas::close`], the `try_*` forms of the methods whose 0.10 signature
//! hides errors, and `Clone` on `Atlas` and `DatasetView` (clones share one store).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # extern crate atlasfs as atlas;
//! use atlas::{Atlas, StoreConfig};
//! let tmp = tempfile::tempdir().unwrap();
//! let mut s = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
//! let mut ds = s.create_dataset("ds").await.unwrap();
//! ds.define_array::<f32>("t", vec!["x".into()], vec![3], None, None).await.unwrap();
//! s.flush().await.unwrap();
//! assert_eq!(Atlas::open_path(tmp.path()).await.unwrap().list_arrays(), ["t"]);
//! # });
//! ```
//!
//! # Not promised
//!
//! The modules below are the daemon's and the tests' internals, public only so the
//! `atlasfs` binary and the test suites can reach them; they are hidden from the
//! documentation and change without notice. Layers, lowest first; each may call
//! only the ones below it: `format` (bytes) → `store` (`Atlas`, `DatasetView`) →
//! `fs` (filesystem core) → `fuse` → `cli` (the binary).

#[doc(hidden)]
pub mod format;
#[doc(hidden)]
pub mod fs;
#[doc(hidden)]
pub mod fuse;
#[doc(hidden)]
pub mod store;

pub use store::{
    ArrayElement, ArraySchema, ArrayStats, Atlas, Attr, Codec, DType, DatasetMeta, DatasetView, DeltaCache, Error, ErrorDetail, FillValue, MergedArrayMeta, MetaFormat, Result,
    StatValue, StoreConfig, StoreOptions, TimestampNs,
};

/// The README's library example, compiled and run as a doctest so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
