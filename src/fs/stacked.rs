//! `.atlasfs/stacked/<array>.npy`: every dataset's copy of one array as one
//! `(n_datasets, *shape)` array — the view atlas's variable-first layout exists for.
//!
//! Datasets take part in store order; those whose dtype or shape differ from the
//! first dataset holding the array are left out, and `<array>.datasets` lists the
//! included names, one per line. A read maps its byte range onto boxes of the stack
//! (see [`layout`](super::layout)); each box's leading axis is a run of datasets.
//! They share the array file, so their chunks come out of a few ~8 MiB blocks: each
//! block behind a read is loaded once (concurrently), then every dataset's part is
//! copied from it straight into the reply. Per-dataset work is kept to a lookup and
//! a copy: with a thousand small datasets it, not decoding, is the cost of a read.
//! A sequential reader gets read-ahead (`StackReadAhead` in `core`), so the next
//! blocks decode on the other core while this read is copied out.

use super::error::{FsError, FsResult};
use super::layout::element_range_boxes;
use super::npy;
use crate::format::DType;
use crate::store::Atlas;
use crate::store::array_file::{ArrayFile, read_fresh};

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
        for (ds, s) in atlas.array_schemas(array) {
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

    /// The reads behind data bytes `[d0, d1)` (offsets past the header): one
    /// (dataset index, box within its copy) per part, in file order, covering the
    /// elements `[d0, d1)` widened to whole elements.
    fn parts(&self, d0: u64, d1: u64) -> Vec<(usize, Vec<usize>, Vec<usize>)> {
        let el = self.elsize() as u64;
        let (e0, e1) = ((d0 / el) as usize, d1.div_ceil(el) as usize);
        let mut parts = vec![];
        for (start, extent) in element_range_boxes(&self.full_shape(), e0, e1) {
            for i in start[0]..start[0] + extent[0] {
                parts.push((i, start[1..].to_vec(), extent[1..].to_vec()));
            }
        }
        parts
    }

    /// Bytes `[offset, offset+len)` of the stacked `.npy`. Every dataset's part is
    /// read straight into the returned buffer under one hold of the array file:
    /// no per-dataset buffer, handle or lookup.
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
        let (e0, e1) = (d0 / el, d1.div_ceil(el));
        let at = out.len();
        out.resize(at + ((e1 - e0) * el) as usize, 0);
        let file = atlas.file(array).await.map_err(|e| FsError::noent(format!("stacked {array}: {e}")))?;
        let parts = self.parts(d0, d1);
        read_fresh!(&file, |f| self.read_parts(f, &parts, &mut out[at..], concurrency))?;
        // The read was widened to whole elements: cut back to the bytes asked for.
        let skip = (d0 - e0 * el) as usize;
        out.truncate(at + skip + (d1 - d0) as usize);
        out.drain(at..at + skip);
        Ok(out)
    }

    /// Reads `parts` into consecutive pieces of `dst`.
    async fn read_parts(&self, f: &ArrayFile, parts: &[(usize, Vec<usize>, Vec<usize>)], dst: &mut [u8], concurrency: usize) -> crate::store::Result<()> {
        let parts: Vec<(&str, &[usize], &[usize])> = parts.iter().map(|(i, start, extent)| (self.names[*i].as_str(), &start[..], &extent[..])).collect();
        f.read_regions_into(&parts, dst, concurrency).await
    }

    /// Starts decoding the blocks behind bytes `[from, to)` of the stacked `.npy`
    /// without waiting (read-ahead of a sequential reader). Returns how many block
    /// loads were started.
    pub async fn prefetch(&self, atlas: &Atlas, array: &str, from: u64, to: u64) -> usize {
        let h = self.header().len() as u64;
        let (d0, d1) = (from.max(h) - h, to.min(self.size()).saturating_sub(h));
        if d0 >= d1 {
            return 0;
        }
        let Ok(file) = atlas.file(array).await else { return 0 };
        let parts = self.parts(d0, d1);
        file.read().await.prefetch_many(parts.iter().map(|(i, start, extent)| (self.names[*i].as_str(), &start[..], &extent[..])))
    }
}
