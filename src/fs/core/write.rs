//! Writes: new or truncated files are staged in temp files and committed whole on
//! close; in-place edits keep an overlay of written ranges and rewrite only the
//! chunks under them. `fsync` and `.atlasfs/flush` are the durability boundary.

use super::*;

/// Bytes per slab when streaming a staged file into the store.
pub(super) const SLAB_BYTES: usize = 64 << 20;

/// Bytes written to a new or truncated file, held until close.
pub(super) struct Staged {
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) mtime: SystemTime,
    pub(super) dirty: bool,
    /// Unlinked while open: its descriptors' closes commit nothing.
    pub(super) dropped: bool,
    /// Why its commit failed: every later close and fsync of its descriptors
    /// reports it again, until they write anew. numpy's `tofile` writes through a
    /// dup'd descriptor and ignores that close's error; the last close must not
    /// then report success for bytes the store refused.
    pub(super) rejected: Option<FsError>,
    /// Encodes chunks while the bytes arrive (see `encoder`); array names only.
    pub(super) encoder: Option<Arc<Encoder>>,
}

/// Writes to an existing array opened without truncation.
pub(super) struct Overlay {
    pub(super) file: File,
    /// Sorted, merged byte ranges written so far.
    pub(super) ranges: Vec<(u64, u64)>,
}

impl Overlay {
    pub(super) fn add(&mut self, lo: u64, hi: u64) {
        add_range(&mut self.ranges, lo, hi);
    }
}

/// `Read` over a file at an advancing offset, without moving a shared cursor.
pub(super) struct ReadAt<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl AtlasFs {
    pub(super) fn staged_entry(&self, ds: &str, name: &str) -> Option<Arc<Mutex<Staged>>> {
        self.staged.lock().get(&(ds.to_string(), name.to_string())).cloned()
    }

    /// Forgets `name`'s staged file if it is still `s` (not a newer writer's).
    pub(super) fn unstage(&self, ds: &str, name: &str, s: &Arc<Mutex<Staged>>) {
        let mut staged = self.staged.lock();
        let key = (ds.to_string(), name.to_string());
        if staged.get(&key).is_some_and(|t| Arc::ptr_eq(t, s)) {
            staged.remove(&key);
        }
    }

    pub(super) fn stage(&self, ds: &str, name: &str) -> FsResult<Arc<Mutex<Staged>>> {
        let file = tempfile::tempfile()?;
        let encoder = self.new_encoder(name, &file);
        let s = Arc::new(Mutex::new(Staged { file, len: 0, mtime: SystemTime::now(), dirty: true, dropped: false, rejected: None, encoder }));
        self.staged.lock().insert((ds.to_string(), name.to_string()), s.clone());
        Ok(s)
    }

