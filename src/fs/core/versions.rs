//! Versions an open descriptor keeps: when an array is replaced, deleted or
//! changed by another writer under a reader, the reader goes on reading the
//! version it opened (a frozen copy), as on a local filesystem.

use super::*;

/// The bytes an open descriptor of an array read before the array was replaced
/// (renamed over) or deleted under it: it goes on reading them, as on a local
/// filesystem, instead of a mix of two versions.
pub(super) enum Frozen {
    Bytes {
        file: File,
        len: u64,
    },
    /// Too large to copy ([`FREEZE_MAX_BYTES`]) or unreadable: reads fail with ESTALE.
    Gone,
}

/// The largest array whose old version is copied for descriptors that still read it
/// when it is replaced; past this they get ESTALE instead.
pub(super) const FREEZE_MAX_BYTES: u64 = 1 << 30;

/// A path walk that found an inode just before a rename replaced it still opens that
/// inode (FUSE_OPEN comes after the walk); on a local filesystem that open succeeds
/// with the old file. So when an array that was opened in the last [`TOMBSTONE_SECS`]
/// is renamed over, its old version (up to [`TOMBSTONE_MAX_BYTES`]) is kept that long
/// for such opens, which would otherwise get ESTALE twice in a row (the kernel retries
/// once) when two renames come back to back.
pub(super) const TOMBSTONE_SECS: u64 = 2;
pub(super) const TOMBSTONE_MAX_BYTES: u64 = 64 << 20;

/// The old version of a renamed-over array, for late opens of its inode.
pub(super) struct Tombstone {
    pub(super) ds: String,
    pub(super) arr: String,
    pub(super) frozen: Arc<Frozen>,
    pub(super) at: std::time::Instant,
}

/// A read from the frozen version of an array (see [`Frozen`]).
pub(super) fn read_frozen(f: &Frozen, offset: u64, size: u32) -> FsResult<Vec<u8>> {
    match f {
        Frozen::Bytes { file, len } => {
            let end = (offset + size as u64).min(*len);
            let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        }
        Frozen::Gone => Err(FsError::new(libc::ESTALE, "the array was replaced or deleted since this descriptor opened it")),
    }
}

impl AtlasFs {
    /// Before `ds/arr` is replaced or deleted: descriptors that read it now get a copy
    /// of its current bytes to go on reading (one copy shared by all of them).
    pub(super) async fn freeze_readers(&self, ds: &str, arr: &str) {
        self.freeze_readers_with(ds, arr, None).await
    }

    /// Before a rename replaces `ds/arr` and forgets its inode `replaced`: when the
    /// array was opened lately, its old version is kept for late opens of that inode
    /// ([`Tombstone`]). Called before the inode is forgotten, so that no open of it
    /// finds neither the inode nor its tombstone (the kernel retries an ESTALE open
    /// only once, and a second rename may come before the retry). Returns the copy
    /// for [`Self::freeze_readers_with`].
    pub(super) async fn keep_for_late_opens(&self, ds: &str, arr: &str, replaced: Option<u64>) -> Option<Arc<Frozen>> {
        let now = std::time::Instant::now();
        let keep = Duration::from_secs(TOMBSTONE_SECS);
        self.tombstones.lock().retain(|_, t| now.duration_since(t.at) < keep);
        let ino = replaced?;
        let recent = self.opened.lock().get(&(ds.to_string(), arr.to_string())).is_some_and(|t| now.duration_since(*t) < keep);
        let schema = self.schema(ds, arr).filter(|_| recent)?;
        if !self.npy_size(ds, arr, &schema).await.is_ok_and(|n| n <= TOMBSTONE_MAX_BYTES) {
            return None;
        }
        let frozen = Arc::new(self.copy_out_or_gone(ds, arr).await);
        self.tombstones.lock().insert(ino, Tombstone { ds: ds.to_string(), arr: arr.to_string(), frozen: frozen.clone(), at: now });
        Some(frozen)
    }

    /// [`Self::freeze_readers`] with the copy already made, if any (it must be of the
    /// version the store still holds).
    pub(super) async fn freeze_readers_with(&self, ds: &str, arr: &str, copy: Option<Arc<Frozen>>) {
        let open: Vec<Arc<Handle>> = self
            .handles
            .lock()
            .iter()
            // Passthrough descriptors read their own spool file: nothing to freeze.
            .filter(|(fh, h)| matches!(&***h, Handle::Array { ds: d, arr: a, frozen, .. } if d == ds && a == arr && frozen.lock().is_none()) && !self.is_passthrough(**fh))
            .map(|(_, h)| h.clone())
            .collect();
        if open.is_empty() {
            return;
        }
        let frozen = match copy {
            Some(f) => f,
            None => Arc::new(self.copy_out_or_gone(ds, arr).await),
        };
        for h in open {
            if let Handle::Array { frozen: f, .. } = &*h {
                f.lock().get_or_insert_with(|| frozen.clone());
            }
        }
    }

    async fn copy_out_or_gone(&self, ds: &str, arr: &str) -> Frozen {
        self.copy_out(ds, arr).await.unwrap_or_else(|e| {
            tracing::warn!(dataset = ds, array = arr, error = %e, "cannot keep the old version for descriptors still reading it; their reads fail with ESTALE");
            Frozen::Gone
        })
    }

