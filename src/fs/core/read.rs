//! Reads: a byte range of `<array>.npy` becomes array boxes, only the chunks
//! under them decode; a sequential reader gets a growing read-ahead window.

use super::*;

/// How far ahead of a sequential reader blocks are fetched and decoded: a window that
/// starts here (or at a quarter of the largest window) and doubles with every sequential read up to `FsConfig::read_ahead_bytes`
/// (16 MiB, two of atlas's 8 MiB blocks, so both cores decode while the reader
/// consumes; more for remote stores, to cover the round trip). A seek closes it:
/// random readers fetch only what they ask for.
pub(super) const READ_AHEAD_START: u64 = 2 << 20;

/// Read-ahead of one descriptor (an array's `.npy` or a `.atlasfs/stacked` file). The
/// kernel sends several READs of one sequential reader at once, so they arrive a
/// little out of order: a read counts as sequential if it starts where the last one
/// ended or anywhere up to what has been read ahead. Each one starts only the part of
/// the window not started before, so blocks are not asked for again on every READ.
#[derive(Default)]
pub(super) struct ReadAhead {
    /// The furthest byte read so far.
    pub(super) next: u64,
    pub(super) window: u64,
    /// Bytes below this have been read ahead.
    pub(super) ahead: u64,
    /// Whom the remote read-ahead streams work for: dropped with the descriptor (its
    /// last close), which cancels them (`store::stream_fetch`).
    pub(super) owner: crate::store::stream_fetch::ReadAheadOwner,
}

impl ReadAhead {
    /// Records a read of `[offset, end)`; returns the byte range to read ahead, if any.
    fn advance(&mut self, offset: u64, end: u64, max_window: u64) -> Option<(u64, u64)> {
        let sequential = end > offset && (offset == self.next || (self.window > 0 && offset + self.window >= self.next && offset <= self.ahead));
        if !sequential {
            (self.next, self.window, self.ahead) = (end, 0, 0);
            return None;
        }
        self.next = self.next.max(end);
        // A quarter of the largest window at first (4 MiB local, 16 MiB remote): a
        // remote reader's first block and the next are asked for together, before
        // its second READ, which the kernel sends only once the first is answered.
        self.window = if self.window == 0 { READ_AHEAD_START.max(max_window / 4) } else { (self.window * 2).min(max_window) };
        // Half a window at a time, once less than half is left ahead: fewer, longer
        // fetches (a remote store streams each run of blocks in a few GETs).
        if self.ahead > self.next + self.window / 2 {
            return None;
        }
        let (from, to) = (self.ahead.max(self.next), self.next + self.window);
        self.ahead = self.ahead.max(to);
        (from < to).then_some((from, to))
    }
}

impl AtlasFs {
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let h = self.handle(fh)?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let out = match &*h {
            Handle::Array { ds, arr, read_ahead, frozen, filling, .. } => {
                if let Some(f) = frozen.lock().clone() {
                    return read_frozen(&f, offset, size);
                }
                // Read-ahead starts before this read's own blocks arrive (it only
                // queues fetches), so on a remote store the next blocks' requests
                // overlap this one's instead of following it. Past the end it is a no-op.
                let (next, owner) = {
                    let mut ra = read_ahead.lock();
                    (ra.advance(offset, offset + size as u64, self.cfg.read_ahead_bytes.max(READ_AHEAD_START)), ra.owner.owner())
                };
                if let Some((from, to)) = next {
                    owner.scope(self.read_ahead(ds, arr, from, to)).await;
                }
                let out = self.read_array_bytes(ds, arr, offset, size as u64).await;
                // A replacement freezes open descriptors before it commits: if this one
                // was frozen meanwhile, the bytes just read may be the new version's, or
                // the read failed on it (a region past the end of a shorter version).
                if let Some(f) = frozen.lock().clone() {
                    return read_frozen(&f, offset, size);
                }
                let out = out?;
                self.fill_from_read(ds, arr, filling, offset, &out);
                out
            }
            Handle::Staged { staged, .. } => {
                let s = staged.lock();
                if let Some(enc) = &s.encoder {
                    enc.keep_staged()?;
                }
                let end = (offset + size as u64).min(s.len);
                let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
                s.file.read_exact_at(&mut buf, offset)?;
                buf
            }
            Handle::Update { ds, arr, overlay } => {
                let mut buf = self.read_array_bytes(ds, arr, offset, size as u64).await?;
                let o = overlay.lock();
                let end = offset + buf.len() as u64;
                for &(a, b) in &o.ranges {
                    let (lo, hi) = (a.max(offset), b.min(end));
                    if lo < hi {
                        o.file.read_exact_at(&mut buf[(lo - offset) as usize..(hi - offset) as usize], lo)?;
                    }
                }
                buf
            }
            Handle::Control { snapshot, .. } | Handle::Bytes(snapshot) => {
                let start = (offset as usize).min(snapshot.len());
                let end = (start + size as usize).min(snapshot.len());
                snapshot[start..end].to_vec()
            }
            Handle::Stacked { array, stack, read_ahead } => {
                let (next, owner) = {
                    let mut ra = read_ahead.lock();
                    (ra.advance(offset, offset + size as u64, self.cfg.read_ahead_bytes.max(READ_AHEAD_START)), ra.owner.owner())
                };
                if let Some((from, to)) = next {
                    owner.scope(stack.prefetch(&self.atlas, array, from, to)).await;
                }
                stack.read(&self.atlas, array, offset, size as u64, self.atlas.read_concurrency()).await?
            }
            Handle::Dir(_) => return Err(FsError::new(libc::EISDIR, "is a directory")),
        };
        self.counters.bytes_read.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Bytes `[offset, offset+len)` of an array's `.npy` form.
    /// A sequential reader of `ds/arr.npy` will get to bytes `[from, to)`: start
    /// decoding their blocks so they are ready when it gets there.
    pub(super) async fn read_ahead(&self, ds: &str, arr: &str, from: u64, to: u64) {
        let Some(schema) = self.schema(ds, arr) else { return };
        let Ok((header, el, size)) = self.npy_layout(&schema) else { return };
        let h = header.len() as u64;
        let (d0, d1) = (from.max(h) - h, to.min(size).saturating_sub(h));
        if d0 >= d1 {
            return;
        }
        let boxes = element_range_boxes(&schema.shape, (d0 / el as u64) as usize, d1.div_ceil(el as u64) as usize);
        if let Ok(view) = self.atlas.open_dataset(ds).await
            && let Err(e) = view.prefetch(arr, &boxes).await
        {
            tracing::debug!(dataset = ds, array = arr, error = %e, "read-ahead failed");
        }
    }

