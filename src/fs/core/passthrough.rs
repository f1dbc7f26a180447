//! Passthrough opens: read-only opens of an array answered with a spool file the
//! kernel reads itself (FUSE passthrough), so reads and `mmap` never reach us.
//!
//! - **Filling.** The first reader of a version reads through the daemon as before;
//!   what it reads is also written into a new spool file (no second decode). If
//!   it reads the whole array the file is installed when the last byte arrives;
//!   if it closes having read part of it (an `mmap` slice, a header peek), the rest
//!   is decoded in the background, one array at a time. Later opens pass through.
//! - **Never stale.** Every change of an array bumps its generation, which drops
//!   its spool entry at once; a fill whose array changed while it ran is thrown
//!   away. A descriptor already passing through keeps reading the file it opened,
//!   the version it opened, as a local file replaced by rename would.
//! - **I/O modes.** The kernel refuses (EIO) an open that would mix page-cached
//!   and passthrough opens of one inode, or two backing files for one inode. So
//!   the core counts, per inode, cached opens and passthrough opens (with their
//!   file and version): a passthrough open is granted only when it mixes with
//!   neither; a write open of an inode that has passthrough opens gets direct
//!   I/O, which belongs to no mode. Once the array has changed, an open of an
//!   inode still held open in passthrough to the old version moves the name to
//!   a new inode and answers ESTALE: the kernel looks the name up again and opens
//!   the new inode, free to take any mode (shared `mmap` included), while the old
//!   descriptors keep the old inode and version, as after a rename over it.
//! - **Small arrays** (under `--passthrough-min`, 1 MiB) are not passed through: a
//!   warm read of them is served from the FUSE page cache with no READ at all,
//!   while a passthrough read makes the kernel refresh the inode's attributes (two
//!   GETATTRs per `np.load`, measured).
//! - **Fallback.** Without the spool, without `CAP_SYS_ADMIN`, or on a kernel
//!   without passthrough, opens take the decoded path; the first refusal is
//!   logged once and turns passthrough off for the mount.

use super::*;
use crate::fs::spool::SpoolBuild;

/// Bytes decoded per step when a fill completes in the background.
const FILL_STEP: u64 = 8 << 20;

/// How the kernel does I/O on one open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IoMode {
    /// Through the page cache of the FUSE inode.
    Cached,
    /// Passthrough to the spool file with this id.
    Passthrough(u64),
    /// Direct I/O (no mode): every read reaches the daemon.
    Direct,
}

#[derive(Default)]
pub(super) struct InodeIo {
    cached: usize,
    /// The spool file of this inode's passthrough opens, how many there are, and
    /// the array's generation they read.
    passthrough: Option<(u64, usize, u64)>,
    /// The size of that spool file: the `.npy` of the version those opens read,
    /// which `fstat` on them shows after the name moved to a new inode.
    passthrough_len: u64,
}

#[derive(Default)]
pub(super) struct IoModes {
    by_fh: HashMap<u64, (u64, IoMode)>,
    by_ino: HashMap<u64, InodeIo>,
}

/// A spool file being filled by a descriptor's reads.
pub(super) struct Filling {
    build: SpoolBuild,
    len: u64,
    /// Sorted, merged byte ranges written so far.
    covered: Vec<(u64, u64)>,
}

impl Filling {
    fn add(&mut self, lo: u64, hi: u64) {
        add_range(&mut self.covered, lo, hi);
    }

    fn covered_len(&self) -> u64 {
        self.covered.iter().map(|(a, b)| b - a).sum()
    }

    fn complete(&self) -> bool {
        self.covered.first().is_some_and(|&(a, b)| a == 0 && b >= self.len)
    }

    /// Byte ranges not written yet.
    fn missing(&self) -> Vec<(u64, u64)> {
        let mut out = vec![];
        let mut at = 0;
        for &(a, b) in &self.covered {
            if a > at {
                out.push((at, a));
            }
            at = at.max(b);
        }
        if at < self.len {
            out.push((at, self.len));
        }
        out
    }
}