    /// The whole `.npy` of `ds/arr` as it is now, in a temp file.
    pub(super) async fn copy_out(&self, ds: &str, arr: &str) -> FsResult<Frozen> {
        let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{arr}.npy")))?;
        self.copy_out_as(ds, arr, &schema, false).await
    }

    /// [`copy_out`](Self::copy_out) of the version `schema` describes (see `read_array_bytes_as`).
    pub(super) async fn copy_out_as(&self, ds: &str, arr: &str, schema: &ArraySchema, before_refresh: bool) -> FsResult<Frozen> {
        let len = self.npy_size(ds, arr, schema).await?;
        if len > FREEZE_MAX_BYTES {
            return Err(FsError::new(libc::EFBIG, format!("{ds}/{arr}.npy is {len} bytes, over the {FREEZE_MAX_BYTES} kept aside")));
        }
        let (file, len) = self.npy_to_temp_file(ds, arr, schema, len, before_refresh).await?;
        Ok(Frozen::Bytes { file, len })
    }

    /// The first `len` bytes of the `.npy` form of `ds/arr` (as `schema` describes it)
    /// in a temp file, whatever its size, and how many there were.
    pub(super) async fn npy_to_temp_file(&self, ds: &str, arr: &str, schema: &ArraySchema, len: u64, before_refresh: bool) -> FsResult<(File, u64)> {
        let file = tempfile::tempfile()?;
        let mut off = 0u64;
        while off < len {
            let part = self.read_array_bytes_as(ds, arr, schema, off, (len - off).min(8 << 20), before_refresh).await?;
            if part.is_empty() {
                break;
            }
            file.write_all_at(&part, off)?;
            off += part.len() as u64;
        }
        Ok((file, off))
    }

    /// Picks up what other writers flushed to the store (see `Atlas::refresh`): the
    /// arrays of every dataset that changed get a new generation, so the kernel drops
    /// their cached pages and attributes. Returns the datasets that changed.
    pub async fn refresh(&self) -> FsResult<Vec<String>> {
        // Descriptors open on arrays, with the shape they opened with: if a refresh
        // brings another writer's version, they go on reading the one they opened.
        let open: Vec<(Arc<Handle>, String, String, Option<ArraySchema>)> = self
            .handles
            .lock()
            .iter()
            .filter(|(fh, _)| !self.is_passthrough(**fh))
            .filter_map(|(_, h)| match &**h {
                Handle::Array { ds, arr, frozen, .. } if frozen.lock().is_none() => Some((h.clone(), ds.clone(), arr.clone(), self.schema(ds, arr))),
                _ => None,
            })
            .collect();
        let changed = self.atlas.refresh().await?;
        if !changed.is_empty() && !open.is_empty() {
            self.freeze_for_refresh(open, &changed).await;
        }
        self.forget_datasets(&changed);
        if !changed.is_empty() {
            self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(datasets = changed.len(), "picked up changes flushed by another writer");
        }
        Ok(changed)
    }

    /// After a refresh: descriptors open on an array it changed get a copy of the
    /// version they opened (one per array), as on a local filesystem where a file
    /// replaced by rename keeps its old contents for those who have it open.
    pub(super) async fn freeze_for_refresh(&self, open: Vec<(Arc<Handle>, String, String, Option<ArraySchema>)>, changed: &[String]) {
        let mut copies: HashMap<(String, String), Arc<Frozen>> = HashMap::new();
        for (h, ds, arr, old) in open {
            if !changed.contains(&ds) {
                continue;
            }
            let Some(old) = old else { continue };
            let now = self.schema(&ds, &arr);
            let data_changed = match self.atlas.file(&arr).await {
                Ok(f) => f.read().await.refreshed(&ds),
                Err(_) => true,
            };
            if now.as_ref() == Some(&old) && !data_changed {
                continue;
            }
            let key = (ds.clone(), arr.clone());
            let cached = copies.get(&key).cloned();
            let frozen = match cached {
                Some(f) => f,
                None => {
                    let f = Arc::new(match self.copy_out_as(&ds, &arr, &old, true).await {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!(dataset = %ds, array = %arr, error = %e, "cannot keep the version open descriptors read; their reads fail with ESTALE");
                            Frozen::Gone
                        }
                    });
                    copies.insert(key, f.clone());
                    f
                }
            };
            if let Handle::Array { frozen: f, .. } = &*h {
                f.lock().get_or_insert(frozen);
            }
        }
    }

    /// Drops what the kernel cached of datasets that changed under us.
    pub(super) fn forget_datasets(&self, changed: &[String]) {
        for ds in changed {
            if let Some(s) = &self.spool {
                s.invalidate_dataset(ds);
            }
            let mut arrays: Vec<String> = self.atlas.dataset_meta(ds).map(|m| m.arrays.keys().cloned().collect()).unwrap_or_default();
            // Arrays the other writer removed were known here by their generation.
            arrays.extend(self.generations.lock().keys().filter(|(d, _)| d == ds).map(|(_, a)| a.clone()));
            arrays.sort();
            arrays.dedup();
            for arr in arrays {
                self.bump_generation(ds, &arr);
                let name = format!("{arr}.npy");
                let (dir, file) = self.file_inodes(ds, &name);
                self.invalidate(Invalidate::Inode(file));
                self.invalidate(Invalidate::Entry { parent: dir, name });
                self.invalidate(Invalidate::Inode(dir));
            }
            // A new dataset may sit in the kernel's cache as a negative entry.
            self.invalidate(Invalidate::Entry { parent: ROOT_INO, name: ds.clone() });
        }
    }
}
