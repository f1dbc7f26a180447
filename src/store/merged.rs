//! Two types atlas-rust 0.10 re-exported from its `array-format` dependency that the
//! store API itself never hands out: [`MergedArrayMeta`] (an array file's entry as
//! `array-format` listed it) and [`DeltaCache`] (its block cache). They exist so
//! 0.10 programs that name them build unchanged against atlasfs.
//!
//! Design note: atlasfs has one block cache per [`Atlas`](super::Atlas), configured
//! through `StoreOptions`; a `DeltaCache` is a handle on a cache of that kind that
//! nothing in the store takes, exactly as in 0.10, where `Atlas` always built its own.

use std::sync::Arc;

use super::cache::BlockCache;
use crate::format::{DType, FillValue};

/// One array entry of an array file, all layers merged (0.10's
/// `array_format::MergedArrayMeta`; shapes are `u32` as the file stores them).
#[derive(Debug, Clone)]
pub struct MergedArrayMeta {
    /// The entry's name: in an atlas store, the dataset's name.
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u32>,
    pub chunk_shape: Vec<u32>,
    pub dimension_names: Vec<String>,
    pub fill_value: Option<FillValue>,
}

/// A two-level block cache: decoded blocks within `block_capacity` bytes, raw
/// compressed blocks within `io_capacity` bytes (0: none). Cloning shares it.
#[derive(Clone)]
pub struct DeltaCache {
    _blocks: Arc<BlockCache>,
}

impl DeltaCache {
    pub fn new(block_capacity: u64, io_capacity: u64) -> Self {
        DeltaCache { _blocks: Arc::new(BlockCache::new(block_capacity, io_capacity)) }
    }
}