impl AtlasFs {
    pub(super) fn generation(&self, ds: &str, arr: &str) -> u64 {
        self.generations.lock().get(&(ds.to_string(), arr.to_string())).copied().unwrap_or(0)
    }

    /// For a read-only open of `ds/arr` at `generation`: the spool file to pass
    /// through to, or else a fill for this descriptor's reads to start.
    pub(super) async fn spool_for_open(&self, ds: &str, arr: &str, generation: u64) -> (Option<SpoolFile>, Option<Filling>) {
        let Some(spool) = self.spool.as_ref().filter(|_| self.passthrough_on.load(Ordering::Relaxed)) else { return (None, None) };
        let Some(schema) = self.schema(ds, arr).filter(|s| !s.dtype.is_variable_length()) else { return (None, None) };
        let Ok((_, _, len)) = self.npy_layout(&schema) else { return (None, None) };
        if len < self.cfg.passthrough_min_bytes {
            return (None, None);
        }
        let key = (ds.to_string(), arr.to_string());
        if let Some(f) = spool.get(&key, generation) {
            return (Some(f), None);
        }
        let fill = spool.begin(&key, generation, len).map(|build| Filling { build, len, covered: vec![] });
        (None, fill)
    }

    /// Bytes a descriptor read go into its fill; the last of them installs it.
    pub(super) fn fill_from_read(&self, ds: &str, arr: &str, filling: &Mutex<Option<Filling>>, offset: u64, bytes: &[u8]) {
        let mut slot = filling.lock();
        let Some(f) = slot.as_mut() else { return };
        if bytes.is_empty() {
            return;
        }
        if f.build.write_at(bytes, offset).is_err() {
            *slot = None;
            return;
        }
        f.add(offset, offset + bytes.len() as u64);
        if f.complete() {
            let f = slot.take().expect("checked");
            f.build.finish(self.generation(ds, arr));
        }
    }

    /// At the last close of a descriptor that was filling a spool file and read
    /// at least half of it: decode the rest in the background. One that read less
    /// (`file`, `head -c`, a slice through `mmap`) leaves no spool file behind: the
    /// rest of a large array, or of a remote one, is not worth decoding or
    /// fetching for a peek.
    pub(super) fn finish_fill_later(&self, ds: &str, arr: &str, filling: &Mutex<Option<Filling>>) {
        let Some(f) = filling.lock().take().filter(|f| 2 * f.covered_len() >= f.len) else { return };
        let Some(me) = self.me.get().and_then(|w| w.upgrade()) else { return };
        let (ds, arr) = (ds.to_string(), arr.to_string());
        let fills = self.fills.clone();
        tokio::spawn(async move {
            let Ok(_one) = fills.acquire().await else { return };
            me.complete_fill(&ds, &arr, f).await;
        });
    }

    async fn complete_fill(&self, ds: &str, arr: &str, mut f: Filling) {
        let Some(schema) = self.schema(ds, arr) else { return };
        for (a, b) in f.missing() {
            let mut at = a;
            while at < b {
                let n = (b - at).min(FILL_STEP);
                let bytes = match self.read_array_bytes_as(ds, arr, &schema, at, n, false).await {
                    Ok(v) if v.len() as u64 == n => v,
                    Ok(_) | Err(_) => return,
                };
                if f.build.write_at(&bytes, at).is_err() {
                    return;
                }
                at += n;
            }
        }
        f.covered = vec![(0, f.len)];
        if f.build.finish(self.generation(ds, arr)).is_some() {
            tracing::debug!(dataset = ds, array = arr, bytes = f.len, "spool file filled in the background");
        }
    }