    /// Creates a file in a dataset directory and opens it for writing.
    pub async fn create(&self, parent: u64, name: &str, flags: i32) -> FsResult<(NodeAttr, Opened)> {
        self.refuse_zarr_write(parent, Some(name), "create")?;
        self.writable()?;
        crate::fs::names::check_new_name(name)?;
        let key = self.child_key(parent, name)?;
        let NodeKey::File(ds, name) = key.clone() else {
            return Err(FsError::new(libc::EPERM, format!("files can only be created inside a dataset directory, not here ({name})")));
        };
        if !self.atlas.dataset_exists(&ds) {
            return Err(FsError::noent(&ds));
        }
        if array_of(&name).is_none() && !is_temp_name(&name) {
            return Err(FsError::inval(format!("{ds}/{name}: only <array>.npy files (array names: non-empty, no leading '_') and hidden temp files can be created")));
        }
        let exists = self.staged_entry(&ds, &name).is_some() || array_of(&name).is_some_and(|a| self.schema(&ds, a).is_some());
        if exists && flags & libc::O_EXCL != 0 {
            return Err(FsError::new(libc::EEXIST, format!("{ds}/{name} exists")));
        }
        let staged = self.stage(&ds, &name)?;
        // A name whose inode is still held in passthrough gets a new inode (the
        // kernel takes only passthrough opens of the old one).
        let held = self.inodes.lock().by_key.get(&key).copied().filter(|&i| self.held_in_passthrough(i));
        if held.is_some() {
            self.inodes.lock().remove(&key);
        }
        let ino = self.inodes.lock().ino(key);
        self.cached_gen.lock().remove(&ino);
        let fh = self.new_handle(Handle::Staged { ds, name, writable: true, staged });
        let opened = self
            .settle_io(ino, Opened { fh, direct_io: false, keep_cache: false, read_only: false, backing: None }, None)
            .map_err(|()| FsError::new(libc::ESTALE, "a new inode is held in passthrough"))?;
        Ok((self.attr(ino, Kind::File, 0, SystemTime::now()), opened))
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.writable()?;
        let h = self.handle(fh)?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
        match &*h {
            Handle::Staged { ds, name, writable, staged } => {
                if !writable {
                    return Err(FsError::new(libc::EBADF, "file not open for writing"));
                }
                let mut s = staged.lock();
                if s.dropped {
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                match &s.encoder {
                    Some(enc) => enc.write_staged(&s.file, data, offset)?,
                    None => s.file.write_all_at(data, offset)?,
                }
                s.len = s.len.max(offset + data.len() as u64);
                s.dirty = true;
                s.rejected = None;
                s.mtime = SystemTime::now();
                if let Some(enc) = s.encoder.clone() {
                    drop(s);
                    self.encoder_wrote(ds, name, &enc, offset, offset + data.len() as u64).await;
                }
            }
            Handle::Update { ds, arr, overlay } => {
                let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
                let size = self.npy_size(ds, arr, &schema).await?;
                if offset + data.len() as u64 > size {
                    return Err(FsError::new(
                        libc::EFBIG,
                        format!("{ds}/{arr}.npy: writes past the end of an existing array ({size} bytes) cannot change its shape; truncate and rewrite the file instead"),
                    ));
                }
                let mut o = overlay.lock();
                o.file.write_all_at(data, offset)?;
                o.add(offset, offset + data.len() as u64);
            }
            Handle::Control { file: ControlFile::Compact, .. } => {
                self.compact().await?;
            }
            Handle::Control { file: ControlFile::Flush, .. } => {
                self.flush_store().await?;
            }
            Handle::Control { .. } | Handle::Array { .. } | Handle::Stacked { .. } | Handle::Bytes(_) | Handle::Dir(_) => {
                return Err(FsError::new(libc::EBADF, "file not open for writing"));
            }
        }
        Ok(data.len() as u32)
    }

    /// The durability boundary.
    pub async fn flush_store(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Ok(());
        }
        // A flush first picks up other writers' flushes; doing it here, through the
        // refresh that keeps open descriptors on their version, costs one HEAD.
        if let Err(e) = self.refresh().await {
            tracing::debug!(error = %e, "refresh before flush failed; the flush retries it");
        }
        let flushed = self.atlas.flush_shared().await;
        // A flush also picks up other writers' changes (and may fork conflicted copies).
        self.forget_datasets(&self.atlas.take_noticed());
        flushed?;
        self.nudge_autocompact();
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.counters.last_flush_unix.store(unix_now(), Ordering::Relaxed);
        Ok(())
    }

