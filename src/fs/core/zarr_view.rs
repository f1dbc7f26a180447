//! Hooks of the zarr view (`.atlasfs/zarr/`, see [`crate::fs::zarr`]): its nodes'
//! attributes, listings and opens, and the refusal of every write under it. The
//! view itself (paths, JSON, chunk bytes) lives in `fs/zarr.rs`; this room only
//! ties it to inodes and handles.

use super::*;
use crate::fs::zarr::ZARR_DIR;

impl AtlasFs {
    /// Whether `key` lies under `.atlasfs/zarr/` (the directory itself included).
    fn in_zarr(key: &NodeKey) -> bool {
        matches!(key, NodeKey::Zarr(_))
    }

    /// `EROFS`, with one log line, for a write to `name` in directory `parent` (or
    /// to inode `parent` itself when `name` is `None`) under the zarr view.
    pub(super) fn refuse_zarr_write(&self, parent: u64, name: Option<&str>, op: &str) -> FsResult<()> {
        let Ok(key) = self.key(parent) else { return Ok(()) };
        let hit = Self::in_zarr(&key) || (key == NodeKey::ControlDir && name == Some(ZARR_DIR));
        if !hit {
            return Ok(());
        }
        let path = match (&key, name) {
            (NodeKey::Zarr(p), Some(n)) => format!("{}/{}", p.join("/"), n),
            (NodeKey::Zarr(p), None) => p.join("/"),
            _ => String::new(),
        };
        tracing::info!(op, path = %format!("{CONTROL_DIR}/{ZARR_DIR}/{path}"), "refused a write to the read-only zarr view (EROFS)");
        Err(FsError::new(libc::EROFS, format!("{CONTROL_DIR}/{ZARR_DIR} is a read-only view")))
    }

    async fn zarr_node(&self, path: &[String]) -> FsResult<crate::fs::zarr::ZNode> {
        self.zarr.resolve(&self.atlas, path).await?.ok_or_else(|| FsError::noent(format!("{CONTROL_DIR}/{ZARR_DIR}/{}", path.join("/"))))
    }

    pub(super) async fn zarr_attr(&self, ino: u64, path: &[String]) -> FsResult<NodeAttr> {
        let node = self.zarr_node(path).await?;
        if node.is_dir() {
            return Ok(self.attr(ino, Kind::Dir, 0, self.started));
        }
        let size = self.zarr.size(&self.atlas, &node).await?;
        let mut a = self.attr(ino, Kind::File, size, self.started);
        a.perm = 0o444;
        Ok(a)
    }

    pub(super) async fn zarr_readdir(&self, path: &[String]) -> FsResult<Vec<(String, NodeAttr)>> {
        let node = self.zarr_node(path).await?;
        let entries = self.zarr.list(&self.atlas, &node).await?;
        let mut out = Vec::with_capacity(entries.len());
        for (name, dir) in entries {
            let mut p = path.to_vec();
            p.push(name.clone());
            let ino = self.zarr_listed_ino(&NodeKey::Zarr(p.clone()));
            let attr = if dir {
                self.attr(ino, Kind::Dir, 0, self.started)
            } else {
                match self.zarr_attr(ino, &p).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(path = %p.join("/"), error = %e, "zarr view entry vanished while listing");
                        continue;
                    }
                }
            };
            out.push((name, attr));
        }
        Ok(out)
    }

    /// Opens a file of the view: its bytes, rendered now (so a `zarr.json` read
    /// after a change shows it). `zarr.json` and string chunks bypass the page cache
    /// (their size may have changed since the kernel cached it); fixed-width chunks
    /// go through it (pages dropped at each open), which saves a round trip per read.
    pub(super) async fn zarr_open(&self, ino: u64, path: &[String], write: bool) -> FsResult<Opened> {
        if write {
            self.refuse_zarr_write(ino, None, "open for writing")?;
            return Err(FsError::new(libc::EROFS, format!("{CONTROL_DIR}/{ZARR_DIR} is a read-only view")));
        }
        let node = self.zarr_node(path).await?;
        if node.is_dir() {
            return Err(FsError::new(libc::EISDIR, "is a directory"));
        }
        let (bytes, sized) = self.zarr.read(&self.atlas, &node).await?;
        Ok(Opened { fh: self.new_handle(Handle::Bytes(bytes)), direct_io: !sized, keep_cache: false, read_only: true, backing: None })
    }
}
