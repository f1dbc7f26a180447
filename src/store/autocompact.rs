//! Automatic compaction, per array file: [`Atlas::fold_array`].
//!
//! Design.
//! - The unit is one array file, never the whole store: the caller (the daemon's
//!   background task, `fs::core::autocompact`) picks the files whose sidecars passed
//!   its threshold ([`Atlas::sidecar_counts`]) and folds them one at a time.
//! - A fold holds the array file's lease, `<array>/compact.lease`
//!   ([`super::lease`]), for its whole run: two compactors of one array file (two
//!   daemons, or a daemon and `atlasfs compact`) never overlap. A held lease is not
//!   waited for: the fold is skipped and tried again after a later flush.
//! - Under the lease: one HEAD of the metadata file and one LIST of the directory
//!   (their times tell which sidecars a metadata commit has followed), then the fold
//!   itself (`array_file::fold`): built and uploaded with no lock held, swapped in
//!   under the array file's write lock, folded sidecars deleted lowest first. A flush
//!   of the same file waits for the swap, or the swap waits for the flush (the write
//!   lock, which a flush holds from staging to commit); neither waits for the build.
//! - It changes no value, so the store's change counter is not bumped and open
//!   descriptors are not disturbed.

use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::array_file::listed;
use super::lease::Lease;
use super::{Atlas, Error, Result};

/// The lease object in each array file's directory (atlas 0.10 ignores it).
pub const LEASE_NAME: &str = "compact.lease";
/// How long a compaction lease lasts; a compactor starts no step it cannot finish in it.
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// What one fold did.
#[derive(Debug, Clone)]
pub struct FoldReport {
    pub array: String,
    pub sidecars_folded: usize,
    pub layers_after: usize,
}

impl Atlas {
    /// Committed sidecars of every array file opened so far (files busy being written
    /// are skipped: they are counted at the next call).
    pub fn sidecar_counts(&self) -> Vec<(String, usize)> {
        self.loaded_files().iter().filter_map(|f| f.try_read().ok().map(|g| (g.array.clone(), g.sidecar_count()))).collect()
    }

    /// Folds the base and the settled sidecars of one array file into a new base
    /// (see the module notes). `Ok(None)` when there was nothing to fold or another
    /// process holds the array file's lease.
    pub async fn fold_array(&self, array: &str) -> Result<Option<FoldReport>> {
        let f = self.file(array).await?;
        let dir = Path::from(array);
        let Some(lease) = Lease::try_acquire(self.inner.store.clone(), dir.clone().join(LEASE_NAME), LEASE_TTL).await? else {
            tracing::debug!(array, "another process is compacting this array file; skipped");
            return Ok(None);
        };
        let r = async {
            let store = &self.inner.store;
            let meta_path = Path::from(self.inner.meta_file.file_name());
            let (meta, listing) = tokio::join!(store.head(&meta_path), store.list_with_delimiter(Some(&dir)));
            let meta_modified = meta.ok().map(|m| m.last_modified);
            let listed = listed(&listing?.objects);
            let plan = f.read().await.fold_plan(&listed, meta_modified);
            let Some(plan) = plan else { return Ok(None) };
            let built = plan.build().await?;
            let size = plan.upload(&built).await?;
            let installed = f.write().await.install_fold(&plan, built, size, &lease).await;
            if !matches!(installed, Ok(true)) {
                plan.discard().await;
                return installed.map(|_| None);
            }
            plan.delete_folded(&lease).await?;
            let mut g = f.write().await;
            g.forget_folded(&plan);
            Ok::<_, Error>(Some(FoldReport { array: array.to_string(), sidecars_folded: plan.sidecars(), layers_after: g.info().layers }))
        }
        .await;
        lease.release().await;
        r
    }

    /// Takes the lease of an array file for an explicit compaction, waiting for an
    /// automatic one under way (up to the lease's length).
    pub(crate) async fn compaction_lease(&self, array: &str) -> Result<Lease> {
        let path = Path::from(array).join(LEASE_NAME);
        let started = std::time::Instant::now();
        loop {
            if let Some(l) = Lease::try_acquire(self.inner.store.clone(), path.clone(), LEASE_TTL).await? {
                // A store that tore the lease's PUT: the lease is not ours to rely on.
                l.check(Duration::ZERO).await?;
                return Ok(l);
            }
            if started.elapsed() > LEASE_TTL + Duration::from_secs(5) {
                return Err(super::ErrorDetail::Conflict(format!("{path} is held by another compactor and was not released")).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
