//! Names: lookups, attributes, listings, and the operations that change the tree
//! (mkdir, rmdir, unlink, rename, setattr). Inodes follow renames.

use super::*;

/// The key of a dataset directory's own mtime in `mtimes` (array names are never empty).
const DIR_MTIME: &str = "";

impl AtlasFs {
    /// Attributes of a node, or ENOENT if it no longer exists.
    pub async fn getattr(&self, ino: u64) -> FsResult<NodeAttr> {
        self.getattr_fh(ino, None).await
    }

    /// `getattr`, also of an inode a rename or unlink made the kernel forget while a
    /// descriptor still reads it (`fstat` asks by inode): the size of the version that
    /// descriptor reads. `fh` is the kernel's descriptor when it names one.
    pub async fn getattr_fh(&self, ino: u64, fh: Option<u64>) -> FsResult<NodeAttr> {
        self.stable(|| self.getattr_once(ino, fh)).await
    }

    pub(super) async fn getattr_once(&self, ino: u64, fh: Option<u64>) -> FsResult<NodeAttr> {
        let err = match self.key(ino) {
            Ok(key) => return self.attr_of(ino, &key).await,
            Err(e) => e,
        };
        let by_fh = fh.and_then(|f| self.handle(f).ok()).filter(|h| matches!(&**h, Handle::Array { ino: i, .. } if *i == ino));
        let open = by_fh.or_else(|| self.handles.lock().values().find(|h| matches!(&***h, Handle::Array { ino: i, .. } if *i == ino)).cloned());
        if let Some(t) = self.tombstones.lock().get(&ino)
            && t.at.elapsed() < Duration::from_secs(TOMBSTONE_SECS)
            && let Frozen::Bytes { len, .. } = &*t.frozen
        {
            return Ok(self.attr(ino, Kind::File, *len, self.started));
        }
        if let Some(h) = open
            && let Handle::Array { ds, arr, frozen, .. } = &*h
        {
            let size = match frozen.lock().clone().as_deref() {
                Some(Frozen::Bytes { len, .. }) => Some(*len),
                Some(Frozen::Gone) => None,
                // Passthrough opens are never frozen: their spool file is their version.
                None if self.passthrough_len(ino).is_some() => self.passthrough_len(ino),
                // Not frozen yet: the store still holds the version it reads (a
                // replacement freezes its readers before it commits).
                None => match self.schema(ds, arr) {
                    Some(schema) => Some(self.npy_size(ds, arr, &schema).await?),
                    None => None,
                },
            };
            if let Some(size) = size {
                let mtime = self.mtimes.lock().get(&(ds.clone(), arr.clone())).copied().unwrap_or(self.started);
                return Ok(self.attr(ino, Kind::File, size, mtime));
            }
        }
        Err(err)
    }

