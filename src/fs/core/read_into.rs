//! A READ of a fixed-width array's `.npy`, decoded straight into the reply.
//!
//! The reply is one buffer: the header bytes, then the boxes under the byte range
//! (`element_range_boxes`), each copied by `ArrayFile::read_regions_into` from the
//! decoded blocks into its place. The former path built a `Cells` per box (first
//! written with the fill value, then the chunk parts copied in), appended it to a
//! data buffer and that to the reply: three passes over every byte besides the
//! decode, a quarter of the daemon's CPU in a cold 1 GiB `np.load` (perf: memmove
//! and memset). Every block behind the READ is loaded once, concurrently; the
//! read-ahead (`read.rs`) has usually started them already.
//!
//! The version before a refresh (what a descriptor opened earlier keeps reading)
//! still takes the boxed path; it is rare and short-lived.

use super::*;
use crate::store::array_file::read_fresh;

impl AtlasFs {
    /// Bytes `[offset, offset+len)` of the `.npy` of fixed-width `ds/arr`, whose
    /// schema is `schema`.
    pub(super) async fn read_fixed_into(&self, ds: &str, arr: &str, schema: &ArraySchema, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        let (header, el, size) = self.npy_layout(schema)?;
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(vec![]);
        }
        let h = header.len() as u64;
        let el = el as u64;
        let (e0, e1) = ((offset.max(h) - h) / el, end.saturating_sub(h).div_ceil(el));
        // Whole elements from e0: the data part starts `skip` bytes into the first.
        let skip = (offset.max(h) - h - e0 * el) as usize;
        let mut out = Vec::with_capacity((end - offset) as usize + skip + el as usize);
        if offset < h {
            out.extend_from_slice(&header[offset as usize..end.min(h) as usize]);
        }
        if end <= h {
            return Ok(out);
        }
        if !self.atlas.dataset_exists(ds) {
            return Err(FsError::noent(format!("{ds}/{arr}.npy")));
        }
        let at = out.len();
        out.resize(at + ((e1 - e0) * el) as usize, 0);
        let boxes = element_range_boxes(&schema.shape, e0 as usize, e1 as usize);
        let parts: Vec<(&str, &[usize], &[usize])> = boxes.iter().map(|(s, e)| (ds, &s[..], &e[..])).collect();
        let file = self.atlas.file(arr).await?;
        let concurrency = self.atlas.read_concurrency();
        read_fresh!(&file, |f| f.read_regions_into(&parts, &mut out[at..], concurrency))?;
        // Cut back to the bytes asked for (reads of a page-aligned range need no cut:
        // headers are 64-byte multiples and elements at most 16 bytes).
        out.truncate(at + skip + (end - offset.max(h)) as usize);
        if skip > 0 {
            out.drain(at..at + skip);
        }
        Ok(out)
    }
}
