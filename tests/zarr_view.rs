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
/// data block), and a dask mean over all of them is right.
#[test]
fn zarr_stacked_open_is_lazy() {
    let n = std::env::var("ATLASFS_ZARR_DATASETS").unwrap_or_else(|_| "100".into());
    let dir = tempfile::tempdir().unwrap();
    let (store, mp) = (dir.path().join("store"), dir.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    common::run_python("zarr_check.py", &["many", s(&store), &n]);
    let m = Mounted::start(&store, &mp, &[]);
    let out = common::run_python("zarr_check.py", &["lazy", s(&store), s(m.mp()), &n]);
    eprintln!("{out}");
    m.unmount();
}