    pub(super) async fn attr_of(&self, ino: u64, key: &NodeKey) -> FsResult<NodeAttr> {
        match key {
            NodeKey::Root => Ok(self.attr(ino, Kind::Dir, 0, self.mtimes.lock().get(&(DIR_MTIME.to_string(), DIR_MTIME.to_string())).copied().unwrap_or(self.started))),
            NodeKey::ControlDir | NodeKey::StackedDir => Ok(self.attr(ino, Kind::Dir, 0, self.started)),
            NodeKey::Zarr(p) => self.zarr_attr(ino, p).await,
            NodeKey::StackedNpy(a) => Ok(self.attr(ino, Kind::File, self.stack(a).ok_or_else(|| FsError::noent(format!("stacked/{a}.npy")))?.size(), self.started)),
            NodeKey::StackedList(a) => {
                Ok(self.attr(ino, Kind::File, self.stack(a).ok_or_else(|| FsError::noent(format!("stacked/{a}.datasets")))?.listing().len() as u64, self.started))
            }
            NodeKey::Control(c) => {
                let size = if *c == ControlFile::Stats { self.stats_json().await.len() as u64 } else { 0 };
                Ok(self.attr(ino, Kind::File, size, SystemTime::now()))
            }
            NodeKey::Dataset(ds) => {
                if self.atlas.dataset_exists(ds) {
                    let mtime = self.mtimes.lock().get(&(ds.clone(), DIR_MTIME.to_string())).copied().unwrap_or(self.started);
                    Ok(self.attr(ino, Kind::Dir, 0, mtime))
                } else {
                    Err(FsError::noent(ds))
                }
            }
            NodeKey::File(ds, name) => {
                if let Some(s) = self.staged_entry(ds, name) {
                    let s = s.lock();
                    return Ok(self.attr(ino, Kind::File, s.len, s.mtime));
                }
                let arr = array_of(name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
                let schema = self.schema(ds, arr).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
                let size = self.npy_size(ds, arr, &schema).await?;
                let mtime = self.mtimes.lock().get(&(ds.clone(), arr.to_string())).copied().unwrap_or(self.started);
                Ok(self.attr(ino, Kind::File, size, mtime))
            }
        }
    }

    pub(super) fn child_key(&self, parent: u64, name: &str) -> FsResult<NodeKey> {
        match self.key(parent)? {
            NodeKey::Root if name == CONTROL_DIR => Ok(NodeKey::ControlDir),
            NodeKey::Root => Ok(NodeKey::Dataset(name.to_string())),
            NodeKey::ControlDir if name == STACKED_DIR => Ok(NodeKey::StackedDir),
            NodeKey::ControlDir if name == crate::fs::zarr::ZARR_DIR => Ok(NodeKey::Zarr(vec![])),
            NodeKey::Zarr(p) => Ok(NodeKey::Zarr(p.into_iter().chain([name.to_string()]).collect())),
            NodeKey::ControlDir => ControlFile::ALL.into_iter().find(|c| c.name() == name).map(NodeKey::Control).ok_or_else(|| FsError::noent(format!("{CONTROL_DIR}/{name}"))),
            NodeKey::StackedDir => match (name.strip_suffix(".npy"), name.strip_suffix(".datasets")) {
                (Some(a), _) => Ok(NodeKey::StackedNpy(a.to_string())),
                (_, Some(a)) => Ok(NodeKey::StackedList(a.to_string())),
                _ => Err(FsError::noent(format!("{CONTROL_DIR}/{STACKED_DIR}/{name}"))),
            },
            NodeKey::Dataset(ds) => Ok(NodeKey::File(ds, name.to_string())),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<NodeAttr> {
        if let Ok(key @ NodeKey::Zarr(_)) = self.child_key(parent, name) {
            return self.zarr_lookup(key).await; // counted for FORGET (forget.rs)
        }
        self.stable(|| async {
            let key = self.child_key(parent, name)?;
            let ino = self.inodes.lock().ino(key.clone());
            self.attr_of(ino, &key).await
        })
        .await
    }

    /// Entries of a directory with their attributes, `.` and `..` excluded.
    pub async fn readdir(&self, ino: u64) -> FsResult<Vec<(String, NodeAttr)>> {
        self.stable(|| self.readdir_once(ino)).await
    }

    pub(super) async fn readdir_once(&self, ino: u64) -> FsResult<Vec<(String, NodeAttr)>> {
        let mut out = vec![];
        match self.key(ino)? {
            NodeKey::Root => {
                out.push((CONTROL_DIR.to_string(), self.attr(CONTROL_DIR_INO, Kind::Dir, 0, self.started)));
                let names = self.atlas.list_datasets();
                let mut inodes = self.inodes.lock();
                let mtimes = self.mtimes.lock();
                for n in names {
                    let i = inodes.ino(NodeKey::Dataset(n.clone()));
                    let mtime = mtimes.get(&(n.clone(), DIR_MTIME.to_string())).copied().unwrap_or(self.started);
                    out.push((n, self.attr(i, Kind::Dir, 0, mtime)));
                }
            }
            NodeKey::ControlDir => {
                out.push((STACKED_DIR.to_string(), self.attr(STACKED_DIR_INO, Kind::Dir, 0, self.started)));
                let zi = self.inodes.lock().ino(NodeKey::Zarr(vec![]));
                out.push((crate::fs::zarr::ZARR_DIR.to_string(), self.attr(zi, Kind::Dir, 0, self.started)));
                for c in ControlFile::ALL {
                    out.push((c.name().to_string(), self.attr_of(c.ino(), &NodeKey::Control(c)).await?));
                }
            }
            NodeKey::StackedDir => {
                for a in self.atlas.list_arrays() {
                    let Some(st) = self.stack(&a) else { continue };
                    let mut inodes = self.inodes.lock();
                    let (i, j) = (inodes.ino(NodeKey::StackedNpy(a.clone())), inodes.ino(NodeKey::StackedList(a.clone())));
                    drop(inodes);
                    out.push((format!("{a}.npy"), self.attr(i, Kind::File, st.size(), self.started)));
                    out.push((format!("{a}.datasets"), self.attr(j, Kind::File, st.listing().len() as u64, self.started)));
                }
            }
            NodeKey::Dataset(ds) => {
                let meta = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?;
                for (arr, schema) in &meta.arrays {
                    let name = format!("{arr}.npy");
                    if self.staged_entry(&ds, &name).is_some() {
                        continue;
                    }
                    let i = self.inodes.lock().ino(NodeKey::File(ds.clone(), name.clone()));
                    let size = match self.npy_size(&ds, arr, schema).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(dataset = %ds, array = %arr, error = %e, "cannot size array; listing it as empty");
                            0
                        }
                    };
                    let mtime = self.mtimes.lock().get(&(ds.clone(), arr.clone())).copied().unwrap_or(self.started);
                    out.push((name, self.attr(i, Kind::File, size, mtime)));
                }
                let staged: Vec<(String, Arc<Mutex<Staged>>)> = self.staged.lock().iter().filter(|((d, _), _)| d == &ds).map(|((_, n), s)| (n.clone(), s.clone())).collect();
                for (name, s) in staged {
                    let i = self.inodes.lock().ino(NodeKey::File(ds.clone(), name.clone()));
                    let s = s.lock();
                    out.push((name, self.attr(i, Kind::File, s.len, s.mtime)));
                }
            }
            NodeKey::Zarr(p) => return self.zarr_readdir(&p).await,
            _ => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
        Ok(out)
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        match self.key(ino)? {
            NodeKey::Root | NodeKey::ControlDir | NodeKey::StackedDir | NodeKey::Dataset(_) | NodeKey::Zarr(_) => Ok(self.new_handle(Handle::Dir(Mutex::new(None)))),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    /// The listing of directory `ino` for a read at `offset` through handle `fh`:
    /// fresh at offset 0 (a rewinddir sees changes), the handle's copy after that.
    pub async fn readdir_handle(&self, fh: u64, ino: u64, offset: u64) -> FsResult<Listing> {
        let h = self.handle(fh)?;
        let Handle::Dir(cached) = &*h else { return Err(FsError::new(libc::ENOTDIR, "not a directory handle")) };
        if offset > 0
            && let Some(l) = cached.lock().clone()
        {
            return Ok(l);
        }
        let listing: Listing = Arc::new(self.readdir(ino).await?);
        *cached.lock() = Some(listing.clone());
        Ok(listing)
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<NodeAttr> {
        self.refuse_zarr_write(parent, Some(name), "mkdir")?;
        self.writable()?;
        crate::fs::names::check_new_name(name)?;
        match self.child_key(parent, name)? {
            NodeKey::Dataset(ds) => {
                self.atlas.create_dataset_shared(&ds).await?;
                let ino = self.inodes.lock().ino(NodeKey::Dataset(ds));
                Ok(self.attr(ino, Kind::Dir, 0, SystemTime::now()))
            }
            NodeKey::ControlDir => Err(FsError::new(libc::EEXIST, format!("{CONTROL_DIR} is reserved"))),
            _ => Err(FsError::new(libc::EPERM, format!("{name}: directories can only be made at the top level (one per dataset)"))),
        }
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.refuse_zarr_write(parent, Some(name), "rmdir")?;
        self.writable()?;
        match self.child_key(parent, name)? {
            NodeKey::Dataset(ds) => {
                let meta = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?;
                let staged = self.staged.lock().keys().any(|(d, _)| d == &ds);
                if !meta.arrays.is_empty() || staged {
                    return Err(FsError::new(libc::ENOTEMPTY, format!("{ds}: dataset holds {} arrays; remove them first", meta.arrays.len())));
                }
                self.atlas.delete_dataset_shared(&ds).await?;
                self.mtimes.lock().remove(&(ds.clone(), DIR_MTIME.to_string()));
                self.inodes.lock().remove(&NodeKey::Dataset(ds));
                Ok(())
            }
            NodeKey::ControlDir | NodeKey::StackedDir => Err(FsError::new(libc::EBUSY, format!("{CONTROL_DIR} cannot be removed"))),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.refuse_zarr_write(parent, Some(name), "unlink")?;
        self.writable()?;
        match self.child_key(parent, name)? {
            NodeKey::File(ds, name) => {
                if let Some(s) = self.staged.lock().remove(&(ds.clone(), name.clone())) {
                    s.lock().dropped = true;
                    self.inodes.lock().remove(&NodeKey::File(ds, name));
                    return Ok(());
                }
                let arr = array_of(&name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
                if self.schema(&ds, arr).is_none() {
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                // Descriptors still open keep reading what they opened, as on a local
                // filesystem; new opens of the old inode get ESTALE, then ENOENT.
                self.inodes.lock().remove(&NodeKey::File(ds.clone(), name.clone()));
                self.freeze_readers(&ds, arr).await;
                self.atlas.open_dataset(&ds).await?.delete_array_shared(arr).await?;
                self.bump_generation(&ds, arr);
                Ok(())
            }
            NodeKey::Control(_) | NodeKey::StackedNpy(_) | NodeKey::StackedList(_) => Err(FsError::new(libc::EPERM, "control files cannot be removed")),
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// Copies an array (definition and data) to another name, possibly in another dataset.
    pub(super) async fn copy_array(&self, src_ds: &str, src: &str, dst_ds: &str, dst: &str) -> FsResult<()> {
        let schema = self.schema(src_ds, src).ok_or_else(|| FsError::noent(format!("{src_ds}/{src}.npy")))?;
        let from = self.atlas.open_dataset(src_ds).await?;
        let fill = from.array_fill_value(src).await?;
        let (shape, cells) = from.read_cells(src, &[], &[]).await?.ok_or_else(|| FsError::noent(format!("{src_ds}/{src}.npy")))?;
        let def = ArrayDef {
            dtype: schema.dtype.clone(),
            dimension_names: schema.dimension_names.clone(),
            shape: schema.shape.clone(),
            chunk_shape: Some(schema.chunk_shape.clone()),
            fill,
        };
        let to = self.atlas.open_dataset(dst_ds).await?;
        to.replace_array(dst, def, [Ok((vec![0; shape.len()], shape, cells))]).await?;
        self.bump_generation(dst_ds, dst);
        Ok(())
    }

    /// A file renamed onto `nds/nname` (an array's name, or a temp name), with the
    /// bytes the renamed inode shows until they are committed staged in `s`. The
    /// steps of a replacement under readers, one at a time (the caller holds
    /// `replacing`):
    /// 1. when the replaced array was opened lately, its old version is kept for
    ///    opens of its inode that a path walk found just before (a tombstone, in
    ///    place before the inode is forgotten);
    /// 2. the name goes to the renamed inode, which shows the staged bytes (its size
    ///    is theirs) until the commit is in; the replaced inode is forgotten, so other
    ///    opens through it get ESTALE and look again;
    ///
    /// then the caller freezes descriptors still reading the old version (with the
    /// copy returned here, if any) and commits. So every descriptor reads one
    /// version whole, as with rename(2) on a local filesystem.
    async fn move_over(&self, ds: &str, name: &str, nds: &str, nname: &str, s: &Arc<Mutex<Staged>>) -> Option<Arc<Frozen>> {
        let to = NodeKey::File(nds.to_string(), nname.to_string());
        let replaced = self.inodes.lock().by_key.get(&to).copied();
        let kept = match array_of(nname) {
            Some(arr) => self.keep_for_late_opens(nds, arr, replaced).await,
            None => None,
        };
        {
            // The new name, its staged bytes and its inode change together.
            let mut inodes = self.inodes.lock();
            self.swaps.fetch_add(1, Ordering::AcqRel);
            if array_of(nname).is_some() {
                self.staged.lock().insert((nds.to_string(), nname.to_string()), s.clone());
            }
            inodes.rename(&NodeKey::File(ds.to_string(), name.to_string()), to);
            self.swaps.fetch_add(1, Ordering::AcqRel);
        }
        self.unstage(ds, name, s);
        kept
    }

    /// A stored array renamed onto an array's name: copied there, then deleted, as
    /// one replacement for readers. Until the copy is committed the renamed inode
    /// shows a staged copy of the source's bytes, exactly as a staged temp file
    /// renamed into place does ([`Self::move_over`]); without it, the replaced inode
    /// showed the new version while the kernel still sized it by the old one (READs
    /// past the end: EINVAL, seen as EIO) and its descriptors went unfrozen.
    async fn rename_stored(&self, ds: &str, name: &str, src: &str, nds: &str, nname: &str, dst: &str) -> FsResult<()> {
        let _one_at_a_time = self.replacing.lock().await;
        let schema = self.schema(ds, src).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?;
        let len = self.npy_size(ds, src, &schema).await?;
        let (file, len) = self.npy_to_temp_file(ds, src, &schema, len, false).await?;
        let mtime = self.mtimes.lock().get(&(ds.to_string(), src.to_string())).copied().unwrap_or(self.started);
        let s = Arc::new(Mutex::new(Staged { file: file.try_clone()?, len, mtime, dirty: false, dropped: false, rejected: None, encoder: None }));
        let like = if schema.dtype.is_variable_length() {
            None
        } else {
            let fill = self.atlas.open_dataset(ds).await?.array_fill_value(src).await?;
            let chunk_shape = Some(schema.chunk_shape.clone());
            Some(ArrayDef { dtype: schema.dtype.clone(), dimension_names: schema.dimension_names.clone(), shape: schema.shape.clone(), chunk_shape, fill })
        };
        let kept = self.move_over(ds, name, nds, nname, &s).await;
        self.freeze_readers_with(nds, dst, kept).await;
        // Fixed-width arrays are committed from the staged copy in slabs (bounded
        // memory: a 512 MiB array took 925 MiB of RSS when read whole), keeping the
        // source's chunking, fill and dimension names; strings are copied whole.
        let res = match like {
            None => self.copy_array(ds, src, nds, dst).await,
            Some(like) => self.commit_staged_like(nds, dst, &s, Some(like)).await,
        };
        self.unstage(nds, nname, &s);
        if let Err(e) = res {
            // The store is unchanged: the inode goes back to the source's name.
            let mut inodes = self.inodes.lock();
            self.swaps.fetch_add(1, Ordering::AcqRel);
            inodes.rename(&NodeKey::File(nds.to_string(), nname.to_string()), NodeKey::File(ds.to_string(), name.to_string()));
            self.swaps.fetch_add(1, Ordering::AcqRel);
            return Err(e);
        }
        self.mtimes.lock().insert((nds.to_string(), dst.to_string()), mtime);
        // Descriptors still reading the source keep its bytes, already copied.
        self.freeze_readers_with(ds, src, Some(Arc::new(Frozen::Bytes { file, len }))).await;
        self.atlas.open_dataset(ds).await?.delete_array_shared(src).await?;
        self.bump_generation(ds, src);
        Ok(())
    }

    pub async fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) -> FsResult<()> {
        self.refuse_zarr_write(parent, Some(name), "rename")?;
        self.refuse_zarr_write(new_parent, Some(new_name), "rename")?;
        self.writable()?;
        crate::fs::names::check_new_name(new_name)?;
        let from = self.child_key(parent, name)?;
        let to = self.child_key(new_parent, new_name)?;
        match (from, to) {
            (NodeKey::File(ds, name), NodeKey::File(nds, nname)) => {
                if !self.atlas.dataset_exists(&nds) {
                    return Err(FsError::noent(&nds));
                }
                if let Some(s) = self.staged_entry(&ds, &name) {
                    if ds == nds && name == nname {
                        return Ok(());
                    }
                    let _one_at_a_time = self.replacing.lock().await;
                    let Some(s) = self.staged_entry(&ds, &name).filter(|t| Arc::ptr_eq(t, &s)) else { return Err(FsError::noent(format!("{ds}/{name}"))) };
                    let kept = self.move_over(&ds, &name, &nds, &nname, &s).await;
                    match array_of(&nname) {
                        Some(arr) => {
                            self.freeze_readers_with(&nds, arr, kept).await;
                            let res = self.commit_staged(&nds, arr, &s).await;
                            self.unstage(&nds, &nname, &s);
                            if let Err(e) = &res {
                                tracing::warn!(dataset = %nds, file = %nname, error = %e, "rejected a .npy renamed into place; the store is unchanged");
                            }
                            return res;
                        }
                        None if is_temp_name(&nname) => {
                            self.staged.lock().insert((nds, nname), s);
                            return Ok(());
                        }
                        None => return Err(FsError::inval(format!("{nds}/{nname}: only <array>.npy or hidden temp names"))),
                    }
                }
                let src = array_of(&name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?.to_string();
                let dst = array_of(&nname).ok_or_else(|| FsError::inval(format!("{nds}/{nname}: an array must be named <array>.npy")))?.to_string();
                if ds == nds && src == dst {
                    return Ok(());
                }
                self.rename_stored(&ds, &name, &src, &nds, &nname, &dst).await
            }
            (NodeKey::Dataset(ds), NodeKey::Dataset(nds)) => {
                if ds == nds {
                    return Ok(());
                }
                let meta = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?;
                if let Some(target) = self.atlas.dataset_meta(&nds) {
                    if !target.arrays.is_empty() {
                        return Err(FsError::new(libc::ENOTEMPTY, format!("{nds} is not empty")));
                    }
                    self.atlas.delete_dataset_shared(&nds).await?;
                }
                let view = self.atlas.create_dataset_shared(&nds).await?;
                for (k, v) in &meta.attributes {
                    view.try_set_attribute(k, v.clone())?;
                }
                for arr in meta.arrays.keys() {
                    self.copy_array(&ds, arr, &nds, arr).await?;
                }
                self.atlas.delete_dataset_shared(&ds).await?;
                // The old names are gone: what was cached under them must not outlive them.
                for arr in meta.arrays.keys() {
                    self.bump_generation(&ds, arr);
                }
                self.inodes.lock().rename_dataset(&ds, &nds);
                Ok(())
            }
            (NodeKey::Control(_) | NodeKey::ControlDir | NodeKey::StackedDir | NodeKey::StackedNpy(_) | NodeKey::StackedList(_), _)
            | (_, NodeKey::Control(_) | NodeKey::ControlDir | NodeKey::StackedDir | NodeKey::StackedNpy(_) | NodeKey::StackedList(_)) => {
                Err(FsError::new(libc::EPERM, "control files cannot be renamed"))
            }
            _ => Err(FsError::new(libc::EXDEV, "a dataset and an array cannot take each other's place")),
        }
    }

    /// truncate/ftruncate and metadata changes. Modes and owners are fixed by the
    /// mount; times are kept for rsync and cp -p.
    pub async fn setattr(&self, ino: u64, size: Option<u64>, mtime: Option<SystemTime>) -> FsResult<NodeAttr> {
        if size.is_some() || mtime.is_some() {
            self.refuse_zarr_write(ino, None, "setattr")?;
        }
        let key = self.key(ino)?;
        // A dataset directory's mtime (`touch -d`, `rsync -a`) is kept in daemon
        // memory, as files' are: the store has no time per dataset or array, and a
        // time kept for directories only would not spare an rsync after a remount.
        // (The mount's root, `rsync -a src/ MNT/`, likewise: under the key ("", "").)
        match (&key, mtime) {
            (NodeKey::Dataset(ds), Some(t)) if self.atlas.dataset_exists(ds) => {
                self.mtimes.lock().insert((ds.clone(), DIR_MTIME.to_string()), t);
            }
            (NodeKey::Root, Some(t)) => {
                self.mtimes.lock().insert((DIR_MTIME.to_string(), DIR_MTIME.to_string()), t);
            }
            _ => {}
        }
        if let NodeKey::File(ds, name) = &key {
            if let Some(size) = size {
                self.writable()?;
                if let Some(s) = self.staged_entry(ds, name) {
                    let mut s = s.lock();
                    if let Some(enc) = &s.encoder {
                        enc.keep_staged()?;
                    }
                    s.file.set_len(size)?;
                    s.len = size;
                    s.dirty = true;
                    s.rejected = None;
                    if let Some(enc) = &s.encoder {
                        enc.truncated(size);
                    }
                } else if size == 0 && array_of(name).is_some_and(|a| self.schema(ds, a).is_some()) {
                    // truncate(2) to zero starts a rewrite; the old array stays until the new bytes are committed.
                    self.stage(ds, name)?;
                } else {
                    let cur = self.attr_of(ino, &key).await?.size;
                    if cur != size {
                        return Err(FsError::inval(format!("{ds}/{name}: an array's size follows from its shape; truncate to 0 and rewrite it instead")));
                    }
                }
            }
            if let Some(t) = mtime {
                if let Some(s) = self.staged_entry(ds, name) {
                    s.lock().mtime = t;
                } else if let Some(arr) = array_of(name) {
                    self.mtimes.lock().insert((ds.clone(), arr.to_string()), t);
                }
            }
        }
        self.attr_of(ino, &key).await
    }

    // ---- extended attributes ----
}
