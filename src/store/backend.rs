//! Turning a user's STORE argument (a path or a URL) into an object store.
//!
//! - a plain path or `file:///abs/path`: a local directory (the default);
//! - `memory://`: a fresh in-memory store (tests, demos);
//! - `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
//!   (also `abfs://`, `azure://`): credentials, region and endpoint from the
//!   usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
//!
//! Remote stores retry transient failures (`RemoteOptions`) inside object_store, and
//! [`RetryLostPuts`] adds the one retry object_store leaves out: a conditional PUT
//! whose answer was lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

use super::{Atlas, ErrorDetail, Result, StoreConfig, StoreOptions};

/// Where a store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Local(PathBuf),
    Memory,
    Remote(url::Url, RemoteOptions),
}

/// How remote stores are reached; each field, when set, overrides the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOptions {
    /// Service endpoint (S3 compatibles, Azurite), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Bound on one HTTP request, connect to last byte.
    pub request_timeout: Duration,
    /// Retries of transient failures (5xx, timeouts, connection resets), with
    /// exponential backoff, all within `retry_timeout`.
    pub retries: usize,
    /// Bound on one operation including its retries: past it the caller gets an
    /// error (EIO through the mount), never a hang.
    pub retry_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions { endpoint: None, region: None, allow_http: false, request_timeout: Duration::from_secs(30), retries: 5, retry_timeout: Duration::from_secs(60) }
    }
}

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        if !s.contains("://") {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        let url = url::Url::parse(s).map_err(|e| ErrorDetail::Invalid(format!("store URL {s:?}: {e}")))?;
        match url.scheme() {
            "file" => url.to_file_path().map(Location::Local).map_err(|_| ErrorDetail::Invalid(format!("store URL {s:?}: not an absolute file path")).into()),
            "memory" => Ok(Location::Memory),
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" => Ok(Location::Remote(url, RemoteOptions::default())),
            other => Err(ErrorDetail::Invalid(format!("store URL {s:?}: unknown scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)")).into()),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Remote(..))
    }

    /// The same location reached with `options` (no effect on local and memory stores).
    pub fn with_remote(self, options: RemoteOptions) -> Location {
        match self {
            Location::Remote(url, _) => Location::Remote(url, options),
            other => other,
        }
    }

    /// The location for logs and messages: a URL without user info or query, which
    /// is where credentials could hide.
    pub fn redacted(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Memory => "memory://".into(),
            Location::Remote(url, _) => redact_url(url),
        }
    }

    /// The object store and prefix for a URL location.
    fn object_store(&self) -> Result<(Arc<dyn ObjectStore>, Path)> {
        match self {
            Location::Local(_) => unreachable!("local paths go through open_path"),
            Location::Memory => Ok((Arc::new(InMemory::new()), Path::default())),
            Location::Remote(url, options) => remote(url, options),
        }
    }

    pub async fn open(&self, options: StoreOptions) -> Result<Atlas> {
        match self {
            Location::Local(p) => Atlas::open_path_with(p, options).await,
            _ => {
                let (store, prefix) = self.object_store()?;
                Atlas::open_with(store, prefix, options).await
            }
        }
    }

    pub async fn create(&self, config: StoreConfig, options: StoreOptions) -> Result<Atlas> {
        match self {
            Location::Local(p) => Atlas::create_path_with(p, config, options).await,
            _ => {
                let (store, prefix) = self.object_store()?;
                let location = prefix.to_string();
                Atlas::create_named(store, prefix, location, &self.redacted(), config, options).await
            }
        }
    }
}

fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[cfg(feature = "cloud")]
fn remote(url: &url::Url, o: &RemoteOptions) -> Result<(Arc<dyn ObjectStore>, Path)> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as S3};
    use object_store::azure::{AzureConfigKey as Az, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as Gcs};
    use object_store::{BackoffConfig, ClientConfigKey as C, RetryConfig};
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ErrorDetail::Invalid(format!("store URL {}: credentials in the URL are not accepted; use the environment (AWS_*, GOOGLE_*, AZURE_*)", redact_url(url))).into());
    }
    let prefix = Path::from_url_path(url.path()).map_err(|e| ErrorDetail::Invalid(format!("store URL path: {e}")))?;
    let bucket_url = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    let retry = RetryConfig {
        backoff: BackoffConfig { init_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(5), base: 2.0 },
        max_retries: o.retries,
        retry_timeout: o.retry_timeout,
    };
    let timeout = format!("{}ms", o.request_timeout.as_millis());
    let connect = format!("{}ms", o.request_timeout.min(Duration::from_secs(10)).as_millis());
    let inner: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env()
                .with_url(bucket_url)
                .with_retry(retry)
                .with_config(S3::Client(C::Timeout), &timeout)
                .with_config(S3::Client(C::ConnectTimeout), &connect);
            if let Some(e) = &o.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &o.region {
                b = b.with_region(r);
            }
            if o.allow_http {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build()?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(bucket_url)
                .with_retry(retry)
                .with_config(Gcs::Client(C::Timeout), &timeout)
                .with_config(Gcs::Client(C::ConnectTimeout), &connect);
            if o.allow_http {
                b = b.with_config(Gcs::Client(C::AllowHttp), "true");
            }
            Arc::new(b.build()?)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(bucket_url)
                .with_retry(retry)
                .with_config(Az::Client(C::Timeout), &timeout)
                .with_config(Az::Client(C::ConnectTimeout), &connect);
            if let Some(e) = &o.endpoint {
                b = b.with_endpoint(e.clone());
            }
            if o.allow_http {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build()?)
        }
    };
    let store = Arc::new(RetryLostPuts { inner, retries: o.retries, retry_timeout: o.retry_timeout });
    Ok((store, prefix))
}

