//! atlas 0.10's known defects (spec §7), each pinned by a test that fails on 0.10's behaviour.

mod faults;

use std::collections::BTreeMap;
use std::sync::Arc;

use atlasfs::format::footer::decode_footer;
use atlasfs::store::{Attr, FillValue, MetaFormat};
use atlasfs::{Atlas, Error, ErrorDetail, StoreConfig};
use futures::TryStreamExt;
use ndarray::{ArrayD, arr1};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

fn dims(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn a1<T: Clone>(v: &[T]) -> ArrayD<T> {
    arr1(v).into_dyn()
}

async fn new_store() -> (Arc<dyn ObjectStore>, Atlas) {
    let s: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = Atlas::create(s.clone(), Path::default(), StoreConfig::default()).await.unwrap();
    (s, a)
}

async fn read_f32(a: &Atlas, ds: &str, arr: &str) -> Vec<f32> {
    a.open_dataset(ds).await.unwrap().read_array::<f32>(arr, vec![], vec![]).await.unwrap().unwrap().iter().copied().collect()
}

async fn files(s: &Arc<dyn ObjectStore>) -> BTreeMap<String, Vec<u8>> {
    let metas: Vec<_> = s.list(None).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        out.insert(m.location.to_string(), s.get(&m.location).await.unwrap().bytes().await.unwrap().to_vec());
    }
    out
}

/// D1: a tombstone must shadow older layers; re-defining must not resurrect old chunks.
#[tokio::test]
async fn d1_redefined_array_does_not_resurrect_old_chunks() {
    for flush_between in [true, false] {
        let (s, mut a) = new_store().await;
        let mut d = a.create_dataset("ds").await.unwrap();
        d.define_array::<f32>("x", dims(&["i"]), vec![4], Some(vec![2]), None).await.unwrap();
        d.write_array("x", vec![0], a1(&[1.0f32, 2.0, 3.0, 4.0]).view()).await.unwrap();
        a.flush().await.unwrap();
        d.delete_array("x").await.unwrap();
        if flush_between {
            a.flush().await.unwrap();
        }
        d.define_array::<f32>("x", dims(&["i"]), vec![4], Some(vec![2]), None).await.unwrap();
        d.write_array("x", vec![0], a1(&[9.0f32, 9.0]).view()).await.unwrap();
        assert_eq!(read_f32(&a, "ds", "x").await, vec![9.0, 9.0, 0.0, 0.0], "before flush (flush_between={flush_between})");
        a.flush().await.unwrap();
        assert_eq!(read_f32(&a, "ds", "x").await, vec![9.0, 9.0, 0.0, 0.0]);
        let mut b = Atlas::open(s.clone(), Path::default()).await.unwrap();
        assert_eq!(read_f32(&b, "ds", "x").await, vec![9.0, 9.0, 0.0, 0.0], "after reopen");
        b.compact().await.unwrap();
        let c = Atlas::open(s, Path::default()).await.unwrap();
        assert_eq!(read_f32(&c, "ds", "x").await, vec![9.0, 9.0, 0.0, 0.0], "after compaction");
    }
}

