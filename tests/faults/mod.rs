//! An `ObjectStore` wrapper that simulates a crash: after a budget of mutating
//! calls (put, multipart upload, copy, delete) every further mutation fails, as if
//! the process had died at that point. Reads pass through.
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
