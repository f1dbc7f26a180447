//! [`DatasetView`]: one dataset's arrays and attributes.
//!
//! A view is a name plus a handle on the store; it holds no state of its own.
//! Mutations through a view of a deleted dataset fail with `DatasetNotFound`
//! (0.10 silently re-created the dataset: D8).

use indexmap::IndexMap;
use ndarray::{ArcArray, ArrayD, ArrayView, IxDyn};

use super::array_file::{EncodedBlocks, EntrySpec, read_fresh};
use super::atlas::Atlas;
use super::attr::Attr;
use super::element::ArrayElement;
use super::meta::{ArraySchema, DatasetMeta, MetaFormat};
use super::{Error, ErrorDetail, Result, validate_name};
use crate::format::cells::Cells;
use crate::format::{DType, EntryStats as ArrayStats, FillValue};

/// What a replaced array is filled with.
enum NewContent<I> {
    /// `(start, extent, cells)` slabs, encoded under the lock.
    Slabs(I),
    /// Every chunk, encoded already.
    Encoded(EncodedBlocks),
}

/// Everything needed to define an array whose dtype is known at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayDef {
    pub dtype: DType,
    pub dimension_names: Vec<String>,
    pub shape: Vec<usize>,
    /// `None`: one chunk covering the whole array.
    pub chunk_shape: Option<Vec<usize>>,
    pub fill: Option<FillValue>,
}

#[derive(Clone)]
pub struct DatasetView {
    atlas: Atlas,
    name: String,
}

/// Applies atlas's read-region convention: `start`/`shape` count only when their
/// length equals the rank (otherwise zeros / full extent), and both ends are
/// clamped to the array. Never an error.
pub fn clamp_region(full: &[usize], start: &[usize], shape: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let rank = full.len();
    let s: Vec<usize> = if start.len() == rank { start.to_vec() } else { vec![0; rank] };
    let e: Vec<usize> = if shape.len() == rank { shape.to_vec() } else { full.to_vec() };
    let lo: Vec<usize> = s.iter().zip(full).map(|(&a, &n)| a.min(n)).collect();
    let ext = (0..rank).map(|i| s[i].saturating_add(e[i]).min(full[i]) - lo[i]).collect();
    (lo, ext)
}

/// Checks a new array's geometry (0.10 accepted anything: D10).
fn validate_geometry(array: &str, dtype: &DType, dims: &[String], shape: &[usize], chunk: &[usize]) -> Result<()> {
    let bad = |m: String| Err(ErrorDetail::Invalid(format!("array {array:?}: {m}")).into());
    if !dtype.is_supported() {
        return Err(ErrorDetail::Unsupported(format!(
            "dtype {} cannot be stored (supported: bool, int8..int64, uint8..uint64, float32, float64, timestamp_nanoseconds, string, binary)",
            dtype.name()
        ))
        .into());
    }
    if dims.len() != shape.len() {
        return bad(format!("{} dimension names for rank {}", dims.len(), shape.len()));
    }
    if chunk.len() != shape.len() {
        return bad(format!("chunk shape {chunk:?} has rank {}, array has rank {}", chunk.len(), shape.len()));
    }
    for (i, (&s, &c)) in shape.iter().zip(chunk).enumerate() {
        if s > u32::MAX as usize || c > u32::MAX as usize {
            return bad(format!("axis {i}: sizes are limited to {} (u32)", u32::MAX));
        }
        if c == 0 && s > 0 {
            return bad(format!("axis {i}: chunk size 0"));
        }
    }
    if let Some(el) = dtype.element_size() {
        let bytes = chunk.iter().try_fold(el as u128, |acc, &c| acc.checked_mul(c.max(1) as u128));
        if bytes.is_none_or(|b| b > u32::MAX as u128) {
            return bad(format!("a chunk of {chunk:?} {} elements exceeds the 4 GiB chunk limit", dtype.name()));
        }
    }
    Ok(())
}