/// D1, dataset flavour: a dataset re-created under the same name starts empty.
#[tokio::test]
async fn d1_recreated_dataset_starts_empty() {
    let (s, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<i32>("x", dims(&["i"]), vec![4], Some(vec![2]), Some(FillValue::Int(-1))).await.unwrap();
    d.write_array("x", vec![0], a1(&[1i32, 2, 3, 4]).view()).await.unwrap();
    a.flush().await.unwrap();
    a.delete_dataset("ds").await.unwrap();
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<i32>("x", dims(&["i"]), vec![4], Some(vec![2]), Some(FillValue::Int(-1))).await.unwrap();
    d.write_array("x", vec![2], a1(&[7i32]).view()).await.unwrap();
    a.flush().await.unwrap();
    let b = Atlas::open(s, Path::default()).await.unwrap();
    let got: Vec<i32> = b.open_dataset("ds").await.unwrap().read_array::<i32>("x", vec![], vec![]).await.unwrap().unwrap().iter().copied().collect();
    assert_eq!(got, vec![-1, -1, 7, -1]);
}

/// D2: compaction rewrites data.af under the same name; cached blocks of the old
/// file must never be served, and a second compaction must not write stale bytes.
#[tokio::test]
async fn d2_no_stale_blocks_after_compaction() {
    let (s, mut a) = new_store().await;
    let mut da = a.create_dataset("a").await.unwrap();
    da.define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
    da.write_array("x", vec![0], a1(&[1.0f32, 1.0]).view()).await.unwrap();
    a.flush().await.unwrap();
    a.compact().await.unwrap();
    assert_eq!(read_f32(&a, "a", "x").await, vec![1.0, 1.0]); // warms the cache with the new base's block 0
    let mut db = a.create_dataset("b").await.unwrap();
    db.define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
    db.write_array("x", vec![0], a1(&[2.0f32, 2.0]).view()).await.unwrap();
    a.flush().await.unwrap();
    a.compact().await.unwrap();
    assert_eq!(read_f32(&a, "b", "x").await, vec![2.0, 2.0]);
    assert_eq!(read_f32(&a, "a", "x").await, vec![1.0, 1.0]);
    a.compact().await.unwrap();
    let b = Atlas::open(s, Path::default()).await.unwrap();
    assert_eq!(read_f32(&b, "b", "x").await, vec![2.0, 2.0]);
    assert_eq!(read_f32(&b, "a", "x").await, vec![1.0, 1.0]);
}

/// D3: deleting the last user of an array persists; the name can be reused.
#[tokio::test]
async fn d3_deleting_last_user_persists() {
    let (s, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
    d.write_array("x", vec![0], a1(&[5.0f32, 6.0]).view()).await.unwrap();
    a.flush().await.unwrap();
    d.delete_array("x").await.unwrap();
    a.flush().await.unwrap();
    a.compact().await.unwrap();
    let base = s.get(&Path::from("x/data.af")).await.unwrap().bytes().await.unwrap();
    let footer = decode_footer(&base).unwrap();
    assert!(footer.entries.is_empty(), "the compacted base keeps no entry for the deleted array: {:?}", footer.entries);
    let mut b = Atlas::open(s, Path::default()).await.unwrap();
    let mut d = b.open_dataset("ds").await.unwrap();
    d.define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
    b.flush().await.unwrap();
    assert_eq!(read_f32(&b, "ds", "x").await, vec![0.0, 0.0]);
    // and the whole-dataset flavour
    b.delete_dataset("ds").await.unwrap();
    b.flush().await.unwrap();
    b.compact().await.unwrap();
    b.create_dataset("ds").await.unwrap().define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
    b.flush().await.unwrap();
}

/// A store with several layers, tombstones and a re-definition; returns what it should read.
async fn layered_store(s: Arc<dyn ObjectStore>) -> BTreeMap<(String, String), Vec<f32>> {
    let mut a = Atlas::create(s, Path::default(), StoreConfig::default()).await.unwrap();
    let mut want = BTreeMap::new();
    for (i, ds) in ["a", "b", "c"].iter().enumerate() {
        let mut d = a.create_dataset(ds).await.unwrap();
        for arr in ["x", "y"] {
            d.define_array::<f32>(arr, dims(&["i"]), vec![4], Some(vec![2]), None).await.unwrap();
            d.write_array(arr, vec![0], a1(&[i as f32; 4]).view()).await.unwrap();
        }
        a.flush().await.unwrap();
    }
    a.delete_dataset("b").await.unwrap();
    a.flush().await.unwrap();
    let mut c = a.open_dataset("c").await.unwrap();
    c.delete_array("x").await.unwrap();
    a.flush().await.unwrap();
    c.define_array::<f32>("x", dims(&["i"]), vec![4], Some(vec![2]), None).await.unwrap();
    c.write_array("x", vec![0], a1(&[7.0f32]).view()).await.unwrap();
    let mut d = a.open_dataset("a").await.unwrap();
    d.write_array("y", vec![3], a1(&[5.0f32]).view()).await.unwrap();
    a.flush().await.unwrap();
    want.insert(("a".into(), "x".into()), vec![0.0; 4]);
    want.insert(("a".into(), "y".into()), vec![0.0, 0.0, 0.0, 5.0]);
    want.insert(("c".into(), "x".into()), vec![7.0, 0.0, 0.0, 0.0]);
    want.insert(("c".into(), "y".into()), vec![2.0; 4]);
    want
}

async fn check_reads(s: Arc<dyn ObjectStore>, want: &BTreeMap<(String, String), Vec<f32>>, ctx: &str) {
    let a = Atlas::open(s, Path::default()).await.unwrap_or_else(|e| panic!("{ctx}: store does not open: {e}"));
    assert_eq!(a.list_datasets(), vec!["a", "c"], "{ctx}");
    for ((ds, arr), v) in want {
        assert_eq!(&read_f32(&a, ds, arr).await, v, "{ctx}: {ds}/{arr}");
    }
}

async fn copy_store(from: &Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    let to: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for (k, v) in files(from).await {
        to.put(&Path::from(k), PutPayload::from(v)).await.unwrap();
    }
    to
}

/// D4: a crash at any point of a compaction leaves a store that opens and reads
/// every flushed value; the next compaction then completes.
#[tokio::test]
async fn d4_crash_at_every_step_of_compaction_loses_nothing() {
    let pristine: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let want = layered_store(pristine.clone()).await;
    check_reads(pristine.clone(), &want, "before compaction").await;
    let mut completed = false;
    for budget in 0..64 {
        let under = copy_store(&pristine).await;
        let crashing = faults::CrashAfter::new(under.clone(), budget);
        let mut a = Atlas::open(crashing.clone(), Path::default()).await.unwrap();
        let res = a.compact().await;
        drop(a);
        let ctx = format!("crash after {budget} mutations");
        check_reads(under.clone(), &want, &ctx).await;
        // recovery: a normal compaction completes and reads the same
        Atlas::open(under.clone(), Path::default()).await.unwrap().compact().await.unwrap_or_else(|e| panic!("{ctx}: recovery compaction failed: {e}"));
        check_reads(under.clone(), &want, &format!("{ctx}, recovered")).await;
        if res.is_ok() {
            completed = true;
            assert!(budget > 4, "a compaction of two files takes several writes");
            break;
        }
    }
    assert!(completed, "compaction never completed within the budget range");
}

/// D5: the next sidecar is the highest existing number + 1, so a gap never causes an overwrite.
#[tokio::test]
async fn d5_sidecar_numbering_skips_gaps() {
    let (s, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<f32>("x", dims(&["i"]), vec![3], Some(vec![1]), None).await.unwrap();
    for i in 0..3 {
        d.write_array("x", vec![i], a1(&[i as f32 + 1.0]).view()).await.unwrap();
        a.flush().await.unwrap();
    }
    // Remove the middle sidecar: layers 1 and 3 remain (a gap).
    s.delete(&Path::from("x/data.2.af")).await.unwrap();
    let third = s.get(&Path::from("x/data.3.af")).await.unwrap().bytes().await.unwrap();
    let mut b = Atlas::open(s.clone(), Path::default()).await.unwrap();
    b.open_dataset("ds").await.unwrap().write_array("x", vec![0], a1(&[9.0f32]).view()).await.unwrap();
    b.flush().await.unwrap();
    assert_eq!(s.get(&Path::from("x/data.3.af")).await.unwrap().bytes().await.unwrap(), third, "layer 3 untouched");
    assert!(s.head(&Path::from("x/data.4.af")).await.is_ok(), "new layer is number 4");
    assert_eq!(read_f32(&Atlas::open(s, Path::default()).await.unwrap(), "ds", "x").await, vec![9.0, 0.0, 3.0]);
}

/// D6: `create` refuses a location that already holds a store, and changes nothing.
#[tokio::test]
async fn d6_create_refuses_existing_store() {
    let (s, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<f32>("x", dims(&["i"]), vec![1], None, None).await.unwrap();
    a.flush().await.unwrap();
    let before = files(&s).await;
    assert!(matches!(Atlas::create(s.clone(), Path::default(), StoreConfig::default()).await.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::StoreAlreadyExists(_))));
    let cfg = StoreConfig { meta_format: MetaFormat::MsgPack, ..Default::default() };
    assert!(matches!(Atlas::create(s.clone(), Path::default(), cfg).await.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::StoreAlreadyExists(_))));
    // orphaned array files without metadata also count
    s.delete(&Path::from("atlas.json")).await.unwrap();
    assert!(matches!(Atlas::create(s.clone(), Path::default(), StoreConfig::default()).await.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::StoreAlreadyExists(_))));
    s.put(&Path::from("atlas.json"), PutPayload::from(before["atlas.json"].clone())).await.unwrap();
    assert_eq!(files(&s).await, before);
    let dir = tempfile::tempdir().unwrap();
    Atlas::create_path(dir.path(), StoreConfig::default()).await.unwrap();
    assert!(matches!(Atlas::create_path(dir.path(), StoreConfig::default()).await.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::StoreAlreadyExists(_))));
}

