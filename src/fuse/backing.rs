//! Backing ids of passthrough opens, per inode.
//!
//! The kernel attaches one backing file to a FUSE inode at its first passthrough
//! open and refuses (EIO, "conflicting backing files") any later passthrough open
//! of that inode that names another registration, even of the same file, until the
//! last passthrough descriptor is released. So every open of an inode while any is
//! open must reuse the id registered first.
//!
//! The kernel detaches the backing file before it sends RELEASE, so the core may
//! already have moved the inode to a new spool file (a new version of the array)
//! when the RELEASE of a descriptor of the old one arrives. Registrations are
//! therefore counted per (inode, spool file): a late release of the old file must
//! not drop the registration the kernel now holds for the new one (it did, and the
//! next open registered the same file again under a new id: EIO under writers).

use std::collections::HashMap;
use std::sync::Arc;

/// A registered backing file: which spool file, its id, and the opens using it.
struct Backing<Id> {
    spool_id: u64,
    id: Arc<Id>,
    opens: usize,
}

/// The live registration per inode. `Id` is `fuser::BackingId` in the daemon (its
/// `Drop` unregisters it); tests use a plain value.
pub(super) struct Backings<Id> {
    by_ino: std::sync::Mutex<HashMap<u64, Backing<Id>>>,
}

impl<Id> Default for Backings<Id> {
    fn default() -> Self {
        Backings { by_ino: Default::default() }
    }
}

impl<Id> Backings<Id> {
    /// The id for one more passthrough open of `ino` to spool file `spool_id`: the
    /// inode's registration if it is of that file, else a new one from `register`.
    /// The core grants passthrough to another file only when no open of the inode
    /// uses the old one, so a registration of another file is unused and replaced.
    pub(super) fn acquire<E>(&self, ino: u64, spool_id: u64, register: impl FnOnce() -> Result<Id, E>) -> Result<Arc<Id>, E> {
        let mut b = self.by_ino.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(have) = b.get_mut(&ino)
            && have.spool_id == spool_id
        {
            have.opens += 1;
            return Ok(have.id.clone());
        }
        let id = Arc::new(register()?);
        b.insert(ino, Backing { spool_id, id: id.clone(), opens: 1 });
        Ok(id)
    }

    /// A passthrough descriptor of `ino` to `spool_id` was released.
    pub(super) fn release(&self, ino: u64, spool_id: u64) {
        let mut b = self.by_ino.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(have) = b.get_mut(&ino)
            && have.spool_id == spool_id
        {
            have.opens -= 1;
            if have.opens == 0 {
                b.remove(&ino);
            }
        }
    }

    #[cfg(test)]
    fn registered(&self, ino: u64) -> Option<(u64, usize)> {
        self.by_ino.lock().unwrap().get(&ino).map(|b| (b.spool_id, b.opens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(n: &std::cell::Cell<u32>) -> Result<u32, ()> {
        n.set(n.get() + 1);
        Ok(n.get())
    }

    #[test]
    fn opens_of_one_file_share_one_registration() {
        let b = Backings::default();
        let n = std::cell::Cell::new(0);
        let a = b.acquire(7, 1, || reg(&n)).unwrap();
        let c = b.acquire(7, 1, || reg(&n)).unwrap();
        assert_eq!((*a, *c, n.get()), (1, 1, 1));
        b.release(7, 1);
        assert_eq!(b.registered(7), Some((1, 1)));
        b.release(7, 1);
        assert_eq!(b.registered(7), None);
    }

    /// The kernel released the old version's descriptor (and detached its file)
    /// before the daemon saw the RELEASE; meanwhile an open of the new version
    /// registered the new file. The late release must leave that registration, or
    /// the next open registers the file again under another id and the kernel
    /// refuses it (EIO).
    #[test]
    fn a_late_release_of_the_old_file_keeps_the_new_registration() {
        let b = Backings::default();
        let n = std::cell::Cell::new(0);
        assert_eq!(*b.acquire(7, 1, || reg(&n)).unwrap(), 1);
        assert_eq!(*b.acquire(7, 2, || reg(&n)).unwrap(), 2);
        b.release(7, 1);
        assert_eq!(b.registered(7), Some((2, 1)));
        assert_eq!(*b.acquire(7, 2, || reg(&n)).unwrap(), 2, "the open reuses the id the kernel holds");
        assert_eq!(n.get(), 2);
    }

    #[test]
    fn a_failed_registration_counts_nothing() {
        let b: Backings<u32> = Backings::default();
        assert!(b.acquire(7, 1, || Err::<u32, _>("no CAP_SYS_ADMIN")).is_err());
        assert_eq!(b.registered(7), None);
    }
}
