//! A large sidecar uploaded while its blocks are still being encoded.
//!
//! The mount's pipelined encoder (`fs::core::encoder`) compresses a large `.npy`
//! into a temp file of blocks while the `WRITE`s arrive; at close that file becomes
//! the pending layer's spill file unchanged (`adopt.rs`), and the flush uploads it,
//! followed by the footer, as the next sidecar `data.N.af`. For a remote store
//! (not a local directory or memory) whose new array is larger than one PUT
//! (`SINGLE_PUT_LIMIT`), an [`EarlyUpload`] starts that upload as soon as the
//! geometry is known instead:
//!
//! - It opens a multipart upload of `data.N.af`, N being the number the next flush
//!   would take now, and sends the encoder's file as parts of [`PART`] bytes, in file
//!   order, as soon as each is written (the encoder reports its contiguous written
//!   prefix), at most [`IN_FLIGHT`] at once. A part's bytes are read from the file
//!   (page cache) when it is sent, so memory holds at most `IN_FLIGHT × PART`.
//! - A multipart upload shows nothing until it is completed, so the commit protocol
//!   of docs/remote.md is unchanged: the flush ([`ArrayFile::stage`]) completes it
//!   with the rest of the file and the footer as the last part, only if the spill
//!   file is still the encoder's file from offset 0 (another entry's blocks adopted
//!   first would shift it) and N is still the number the flush takes; then, as the
//!   single-PUT-less path always did, a HEAD refuses a number another writer took
//!   meanwhile. Otherwise the upload is aborted and the flush uploads the spill file
//!   as before.
//! - Any other end aborts it: the encoder starting over, the commit encoding
//!   serially, a failed part (the flush then fails with `EIO`; the data stays
//!   pending and the next flush uploads it whole), a conflict, or the pending layer
//!   dropped. [`Drop`] aborts once the parts in flight are done, so no multipart
//!   upload is left open (only a daemon killed mid-write leaves one, for the
//!   bucket's lifecycle rule).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;

use super::{ArrayFile, Error, Result};

/// Bytes of one part (S3 wants ≥ 5 MiB for every part but the last).
pub const PART: u64 = 8 << 20;
/// Parts being sent at once, per upload.
pub const IN_FLIGHT: usize = 4;

/// Process-wide counts for `.atlasfs/stats`.
pub static PARTS_EARLY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static UPLOADS_EARLY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static UPLOADS_ABORTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct State {
    /// None until the multipart upload is created (or once finished/aborted).
    upload: Option<Box<dyn MultipartUpload>>,
    /// Bytes from offset 0 handed to parts so far (a multiple of [`PART`]).
    sent: u64,
    /// Bytes from offset 0 the encoder has written.
    ready: u64,
    in_flight: usize,
    failed: Option<object_store::Error>,
    /// Finished or aborted: nothing more is sent.
    closed: bool,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    path: Path,
    file: File,
    rt: tokio::runtime::Handle,
    st: Mutex<State>,
    changed: tokio::sync::Notify,
}

/// An open multipart upload of the next sidecar, fed from the encoder's file.
pub struct EarlyUpload {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EarlyUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyUpload").field("path", &self.inner.path.as_ref()).finish()
    }
}

/// What [`EarlyUpload::finish`] made of the upload.
pub(super) enum Finished {
    /// Completed: the sidecar is in place, with this ETag.
    Done(Option<String>),
    /// Not usable for this flush (another number or layout): aborted.
    Unusable,
}

impl Inner {
    /// Sends every whole part the written prefix allows, up to [`IN_FLIGHT`].
    fn pump(self: &Arc<Self>) {
        let mut st = self.st.lock();
        while !st.closed && st.failed.is_none() && st.in_flight < IN_FLIGHT && st.sent + PART <= st.ready {
            if st.upload.is_none() {
                return;
            }
            let mut buf = vec![0u8; PART as usize];
            if let Err(e) = self.file.read_exact_at(&mut buf, st.sent) {
                st.failed = Some(object_store::Error::Generic { store: "spill file", source: Box::new(e) });
                break;
            }
            let part = st.upload.as_mut().expect("checked above").put_part(PutPayload::from(buf));
            st.sent += PART;
            st.in_flight += 1;
            PARTS_EARLY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let me = self.clone();
            self.rt.spawn(async move {
                let r = part.await;
                {
                    let mut st = me.st.lock();
                    st.in_flight -= 1;
                    if let Err(e) = r {
                        st.failed.get_or_insert(e);
                    }
                }
                me.changed.notify_waiters();
                me.pump();
            });
        }
    }

    /// Waits until no part is in flight, then aborts the upload.
    async fn abort(self: Arc<Self>) {
        loop {
            let wait = self.changed.notified();
            let idle = {
                let mut st = self.st.lock();
                st.closed = true;
                if st.in_flight == 0 { Some(st.upload.take()) } else { None }
            };
            if let Some(up) = idle {
                if let Some(mut up) = up {
                    UPLOADS_ABORTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = up.abort().await {
                        tracing::warn!(path = %self.path, error = %e, "could not abort the multipart upload of a sidecar; the bucket keeps its parts until a lifecycle rule removes them");
                    }
                }
                return;
            }
            wait.await;
        }
    }
}

