//! A local store's sidecar put in place by a hard link, not a copy.
//!
//! The pending layer's closed blocks live in its spill file, in exactly the order and
//! at exactly the offsets `data.N.af` holds them (the packer and the pipelined
//! encoder both append whole blocks back to back from offset 0). A flush used to
//! read the spill back in 8 MiB parts and write them to the object store: for a
//! local directory that is one more pass of every byte through the page cache (about
//! a quarter of the daemon's CPU time for a large `np.save`, docs/benchmarks.md §9).
//!
//! For a store opened on a local directory ([`crate::store::Atlas::open_path`]) the
//! spill files are made unnamed (`O_TMPFILE`) in the store's own directory, so they
//! are on the store's filesystem. The flush then:
//! 1. writes the layer's footer and trailer right after the blocks and cuts the file
//!    there (bytes past the last block are dead: a failed append, an earlier tail);
//! 2. gives the file its name with `linkat(/proc/self/fd/N, data.N.af,
//!    AT_SYMLINK_FOLLOW)`, which fails with `EEXIST` when the name is taken: the
//!    same create-if-absent the object store's PUT gives (D5), so another writer's
//!    sidecar of the same number is never replaced, and the caller takes the next
//!    number as before;
//! 3. asks the store for the file's ETag (a `stat`), as a PUT would have returned it.
//!
//! Crash safety is the copy path's: the file has no name until it is complete, so a
//! crash leaves either nothing (an unnamed file the kernel frees) or a whole sidecar,
//! which is a staged flush without its metadata file, handled like any other
//! (docs/format.md#leftovers-of-a-crashed-flush). Like the copy path (the object
//! store's local PUT), nothing here calls `fsync`.
//!
//! Once linked, the spill file *is* the sidecar. The pending layer keeps it until
//! the metadata file commits the flush; if the flush is withdrawn instead and the
//! sidecar cannot be deleted, the pending layer moves to a private copy first
//! ([`ArrayFile::detach_spill`]), so that later appends never change a named file.
//! Whenever linking is not possible (a remote store, another filesystem, no
//! `/proc`, an `O_TMPFILE`-less filesystem) the flush copies as before.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::ArrayFile;
use crate::store::{Error, Result};

/// Sidecars put in place by a link since the process started (`.atlasfs/stats`).
static LINKED: AtomicU64 = AtomicU64::new(0);

/// How many sidecars this process linked into place rather than copied.
pub fn sidecars_linked() -> u64 {
    LINKED.load(Ordering::Relaxed)
}

/// A new unnamed file for blocks: in `dir` (a local store's root, so that the file
/// can become a sidecar by a link) when given, else in the temp directory.
pub fn spill_file(dir: Option<&FsPath>) -> std::io::Result<File> {
    match dir {
        Some(d) => tempfile::tempfile_in(d).or_else(|e| {
            tracing::debug!(dir = %d.display(), error = %e, "spill file in the temp directory (sidecars are copied)");
            tempfile::tempfile()
        }),
        None => tempfile::tempfile(),
    }
}

