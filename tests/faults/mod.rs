//! `ObjectStore` wrappers that simulate a crash. [`CrashAfter`]: after a budget of
//! mutating calls (put, multipart upload, copy, delete) every further mutation
//! fails, as if the process had died at that point. [`FaultAt`]: one chosen
//! mutation fails or tears (a prefix of the payload is written), then every later
//! one fails. Reads pass through.
#![allow(dead_code)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result};

#[derive(Debug)]
pub struct CrashAfter {
    inner: Arc<dyn ObjectStore>,
    pub state: Arc<Budget>,
}

#[derive(Debug)]
pub struct Budget {
    /// Mutations still allowed; negative means unlimited.
    budget: AtomicI64,
    pub mutations: AtomicU64,
}

impl CrashAfter {
    pub fn new(inner: Arc<dyn ObjectStore>, budget: i64) -> Arc<Self> {
        Arc::new(CrashAfter { inner, state: Arc::new(Budget { budget: AtomicI64::new(budget), mutations: AtomicU64::new(0) }) })
    }

    fn mutate(&self, what: &str, path: &Path) -> Result<()> {
        self.state.mutate(what, path)
    }
}

impl Budget {
    fn mutate(&self, what: &str, path: &Path) -> Result<()> {
        self.mutations.fetch_add(1, Ordering::SeqCst);
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(object_store::Error::Generic { store: "CrashAfter", source: format!("injected crash before {what} {path}").into() });
        }
        if left > 0 {
            self.budget.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl fmt::Display for CrashAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrashAfter({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CrashAfter {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.mutate("put", location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.mutate("multipart upload", location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // Decide per path, in order, before passing it on.
        let state = self.state.clone();
        let checked = locations.map(move |p| p.and_then(|p| state.mutate("delete", &p).map(|_| p)));
        let inner = self.inner.clone();
        futures::stream::unfold((checked.boxed(), inner), |(mut s, inner)| async move {
            let next = s.next().await?;
            let out = match next {
                Ok(p) => {
                    let mut one = inner.delete_stream(futures::stream::once(async move { Ok(p) }).boxed());
                    one.next().await.unwrap_or_else(|| Err(object_store::Error::Generic { store: "CrashAfter", source: "empty delete".into() }))
                }
                Err(e) => Err(e),
            };
            Some((out, (s, inner)))
        })
        .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.mutate("copy", to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// What [`FaultAt`] does to the mutation it is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The mutation fails and changes nothing.
    Fail,
    /// A put writes a strict prefix of its payload, then returns an error.
    TearThenFail,
    /// A put writes a strict prefix of its payload and reports success: a torn
    /// write the caller cannot see (a store that lies, or power loss before a sync).
    TearSilently,
}

/// An `ObjectStore` wrapper that injects one fault at mutation number `at` (0-based,
/// counting put, multipart upload, copy, rename and delete) and then fails every
/// later mutation, as if the process died right there. Reads pass through.
///
/// Only single puts can tear; a multipart upload (visible only once completed), a
/// copy, a rename and a delete are atomic, so a tear aimed at one fails it instead.
/// Names listed in `atomic` (file names, e.g. `atlas.json` of a store whose metadata
/// goes through a conditional PUT, atomic on every object store) never tear either.
#[derive(Debug)]
pub struct FaultAt {
    inner: Arc<dyn ObjectStore>,
    pub state: Arc<FaultState>,
}

#[derive(Debug)]
pub struct FaultState {
    at: u64,
    /// Aimed at the first mutation of a path ending with this, instead of at `at`.
    target: Option<String>,
    fault: Fault,
    /// Fraction of a torn payload that is kept (always a strict prefix).
    keep: f64,
    atomic: Vec<String>,
    count: AtomicU64,
    /// What the fault hit, once it has: `"tear put x/data.1.af (12 of 340 bytes, ..)"`.
    hit: parking_lot::Mutex<Option<String>>,
}

enum Verdict {
    Pass,
    Fail(object_store::Error),
    Tear,
}

impl FaultAt {
    pub fn new(inner: Arc<dyn ObjectStore>, at: u64, fault: Fault, keep: f64, atomic: &[&str]) -> Arc<Self> {
        let state =
            FaultState { at, target: None, fault, keep, atomic: atomic.iter().map(|s| s.to_string()).collect(), count: AtomicU64::new(0), hit: parking_lot::Mutex::new(None) };
        Arc::new(FaultAt { inner, state: Arc::new(state) })
    }

    /// The fault aimed at the first mutation of a path ending with `suffix` (e.g.
    /// `a1/data.2.af`), whatever its position among concurrent writes.
    pub fn on_path(inner: Arc<dyn ObjectStore>, suffix: &str, fault: Fault, keep: f64) -> Arc<Self> {
        let state = FaultState { at: u64::MAX, target: Some(suffix.to_string()), fault, keep, atomic: vec![], count: AtomicU64::new(0), hit: parking_lot::Mutex::new(None) };
        Arc::new(FaultAt { inner, state: Arc::new(state) })
    }
}

impl FaultState {
    /// Mutations seen so far (with a fault beyond the end: the length of the sequence).
    pub fn mutations(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// What the fault hit, if it fired.
    pub fn hit(&self) -> Option<String> {
        self.hit.lock().clone()
    }

    fn judge(&self, what: &str, path: &Path, tearable: bool) -> Verdict {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let err = |why: &str| object_store::Error::Generic { store: "FaultAt", source: format!("injected {why} at mutation {n}: {what} {path}").into() };
        let mut hit = self.hit.lock();
        if hit.is_some() {
            return Verdict::Fail(err("crash (after the fault)"));
        }
        let aimed = match &self.target {
            Some(t) => path.as_ref().ends_with(t.as_str()),
            None => n == self.at,
        };
        if !aimed {
            return Verdict::Pass;
        }
        let atomic = path.filename().is_some_and(|f| self.atomic.iter().any(|a| a == f));
        if self.fault == Fault::Fail || !tearable || atomic {
            *hit = Some(format!("fail {what} {path}"));
            return Verdict::Fail(err("failure"));
        }
        *hit = Some(format!("tear {what} {path}"));
        Verdict::Tear
    }

    fn check(&self, what: &str, path: &Path) -> Result<()> {
        match self.judge(what, path, false) {
            Verdict::Pass => Ok(()),
            Verdict::Fail(e) => Err(e),
            Verdict::Tear => unreachable!("only puts tear"),
        }
    }
}

impl fmt::Display for FaultAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultAt({}, {:?} at {})", self.inner, self.state.fault, self.state.at)
    }
}

#[async_trait]
impl ObjectStore for FaultAt {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let st = &self.state;
        match st.judge("put", location, true) {
            Verdict::Pass => self.inner.put_opts(location, payload, opts).await,
            Verdict::Fail(e) => Err(e),
            Verdict::Tear => {
                let all = bytes::Bytes::from(payload);
                let keep = ((all.len() as f64 * st.keep) as usize).min(all.len().saturating_sub(1));
                *st.hit.lock() = Some(format!("tear put {location} ({keep} of {} bytes, {:?})", all.len(), st.fault));
                let r = self.inner.put_opts(location, PutPayload::from(all.slice(..keep)), opts).await;
                match (st.fault, r) {
                    (Fault::TearSilently, r) => r,
                    (_, Err(e)) => Err(e),
                    (_, Ok(_)) => Err(object_store::Error::Generic { store: "FaultAt", source: format!("injected torn put of {location}").into() }),
                }
            }
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.state.check("multipart upload", location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // One path at a time, judged in order, so a fault lands between two deletes.
        let state = self.state.clone();
        let inner = self.inner.clone();
        futures::stream::unfold((locations, inner, state), |(mut s, inner, state)| async move {
            let next = s.next().await?;
            let out = match next.and_then(|p| state.check("delete", &p).map(|_| p)) {
                Ok(p) => {
                    let mut one = inner.delete_stream(futures::stream::once(async move { Ok(p) }).boxed());
                    one.next().await.unwrap_or_else(|| Err(object_store::Error::Generic { store: "FaultAt", source: "empty delete".into() }))
                }
                Err(e) => Err(e),
            };
            Some((out, (s, inner, state)))
        })
        .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.state.check("copy", to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: object_store::RenameOptions) -> Result<()> {
        // One mutation: the inner store's own rename (atomic on a local directory).
        self.state.check("rename", to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// When [`HookPut`] runs its hook, relative to the put it is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookWhen {
    /// Before the put reaches the store.
    Before,
    /// After the store accepted it, before the caller hears so.
    After,
}

type Hook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

/// An `ObjectStore` wrapper that runs an async hook once, around the first put of
/// a path `aim` accepts: the way to land another writer's whole flush at an exact
/// point inside this one (a race the scheduler would rarely produce).
pub struct HookPut {
    inner: Arc<dyn ObjectStore>,
    aim: Box<dyn Fn(&Path) -> bool + Send + Sync>,
    when: HookWhen,
    hook: parking_lot::Mutex<Option<Hook>>,
    /// The path the hook fired at, once it has.
    pub fired: parking_lot::Mutex<Option<String>>,
}

impl HookPut {
    pub fn new(inner: Arc<dyn ObjectStore>, aim: impl Fn(&Path) -> bool + Send + Sync + 'static, when: HookWhen, hook: Hook) -> Arc<Self> {
        Arc::new(HookPut { inner, aim: Box::new(aim), when, hook: parking_lot::Mutex::new(Some(hook)), fired: parking_lot::Mutex::new(None) })
    }

    fn take(&self, location: &Path) -> Option<Hook> {
        if !(self.aim)(location) {
            return None;
        }
        let h = self.hook.lock().take()?;
        *self.fired.lock() = Some(location.to_string());
        Some(h)
    }
}

impl fmt::Debug for HookPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookPut({:?}, {:?})", self.inner, self.when)
    }
}

impl fmt::Display for HookPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookPut({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for HookPut {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let hook = self.take(location);
        if self.when == HookWhen::Before
            && let Some(h) = hook
        {
            h().await;
            return self.inner.put_opts(location, payload, opts).await;
        }
        let r = self.inner.put_opts(location, payload, opts).await;
        if let Some(h) = hook {
            h().await;
        }
        r
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: object_store::RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
