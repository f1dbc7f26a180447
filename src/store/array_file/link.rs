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
use std::sync::atomic::Ordering;

use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::ArrayFile;
use crate::store::{Error, Result};

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