    pub async fn read_array_bytes(&self, ds: &str, arr: &str, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        self.read_array_bytes_as(ds, arr, &schema, offset, len, false).await
    }

    /// Bytes of the `.npy` form of `ds/arr` with the shape `schema`; with
    /// `before_refresh`, of the data as it was before the last refresh.
    pub(super) async fn read_array_bytes_as(&self, ds: &str, arr: &str, schema: &ArraySchema, offset: u64, len: u64, before_refresh: bool) -> FsResult<Vec<u8>> {
        if schema.dtype.is_variable_length() {
            let all = self.string_npy(ds, arr).await?;
            let start = (offset as usize).min(all.len());
            let end = (start + len as usize).min(all.len());
            return Ok(all[start..end].to_vec());
        }
        if !before_refresh {
            return self.read_fixed_into(ds, arr, schema, offset, len).await;
        }
        let (header, el, size) = self.npy_layout(schema)?;
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(vec![]);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let h = header.len() as u64;
        if offset < h {
            out.extend_from_slice(&header[offset as usize..end.min(h) as usize]);
        }
        if end <= h {
            return Ok(out);
        }
        let d0 = offset.max(h) - h;
        let d1 = end - h;
        let (e0, e1) = ((d0 / el as u64) as usize, (d1.div_ceil(el as u64)) as usize);
        let view = self.atlas.open_dataset(ds).await?;
        let mut data = Vec::with_capacity((e1 - e0) * el);
        for (start, extent) in element_range_boxes(&schema.shape, e0, e1) {
            match view.read_region_as(arr, &start, &extent, before_refresh).await? {
                Cells::Fixed { bytes, .. } => data.extend_from_slice(&bytes),
                Cells::Var(_) => return Err(FsError::io("fixed-width array returned string cells")),
            }
        }
        let skip = (d0 - e0 as u64 * el as u64) as usize;
        out.extend_from_slice(&data[skip..skip + (d1 - d0) as usize]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_read_ahead_follows_out_of_order_sequential_reads() {
        let mb = 1 << 20;
        let mut ra = ReadAhead::default();
        // The window opens at a quarter of its largest size.
        assert_eq!(ra.advance(0, mb, 16 * mb), Some((mb, 5 * mb)));
        // Out of order, inside what was read ahead: still sequential, only the new part.
        assert_eq!(ra.advance(2 * mb, 3 * mb, 16 * mb), Some((5 * mb, 11 * mb)));
        assert_eq!(ra.advance(mb, 2 * mb, 16 * mb), Some((11 * mb, 19 * mb)));
        // Nothing new while more than half the window is still ahead.
        assert_eq!(ra.advance(3 * mb, 4 * mb, 16 * mb), None);
        assert_eq!(ra.advance(4 * mb, 5 * mb, 16 * mb), None);
        assert_eq!(ra.advance(12 * mb, 13 * mb, 16 * mb), Some((19 * mb, 29 * mb)));
        // A seek closes the window; reading on from there opens it again.
        assert_eq!(ra.advance(100 * mb, 101 * mb, 16 * mb), None);
        assert_eq!(ra.advance(101 * mb, 102 * mb, 16 * mb), Some((102 * mb, 106 * mb)));
        // An empty read (end of file) starts nothing.
        assert_eq!(ra.advance(102 * mb, 102 * mb, 16 * mb), None);
    }
}
