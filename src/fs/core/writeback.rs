//! Write-back: what was changed through the mount reaches the store within a bounded
//! delay, without `fsync`.
//!
//! Design.
//! - A change (a commit on close, in-place writes applied on close, unlink, rename,
//!   mkdir, rmdir, setattr, setxattr, removexattr) lands in the store's pending layer.
//!   The adapter brackets each such request with [`AtlasFs::store_version`] and
//!   [`AtlasFs::changed`]: if the store's version moved, the change arms **one**
//!   deadline, now + `writeback_delay`, unless one is already armed. Later changes in
//!   the window ride on it, so one [`AtlasFs::flush_store`] covers the whole window
//!   (a 1,000-file `cp` makes a flush every delay, not 1,000).
//! - One background task ([`AtlasFs::start_writeback`]) sleeps until the deadline and
//!   flushes if anything is still pending (an `fsync` may have flushed it already). The
//!   deadline is taken down before the flush starts, so a change made during the flush
//!   arms the next one. A failed flush logs one line and re-arms: the pending layer
//!   keeps everything, and the next deadline tries again.
//! - Delay 0: the request that changed the store flushes before it answers, and the
//!   flush's error is that request's error (close(2) reports it).
//! - The end: [`AtlasFs::final_flush`] (SIGTERM, SIGINT, unmount) stops the timer
//!   first, then flushes. Flushes are serialised by the store, so a timer flush under
//!   way when the final one starts finishes first and the final one writes the rest;
//!   a stopped timer never starts another one.
//! - A `kill -9` loses at most what changed within the last delay (plus the flush
//!   under way when it struck): see docs/semantics.md#durability.

use std::time::Instant;

use super::*;

#[derive(Default)]
pub(super) struct Writeback {
    state: Mutex<WbState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct WbState {
    /// When the armed flush is due.
    deadline: Option<Instant>,
    /// The same, as wall-clock seconds, for `.atlasfs/stats`.
    due_unix: Option<f64>,
    /// Set by the final flush: no timer flush starts after it.
    stopped: bool,
    /// Timer flushes that failed in a row (reset by one that succeeds).
    failures: u64,
}

fn unix_now_f64() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl AtlasFs {
    /// The store's change counter, taken before a request that may change it.
    pub fn store_version(&self) -> u64 {
        self.atlas.version()
    }

    /// After a request that may have changed the store (`before` from
    /// [`store_version`](Self::store_version)): arms the write-back deadline, or with
    /// a delay of 0 flushes now and returns the flush's error.
    pub async fn changed(&self, before: u64) -> FsResult<()> {
        if self.cfg.read_only || self.atlas.version() == before {
            return Ok(());
        }
        if self.cfg.writeback_delay.is_zero() {
            if self.atlas.has_pending().await {
                return self.flush_store().await;
            }
            return Ok(());
        }
        self.arm_writeback();
        Ok(())
    }

    fn arm_writeback(&self) {
        let mut st = self.writeback.state.lock();
        if st.stopped || st.deadline.is_some() {
            return;
        }
        st.deadline = Some(Instant::now() + self.cfg.writeback_delay);
        st.due_unix = Some(unix_now_f64() + self.cfg.writeback_delay.as_secs_f64());
        drop(st);
        self.writeback.wake.notify_one();
    }

    /// Starts the write-back timer on `rt`. Without it (a core used without a mount),
    /// changes wait for `fsync` or [`final_flush`](Self::final_flush).
    pub fn start_writeback(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        if self.cfg.read_only || self.cfg.writeback_delay.is_zero() {
            return;
        }
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let Some(fs) = weak.upgrade() else { return };
                let deadline = {
                    let st = fs.writeback.state.lock();
                    if st.stopped {
                        return;
                    }
                    st.deadline
                };
                match deadline {
                    None => {
                        // `notify_one` keeps a permit: an arm between the check above
                        // and this wait is not missed.
                        fs.writeback.wake.notified().await;
                    }
                    Some(d) if Instant::now() < d => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(d.into()) => {}
                            _ = fs.writeback.wake.notified() => {}
                        }
                    }
                    Some(_) => fs.writeback_fire().await,
                }
            }
        });
    }

    /// The deadline has passed: one flush for everything changed since it was armed.
    async fn writeback_fire(&self) {
        {
            let mut st = self.writeback.state.lock();
            if st.stopped {
                return;
            }
            st.deadline = None;
            st.due_unix = None;
        }
        if !self.atlas.has_pending().await {
            return;
        }
        // Everything committed before this instant is in the flush (tests/crash.rs reads it).
        let started_unix = unix_now_f64();
        let res = self.flush_store().await;
        // A conflict is reported after everything was written (see remote.md).
        let res = res.or_else(|e| if e.errno == libc::EBUSY { Ok(()) } else { Err(e) });
        match res {
            Ok(()) => {
                tracing::debug!(started_unix = format!("{started_unix:.6}"), "write-back flush done");
                self.writeback.state.lock().failures = 0;
            }
            Err(e) => {
                let n = {
                    let mut st = self.writeback.state.lock();
                    st.failures += 1;
                    st.failures
                };
                tracing::warn!(error = %e, failures = n, retry_in_s = self.cfg.writeback_delay.as_secs_f64(), "write-back flush failed; the changes stay pending and the next deadline tries again");
                self.arm_writeback();
            }
        }
    }

    /// Stops the write-back timer and flushes: SIGTERM, SIGINT, unmount. Safe to call
    /// more than once; a timer flush under way finishes before this one writes.
    pub async fn final_flush(&self) -> FsResult<()> {
        {
            let mut st = self.writeback.state.lock();
            st.stopped = true;
            st.deadline = None;
            st.due_unix = None;
        }
        self.writeback.wake.notify_one();
        self.stop_autocompact();
        self.flush_store().await
    }

    /// The write-back part of `.atlasfs/stats`.
    pub(super) async fn writeback_stats(&self) -> serde_json::Value {
        let (arrays, bytes, meta) = self.atlas.pending_summary().await;
        let st = self.writeback.state.lock();
        serde_json::json!({
            "delay_s": self.cfg.writeback_delay.as_secs_f64(),
            "pending_arrays": arrays,
            "pending_bytes": bytes,
            "pending_metadata": meta,
            "next_flush_unix": st.due_unix,
            "failed_flushes_in_a_row": st.failures,
        })
    }
}