impl EarlyUpload {
    /// Starts uploading `file` (the encoder's blocks, written from offset 0) as
    /// `path`; the multipart upload is created in the background.
    fn start(store: Arc<dyn ObjectStore>, path: Path, file: File) -> Option<EarlyUpload> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let st = State { upload: None, sent: 0, ready: 0, in_flight: 0, failed: None, closed: false };
        let inner = Arc::new(Inner { store, path, file, rt, st: Mutex::new(st), changed: tokio::sync::Notify::new() });
        let me = inner.clone();
        // Counted as in flight until created, so an abort waits for it.
        inner.st.lock().in_flight = 1;
        inner.rt.spawn(async move {
            let r = me.store.put_multipart(&me.path).await;
            let mut late = None;
            {
                let mut st = me.st.lock();
                st.in_flight -= 1;
                match r {
                    Ok(up) if !st.closed => st.upload = Some(up),
                    Ok(up) => late = Some(up),
                    Err(e) => {
                        st.failed.get_or_insert(e);
                    }
                }
            }
            if let Some(mut up) = late {
                let _ = up.abort().await;
            }
            me.changed.notify_waiters();
            me.pump();
        });
        UPLOADS_EARLY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(EarlyUpload { inner })
    }

    /// The encoder has written its file from offset 0 up to `upto`.
    pub fn ready(&self, upto: u64) {
        {
            let mut st = self.inner.st.lock();
            st.ready = st.ready.max(upto);
        }
        self.inner.pump();
    }

    /// Completes the upload as the sidecar `path` holding the first `data_len` bytes
    /// of the file, then `tail` (the footer); aborts it on any failure.
    pub(super) async fn finish(self, path: &Path, data_len: u64, tail: &[u8]) -> Result<Finished> {
        let inner = self.inner.clone();
        let usable = path == &inner.path && inner.st.lock().sent <= data_len;
        if !usable {
            tracing::debug!(early = %inner.path, flush = %path, "early multipart upload not usable for this flush; aborted");
            return Ok(Finished::Unusable); // dropped: aborted
        }
        // Every whole part before the last, then wait for them all.
        self.ready(data_len);
        loop {
            let wait = inner.changed.notified();
            {
                let st = inner.st.lock();
                if st.failed.is_some() || (st.in_flight == 0 && st.upload.is_some() && st.sent + PART > data_len) {
                    break;
                }
            }
            inner.pump();
            wait.await;
        }
        let failed = inner.st.lock().failed.take();
        if let Some(e) = failed {
            return Err(e.into()); // dropped: aborted
        }
        let (mut up, sent) = {
            let mut st = inner.st.lock();
            st.closed = true;
            (st.upload.take().expect("created above"), st.sent)
        };
        let res = async {
            let mut last = vec![0u8; (data_len - sent) as usize];
            inner.file.read_exact_at(&mut last, sent)?;
            last.extend_from_slice(tail);
            up.put_part(PutPayload::from(last)).await?;
            // Multipart cannot be create-if-absent: refuse a number another writer took.
            if inner.store.head(path).await.is_ok() {
                return Err(Error::ObjectStore(object_store::Error::AlreadyExists { path: path.to_string(), source: "sidecar exists".into() }));
            }
            Ok(up.complete().await?.e_tag)
        }
        .await;
        match res {
            Ok(e_tag) => {
                super::super::progress::advance(data_len);
                Ok(Finished::Done(e_tag))
            }
            Err(e) => {
                UPLOADS_ABORTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(a) = up.abort().await {
                    tracing::warn!(path = %inner.path, error = %a, "could not abort the multipart upload of a sidecar");
                }
                Err(e)
            }
        }
    }
}

impl Drop for EarlyUpload {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let open = {
            let mut st = inner.st.lock();
            let open = !st.closed;
            st.closed = true;
            open || st.upload.is_some()
        };
        if open {
            let rt = inner.rt.clone();
            rt.spawn(inner.abort());
        }
    }
}

impl ArrayFile {
    /// An early upload of the next sidecar from `file` (an encoder's blocks), if
    /// this is a remote store and the pending layer is empty, so the file would be
    /// the sidecar's start.
    pub fn begin_early_upload(&self, file: File) -> Option<EarlyUpload> {
        if !crate::store::stream_fetch::streams_well(&*self.store) {
            return None;
        }
        if self.pending.spill.is_some() || self.pending.packer.closed_len() > 0 || !self.pending.packer.open_block().is_empty() {
            return None;
        }
        let path = self.dir.clone().join(format!("data.{}.af", self.next_overlay()));
        tracing::debug!(%path, "multipart upload of the next sidecar starts while encoding");
        EarlyUpload::start(self.store.clone(), path, file)
    }
}

impl crate::store::Atlas {
    /// [`ArrayFile::begin_early_upload`] for `array`'s file (opened if need be); waits
    /// for a flush of that file that holds it.
    pub async fn early_upload(&self, array: &str, file: File) -> Option<EarlyUpload> {
        let f = self.file(array).await.ok()?;
        let f = f.read().await;
        f.begin_early_upload(file)
    }
}
