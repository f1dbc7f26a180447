//! Turning a user's STORE argument (a path or a URL) into an object store.
//!
//! - a plain path or `file:///abs/path`: a local directory (the default);
//! - `memory://`: a fresh in-memory store (tests, demos);
//! - `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
//!   (also `abfs://`, `azure://`): credentials, region and endpoint from the
//!   usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

use super::{Atlas, Error, Result, StoreConfig, StoreOptions};

/// Where a store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Local(PathBuf),
    Memory,
    Remote(url::Url),
}

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        if !s.contains("://") {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        let url = url::Url::parse(s).map_err(|e| Error::Invalid(format!("store URL {s:?}: {e}")))?;
        match url.scheme() {
            "file" => url.to_file_path().map(Location::Local).map_err(|_| Error::Invalid(format!("store URL {s:?}: not an absolute file path"))),
            "memory" => Ok(Location::Memory),
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" => Ok(Location::Remote(url)),
            other => Err(Error::Invalid(format!("store URL {s:?}: unknown scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)"))),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Remote(_))
    }

    /// The object store and prefix for a URL location.
    fn object_store(&self) -> Result<(Arc<dyn ObjectStore>, Path)> {
        match self {
            Location::Local(_) => unreachable!("local paths go through open_path"),
            Location::Memory => Ok((Arc::new(InMemory::new()), Path::default())),
            Location::Remote(url) => remote(url),
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
                Atlas::create_with(store, prefix, config, options).await
            }
        }
    }
}

#[cfg(feature = "cloud")]
fn remote(url: &url::Url) -> Result<(Arc<dyn ObjectStore>, Path)> {
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;
    let prefix = Path::from_url_path(url.path()).map_err(|e| Error::Invalid(format!("store URL path: {e}")))?;
    let bucket_url = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => Arc::new(AmazonS3Builder::from_env().with_url(bucket_url).build()?),
        "gs" => Arc::new(GoogleCloudStorageBuilder::from_env().with_url(bucket_url).build()?),
        _ => Arc::new(MicrosoftAzureBuilder::from_env().with_url(bucket_url).build()?),
    };
    Ok((store, prefix))
}

#[cfg(not(feature = "cloud"))]
fn remote(url: &url::Url) -> Result<(Arc<dyn ObjectStore>, Path)> {
    Err(Error::Unsupported(format!("{url}: this build has no cloud backends (build with --features cloud)")))
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
    }
}
