//! The `&mut self` methods of atlas 0.10's API.
//!
//! Design: atlas-rust 0.10 takes `&mut self` on `Atlas::{create_dataset,
//! delete_dataset, flush, compact}` and `DatasetView::{set_attribute, define_array,
//! write_array, delete_array}`, so its users write `let mut atlas = …`. With `&self`
//! receivers such a program compiles but draws `unused_mut` warnings, errors under
//! `-D warnings`. So the public methods take `&mut self` exactly where 0.10 does, and
//! are thin wrappers over `*_shared(&self)` methods that do the work.
//!
//! Why the `&self` forms exist at all: an `Atlas` keeps its state behind locks and
//! is shared by many threads at once: the FUSE daemon's request handlers hold one
//! `Atlas` (cloned handles share one store), and so do the CLI and tests that drive
//! a store from several tasks. `&mut self` there would need an outer lock around the
//! whole store, serialising every read behind every flush. The `*_shared` methods
//! are doc-hidden: not part of the promised API, which stays 0.10's (plus the
//! additions listed in the crate docs). `Atlas` and `DatasetView` stay `Send + Sync`,
//! and since views borrow nothing from the `Atlas`, a 0.10 program may hold
//! `&mut Atlas` while views are alive.

use ndarray::{ArrayView, IxDyn};

use super::attr::Attr;
use super::element::ArrayElement;
use super::{Atlas, DatasetView, Result};
use crate::format::FillValue;

impl Atlas {
    /// Creates an empty dataset and returns a view of it. Persists at the next
    /// [`flush`](Self::flush). `DatasetAlreadyExists` if the name is taken,
    /// `InvalidName` for a name atlas refuses.
    pub async fn create_dataset(&mut self, name: &str) -> Result<DatasetView> {
        self.create_dataset_shared(name).await
    }

    /// Deletes a dataset: tombstones its entries in every array file it used, then
    /// drops it from the metadata. Persists at the next flush. `DatasetNotFound` if
    /// there is no such dataset.
    pub async fn delete_dataset(&mut self, name: &str) -> Result<()> {
        self.delete_dataset_shared(name).await
    }

    /// The durability boundary: writes every array file with pending changes
    /// (concurrently), then the metadata file. On error nothing pending is dropped.
    /// Another writer's conflicting flush is reported as `Error::Io` carrying
    /// `ErrorDetail::Conflict` (docs/remote.md).
    pub async fn flush(&mut self) -> Result<()> {
        self.flush_shared().await
    }

    /// Flushes, then rewrites every array file as a single base layer without
    /// deleted entries or dead bytes.
    pub async fn compact(&mut self) -> Result<()> {
        self.compact_shared().await
    }
}

impl DatasetView {
    /// Upserts an attribute; overwriting keeps the key's position. 0.10's signature
    /// has no error: a value [`try_set_attribute`](Self::try_set_attribute) refuses is
    /// dropped with a warning in the log (0.10 stored it and broke the store, D7, or
    /// re-created a deleted dataset, D8).
    pub fn set_attribute(&mut self, key: &str, value: Attr) {
        self.set_attribute_shared(key, value)
    }

    /// Defines an array of element type `T`. `chunk_shape` defaults to `shape`.
    /// Geometry atlas cannot store (wrong dimension count, chunk rank, zero chunk
    /// sizes, sizes over `u32`) is refused (0.10 accepted it: D10).
    pub async fn define_array<T: ArrayElement>(
        &mut self,
        array: &str,
        dims: Vec<String>,
        shape: Vec<usize>,
        chunk_shape: Option<Vec<usize>>,
        fill: Option<FillValue>,
    ) -> Result<()> {
        self.define_array_shared::<T>(array, dims, shape, chunk_shape, fill).await
    }

    /// Writes `data` at `start`. The region must lie inside the array (an error
    /// otherwise; 0.10's docs promised truncation but it errored too).
    pub async fn write_array<T: ArrayElement>(&mut self, array: &str, start: Vec<usize>, data: ArrayView<'_, T, IxDyn>) -> Result<()> {
        self.write_array_shared(array, start, data).await
    }

    /// Deletes an array from this dataset (a tombstone until the next compaction).
    pub async fn delete_array(&mut self, array: &str) -> Result<()> {
        self.delete_array_shared(array).await
    }
}
