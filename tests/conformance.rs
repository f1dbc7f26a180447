//! Conformance: one suite of spec §1 semantics (tests/conformance/suite.rs) run
//! against three object-store backends: object_store's InMemory, a
//! LocalFileSystem in a temp dir, and a real S3-compatible server (moto on
//! 127.0.0.1, started by the test; run scripts/setup-test-env.sh to install it).
//! The `s3://` URL path (`Location::parse` + `AmazonS3Builder::from_env`) is
//! checked in a child process that gets the AWS_* environment.
//!
//! Each backend test runs every case (concurrently, each with fresh locations),
//! reports each case, and fails listing every failing case. To run only some
//! cases: ATLASFS_CONFORMANCE_CASES=zero_d,bulk_reads cargo test --test conformance

#[path = "faults/mod.rs"]
mod faults;
#[path = "conformance/moto.rs"]
mod moto;
#[path = "conformance/suite.rs"]
mod suite;

use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atlasfs::store::backend::Location;
use atlasfs::{Attr, ErrorDetail, StoreConfig, StoreOptions};
use futures::{FutureExt, StreamExt, TryStreamExt};
use ndarray::{ArrayD, IxDyn};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use moto::MotoServer;
use suite::{Loc, Make};

// Handles are shared across threads (the FUSE daemon does).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<atlasfs::Atlas>();
    send_sync::<atlasfs::DatasetView>();
};

const CASE_TIMEOUT: Duration = Duration::from_secs(180);

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "(non-string panic)".into())
}