    /// Decides how the kernel does I/O for a new open `o` of file inode `ino` and
    /// records it (see the module note): keeps `o.backing` only if passthrough can
    /// be granted, and sets direct I/O where a cached open would mix with
    /// passthrough opens. `generation` is the array's, for an array. Err: the
    /// inode is held in passthrough to an older version; the caller moves the
    /// name to a new inode.
    pub(super) fn settle_io(&self, ino: u64, mut o: Opened, generation: Option<u64>) -> Result<Opened, ()> {
        if o.direct_io && o.backing.is_none() {
            return Ok(o);
        }
        let mut io = self.io.lock();
        let st = io.by_ino.entry(ino).or_default();
        let gen_now = generation.unwrap_or(0);
        // While an inode has a backing file the kernel takes only passthrough opens
        // of it, to that same file: anything else must go to a new inode.
        if let Some((id, _, held)) = st.passthrough
            && (held != gen_now || o.backing.as_ref().is_none_or(|b| b.id != id))
        {
            return Err(());
        }
        let backing = o.backing.take();
        let mode = match backing {
            Some(b) if st.cached == 0 => {
                let id = b.id;
                o.backing = Some(b);
                // The kernel accepts no other open flags with passthrough but
                // direct I/O and no-flush (FOPEN_PASSTHROUGH_MASK): EIO otherwise.
                o.keep_cache = false;
                IoMode::Passthrough(id)
            }
            _ if st.passthrough.is_some() => IoMode::Direct,
            _ => IoMode::Cached,
        };
        match mode {
            IoMode::Cached => st.cached += 1,
            IoMode::Passthrough(id) => {
                st.passthrough.get_or_insert((id, 0, gen_now)).1 += 1;
                st.passthrough_len = o.backing.as_ref().map_or(0, |b| b.len);
            }
            IoMode::Direct => {
                o.direct_io = true;
                o.keep_cache = false;
            }
        }
        io.by_fh.insert(o.fh, (ino, mode));
        Ok(o)
    }

    /// Whether some descriptor of `ino` passes through to a spool file.
    pub(super) fn held_in_passthrough(&self, ino: u64) -> bool {
        self.io.lock().by_ino.get(&ino).is_some_and(|st| st.passthrough.is_some())
    }

    /// Moves the name of `ino` to a new inode, leaving `ino` to the descriptors that
    /// have it open (as a rename over it would), and returns the ESTALE that makes
    /// the kernel look the name up again and open the new inode.
    pub(super) fn move_to_new_inode(&self, ino: u64) -> FsError {
        let Some(NodeKey::File(ds, name)) = self.inodes.lock().key(ino) else {
            return FsError::new(libc::ESTALE, format!("inode {ino} was replaced or removed"));
        };
        self.inodes.lock().remove(&NodeKey::File(ds.clone(), name.clone()));
        let dir = self.inodes.lock().ino(NodeKey::Dataset(ds.clone()));
        self.invalidate(Invalidate::Entry { parent: dir, name: name.clone() });
        tracing::debug!(dataset = %ds, file = %name, "the old inode stays with descriptors passing through to its version; the name moves to a new inode");
        FsError::new(libc::ESTALE, format!("{ds}/{name}: opened again under a new inode"))
    }