    /// close(2) of one descriptor: commits what it wrote. Its error is close's error.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        // Shells open, dup2 and close the original descriptor before writing: a
        // flush of a still-empty staged file is that, not the end of the writing.
        // (The last close, `release`, commits it regardless.)
        if let Handle::Staged { staged, .. } = &*h
            && staged.lock().len == 0
        {
            return Ok(());
        }
        Self::rejected(&h)?;
        self.commit_handle(&h).await
    }

    /// What close or fsync of `h` reports before committing anything new: the error
    /// of its staged bytes' failed commit (see [`Staged::rejected`]).
    pub(super) fn rejected(h: &Handle) -> FsResult<()> {
        match h {
            Handle::Staged { staged, .. } => staged.lock().rejected.clone().map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }

    pub(super) async fn commit_handle(&self, h: &Handle) -> FsResult<()> {
        match h {
            Handle::Staged { ds, name, writable: true, staged } => {
                let Some(arr) = array_of(name) else { return Ok(()) }; // temp files wait for rename
                let s = staged;
                if !s.lock().dirty || s.lock().dropped {
                    return Ok(());
                }
                let res = self.commit_staged(ds, arr, s).await;
                if let Err(e) = &res {
                    s.lock().rejected = Some(e.clone());
                }
                // Success or not, the staged bytes are done with: the array is either
                // replaced or, on error, left exactly as it was. (A later truncating
                // open of the name has its own staged file, which stays.)
                self.unstage(ds, name, s);
                let (dir, file) = self.file_inodes(ds, name);
                match &res {
                    Ok(()) => self.invalidate(Invalidate::Inode(file)),
                    Err(e) => {
                        tracing::warn!(dataset = %ds, file = %name, error = %e, "rejected a written .npy; the store is unchanged");
                        if self.schema(ds, arr).is_none() {
                            // The name the kernel knows from create() no longer exists. The
                            // inode number stays valid, so that a truncating open through
                            // the kernel's cached entry can start over (see `open`).
                            self.invalidate(Invalidate::Entry { parent: dir, name: name.clone() });
                        } else {
                            self.invalidate(Invalidate::Inode(file));
                        }
                    }
                }
                res
            }
            Handle::Update { ds, arr, overlay } => {
                let ranges = std::mem::take(&mut overlay.lock().ranges);
                if ranges.is_empty() {
                    return Ok(());
                }
                let res = self.commit_overlay(ds, arr, overlay, &ranges).await;
                if let Err(e) = &res {
                    tracing::warn!(dataset = %ds, array = %arr, error = %e, "could not apply in-place writes");
                }
                res
            }
            _ => Ok(()),
        }
    }

    /// The chunk shape and fill value a staged `.npy` of `dtype` and `shape` is
    /// committed with: the old array's chunk shape if dtype and shape are unchanged
    /// (else ~`chunk_target_bytes` chunks), its fill value if the dtype is. The
    /// pipelined encoder (`encoder`) encodes by the same rule ahead of the commit.
    pub(super) async fn staged_chunking(&self, ds: &str, arr: &str, dtype: &crate::format::DType, shape: &[usize]) -> FsResult<(Vec<usize>, Option<crate::format::FillValue>)> {
        let old = self.schema(ds, arr);
        let chunk = match &old {
            Some(s) if s.shape == shape && &s.dtype == dtype => s.chunk_shape.clone(),
            _ => auto_chunk_shape(shape, dtype.element_size().unwrap_or(16), self.cfg.chunk_target_bytes),
        };
        let fill = match &old {
            Some(s) if &s.dtype == dtype => self.atlas.open_dataset(ds).await?.array_fill_value(arr).await?,
            _ => None,
        };
        Ok((chunk, fill))
    }

    /// Parses a staged `.npy` and replaces the array with it.
    pub(super) async fn commit_staged(&self, ds: &str, arr: &str, staged: &Arc<Mutex<Staged>>) -> FsResult<()> {
        self.commit_staged_like(ds, arr, staged, None).await
    }

    /// [`Self::commit_staged`], keeping the chunk shape, fill value and dimension
    /// names of `like` (an array renamed into place) when dtype and shape match.
    pub(super) async fn commit_staged_like(&self, ds: &str, arr: &str, staged: &Arc<Mutex<Staged>>, like: Option<ArrayDef>) -> FsResult<()> {
        let (file, len, encoder) = {
            let mut s = staged.lock();
            s.dirty = false;
            (s.file.try_clone()?, s.len, s.encoder.clone())
        };
        let bad = |e: npy::NpyError| FsError::inval(format!("{ds}/{arr}.npy: {e}"));
        let mut reader = std::io::BufReader::new(ReadAt { file: &file, pos: 0 });
        let header = npy::read_header(&mut reader).map_err(bad)?;
        let et = header.element_type().map_err(bad)?;
        let data_len = header.data_len().map_err(bad)?;
        let have = len.saturating_sub(header.header_len as u64);
        if have < data_len as u64 {
            return Err(bad(npy::NpyError::ShortPayload { expected: data_len, actual: have as usize }));
        }
        if have > data_len as u64 {
            return Err(bad(npy::NpyError::TrailingBytes((have - data_len as u64) as usize)));
        }
        let shape = header.shape.clone();
        let old = self.schema(ds, arr);
        let dims = match &old {
            Some(s) if s.shape.len() == shape.len() => s.dimension_names.clone(),
            _ => (0..shape.len()).map(|i| format!("dim_{i}")).collect(),
        };
        let def = match like.filter(|d| d.dtype == et.dtype && d.shape == shape) {
            Some(d) => d,
            None => {
                let (chunk, fill) = self.staged_chunking(ds, arr, &et.dtype, &shape).await?;
                ArrayDef { dtype: et.dtype.clone(), dimension_names: dims, shape: shape.clone(), chunk_shape: Some(chunk), fill }
            }
        };
        let view = self.atlas.open_dataset(ds).await?;
        let hl = header.header_len as u64;
        let name = format!("{arr}.npy");
        let encoded = match &encoder {
            Some(enc) => self.encoded_blocks(ds, &name, enc, &header, &def, len).await,
            None => None,
        };
        if encoded.is_none()
            && let Some(enc) = &encoder
        {
            // The blocks are not adopted: the staged bytes are what gets encoded.
            enc.keep_staged()?;
        }
        // C-order fixed-width data streams in slabs of whole leading rows (byte order
        // and bools fixed per slab); Fortran order and strings are decoded whole.
        let streamable = !header.fortran_order && et.is_fixed_width() && !shape.is_empty();
        if let Some(enc) = encoded {
            view.replace_array_encoded(arr, def, enc).await?;
        } else if streamable {
            // Checked: with a zero first axis the header's data length (0) bounds nothing.
            let row = shape[1..].iter().try_fold(et.itemsize, |r, &d| r.checked_mul(d)).ok_or_else(|| bad(npy::NpyError::ShapeOverflow(shape.clone())))?;
            let rows_per = (SLAB_BYTES / row.max(1)).max(1);
            let file = &file;
            let n0 = shape[0];
            let rest = shape[1..].to_vec();
            let slabs = (0..n0).step_by(rows_per).map(move |i| {
                let n = rows_per.min(n0 - i);
                let mut bytes = vec![0u8; n * row];
                file.read_exact_at(&mut bytes, hl + (i * row) as u64).map_err(crate::store::Error::Io)?;
                et.fix_in_place(&mut bytes);
                let mut start = vec![i];
                start.extend(std::iter::repeat_n(0, rest.len()));
                let mut extent = vec![n];
                extent.extend_from_slice(&rest);
                Ok((start, extent, Cells::Fixed { elsize: et.itemsize, bytes }))
            });
            view.replace_array(arr, def, slabs).await?;
        } else {
            let mut payload = vec![0u8; data_len];
            file.read_exact_at(&mut payload, hl)?;
            let decoded = npy::decode_payload(&header, payload).map_err(bad)?;
            let start = vec![0; shape.len()];
            view.replace_array(arr, def, [Ok((start, shape.clone(), decoded.cells))]).await?;
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.bump_generation(ds, arr);
        // The array takes the staged file's mtime (its last write, or what
        // `touch -d` / `rsync -a` set before closing or renaming it).
        let mtime = staged.lock().mtime;
        self.mtimes.lock().insert((ds.to_string(), arr.to_string()), mtime);
        Ok(())
    }

    /// Applies in-place writes: each written byte range, widened to whole elements,
    /// is rewritten from the current data with the written bytes laid over it.
    pub(super) async fn commit_overlay(&self, ds: &str, arr: &str, overlay: &Mutex<Overlay>, ranges: &[(u64, u64)]) -> FsResult<()> {
        let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        if schema.dtype.is_variable_length() {
            return Err(FsError::inval(format!("{ds}/{arr}.npy: string arrays cannot be edited in place; rewrite the whole file")));
        }
        let (header, el, _) = self.npy_layout(&schema)?;
        let h = header.len() as u64;
        let view = self.atlas.open_dataset(ds).await?;
        for &(a, b) in ranges {
            if a < h {
                let mut written = vec![0u8; (b.min(h) - a) as usize];
                overlay.lock().file.read_exact_at(&mut written, a)?;
                if written != header[a as usize..b.min(h) as usize] {
                    return Err(FsError::inval(format!("{ds}/{arr}.npy: the header cannot be changed in place (dtype and shape are fixed); rewrite the whole file")));
                }
            }
            if b <= h {
                continue;
            }
            let (d0, d1) = (a.max(h) - h, b - h);
            let (e0, e1) = ((d0 / el as u64) as usize, d1.div_ceil(el as u64) as usize);
            for (start, extent) in element_range_boxes(&schema.shape, e0, e1) {
                let n: usize = extent.iter().product();
                let first = {
                    let mut strides = vec![1usize; schema.shape.len()];
                    for i in (0..schema.shape.len().saturating_sub(1)).rev() {
                        strides[i] = strides[i + 1] * schema.shape[i + 1];
                    }
                    start.iter().zip(&strides).map(|(s, k)| s * k).sum::<usize>()
                };
                // Current bytes of the box, then the written bytes over them.
                let file_lo = h + (first * el) as u64;
                let mut bytes = self.read_array_bytes(ds, arr, file_lo, (n * el) as u64).await?;
                let o = overlay.lock();
                for &(ra, rb) in ranges {
                    let (lo, hi) = (ra.max(file_lo), rb.min(file_lo + bytes.len() as u64));
                    if lo < hi {
                        o.file.read_exact_at(&mut bytes[(lo - file_lo) as usize..(hi - file_lo) as usize], lo)?;
                    }
                }
                drop(o);
                view.write_cells(arr, &start, &extent, &Cells::Fixed { elsize: el, bytes }).await?;
            }
        }
        self.bump_generation(ds, arr);
        Ok(())
    }

    /// Last close of a descriptor.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let h = self.handles.lock().remove(&fh);
        self.release_io(fh);
        match h {
            Some(h) => {
                if let Handle::Array { ds, arr, filling, .. } = &*h {
                    self.finish_fill_later(ds, arr, filling);
                }
                self.commit_handle(&h).await
            }
            None => Ok(()),
        }
    }

    /// fsync(2): commits what this descriptor wrote, then flushes the store.
    pub async fn fsync(&self, fh: Option<u64>) -> FsResult<()> {
        if let Some(fh) = fh
            && let Ok(h) = self.handle(fh)
        {
            Self::rejected(&h)?;
            self.commit_handle(&h).await?;
        }
        self.flush_store().await
    }
}