/// Runs every selected case against `make`, a few at a time; panics listing failures.
async fn run_suite(backend: &str, make: Make) {
    let only: Option<Vec<String>> = std::env::var("ATLASFS_CONFORMANCE_CASES").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    if let Some(o) = &only {
        for c in o {
            assert!(suite::CASES.contains(&c.as_str()), "ATLASFS_CONFORMANCE_CASES names unknown case {c:?}; cases: {:?}", suite::CASES);
        }
    }
    let cases: Vec<&'static str> = suite::CASES.iter().copied().filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|x| x == c))).collect();
    let t0 = Instant::now();
    let results: Vec<(&str, Duration, Result<(), String>)> = futures::stream::iter(cases)
        .map(|case| {
            let make = make.clone();
            async move {
                let t = Instant::now();
                let r = match tokio::time::timeout(CASE_TIMEOUT, AssertUnwindSafe(suite::run_case(case, make)).catch_unwind()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(p)) => Err(panic_message(&*p)),
                    Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
                };
                (case, t.elapsed(), r)
            }
        })
        .buffered(6)
        .collect()
        .await;
    let mut failed = vec![];
    for (case, took, r) in &results {
        match r {
            Ok(()) => println!("[{backend}] {case:<28} ok      {took:>8.2?}"),
            Err(m) => {
                println!("[{backend}] {case:<28} FAILED  {took:>8.2?}: {m}");
                failed.push(format!("  {case}: {m}"));
            }
        }
    }
    println!("[{backend}] {} cases in {:.2?}, {} failed", results.len(), t0.elapsed(), failed.len());
    assert!(failed.is_empty(), "[{backend}] {} of {} conformance cases failed:\n{}", failed.len(), results.len(), failed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend() {
    // Alternates the store root and a nested prefix (a PrefixStore) between locations.
    let n = Arc::new(AtomicU64::new(0));
    let make: Make = Arc::new(move || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let prefix = if i % 2 == 0 { Path::default() } else { Path::from(format!("nested/store{i}")) };
        Loc { store: Arc::new(InMemory::new()), prefix }
    });
    run_suite("memory", make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_fs_backend() {
    // Alternates a LocalFileSystem rooted at the temp dir (empty prefix) and one rooted
    // at / with the temp dir as an absolute prefix. The dirs go when the test ends.
    let dirs: Arc<Mutex<Vec<tempfile::TempDir>>> = Arc::default();
    let n = Arc::new(AtomicU64::new(0));
    let keep = dirs.clone();
    let make: Make = Arc::new(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let i = n.fetch_add(1, Ordering::Relaxed);
        let loc = if i % 2 == 0 {
            Loc { store: Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local fs")), prefix: Path::default() }
        } else {
            Loc { store: Arc::new(LocalFileSystem::new()), prefix: Path::from_absolute_path(dir.path()).expect("absolute prefix") }
        };
        keep.lock().unwrap().push(dir);
        loc
    });
    run_suite("local", make).await;
    drop(dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_moto_backend() {
    let server = MotoServer::start("atlas-conformance");
    let store = server.store();

    // The engine relies on create-if-absent puts (new sidecars, store creation).
    let probe = moto::unique_prefix("probe").join("x");
    store.put_opts(&probe, PutPayload::from_static(b"1"), PutOptions::from(PutMode::Create)).await.expect("first PutMode::Create");
    match store.put_opts(&probe, PutPayload::from_static(b"2"), PutOptions::from(PutMode::Create)).await {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        other => panic!("moto: a second PutMode::Create must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(&store.get(&probe).await.unwrap().bytes().await.unwrap()[..], b"1");

    let make: Make = Arc::new(move || Loc { store: store.clone(), prefix: moto::unique_prefix("conformance") });
    run_suite("s3", make).await;
    drop(server);
}

// ---------------------------------------------------------------- s3:// URLs

const CHILD_FLAG: &str = "ATLASFS_CONFORMANCE_URL_CHILD";

/// Runs `s3_url_location_child` in a child process with exactly `env` as its AWS_*
/// environment (setting variables in this multi-threaded process would be unsound).
fn run_url_child(env: &[(&str, String)], url: &str) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["s3_url_location_child", "--exact", "--include-ignored", "--nocapture", "--test-threads", "1"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env(CHILD_FLAG, url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn the test binary")
}

#[test]
fn s3_url_location() {
    let server = MotoServer::start("atlas-url");
    let creds = |endpoint_key: &'static str| -> Vec<(&'static str, String)> {
        vec![
            (endpoint_key, server.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY.into()),
            ("AWS_REGION", moto::REGION.into()),
        ]
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Every endpoint variable object_store's from_env accepts (AWS_ENDPOINT_URL_S3
    // wins over the other two when several are set).
    for key in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"] {
        let prefix = moto::unique_prefix("url");
        let url = format!("s3://{}/{prefix}", server.bucket);
        let out = run_url_child(&creds(key), &url);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "s3:// URL with {key}: child failed:\n{text}");
        // What the child wrote, seen through an explicitly configured store.
        let store = server.store();
        let files: Vec<String> = rt.block_on(async {
            let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            let mut v: Vec<String> = metas.iter().map(|m| m.location.prefix_match(&prefix).unwrap().map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/")).collect();
            v.sort();
            v
        });
        assert_eq!(files, ["atlas.json", "t/data.af", "t/data.stats"], "objects under {url} after the child's compact ({key})");
    }
    // Without AWS_ALLOW_HTTP an http:// endpoint is refused.
    let mut no_http = creds("AWS_ENDPOINT_URL");
    no_http.retain(|(k, _)| *k != "AWS_ALLOW_HTTP");
    let url = format!("s3://{}/{}", server.bucket, moto::unique_prefix("url-nohttp"));
    let out = run_url_child(&no_http, &url);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains(&format!("create {url}")), "an http:// endpoint without AWS_ALLOW_HTTP should make create fail:\n{text}");
    drop(server);
}

/// The body of `s3_url_location`; runs only in the child process it starts.
#[tokio::test]
#[ignore = "run by s3_url_location in a child process with the AWS_* environment"]
async fn s3_url_location_child() {
    let Ok(url) = std::env::var(CHILD_FLAG) else {
        eprintln!("s3_url_location_child only runs inside s3_url_location (it needs the AWS_* environment that test sets)");
        return;
    };
    let loc = Location::parse(&url).unwrap();
    assert!(loc.is_remote(), "{url} parses as a remote location");
    let mut a = loc.create(StoreConfig::default(), StoreOptions::default()).await.unwrap_or_else(|e| panic!("create {url}: {e}"));
    let mut d = a.create_dataset("d").await.unwrap();
    d.define_array::<f32>("t", vec!["i".into()], vec![3], Some(vec![2]), None).await.unwrap();
    d.write_array::<f32>("t", vec![0], ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, 2.0, 3.0]).unwrap().view()).await.unwrap();
    d.try_set_attribute("who", Attr::String("url".into())).unwrap();
    a.flush().await.unwrap();
    match loc.create(StoreConfig::default(), StoreOptions::default()).await {
        Err(e) if matches!(e.detail(), Some(ErrorDetail::StoreAlreadyExists(_))) => {}
        Err(e) => panic!("second create of {url}: expected StoreAlreadyExists, got {e}"),
        Ok(_) => panic!("second create of {url}: expected StoreAlreadyExists, got a store"),
    }

    let mut r = loc.open(StoreOptions::default()).await.unwrap();
    assert_eq!(r.list_datasets(), ["d"]);
    let mut rd = r.open_dataset("d").await.unwrap();
    assert_eq!(rd.read_array::<f32>("t", vec![], vec![]).await.unwrap().unwrap(), ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0f32, 2.0, 3.0]).unwrap());
    assert_eq!(rd.get_attribute("who"), Some(Attr::String("url".into())));
    rd.write_array::<f32>("t", vec![2], ArrayD::from_shape_vec(IxDyn(&[1]), vec![30.0]).unwrap().view()).await.unwrap();
    r.flush().await.unwrap();
    r.compact().await.unwrap();

    let r2 = loc.open(StoreOptions::default()).await.unwrap();
    let got = r2.open_dataset("d").await.unwrap().read_array::<f32>("t", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(got, ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0f32, 2.0, 30.0]).unwrap());
}
