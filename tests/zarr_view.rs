//! The zarr v3 view (`.atlasfs/zarr/`) through a real mount, against atlas-python
//! 0.10's xarray mapping as the oracle, with zarr-python 3, xarray, dask and
//! tensorstore as the readers (tests/python/zarr_check.py does the reading).

mod common;

use std::path::Path;

use common::mount::Mounted;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Stores written by atlas-python (add_xarray_dataset and the plain API): each
/// dataset's group is identical to `open_as_xarray_dataset`, `_stacked` to
/// `open_as_many_xarray_dataset`; tensorstore reads equal values; writes under the
/// view are EROFS; a change through the mount shows at the next `zarr.json` read.
#[test]
fn zarr_view_matches_atlas_python() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mp) = (dir.path().join("store"), dir.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    common::run_python("zarr_check.py", &["write", s(&store)]);
    let m = Mounted::start(&store, &mp, &[]);
    let out = common::run_python("zarr_check.py", &["check", s(&store), s(m.mp())]);
    eprintln!("{out}");
    let log = m.log_text();
    let refusals = log.lines().filter(|l| l.contains("refused a write to the read-only zarr view")).count();
    assert_eq!(refusals, 8, "one log line per refused write (8 in the script):\n{log}");
    m.unmount();
}

/// Opening `_stacked` over many datasets reads metadata only (a few FUSE reads, no
/// data block), and a dask mean over all of them is right; a dataset another writer
/// adds shows in the view after `--metadata-ttl`.
#[test]
fn zarr_stacked_open_is_lazy() {
    let n = std::env::var("ATLASFS_ZARR_DATASETS").unwrap_or_else(|_| "100".into());
    let dir = tempfile::tempdir().unwrap();
    let (store, mp) = (dir.path().join("store"), dir.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    common::run_python("zarr_check.py", &["many", s(&store), &n]);
    let m = Mounted::start(&store, &mp, &["--metadata-ttl", "1"]);
    let out = common::run_python("zarr_check.py", &["lazy", s(&store), s(m.mp()), &n]);
    eprintln!("{out}");
    let out = common::run_python("zarr_check.py", &["refresh", s(&store), s(m.mp()), &n]);
    eprintln!("{out}");
    m.unmount();
}

#[allow(dead_code)]
#[path = "conformance/moto.rs"]
mod moto;

/// Copies a local store directory into the bucket under `prefix`.
fn upload(dir: &Path, store: std::sync::Arc<dyn object_store::ObjectStore>, prefix: &str) {
    use object_store::ObjectStoreExt as _;
    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { files(&p, out) } else { out.push(p) }
        }
    }
    let mut all = vec![];
    files(dir, &mut all);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for f in all {
            let rel = f.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
            let key = object_store::path::Path::from(format!("{prefix}/{rel}"));
            store.put(&key, object_store::PutPayload::from(std::fs::read(&f).unwrap())).await.unwrap();
        }
    });
}

/// The same view over a store on S3 (moto): chunks fetched on demand, `_stacked`
/// opened from metadata only, the dask mean right.
#[test]
fn zarr_view_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mp) = (dir.path().join("store"), dir.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    common::run_python("zarr_check.py", &["many", s(&store), "20"]);
    let server = moto::MotoServer::start("zarr");
    upload(&store, server.store(), "many");
    let endpoint = server.endpoint();
    let env = [("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY), ("AWS_REGION", moto::REGION), ("AWS_ALLOW_HTTP", "true")];
    let m = Mounted::start_with(std::ffi::OsStr::new("s3://zarr/many"), &mp, &["--endpoint", &endpoint], &env);
    let out = common::run_python("zarr_check.py", &["lazy", s(&store), s(m.mp()), "20"]);
    eprintln!("{out}");
    m.unmount();
}