impl DatasetView {
    pub(crate) fn new(atlas: Atlas, name: &str) -> Self {
        DatasetView { atlas, name: name.to_string() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn atlas(&self) -> &Atlas {
        &self.atlas
    }

    fn with_meta<R>(&self, f: impl FnOnce(&DatasetMeta) -> R) -> Option<R> {
        self.atlas.inner.meta.lock().datasets.get(&self.name).map(|d| f(d))
    }

    fn with_meta_mut<R>(&self, f: impl FnOnce(&mut DatasetMeta) -> R) -> Result<R> {
        let r = self.atlas.inner.meta.lock().datasets.get_mut(&self.name).map(|d| f(std::sync::Arc::make_mut(d))).ok_or_else(|| Error::DatasetNotFound(self.name.clone()))?;
        self.atlas.touch_meta();
        Ok(r)
    }

    /// A snapshot of this dataset's metadata; empty if the dataset has been deleted
    /// (0.10's signature; [`Atlas::dataset_meta`] tells the two apart).
    pub fn meta(&self) -> DatasetMeta {
        self.with_meta(Clone::clone).unwrap_or_default()
    }

    /// Arrays declared here, in insertion order.
    pub fn list_arrays(&self) -> Vec<String> {
        self.with_meta(|m| m.arrays.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn array_meta(&self, array: &str) -> Option<ArraySchema> {
        self.with_meta(|m| m.arrays.get(array).cloned()).flatten()
    }

    /// Upserts an attribute; overwriting keeps the key's position. 0.10's signature
    /// has no error: a value [`try_set_attribute`](Self::try_set_attribute) refuses is
    /// dropped with a warning in the log (0.10 stored it and broke the store, D7, or
    /// re-created a deleted dataset, D8).
    ///
    /// The `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub fn set_attribute_shared(&self, key: &str, value: Attr) {
        if let Err(e) = self.try_set_attribute(key, value) {
            tracing::warn!(dataset = %self.name, key, "attribute not set: {}", e.message());
        }
    }

    /// [`set_attribute`](Self::set_attribute) that reports a refusal: non-finite
    /// floats in a JSON store, which cannot represent them (0.10 wrote `null` and
    /// could then not reopen the store: D7), and a deleted dataset (D8).
    pub fn try_set_attribute(&self, key: &str, value: Attr) -> Result<()> {
        if let Attr::Float64(x) = value
            && !x.is_finite()
            && self.atlas.meta_file().format == MetaFormat::Json
        {
            return Err(ErrorDetail::NonFiniteAttribute(key.to_string()).into());
        }
        self.with_meta_mut(|m| {
            m.attributes.insert(key.to_string(), value);
        })
    }

    pub fn get_attribute(&self, key: &str) -> Option<Attr> {
        self.with_meta(|m| m.attributes.get(key).cloned()).flatten()
    }

    /// Removes an attribute; returns whether it existed.
    pub fn remove_attribute(&self, key: &str) -> Result<bool> {
        self.with_meta_mut(|m| m.attributes.shift_remove(key).is_some())
    }

    pub fn attributes(&self) -> IndexMap<String, Attr> {
        self.with_meta(|m| m.attributes.clone()).unwrap_or_default()
    }

    /// Defines an array of element type `T`. `chunk_shape` defaults to `shape`.
    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn define_array_shared<T: ArrayElement>(
        &self,
        array: &str,
        dims: Vec<String>,
        shape: Vec<usize>,
        chunk_shape: Option<Vec<usize>>,
        fill: Option<FillValue>,
    ) -> Result<()> {
        self.define_array_dtype(array, T::DTYPE, dims, shape, chunk_shape, fill).await
    }

    /// Defines an array whose dtype is known only at run time.
    pub async fn define_array_dtype(
        &self,
        array: &str,
        dtype: DType,
        dims: Vec<String>,
        shape: Vec<usize>,
        chunk_shape: Option<Vec<usize>>,
        fill: Option<FillValue>,
    ) -> Result<()> {
        validate_name(array)?;
        let chunk = chunk_shape.unwrap_or_else(|| shape.clone());
        validate_geometry(array, &dtype, &dims, &shape, &chunk)?;
        match self.with_meta(|m| m.arrays.contains_key(array)) {
            None => return Err(Error::DatasetNotFound(self.name.clone())),
            Some(true) => return Err(Error::ArrayAlreadyExists(array.to_string())),
            Some(false) => {}
        }
        let spec = EntrySpec { dtype: dtype.clone(), shape: shape.clone(), chunk_shape: chunk.clone(), dimension_names: dims.clone(), fill };
        let file = self.atlas.file(array).await?;
        let _gate = self.atlas.inner.commit_gate.read().await;
        let mut f = file.write().await;
        let codec = self.atlas.codec();
        // Re-check under the file lock so two concurrent defines cannot both win.
        self.with_meta_mut(|m| {
            if m.arrays.contains_key(array) {
                return Err(Error::ArrayAlreadyExists(array.to_string()));
            }
            m.arrays.insert(array.to_string(), ArraySchema { dtype, shape, chunk_shape: chunk, dimension_names: dims, codec });
            Ok(())
        })??;
        f.define(&self.name, spec);
        Ok(())
    }

    /// Defines `array` anew (replacing any existing one) and fills it from `slabs`,
    /// all under the array file's write lock, so readers see the old array or the
    /// complete new one, never a mix. `slabs` yields `(start, extent, cells)`.
    pub async fn replace_array<I>(&self, array: &str, def: ArrayDef, slabs: I) -> Result<()>
    where
        I: IntoIterator<Item = Result<(Vec<usize>, Vec<usize>, Cells)>>,
    {
        self.replace_with(array, def, NewContent::Slabs(slabs)).await
    }

    /// [`Self::replace_array`] with every chunk already encoded into blocks (see
    /// `array_file/adopt.rs`): the new version is the blocks of `enc`.
    pub async fn replace_array_encoded(&self, array: &str, def: ArrayDef, enc: EncodedBlocks) -> Result<()> {
        self.replace_with(array, def, NewContent::<std::iter::Empty<_>>::Encoded(enc)).await
    }

    async fn replace_with<I>(&self, array: &str, def: ArrayDef, content: NewContent<I>) -> Result<()>
    where
        I: IntoIterator<Item = Result<(Vec<usize>, Vec<usize>, Cells)>>,
    {
        validate_name(array)?;
        let ArrayDef { dtype, dimension_names: dims, shape, chunk_shape, fill } = def;
        let chunk = chunk_shape.unwrap_or_else(|| shape.clone());
        validate_geometry(array, &dtype, &dims, &shape, &chunk)?;
        if self.with_meta(|_| ()).is_none() {
            return Err(Error::DatasetNotFound(self.name.clone()));
        }
        let spec = EntrySpec { dtype: dtype.clone(), shape: shape.clone(), chunk_shape: chunk.clone(), dimension_names: dims.clone(), fill };
        let file = self.atlas.file(array).await?;
        let _gate = self.atlas.inner.commit_gate.read().await;
        let mut f = file.write().await;
        // Build the new version aside from the old one: the old entry stays readable
        // to nobody else meanwhile, since we hold the write lock.
        let existed = self.with_meta(|m| m.arrays.contains_key(array)).unwrap_or(false);
        let before = f.checkpoint(&self.name);
        if existed {
            f.delete(&self.name);
        }
        f.define(&self.name, spec);
        let fill_in = async {
            match content {
                NewContent::Slabs(slabs) => {
                    for slab in slabs {
                        let (start, extent, cells) = slab?;
                        if extent.iter().product::<usize>() > 0 || extent.is_empty() {
                            f.write_region(&self.name, &start, &extent, &cells).await?;
                        }
                    }
                }
                NewContent::Encoded(enc) => f.adopt_encoded(&self.name, enc)?,
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = fill_in.await {
            // Leave the array as it was.
            f.rollback(&self.name, before);
            return Err(e);
        }
        let codec = self.atlas.codec();
        self.with_meta_mut(|m| {
            m.arrays.insert(array.to_string(), ArraySchema { dtype, shape, chunk_shape: chunk, dimension_names: dims, codec });
        })?;
        Ok(())
    }

    fn declared(&self, array: &str) -> Result<ArraySchema> {
        match self.with_meta(|m| m.arrays.get(array).cloned()) {
            None => Err(Error::DatasetNotFound(self.name.clone())),
            Some(None) => Err(Error::ArrayNotFound(array.to_string())),
            Some(Some(s)) => Ok(s),
        }
    }

    fn check_dtype(schema: &ArraySchema, want: &DType) -> Result<()> {
        if &schema.dtype != want {
            return Err(ErrorDetail::DTypeMismatch { expected: format!("{:?}", schema.dtype), actual: format!("{want:?}") }.into());
        }
        Ok(())
    }

    /// Writes `data` at `start`. The region must lie inside the array (an error
    /// otherwise; 0.10's docs promised truncation but it errored too).
    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn write_array_shared<T: ArrayElement>(&self, array: &str, start: Vec<usize>, data: ArrayView<'_, T, IxDyn>) -> Result<()> {
        let schema = self.declared(array)?;
        Self::check_dtype(&schema, &T::DTYPE)?;
        if data.ndim() != schema.shape.len() {
            return Err(ErrorDetail::Invalid(format!("data of rank {} for {array:?} of rank {}", data.ndim(), schema.shape.len())).into());
        }
        if data.is_empty() {
            return Ok(());
        }
        let cells = T::to_cells(data.iter());
        self.write_cells(array, &start, data.shape(), &cells).await
    }

    /// Writes C-order cells of shape `extent` at `start` (untyped).
    pub async fn write_cells(&self, array: &str, start: &[usize], extent: &[usize], cells: &Cells) -> Result<()> {
        self.declared(array)?;
        if extent.iter().product::<usize>() == 0 && !extent.is_empty() {
            return Ok(());
        }
        let file = self.atlas.file(array).await?;
        let mut f = file.write().await;
        match f.write_region(&self.name, start, extent, cells).await {
            Err(e) if matches!(e.detail(), Some(ErrorDetail::Stale(_))) => {
                f.refresh().await?;
                f.write_region(&self.name, start, extent, cells).await?
            }
            r => r?,
        }
        drop(f);
        self.atlas.touch();
        Ok(())
    }

    /// Reads a region (see [`clamp_region`] for the start/shape convention: empty
    /// `start` and `shape` read everything). `Ok(None)` if the array is not declared here.
    pub async fn read_array<T: ArrayElement>(&self, array: &str, start: Vec<usize>, shape: Vec<usize>) -> Result<Option<ArcArray<T, IxDyn>>> {
        let Some(schema) = self.array_meta(array) else { return Ok(None) };
        Self::check_dtype(&schema, &T::DTYPE)?;
        let Some((extent, cells)) = self.read_cells(array, &start, &shape).await? else { return Ok(None) };
        Ok(Some(ArrayD::from_shape_vec(IxDyn(&extent), T::from_cells(cells)).expect("region size matches cells").into_shared()))
    }

    /// Reads a region as untyped C-order cells; returns the region's shape too.
    pub async fn read_cells(&self, array: &str, start: &[usize], shape: &[usize]) -> Result<Option<(Vec<usize>, Cells)>> {
        let Some(schema) = self.array_meta(array) else { return Ok(None) };
        let (lo, extent) = clamp_region(&schema.shape, start, shape);
        let file = self.atlas.file(array).await?;
        let cells = read_fresh!(&file, |f| f.read_region(&self.name, &lo, &extent))?;
        Ok(Some((extent, cells)))
    }

    /// Read-ahead: starts loading the blocks under these boxes into the shared cache
    /// and returns without waiting for them (see `ArrayFile::prefetch`).
    pub async fn prefetch(&self, array: &str, boxes: &[(Vec<usize>, Vec<usize>)]) -> Result<usize> {
        self.declared(array)?;
        let file = self.atlas.file(array).await?;
        let f = file.read().await;
        Ok(boxes.iter().map(|(start, extent)| f.prefetch(&self.name, start, extent)).sum())
    }

    /// Reads an exact region (no clamping); errors if it leaves the array.
    /// A box of `array` as it was before the store's last refresh loaded other
    /// writers' data for this dataset. The region is checked by the caller against
    /// the shape it had then.
    pub async fn read_region_before_refresh(&self, array: &str, start: &[usize], extent: &[usize]) -> Result<Cells> {
        let file = self.atlas.file(array).await?;
        file.read().await.read_region_before_refresh(&self.name, start, extent).await
    }

    /// [`read_region_exact`](Self::read_region_exact), or with `before_refresh`,
    /// [`read_region_before_refresh`](Self::read_region_before_refresh).
    pub async fn read_region_as(&self, array: &str, start: &[usize], extent: &[usize], before_refresh: bool) -> Result<Cells> {
        if before_refresh { self.read_region_before_refresh(array, start, extent).await } else { self.read_region_exact(array, start, extent).await }
    }

    pub async fn read_region_exact(&self, array: &str, start: &[usize], extent: &[usize]) -> Result<Cells> {
        let schema = self.declared(array)?;
        if start.len() != schema.shape.len() || extent.len() != schema.shape.len() || (0..start.len()).any(|i| start[i] + extent[i] > schema.shape[i]) {
            return Err(ErrorDetail::Invalid(format!("region {start:?}+{extent:?} outside {array:?} of shape {:?}", schema.shape)).into());
        }
        let file = self.atlas.file(array).await?;
        read_fresh!(&file, |f| f.read_region(&self.name, start, extent))
    }

    /// Whether a layer holds chunk `coord` of `array` (index lookups only).
    pub async fn holds_chunk(&self, array: &str, coord: &[u32]) -> Result<bool> {
        self.declared(array)?;
        let file = self.atlas.file(array).await?;
        file.read().await.holds_chunk(&self.name, coord)
    }

    /// Chunk `coord` of `array` as stored, decoded (edge chunks trimmed), or `None`
    /// where no layer holds it (it reads as the fill value).
    pub async fn read_stored_chunk(&self, array: &str, coord: &[u32]) -> Result<Option<Cells>> {
        self.declared(array)?;
        let file = self.atlas.file(array).await?;
        read_fresh!(&file, |f| f.stored_chunk(&self.name, coord))
    }

    /// The fill value stored with the array's entry.
    pub async fn array_fill_value(&self, array: &str) -> Result<Option<FillValue>> {
        if self.array_meta(array).is_none() {
            return Ok(None);
        }
        let file = self.atlas.file(array).await?;
        let spec = file.read().await.entry_spec(&self.name);
        Ok(spec.and_then(|s| s.fill))
    }

    /// Stats as of the last flush that carried data for this array; `None` if the
    /// array is not declared here, has none yet, or they cannot be read (0.10's
    /// signature, which hides errors: D11; they are logged, and
    /// [`try_array_stats`](Self::try_array_stats) returns them).
    pub async fn array_stats(&self, array: &str) -> Option<ArrayStats> {
        self.try_array_stats(array).await.unwrap_or_else(|e| {
            tracing::warn!(dataset = %self.name, array, "statistics unreadable: {}", e.message());
            None
        })
    }

    /// [`array_stats`](Self::array_stats) with its errors (for example a corrupt
    /// `data.stats`) returned, not hidden.
    pub async fn try_array_stats(&self, array: &str) -> Result<Option<ArrayStats>> {
        if self.array_meta(array).is_none() {
            return Ok(None);
        }
        let file = self.atlas.file(array).await?;
        let s = file.read().await.entry_stats(&self.name)?;
        Ok(s)
    }

    /// Deletes an array from this dataset (a tombstone until the next compaction).
    /// `&self` form for handles shared across threads (the fs core, the CLI): see `api_mut`.
    #[doc(hidden)]
    pub async fn delete_array_shared(&self, array: &str) -> Result<()> {
        self.declared(array)?;
        let file = self.atlas.file(array).await?;
        let _gate = self.atlas.inner.commit_gate.read().await;
        file.write().await.delete(&self.name);
        self.with_meta_mut(|m| {
            m.arrays.shift_remove(array);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_convention() {
        assert_eq!(clamp_region(&[4, 6], &[], &[]), (vec![0, 0], vec![4, 6]));
        assert_eq!(clamp_region(&[4, 6], &[1, 2], &[2, 4]), (vec![1, 2], vec![2, 4]));
        assert_eq!(clamp_region(&[4, 6], &[3, 5], &[10, 10]), (vec![3, 5], vec![1, 1]));
        assert_eq!(clamp_region(&[4, 6], &[9, 0], &[1, 1]), (vec![4, 0], vec![0, 1]));
        assert_eq!(clamp_region(&[4, 6], &[1], &[1, 1]), (vec![0, 0], vec![1, 1]));
        assert_eq!(clamp_region(&[4, 6], &[1, 1], &[]), (vec![1, 1], vec![3, 5]));
        assert_eq!(clamp_region(&[], &[], &[]), (vec![], vec![]));
    }

    #[test]
    fn geometry_checks() {
        let d = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_geometry("a", &DType::Float32, &d(&["x"]), &[4], &[2]).is_ok());
        assert!(validate_geometry("a", &DType::Float32, &d(&["x"]), &[4, 4], &[2, 2]).is_err());
        assert!(validate_geometry("a", &DType::Float32, &d(&["x", "y"]), &[4, 4], &[2]).is_err());
        assert!(validate_geometry("a", &DType::Float32, &d(&["x"]), &[4], &[0]).is_err());
        assert!(validate_geometry("a", &DType::Float32, &d(&["x"]), &[1 << 33], &[1]).is_err());
        assert!(validate_geometry("a", &DType::Float64, &d(&["x", "y"]), &[1 << 20, 1 << 20], &[1 << 15, 1 << 15]).is_err());
        assert!(validate_geometry("a", &DType::List { child: Box::new(DType::Int8) }, &d(&["x"]), &[4], &[4]).is_err());
        assert!(validate_geometry("a", &DType::Int8, &[], &[], &[]).is_ok());
    }
}
