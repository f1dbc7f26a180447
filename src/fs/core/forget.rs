//! FORGET: releasing inodes the kernel no longer references.
//!
//! Design: the kernel counts, per inode, the replies that handed it out (a LOOKUP,
//! and each READDIRPLUS entry); FORGET gives those counts back, and at zero the
//! kernel will not name the inode again, so its number and key can be dropped.
//! Only the zarr view's inodes are counted and dropped: there is one per chunk key,
//! and a `find` or a dask scan over a big store would otherwise grow the inode table
//! without bound. The other nodes (datasets, `.npy` files, the stacked view) are few
//! per store name; they keep their inodes, which renames and unlinks manage
//! (`namespace.rs`).
//!
//! - A zarr lookup computes the node's attributes first and takes its inode only
//!   once it succeeded, under the inode lock, counting it there: a failed lookup
//!   (a zarr reader probing absent chunk keys) leaves nothing behind, and a FORGET
//!   racing the lookup cannot drop the inode between the count and the reply.
//! - A zarr listing names each entry by its inode if it has one, else by a fresh
//!   number it does not record: a plain READDIR hands out no reference. The adapter
//!   calls [`AtlasFs::entry_sent`] for each READDIRPLUS entry it sends, which
//!   records the number (again, if a FORGET dropped it meanwhile) and counts it.
//! - A key may then briefly have two inodes (a listing's and a lookup's): both name
//!   the same node, each is forgotten on its own, and the key keeps the other.

use std::collections::HashMap;

use super::*;

/// Lookup counts of the inodes that FORGET releases (the zarr view's).
#[derive(Default)]
pub(super) struct Lookups(Mutex<HashMap<u64, u64>>);

impl AtlasFs {
    /// Whether FORGET releases the inodes of `key`.
    fn forgettable(key: &NodeKey) -> bool {
        matches!(key, NodeKey::Zarr(p) if !p.is_empty())
    }

    /// LOOKUP of a zarr view node: its attributes with an inode counted once.
    pub(super) async fn zarr_lookup(&self, key: NodeKey) -> FsResult<NodeAttr> {
        let NodeKey::Zarr(path) = &key else { unreachable!("zarr keys only") };
        let probe = self.inodes.lock().by_key.get(&key).copied().unwrap_or(0);
        let mut attr = self.zarr_attr(probe, path).await?;
        let counted = Self::forgettable(&key);
        let mut inodes = self.inodes.lock();
        attr.ino = inodes.ino(key);
        if counted {
            *self.lookups.0.lock().entry(attr.ino).or_default() += 1;
        }
        Ok(attr)
    }

    /// The inode a zarr listing gives `key`: its own if it has one, else a fresh
    /// number, recorded only if a READDIRPLUS sends it ([`entry_sent`](Self::entry_sent)).
    pub(super) fn zarr_listed_ino(&self, key: &NodeKey) -> u64 {
        let mut inodes = self.inodes.lock();
        if let Some(&i) = inodes.by_key.get(key) {
            return i;
        }
        inodes.next = inodes.next.max(FIRST_DYNAMIC_INO);
        inodes.next += 1;
        inodes.next - 1
    }

    /// The adapter sent `ino` as the READDIRPLUS entry `name` of directory `parent`:
    /// the kernel now holds one more reference to it.
    pub fn entry_sent(&self, parent: u64, name: &str, ino: u64) {
        let Ok(key) = self.child_key(parent, name) else { return };
        if !Self::forgettable(&key) {
            return;
        }
        let mut inodes = self.inodes.lock();
        match inodes.by_ino.get(&ino) {
            Some(k) if *k != key => {
                tracing::warn!(ino, name, "readdirplus entry names an inode of another node; not counted");
                return;
            }
            Some(_) => {}
            None => {
                inodes.by_ino.insert(ino, key.clone());
                inodes.by_key.entry(key).or_insert(ino);
            }
        }
        *self.lookups.0.lock().entry(ino).or_default() += 1;
    }

    /// FORGET: the kernel dropped `n` references to `ino`; at none left, a zarr view
    /// inode is released.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut inodes = self.inodes.lock();
        let Some(key) = inodes.by_ino.get(&ino).cloned() else { return };
        if !Self::forgettable(&key) {
            return;
        }
        let mut lookups = self.lookups.0.lock();
        let left = lookups.get(&ino).copied().unwrap_or(0).saturating_sub(n);
        if left > 0 {
            lookups.insert(ino, left);
            return;
        }
        lookups.remove(&ino);
        inodes.by_ino.remove(&ino);
        if inodes.by_key.get(&key) == Some(&ino) {
            inodes.by_key.remove(&key);
        }
    }

    /// How many inodes the core holds besides the fixed ones (a test's view of
    /// what FORGET released).
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().by_ino.len()
    }
}
