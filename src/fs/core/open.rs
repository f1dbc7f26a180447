//! Opens: which [`Handle`] a descriptor gets, and whether the kernel may keep the
//! pages it cached of the file.

use super::*;

impl AtlasFs {
    /// Opens a file. `flags` are the open(2) flags.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        loop {
            let seq = self.swaps.load(Ordering::Acquire);
            if seq % 2 == 1 {
                tokio::task::yield_now().await;
                continue;
            }
            // A write open of an inode held in passthrough cannot share it (see
            // `passthrough`): the name moves to a new inode first.
            if flags & libc::O_ACCMODE != libc::O_RDONLY && self.held_in_passthrough(ino) {
                return Err(self.move_to_new_inode(ino));
            }
            let res = self.open_once(ino, flags).await;
            if matches!(&res, Ok(o) if o.backing.is_some()) {
                self.await_releases(ino).await;
            }
            // No await from here to the answer: a rename between the check and the
            // answer would pair this inode with the other version's I/O mode.
            if self.swaps.load(Ordering::Acquire) == seq {
                let o = res?;
                let key = self.inodes.lock().key(ino);
                match key {
                    Some(NodeKey::File(ds, name)) => {
                        let generation = array_of(&name).map(|a| self.generation(&ds, a));
                        let fh = o.fh;
                        return self.settle_io(ino, o, generation).map_err(|()| {
                            self.handles.lock().remove(&fh);
                            self.move_to_new_inode(ino)
                        });
                    }
                    // Tombstones and control files keep no mode: their descriptors are
                    // not counted, so they never pass through.
                    _ if o.backing.is_none() => return Ok(o),
                    // A passthrough answer for an inode renamed over since `open_once`
                    // found its name. Answered page-cached instead, it failed with EIO
                    // when the kernel held the inode in passthrough for earlier opens
                    // (a cached open of such an inode is refused): open again, as a
                    // late open of a replaced inode.
                    _ => {
                        self.handles.lock().remove(&o.fh);
                        continue;
                    }
                }
            }
            // A rename moved a name meanwhile: this descriptor may pair the inode with
            // the other version. Open again (a replaced inode then gets ESTALE).
            if let Ok(o) = res {
                self.handles.lock().remove(&o.fh);
            }
        }
    }

    /// A descriptor on a staged (being written) file: page-cached, no passthrough.
    fn staged_open(&self, ds: String, name: String, writable: bool, staged: Arc<Mutex<Staged>>) -> Opened {
        Opened { fh: self.new_handle(Handle::Staged { ds, name, writable, staged }), direct_io: false, keep_cache: false, read_only: !writable, backing: None }
    }

    pub(super) async fn open_once(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let key = match self.key(ino) {
            Ok(k) => k,
            Err(e) => return self.open_tombstone(ino, flags).ok_or(e),
        };
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let trunc = flags & libc::O_TRUNC != 0;
        if write && !matches!(key, NodeKey::Zarr(_)) {
            self.writable()?;
        }
        match key {
            NodeKey::Zarr(p) => self.zarr_open(ino, &p, write || trunc).await,
            NodeKey::Control(c) => {
                if write && c == ControlFile::Stats {
                    return Err(FsError::new(libc::EACCES, "stats is read-only"));
                }
                let snapshot = if c == ControlFile::Stats { self.stats_json().await.into_bytes() } else { vec![] };
                Ok(Opened { fh: self.new_handle(Handle::Control { file: c, snapshot }), direct_io: true, keep_cache: false, read_only: !write, backing: None })
            }
            NodeKey::StackedNpy(_) | NodeKey::StackedList(_) if write => Err(FsError::new(libc::EACCES, "the stacked view is read-only")),
            NodeKey::StackedNpy(a) => {
                let stack = self.stack(&a).ok_or_else(|| FsError::noent(format!("stacked/{a}.npy")))?;
                let version = self.atlas.version();
                let keep_cache = self.cached_gen.lock().insert(ino, version) == Some(version);
                Ok(Opened {
                    fh: self.new_handle(Handle::Stacked { array: a, stack, read_ahead: Mutex::default() }),
                    direct_io: false,
                    keep_cache,
                    read_only: !write,
                    backing: None,
                })
            }
            NodeKey::StackedList(a) => {
                let stack = self.stack(&a).ok_or_else(|| FsError::noent(format!("stacked/{a}.datasets")))?;
                Ok(Opened { fh: self.new_handle(Handle::Bytes(stack.listing().into_bytes())), direct_io: true, keep_cache: false, read_only: !write, backing: None })
            }
            NodeKey::File(ds, name) => {
                if let Some(s) = self.staged_entry(&ds, &name) {
                    // A truncating open starts its own staged file (see Handle::Staged).
                    let staged = if write && trunc { self.stage(&ds, &name)? } else { s };
                    return Ok(self.staged_open(ds, name, write, staged));
                }
                let arr = array_of(&name).ok_or_else(|| FsError::noent(format!("{ds}/{name}")))?.to_string();
                if self.schema(&ds, &arr).is_none() {
                    // A name the kernel still caches (e.g. after a rejected write) opened
                    // with O_TRUNC: the kernel strips O_CREAT, but this is a create.
                    if write && trunc && self.atlas.dataset_exists(&ds) {
                        let staged = self.stage(&ds, &name)?;
                        return Ok(self.staged_open(ds, name, true, staged));
                    }
                    return Err(FsError::noent(format!("{ds}/{name}")));
                }
                if write && trunc {
                    let staged = self.stage(&ds, &name)?;
                    self.cached_gen.lock().remove(&ino);
                    return Ok(self.staged_open(ds, name, true, staged));
                }
                if write {
                    let overlay = Overlay { file: tempfile::tempfile()?, ranges: vec![] };
                    return Ok(Opened {
                        fh: self.new_handle(Handle::Update { ds, arr, overlay: Mutex::new(overlay) }),
                        direct_io: false,
                        keep_cache: false,
                        read_only: false,
                        backing: None,
                    });
                }
                // Cached pages stay valid while the array has not changed through this mount.
                let generation = self.generations.lock().get(&(ds.clone(), arr.clone())).copied().unwrap_or(0);
                let keep_cache = self.cached_gen.lock().insert(ino, generation) == Some(generation);
                self.opened.lock().insert((ds.clone(), arr.clone()), std::time::Instant::now());
                let (backing, filling) = self.spool_for_open(&ds, &arr, generation).await;
                Ok(Opened {
                    fh: self.new_handle(Handle::Array { ds, arr, read_ahead: Mutex::default(), frozen: Mutex::new(None), ino, filling: Mutex::new(filling) }),
                    direct_io: false,
                    keep_cache,
                    read_only: !write,
                    backing,
                })
            }
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// A read-only open of an inode renamed over a moment ago: its old version.
    pub(super) fn open_tombstone(&self, ino: u64, flags: i32) -> Option<Opened> {
        // An inode held in passthrough takes only passthrough opens (see
        // `passthrough`): without a tombstone the kernel looks the name up again.
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 || self.held_in_passthrough(ino) {
            return None;
        }
        let t = self.tombstones.lock();
        let t = t.get(&ino).filter(|t| t.at.elapsed() < Duration::from_secs(TOMBSTONE_SECS))?;
        let h = Handle::Array { ds: t.ds.clone(), arr: t.arr.clone(), read_ahead: Mutex::default(), frozen: Mutex::new(Some(t.frozen.clone())), ino, filling: Mutex::new(None) };
        Some(Opened { fh: self.new_handle(h), direct_io: false, keep_cache: false, read_only: true, backing: None })
    }
}