/// D7: a non-finite float attribute never makes JSON metadata unreadable.
#[tokio::test]
async fn d7_non_finite_attributes() {
    let (s, mut a) = new_store().await;
    let d = a.create_dataset("ds").await.unwrap();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(d.try_set_attribute("bad", Attr::Float64(x)).as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::NonFiniteAttribute(_))));
    }
    d.try_set_attribute("ok", Attr::Float64(2.0)).unwrap();
    a.flush().await.unwrap();
    let b = Atlas::open(s.clone(), Path::default()).await.unwrap();
    assert_eq!(b.open_dataset("ds").await.unwrap().get_attribute("ok"), Some(Attr::Float64(2.0)));
    assert_eq!(b.open_dataset("ds").await.unwrap().get_attribute("bad"), None);
    // A JSON file that 0.10 already broke (NaN written as null) opens, reading NaN.
    let broken = r#"{"version":1,"codec":"Zstd","datasets":{"ds":{"arrays":{},"attributes":{"nan":null}}}}"#;
    s.put(&Path::from("atlas.json"), PutPayload::from(broken.as_bytes().to_vec())).await.unwrap();
    let c = Atlas::open(s, Path::default()).await.unwrap();
    assert!(matches!(c.open_dataset("ds").await.unwrap().get_attribute("nan"), Some(Attr::Float64(x)) if x.is_nan()));
    // msgpack stores keep NaN
    let m: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut a = Atlas::create(m.clone(), Path::default(), StoreConfig { meta_format: MetaFormat::MsgPack, ..Default::default() }).await.unwrap();
    a.create_dataset("ds").await.unwrap().try_set_attribute("nan", Attr::Float64(f64::NAN)).unwrap();
    a.flush().await.unwrap();
    let b = Atlas::open(m, Path::default()).await.unwrap();
    assert!(matches!(b.open_dataset("ds").await.unwrap().get_attribute("nan"), Some(Attr::Float64(x)) if x.is_nan()));
}