/// Retries conditional PUTs after a transport error.
///
/// New sidecars are written create-if-absent and the metadata file update-if-match.
/// object_store retries those after a 5xx, but not after a reset or a timeout once
/// the request is sent (they are not idempotent: the write may have happened and only
/// the answer been lost), so a single dropped connection failed a flush (`fsync`:
/// EIO). Here such a PUT is sent again, within `--retries` and `--retry-timeout`;
/// when the retry is refused because the object now exists or has changed, the object
/// is read back, and if it holds exactly the bytes sent, the lost attempt landed and
/// the PUT succeeded. Anything else is the caller's error as before.
#[cfg(feature = "cloud")]
#[derive(Debug)]
struct RetryLostPuts {
    inner: Arc<dyn ObjectStore>,
    retries: usize,
    retry_timeout: Duration,
}

#[cfg(feature = "cloud")]
impl RetryLostPuts {
    /// Whether `e` failed below HTTP (connect, reset, timeout), not with a status.
    fn is_transport(e: &object_store::Error) -> bool {
        is_transport(e)
    }
}

/// Whether `e` failed below HTTP (connect, reset, timeout: no answer), not with a
/// status the server answered.
#[cfg(feature = "cloud")]
pub(crate) fn is_transport(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<object_store::client::HttpError>().is_some() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Without remote backends no error is a transport failure.
#[cfg(not(feature = "cloud"))]
pub(crate) fn is_transport(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

#[cfg(feature = "cloud")]
impl std::fmt::Display for RetryLostPuts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[cfg(feature = "cloud")]
#[async_trait::async_trait]
impl ObjectStore for RetryLostPuts {
    async fn put_opts(&self, location: &Path, payload: object_store::PutPayload, opts: object_store::PutOptions) -> object_store::Result<object_store::PutResult> {
        use object_store::{Error as E, ObjectStoreExt, PutMode};
        if matches!(opts.mode, PutMode::Overwrite) {
            return self.inner.put_opts(location, payload, opts).await; // idempotent: object_store retries it
        }
        let start = std::time::Instant::now();
        let mut lost = 0;
        loop {
            match self.inner.put_opts(location, payload.clone(), opts.clone()).await {
                Err(e) if lost < self.retries.max(1) && start.elapsed() < self.retry_timeout && Self::is_transport(&e) => {
                    lost += 1;
                    tracing::info!(%location, error = %e, "a conditional PUT got no answer; sending it again");
                }
                Err(e @ (E::AlreadyExists { .. } | E::Precondition { .. })) if lost > 0 => {
                    let sent = bytes::Bytes::from(payload);
                    if let Ok(r) = self.inner.get(location).await {
                        let meta = r.meta.clone();
                        if r.bytes().await.is_ok_and(|b| b == sent) {
                            tracing::info!(%location, "the PUT that got no answer had landed");
                            return Ok(object_store::PutResult { e_tag: meta.e_tag, version: meta.version });
                        }
                    }
                    return Err(e);
                }
                r => return r,
            }
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: object_store::PutMultipartOptions) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: object_store::GetOptions) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: object_store::RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }

    fn delete_stream(&self, locations: futures::stream::BoxStream<'static, object_store::Result<Path>>) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: object_store::CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(not(feature = "cloud"))]
fn remote(url: &url::Url, _: &RemoteOptions) -> Result<(Arc<dyn ObjectStore>, Path)> {
    Err(ErrorDetail::Unsupported(format!("{}: this build has no cloud backends (build with --features cloud)", redact_url(url))).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(Location::parse("/tmp/x").unwrap(), Location::Local("/tmp/x".into()));
        assert_eq!(Location::parse("file:///tmp/x").unwrap(), Location::Local("/tmp/x".into()));
        assert_eq!(Location::parse("memory://").unwrap(), Location::Memory);
        assert!(Location::parse("s3://bucket/pre/fix").unwrap().is_remote());
        assert!(Location::parse("ftp://x").is_err());
        let l = Location::parse("s3://key:secret@bucket/p?sig=abc").unwrap();
        assert!(!l.redacted().contains("secret") && !l.redacted().contains("sig") && !l.redacted().contains("key"), "{}", l.redacted());
        let err = l.object_store().err().expect("credentials in the URL are refused").to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
