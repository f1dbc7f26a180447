//! Automatic compaction: keeps every array file's layers bounded (`--max-layers`).
//!
//! Design.
//! - Each flush through the mount ([`AtlasFs::flush_store`], which also picks up
//!   other writers' sidecars) nudges one background task; it never runs on a
//!   request's path. Nudges while it works are merged into one more pass.
//! - A pass folds, one at a time, every opened array file with more than
//!   `max_layers` sidecars (`Atlas::fold_array`: per array file, under the file's
//!   lease, settled sidecars only). After a pass the file has at most `max_layers`
//!   sidecars again unless another process holds its lease or its sidecars are not
//!   settled yet; then a later flush's nudge tries again.
//! - A fold changes no value: open descriptors, the kernel's caches and the spool
//!   are left alone. A failed fold logs one line; the store is as before it or
//!   holds the new base under a suffix of the old sidecars, which reads the same.
//! - [`AtlasFs::final_flush`] stops the task: no fold starts after it. One under way
//!   when the daemon exits stops where it is, which is safe at every step.

use super::*;

#[derive(Default)]
pub(super) struct AutoCompact {
    wake: Arc<tokio::sync::Notify>,
    state: Mutex<AcState>,
}

#[derive(Default)]
struct AcState {
    stopped: bool,
    running: bool,
    folds: u64,
    failures: u64,
    last_unix: f64,
    last_array: Option<String>,
    last_error: Option<String>,
}

fn unix_now_f64() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl AtlasFs {
    /// Starts the automatic compaction task on `rt` (nothing with `max_layers` 0 or read-only).
    pub fn start_autocompact(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        if self.cfg.read_only || self.cfg.max_layers == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                // Only a weak reference while waiting: the task does not keep the core alive.
                let wake = match weak.upgrade() {
                    Some(fs) => fs.autocompact.wake.clone(),
                    None => return,
                };
                // A nudge during a pass keeps a permit: it makes one more pass.
                wake.notified().await;
                let Some(fs) = weak.upgrade() else { return };
                if fs.autocompact.state.lock().stopped {
                    return;
                }
                fs.autocompact_pass().await;
            }
        });
    }

    /// After a flush: asks the task for a pass.
    pub(super) fn nudge_autocompact(&self) {
        if self.cfg.max_layers > 0 && !self.cfg.read_only {
            self.autocompact.wake.notify_one();
        }
    }

    /// Folds every opened array file over the threshold, most sidecars first.
    async fn autocompact_pass(&self) {
        let mut over: Vec<(String, usize)> = self.atlas.sidecar_counts().into_iter().filter(|(_, n)| *n > self.cfg.max_layers).collect();
        over.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (array, n) in over {
            {
                let mut st = self.autocompact.state.lock();
                if st.stopped {
                    return;
                }
                st.running = true;
            }
            let r = self.atlas.fold_array(&array).await;
            let mut st = self.autocompact.state.lock();
            st.running = false;
            match r {
                Ok(Some(rep)) => {
                    tracing::info!(array = %rep.array, sidecars_before = n, folded = rep.sidecars_folded, layers_after = rep.layers_after, "compacted automatically");
                    st.folds += 1;
                    st.last_unix = unix_now_f64();
                    st.last_array = Some(rep.array);
                }
                Ok(None) => tracing::debug!(%array, sidecars = n, "automatic compaction: nothing settled to fold, or another process holds the lease"),
                Err(e) => {
                    tracing::warn!(%array, error = %e, "automatic compaction failed; the array reads as before and a later flush tries again");
                    st.failures += 1;
                    st.last_error = Some(format!("{array}: {e}"));
                }
            }
        }
    }

    /// Stops the task (the final flush): no fold starts after this.
    pub(super) fn stop_autocompact(&self) {
        self.autocompact.state.lock().stopped = true;
        self.autocompact.wake.notify_one();
    }

    /// The automatic-compaction part of `.atlasfs/stats`: the threshold, folds done,
    /// the last one, and the most sidecars any opened array file has now.
    pub(super) fn autocompact_stats(&self) -> serde_json::Value {
        let counts = self.atlas.sidecar_counts();
        let most = counts.iter().max_by_key(|(_, n)| *n);
        let st = self.autocompact.state.lock();
        serde_json::json!({
            "max_layers": self.cfg.max_layers,
            "running": st.running,
            "compactions": st.folds,
            "last_unix": st.last_unix,
            "last_array": st.last_array,
            "failures": st.failures,
            "last_error": st.last_error,
            "most_sidecars": most.map(|(_, n)| *n).unwrap_or(0),
            "most_sidecars_array": most.map(|(a, _)| a.clone()),
            "arrays_over_threshold": counts.iter().filter(|(_, n)| self.cfg.max_layers > 0 && *n > self.cfg.max_layers).count(),
        })
    }
}