/// D8: a view of a deleted dataset cannot resurrect it.
#[tokio::test]
async fn d8_views_of_deleted_datasets_do_not_resurrect() {
    let (_, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    a.delete_dataset("ds").await.unwrap();
    assert!(matches!(d.try_set_attribute("k", Attr::Int64(1)), Err(Error::DatasetNotFound(_))));
    assert!(matches!(d.define_array::<f32>("x", dims(&["i"]), vec![1], None, None).await, Err(Error::DatasetNotFound(_))));
    assert!(!a.dataset_exists("ds"));
    assert!(a.dataset_meta("ds").is_none());
    assert!(d.meta().arrays.is_empty() && d.meta().attributes.is_empty(), "0.10's meta(): empty for a deleted dataset");
    // 0.10's infallible set_attribute drops the refused value (logged), resurrecting nothing.
    d.set_attribute("k", Attr::Int64(1));
    assert!(!a.dataset_exists("ds"));
}

/// D9: stacked reads of datasets whose shapes differ return an error, not a panic.
#[tokio::test]
async fn d9_stacked_read_of_mismatched_shapes_errors() {
    let (_, mut a) = new_store().await;
    for (n, len) in [("a", 3usize), ("b", 4)] {
        let mut d = a.create_dataset(n).await.unwrap();
        d.define_array::<f32>("x", dims(&["i"]), vec![len], None, None).await.unwrap();
    }
    let r = a.read_array_across_stacked::<f32>("x", &["a".into(), "b".into()], vec![], vec![]).await;
    assert!(matches!(r.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::Invalid(m)) if m.contains("shape")));
}

/// D10: define_array validates ranks, chunk sizes and the u32 limits.
#[tokio::test]
async fn d10_define_validates_geometry() {
    let (_, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    let cases: Vec<(Vec<String>, Vec<usize>, Option<Vec<usize>>)> = vec![
        (dims(&["x"]), vec![4, 4], None),                                          // dims rank
        (dims(&["x", "y"]), vec![4, 4], Some(vec![2])),                            // chunk rank
        (dims(&["x"]), vec![4], Some(vec![0])),                                    // zero chunk
        (dims(&["x"]), vec![u32::MAX as usize + 1], Some(vec![1])),                // shape over u32
        (dims(&["x", "y"]), vec![1 << 20, 1 << 20], Some(vec![1 << 16, 1 << 16])), // chunk over 4 GiB
    ];
    for (dm, shape, chunk) in cases {
        let r = d.define_array::<f32>("x", dm.clone(), shape.clone(), chunk.clone(), None).await;
        assert!(matches!(r.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::Invalid(_))), "{dm:?} {shape:?} {chunk:?}: {r:?}");
    }
    assert!(d.list_arrays().is_empty(), "failed defines leave nothing behind");
}

/// D11 (chosen): out-of-bounds writes are errors; stats errors surface; opening a
/// missing local directory is StoreNotFound.
#[tokio::test]
async fn d11_errors_are_reported_not_hidden() {
    let (s, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<f32>("x", dims(&["i"]), vec![4], None, None).await.unwrap();
    let r = d.write_array("x", vec![3], a1(&[1.0f32, 2.0]).view()).await;
    assert!(matches!(r.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::Invalid(m)) if m.contains("exceeds")));
    d.write_array("x", vec![0], a1(&[1.0f32; 4]).view()).await.unwrap();
    a.flush().await.unwrap();
    s.put(&Path::from("x/data.stats"), PutPayload::from(b"garbage!garbage!".to_vec())).await.unwrap();
    let b = Atlas::open(s, Path::default()).await.unwrap();
    let err = b.open_dataset("ds").await.unwrap().try_array_stats("x").await.unwrap_err();
    assert!(err.to_string().contains("x/data.stats"), "{err}");
    assert_eq!(read_f32(&b, "ds", "x").await, vec![1.0; 4], "data stays readable");
    assert!(matches!(Atlas::open_path("/nonexistent/atlas/store").await, Err(Error::StoreNotFound)));
}