/// `linkat` of an open file to `dest`, following the `/proc/self/fd` link.
fn link_fd(file: &File, dest: &FsPath) -> std::io::Result<()> {
    let src = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    let dst = CString::new(dest.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    if unsafe { libc::linkat(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), libc::AT_SYMLINK_FOLLOW) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

impl ArrayFile {
    /// Puts the pending layer's blocks plus `tail` in place at `path` by a link.
    /// `Ok(None)`: not possible here, the caller copies; `Ok(Some(etag))`: done;
    /// `AlreadyExists`: the name is taken.
    pub(super) async fn link_pending(&self, path: &Path, tail: &[u8]) -> Result<Option<Option<String>>> {
        let (Some(root), Some(spill)) = (&self.spill_dir, &self.pending.spill) else { return Ok(None) };
        let data_len = self.pending.packer.closed_len();
        spill.write_all_at(tail, data_len)?;
        spill.set_len(data_len + tail.len() as u64)?;
        let dest: PathBuf = path.parts().fold(root.clone(), |p, part| p.join(part.as_ref()));
        let mut r = link_fd(spill, &dest);
        if r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            && let Some(parent) = dest.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent)?;
            r = link_fd(spill, &dest);
        }
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::ObjectStore(object_store::Error::AlreadyExists { path: path.to_string(), source: e.into() }));
            }
            Err(e) => {
                // EXDEV (another filesystem), ENOENT (a named temp file, no /proc), EPERM...
                tracing::debug!(file = %dest.display(), error = %e, "sidecar not linkable; copying it");
                return Ok(None);
            }
        }
        self.pending.linked.store(true, Ordering::Relaxed);
        LINKED.fetch_add(1, Ordering::Relaxed);
        super::super::progress::advance(data_len + tail.len() as u64);
        Ok(Some(self.store.head(path).await?.e_tag))
    }

    /// Moves the pending layer's blocks to a private spill file if its current one
    /// was linked as a sidecar that still has its name (see the module note).
    pub(super) fn detach_spill(&mut self) -> Result<()> {
        if !self.pending.linked.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let Some(old) = self.pending.spill.take() else { return Ok(()) };
        let new = spill_file(self.spill_dir.as_deref())?;
        let len = self.pending.packer.closed_len();
        let mut buf = vec![0u8; 8 << 20];
        let mut at = 0;
        while at < len {
            let n = buf.len().min((len - at) as usize);
            old.read_exact_at(&mut buf[..n], at)?;
            new.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        self.pending.spill = Some(new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::local::LocalFileSystem;

    use super::*;
    use crate::format::Codec;
    use crate::format::DType;
    use crate::format::cells::Cells;
    use crate::store::array_file::EntrySpec;
    use crate::store::cache::BlockCache;

    const SHAPE: [usize; 2] = [4096, 1024]; // 16 MiB of f32: two 8 MiB blocks and a bit
    const CHUNK: [usize; 2] = [96, 1024];

    fn spec() -> EntrySpec {
        EntrySpec { dtype: DType::Float32, shape: SHAPE.to_vec(), chunk_shape: CHUNK.to_vec(), dimension_names: vec!["y".into(), "x".into()], fill: None }
    }

    fn cells(version: u32) -> Cells {
        let n = SHAPE[0] * SHAPE[1];
        let mut bytes = Vec::with_capacity(n * 4);
        let mut x = 0x9e37_79b9u32.wrapping_mul(version + 1);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.extend_from_slice(&((x >> 8) as f32).to_le_bytes());
        }
        Cells::Fixed { elsize: 4, bytes }
    }

    async fn open(dir: &FsPath, linked: bool) -> ArrayFile {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
        let mut f = ArrayFile::open(store, Arc::new(BlockCache::new(64 << 20, 64 << 20)), "temp", Codec::Zstd).await.unwrap();
        if linked {
            f.set_spill_dir(Some(dir.canonicalize().unwrap()));
        }
        f
    }

    async fn write(f: &mut ArrayFile, version: u32) {
        f.define("ds", spec());
        f.write_region("ds", &[0, 0], &SHAPE, &cells(version)).await.unwrap();
    }

    fn files(dir: &FsPath) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> =
            std::fs::read_dir(dir.join("temp")).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())).collect();
        out.sort();
        out
    }

    /// The linked sidecar is byte for byte what the copy path uploads, and nothing
    /// else is left in the store (no staging file, the spill file has no other name).
    #[tokio::test]
    async fn linked_sidecar_equals_the_copied_one() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let before = sidecars_linked();
        for (dir, linked) in [(a.path(), true), (b.path(), false)] {
            let mut f = open(dir, linked).await;
            write(&mut f, 1).await;
            assert!(f.flush().await.unwrap());
            write(&mut f, 2).await;
            assert!(f.flush().await.unwrap());
        }
        assert!(sidecars_linked() - before >= 2, "both flushes of the local file linked (other tests may link too)");
        let (la, lb) = (files(a.path()), files(b.path()));
        let names: Vec<&str> = la.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["data.1.af", "data.2.af", "data.af", "data.stats"]);
        assert_eq!(la, lb, "linked and copied store files differ");
        assert!(la[0].1.len() > 8 << 20, "the sidecar holds the blocks");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(a.path().join("temp/data.2.af")).unwrap().nlink(), 1);
    }

    /// A crash right after the link (the sidecar named, the flush not committed):
    /// the file is a whole layer, which a fresh open reads in full.
    #[tokio::test]
    async fn crash_right_after_the_link_leaves_a_whole_layer() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = open(dir.path(), true).await;
        write(&mut f, 1).await;
        f.flush().await.unwrap();
        write(&mut f, 2).await;
        assert!(f.stage().await.unwrap());
        drop(f); // the daemon dies before the metadata file and commit_staged
        let g = open(dir.path(), false).await;
        assert!(g.info().bytes > 16 << 20);
        let got = g.read_region("ds", &[0, 0], &SHAPE).await.unwrap();
        assert!(got == cells(2), "the staged sidecar reads whole");
    }

    /// A withdrawn flush whose sidecar cannot be deleted: the pending blocks move to
    /// a private file, so the next flush's tail never lands in the left-behind file.
    #[tokio::test]
    async fn detached_spill_leaves_the_linked_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = open(dir.path(), true).await;
        write(&mut f, 1).await;
        assert!(f.stage().await.unwrap());
        let path = dir.path().join("temp/data.1.af");
        let linked = std::fs::read(&path).unwrap();
        f.detach_spill().unwrap();
        f.staged = None;
        f.layers.retain(|l| l.overlay != 1);
        std::fs::rename(&path, dir.path().join("kept.af")).unwrap();
        f.withdrawn = 1;
        assert!(f.flush().await.unwrap());
        assert_eq!(std::fs::read(dir.path().join("kept.af")).unwrap(), linked, "the withdrawn sidecar changed");
        let got = f.read_region("ds", &[0, 0], &SHAPE).await.unwrap();
        assert!(got == cells(1));
        assert!(dir.path().join("temp/data.2.af").exists());
    }
}