    /// The kernel sends RELEASE after close(2) returns, in the background: an open
    /// that follows a close at once may arrive before it. Give the cached opens of
    /// `ino` a moment (at most ~2 ms) to be released, so that passthrough is not
    /// refused for descriptors already closed.
    pub(super) async fn await_releases(&self, ino: u64) {
        for _ in 0..20 {
            if self.io.lock().by_ino.get(&ino).is_none_or(|st| st.cached == 0) {
                return;
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }

    /// Forgets the I/O mode of a descriptor at its last close.
    pub(super) fn release_io(&self, fh: u64) {
        let mut io = self.io.lock();
        let Some((ino, mode)) = io.by_fh.remove(&fh) else { return };
        let Some(st) = io.by_ino.get_mut(&ino) else { return };
        match mode {
            IoMode::Cached => st.cached = st.cached.saturating_sub(1),
            IoMode::Passthrough(_) => {
                if let Some((_, n, _)) = &mut st.passthrough {
                    *n -= 1;
                    if *n == 0 {
                        st.passthrough = None;
                    }
                }
            }
            IoMode::Direct => {}
        }
        if st.cached == 0 && st.passthrough.is_none() {
            io.by_ino.remove(&ino);
        }
    }

    /// The size of the version the passthrough opens of `ino` read, while any is open.
    pub(super) fn passthrough_len(&self, ino: u64) -> Option<u64> {
        self.io.lock().by_ino.get(&ino).filter(|st| st.passthrough.is_some()).map(|st| st.passthrough_len)
    }

    /// The spool file descriptor `fh` passes through to, if it does.
    pub fn passthrough_file(&self, fh: u64) -> Option<u64> {
        match self.io.lock().by_fh.get(&fh) {
            Some((_, IoMode::Passthrough(id))) => Some(*id),
            _ => None,
        }
    }

    /// Whether descriptor `fh` passes through to a spool file (its reads never
    /// come here, and it needs no frozen copy when the array changes).
    pub fn is_passthrough(&self, fh: u64) -> bool {
        matches!(self.io.lock().by_fh.get(&fh), Some((_, IoMode::Passthrough(_))))
    }

    /// The adapter could not register the backing file of open `o` (no
    /// `CAP_SYS_ADMIN`, a kernel without passthrough): the open takes the decoded
    /// path instead, and passthrough is turned off for the mount, with one log line.
    pub fn passthrough_refused(&self, o: &Opened, error: &std::io::Error) -> Opened {
        if self.passthrough_on.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "the kernel refused FUSE passthrough (it needs CAP_SYS_ADMIN and Linux 6.9 or later); reads take the decoded path");
        }
        self.disable_passthrough_quietly();
        let mut io = self.io.lock();
        let mut out = Opened { backing: None, ..o.clone() };
        if let Some((ino, mode)) = io.by_fh.get(&o.fh).copied()
            && let IoMode::Passthrough(_) = mode
        {
            let st = io.by_ino.entry(ino).or_default();
            if let Some((_, n, _)) = &mut st.passthrough {
                *n -= 1;
                if *n == 0 {
                    st.passthrough = None;
                }
            }
            let mode = if st.passthrough.is_some() {
                out.direct_io = true;
                IoMode::Direct
            } else {
                st.cached += 1;
                IoMode::Cached
            };
            io.by_fh.insert(o.fh, (ino, mode));
        }
        out.keep_cache = false;
        out
    }

    /// Turns passthrough off (the kernel did not offer it at INIT).
    pub fn disable_passthrough(&self, why: &str) {
        if self.passthrough_on.swap(false, Ordering::Relaxed) {
            tracing::info!("{why}; reads take the decoded path");
        }
        self.disable_passthrough_quietly();
    }

    fn disable_passthrough_quietly(&self) {
        if let Some(s) = &self.spool {
            s.clear();
        }
    }

    /// Whether opens may pass through now.
    pub fn passthrough_enabled(&self) -> bool {
        self.passthrough_on.load(Ordering::Relaxed)
    }

    /// The spool, for stats and tests.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_tracks_what_is_missing() {
        let spool = Arc::new(Spool::new(&SpoolConfig { dir: None, budget: 1 << 20 }).unwrap());
        let build = spool.begin(&("d".into(), "a".into()), 0, 100).unwrap();
        let mut f = Filling { build, len: 100, covered: vec![] };
        f.add(10, 20);
        f.add(30, 40);
        f.add(18, 31);
        assert_eq!(f.missing(), vec![(0, 10), (40, 100)]);
        assert!(!f.complete());
        f.add(0, 10);
        f.add(40, 100);
        assert!(f.complete());
        assert!(f.missing().is_empty());
    }
}
