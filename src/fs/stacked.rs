//! `.atlasfs/stacked/<array>.npy`: every dataset's copy of one array as one
//! `(n_datasets, *shape)` array — the view atlas's variable-first layout exists for.
//!
//! Datasets take part in store order; those whose dtype or shape differ from the
//! first dataset holding the array are left out, and `<array>.datasets` lists the
//! included names, one per line. A read maps its byte range onto boxes of the stack
//! (see [`layout`](super::layout)); each box's leading axis is a run of datasets,
//! which are read concurrently — they share the array file, so most of their chunks
//! come out of the same few decoded blocks.

use futures::{StreamExt, TryStreamExt};

use super::error::{FsError, FsResult};
use super::layout::element_range_boxes;
use super::npy;
use crate::format::DType;
use crate::format::cells::Cells;
use crate::store::Atlas;

#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Datasets in the stack, in store order.
    pub names: Vec<String>,
    pub dtype: DType,
    /// Shape of one dataset's copy.
    pub shape: Vec<usize>,
}

impl Stack {
    /// The stack of `array`, or `None` if no dataset has it or its dtype has no
    /// fixed-width `.npy` form.
    pub fn of(atlas: &Atlas, array: &str) -> Option<Stack> {
        let mut stack: Option<Stack> = None;
        for ds in atlas.list_datasets() {
            let Some(s) = atlas.dataset_meta(&ds).and_then(|m| m.arrays.get(array).cloned()) else { continue };
            match &mut stack {
                None => stack = Some(Stack { names: vec![ds], dtype: s.dtype, shape: s.shape }),
                Some(st) if st.dtype == s.dtype && st.shape == s.shape => st.names.push(ds),
                Some(_) => {}
            }
        }
        stack.filter(|s| npy::descr_for(&s.dtype).is_some())
    }

    pub fn full_shape(&self) -> Vec<usize> {
        std::iter::once(self.names.len()).chain(self.shape.iter().copied()).collect()
    }

    pub fn header(&self) -> Vec<u8> {
        npy::header_bytes(npy::descr_for(&self.dtype).expect("checked in of()"), &self.full_shape())
    }

    fn elsize(&self) -> usize {
        self.dtype.element_size().expect("fixed width")
    }

    pub fn size(&self) -> u64 {
        self.header().len() as u64 + (self.full_shape().iter().product::<usize>() * self.elsize()) as u64
    }

    /// The `.datasets` file.
    pub fn listing(&self) -> String {
        self.names.iter().map(|n| format!("{n}\n")).collect()
    }

    /// Bytes `[offset, offset+len)` of the stacked `.npy`.
    pub async fn read(&self, atlas: &Atlas, array: &str, offset: u64, len: u64, concurrency: usize) -> FsResult<Vec<u8>> {
        let header = self.header();
        let el = self.elsize() as u64;
        let end = (offset + len).min(self.size());
        if offset >= end {
            return Ok(vec![]);
        }
        let h = header.len() as u64;
        let mut out = Vec::with_capacity((end - offset) as usize);
        if offset < h {
            out.extend_from_slice(&header[offset as usize..end.min(h) as usize]);
        }
        if end <= h {
            return Ok(out);
        }
        let (d0, d1) = (offset.max(h) - h, end - h);
        let (e0, e1) = ((d0 / el) as usize, d1.div_ceil(el) as usize);
        // One job per (dataset, box within it), in order.
        let mut jobs: Vec<(usize, Vec<usize>, Vec<usize>)> = vec![];
        for (start, extent) in element_range_boxes(&self.full_shape(), e0, e1) {
            for i in start[0]..start[0] + extent[0] {
                jobs.push((i, start[1..].to_vec(), extent[1..].to_vec()));
            }
        }
        let parts: Vec<Vec<u8>> = futures::stream::iter(jobs)
            .map(|(i, start, extent)| async move {
                let name = &self.names[i];
                let view = atlas.open_dataset(name).await.map_err(|e| FsError::noent(format!("stacked {array}: {e}")))?;
                match view.read_region_exact(array, &start, &extent).await? {
                    Cells::Fixed { bytes, .. } => Ok::<_, FsError>(bytes),
                    Cells::Var(_) => Err(FsError::io("stacked view of a variable-length array")),
                }
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        let data: Vec<u8> = parts.concat();
        let skip = (d0 - e0 as u64 * el) as usize;
        out.extend_from_slice(&data[skip..skip + (d1 - d0) as usize]);
        Ok(out)
    }
}
