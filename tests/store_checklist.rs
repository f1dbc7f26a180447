//! The behaviours atlas 0.10's own tests assert (spec §6), against our engine.

use std::sync::Arc;

use atlasfs::store::{Attr, Codec, DType, FillValue, MetaFormat, StatValue, TimestampNs};
use atlasfs::{Atlas, Error, ErrorDetail, StoreConfig};
use ndarray::{ArrayD, IxDyn, arr1};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

fn mem() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

fn dims(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn a1<T: Clone>(v: &[T]) -> ArrayD<T> {
    arr1(v).into_dyn()
}

async fn new_store() -> (Arc<dyn ObjectStore>, Atlas) {
    let s = mem();
    let a = Atlas::create(s.clone(), Path::default(), StoreConfig::default()).await.unwrap();
    (s, a)
}

// ---- Names and types ----

#[test]
fn atlas_and_views_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Atlas>();
    check::<atlasfs::DatasetView>();
}

#[tokio::test]
async fn path_api_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Atlas::create_path(dir.path(), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<f32>("temp", dims(&["x"]), vec![4], None, None).await.unwrap();
    d.write_array("temp", vec![0], a1(&[1.0f32, 2.0, 3.0, 4.0]).view()).await.unwrap();
    a.flush().await.unwrap();
    let b = Atlas::open_path(dir.path()).await.unwrap();
    assert_eq!(b.list_arrays(), vec!["temp"]);
    let got = b.open_dataset("ds").await.unwrap().read_array::<f32>("temp", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(got, a1(&[1.0f32, 2.0, 3.0, 4.0]));
}

// ---- Store ----

#[tokio::test]
async fn new_store_is_empty_and_datasets_behave() {
    let (_, mut a) = new_store().await;
    assert!(a.list_datasets().is_empty());
    assert!(a.list_arrays().is_empty());
    assert!(!a.dataset_exists("x"));
    a.create_dataset("x").await.unwrap();
    assert!(a.dataset_exists("x"));
    assert!(matches!(a.create_dataset("x").await, Err(Error::DatasetAlreadyExists(n)) if n == "x"));
    assert!(matches!(a.open_dataset("nope").await, Err(Error::DatasetNotFound(_))));
    assert!(matches!(a.delete_dataset("nope").await, Err(Error::DatasetNotFound(_))));
    a.delete_dataset("x").await.unwrap();
    assert!(!a.dataset_exists("x"));
    for n in ["c", "a", "b"] {
        a.create_dataset(n).await.unwrap();
    }
    assert_eq!(a.list_datasets(), vec!["c", "a", "b"], "insertion order");
    for bad in ["", "a/b", "_x", ".."] {
        assert!(matches!(a.create_dataset(bad).await, Err(Error::InvalidName(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn list_arrays_is_distinct_and_sorted_after_reopen() {
    let (s, mut a) = new_store().await;
    let mut da = a.create_dataset("a").await.unwrap();
    let mut db = a.create_dataset("b").await.unwrap();
    da.define_array::<f32>("shared", dims(&["x"]), vec![2], None, None).await.unwrap();
    da.define_array::<f32>("only_a", dims(&["x"]), vec![2], None, None).await.unwrap();
    db.define_array::<f32>("shared", dims(&["x"]), vec![2], None, None).await.unwrap();
    a.flush().await.unwrap();
    let b = Atlas::open(s, Path::default()).await.unwrap();
    assert_eq!(b.list_arrays(), vec!["only_a", "shared"]);
    assert_eq!(b.array_dtype("shared"), Some(DType::Float32));
}

#[tokio::test]
async fn codecs_round_trip_through_reopen() {
    for (codec, is_f32) in [(Codec::Lz4, true), (Codec::Uncompressed, false), (Codec::Zstd, true)] {
        let s = mem();
        let mut a = Atlas::create(s.clone(), Path::default(), StoreConfig { codec, ..Default::default() }).await.unwrap();
        let mut d = a.create_dataset("d").await.unwrap();
        if is_f32 {
            d.define_array::<f32>("v", dims(&["i"]), vec![4], None, None).await.unwrap();
            d.write_array("v", vec![0], a1(&[1.0f32, 2.0, 3.0, 4.0]).view()).await.unwrap();
        } else {
            d.define_array::<i32>("v", dims(&["i"]), vec![3], None, None).await.unwrap();
            d.write_array("v", vec![0], a1(&[10i32, 20, 30]).view()).await.unwrap();
        }
        a.flush().await.unwrap();
        let b = Atlas::open(s, Path::default()).await.unwrap();
        let d = b.open_dataset("d").await.unwrap();
        if is_f32 {
            assert_eq!(d.read_array::<f32>("v", vec![], vec![]).await.unwrap().unwrap(), a1(&[1.0f32, 2.0, 3.0, 4.0]), "{codec:?}");
        } else {
            assert_eq!(d.read_array::<i32>("v", vec![], vec![]).await.unwrap().unwrap(), a1(&[10i32, 20, 30]));
        }
        assert_eq!(d.array_meta("v").unwrap().codec, codec);
    }
}

async fn names_in(s: &Arc<dyn ObjectStore>) -> Vec<String> {
    let l = s.list_with_delimiter(None).await.unwrap();
    let mut v: Vec<String> = l.objects.iter().map(|o| o.location.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn msgpack_variants_write_only_their_file() {
    for (comp, name) in [(Codec::Uncompressed, "atlas.msgpack"), (Codec::Zstd, "atlas.msgpack.zst"), (Codec::Lz4, "atlas.msgpack.lz4")] {
        let s = mem();
        let mut a = Atlas::create(s.clone(), Path::default(), StoreConfig { codec: Codec::Zstd, meta_format: MetaFormat::MsgPack, meta_compression: comp }).await.unwrap();
        let mut d = a.create_dataset("d").await.unwrap();
        d.define_array::<u16>("u", dims(&["i"]), vec![3], None, None).await.unwrap();
        d.write_array("u", vec![0], a1(&[1u16, 2, 3]).view()).await.unwrap();
        d.try_set_attribute("k", Attr::Int64(7)).unwrap();
        a.flush().await.unwrap();
        assert_eq!(names_in(&s).await, vec![name.to_string()]);
        let b = Atlas::open(s, Path::default()).await.unwrap();
        assert_eq!(b.meta_file().file_name(), name);
        let d = b.open_dataset("d").await.unwrap();
        assert_eq!(d.read_array::<u16>("u", vec![], vec![]).await.unwrap().unwrap(), a1(&[1u16, 2, 3]));
        assert_eq!(d.get_attribute("k"), Some(Attr::Int64(7)));
    }
}

#[tokio::test]
async fn create_path_makes_nested_dirs_and_writes_meta_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a/b/c");
    Atlas::create_path(&p, StoreConfig::default()).await.unwrap();
    assert_eq!(std::fs::read_to_string(p.join("atlas.json")).unwrap().len(), 55);
    // an existing, empty directory is fine too
    let q = dir.path().join("empty");
    std::fs::create_dir(&q).unwrap();
    Atlas::create_path(&q, StoreConfig::default()).await.unwrap();
    assert!(q.join("atlas.json").exists());
}

#[tokio::test]
async fn array_files_open_lazily_and_once() {
    let (s, mut a) = new_store().await;
    for ds in ["d1", "d2"] {
        let mut d = a.create_dataset(ds).await.unwrap();
        for arr in ["x", "y", "z"] {
            d.define_array::<f32>(arr, dims(&["i"]), vec![2], None, None).await.unwrap();
        }
    }
    a.flush().await.unwrap();
    let b = Atlas::open(s, Path::default()).await.unwrap();
    assert!(b.loaded_arrays().is_empty(), "open touches no array file");
    let (v1, v2) = (b.open_dataset("d1").await.unwrap(), b.open_dataset("d2").await.unwrap());
    v1.read_array::<f32>("x", vec![], vec![]).await.unwrap();
    v2.read_array::<f32>("x", vec![], vec![]).await.unwrap();
    assert_eq!(b.loaded_arrays(), vec!["x"], "reading x from two views opens only x, once");
    assert!(v1.array_meta("y").is_some() && b.list_arrays().len() == 3);
    assert_eq!(b.loaded_arrays(), vec!["x"], "metadata calls open nothing");
}

// ---- DatasetView ----

#[tokio::test]
async fn attributes_and_names() {
    let (_, mut a) = new_store().await;
    let d = a.create_dataset("ds").await.unwrap();
    assert_eq!(d.name(), "ds");
    assert_eq!(d.get_attribute("nope"), None);
    d.try_set_attribute("k", Attr::Int64(1)).unwrap();
    d.try_set_attribute("j", Attr::String("v".into())).unwrap();
    d.try_set_attribute("k", Attr::Int64(2)).unwrap();
    assert_eq!(d.get_attribute("k"), Some(Attr::Int64(2)));
    let keys: Vec<String> = d.meta().attributes.keys().cloned().collect();
    assert_eq!(keys, vec!["k", "j"], "overwrite keeps position");
}

#[tokio::test]
async fn define_list_delete_and_errors() {
    let (_, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    assert!(d.list_arrays().is_empty());
    assert!(d.read_array::<f32>("nope", vec![], vec![]).await.unwrap().is_none());
    assert!(d.array_meta("nope").is_none());
    d.define_array::<f32>("t", dims(&["x", "y"]), vec![4, 8], Some(vec![2, 2]), None).await.unwrap();
    assert_eq!(d.list_arrays(), vec!["t"]);
    assert!(matches!(d.define_array::<f32>("t", dims(&["x"]), vec![4], None, None).await, Err(Error::ArrayAlreadyExists(_))));
    assert!(matches!(d.define_array::<f32>("a/b", dims(&["x"]), vec![4], None, None).await, Err(Error::InvalidName(_))));
    let m = d.meta();
    let s = &m.arrays["t"];
    assert_eq!((s.dtype.clone(), s.shape.clone(), s.chunk_shape.clone(), s.dimension_names.clone()), (DType::Float32, vec![4, 8], vec![2, 2], dims(&["x", "y"])));
    assert!(m.attributes.is_empty());
    d.define_array::<i32>("n", dims(&["i"]), vec![10], None, None).await.unwrap();
    assert_eq!(d.array_meta("n").unwrap().chunk_shape, vec![10], "chunk defaults to shape");
    d.delete_array("t").await.unwrap();
    assert_eq!(d.list_arrays(), vec!["n"]);
    assert!(d.array_meta("t").is_none());
    assert!(matches!(d.delete_array("t").await, Err(Error::ArrayNotFound(_))));
}

#[tokio::test]
async fn unflushed_writes_are_readable_and_partial_reads_work() {
    let (_, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    d.define_array::<f32>("t", dims(&["x", "y"]), vec![4, 6], Some(vec![2, 4]), None).await.unwrap();
    let full = ArrayD::from_shape_vec(IxDyn(&[4, 6]), (0..24).map(|x| x as f32).collect()).unwrap();
    d.write_array("t", vec![0, 0], full.view()).await.unwrap();
    assert_eq!(d.read_array::<f32>("t", vec![], vec![]).await.unwrap().unwrap(), full);
    let part = d.read_array::<f32>("t", vec![1, 2], vec![2, 4]).await.unwrap().unwrap();
    assert_eq!(part.shape(), &[2, 4]);
    assert_eq!(part, full.slice(ndarray::s![1..3, 2..6]).into_dyn());
    // read-modify-write of a partial chunk keeps its neighbours
    d.write_array("t", vec![1, 3], ArrayD::from_elem(IxDyn(&[2, 2]), -1.0f32).view()).await.unwrap();
    let got = d.read_array::<f32>("t", vec![], vec![]).await.unwrap().unwrap();
    let mut want = full.clone();
    want.slice_mut(ndarray::s![1..3, 3..5]).fill(-1.0);
    assert_eq!(got, want);
    assert!(matches!(d.read_array::<f64>("t", vec![], vec![]).await.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::DTypeMismatch { .. })));
}

#[tokio::test]
async fn stats_follow_010_rules() {
    let (_, mut a) = new_store().await;
    let mut d = a.create_dataset("ds").await.unwrap();
    assert!(d.try_array_stats("nope").await.unwrap().is_none());
    d.define_array::<f32>("f", dims(&["i"]), vec![4], None, None).await.unwrap();
    d.write_array("f", vec![0], a1(&[1.0f32, 3.0, 2.0, 4.0]).view()).await.unwrap();
    assert!(d.try_array_stats("f").await.unwrap().is_none(), "no stats before a flush");
    d.define_array::<i32>("i", dims(&["i"]), vec![6], None, Some(FillValue::Int(-1))).await.unwrap();
    d.write_array("i", vec![0], a1(&[5i32, -1, 7, -1, 2, 9]).view()).await.unwrap();
    d.define_array::<i32>("j", dims(&["i"]), vec![4], None, None).await.unwrap();
    d.write_array("j", vec![0], a1(&[5i32, -1, 7, 9]).view()).await.unwrap();
    d.define_array::<f64>("n", dims(&["i"]), vec![4], None, Some(FillValue::Float(f64::NAN))).await.unwrap();
    d.write_array("n", vec![0], a1(&[1.0f64, f64::NAN, 3.0, f64::NAN]).view()).await.unwrap();
    d.define_array::<i64>("half", dims(&["i"]), vec![24], Some(vec![6]), None).await.unwrap();
    d.write_array("half", vec![0], a1(&[1i64; 12]).view()).await.unwrap();
    a.flush().await.unwrap();
    let s = d.try_array_stats("f").await.unwrap().unwrap();
    assert_eq!((s.row_count, s.null_count, s.min, s.max), (4, 0, Some(StatValue::Float(1.0)), Some(StatValue::Float(4.0))));
    let s = d.try_array_stats("i").await.unwrap().unwrap();
    assert_eq!((s.row_count, s.null_count, s.min, s.max), (6, 2, Some(StatValue::Int(2)), Some(StatValue::Int(9))));
    let s = d.try_array_stats("j").await.unwrap().unwrap();
    assert_eq!((s.null_count, s.min), (0, Some(StatValue::Int(-1))));
    let s = d.try_array_stats("n").await.unwrap().unwrap();
    assert_eq!((s.null_count, s.min, s.max), (2, Some(StatValue::Float(1.0)), Some(StatValue::Float(3.0))));
    let s = d.try_array_stats("half").await.unwrap().unwrap();
    assert_eq!((s.row_count, s.null_count), (24, 12), "unwritten cells count as null");
}

// ---- Integration (local directory) ----

#[tokio::test]
async fn local_store_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Atlas::create_path(dir.path(), StoreConfig::default()).await.unwrap();
    let mut jan = a.create_dataset("jan").await.unwrap();
    let feb = a.create_dataset("feb").await.unwrap();
    for (d, v) in [(&jan, 42.0f32), (&feb, 7.0)] {
        d.define_array_shared::<f32>("temp", dims(&["x", "y"]), vec![4, 4], Some(vec![2, 4]), None).await.unwrap();
        d.write_array_shared("temp", vec![0, 0], ArrayD::from_elem(IxDyn(&[4, 4]), v).view()).await.unwrap();
    }
    jan.try_set_attribute("month", Attr::Int64(1)).unwrap();
    jan.try_set_attribute("name", Attr::String("January".into())).unwrap();
    jan.try_set_attribute("active", Attr::Bool(true)).unwrap();
    jan.define_array::<i64>("time", dims(&["t"]), vec![100], None, None).await.unwrap();
    jan.define_array::<f32>("answer", vec![], vec![], None, None).await.unwrap();
    jan.write_array("answer", vec![], ndarray::arr0(42.0f32).into_dyn().view()).await.unwrap();
    jan.define_array::<TimestampNs>("when", dims(&["t"]), vec![2], None, None).await.unwrap();
    jan.write_array("when", vec![0], a1(&[TimestampNs(1), TimestampNs(1_700_000_000_000_000_000)]).view()).await.unwrap();
    jan.try_set_attribute("created", Attr::TimestampNanoseconds(1_700_000_000_000_000_000)).unwrap();
    assert!(Atlas::open_path(dir.path()).await.unwrap().list_datasets().is_empty(), "nothing is flushed implicitly");
    a.flush().await.unwrap();

    let mut b = Atlas::open_path(dir.path()).await.unwrap();
    assert_eq!(b.list_datasets(), vec!["jan", "feb"]);
    let mut jan = b.open_dataset("jan").await.unwrap();
    assert_eq!(jan.read_array::<f32>("temp", vec![], vec![]).await.unwrap().unwrap(), ArrayD::from_elem(IxDyn(&[4, 4]), 42.0f32));
    assert_eq!(b.open_dataset("feb").await.unwrap().read_array::<f32>("temp", vec![], vec![]).await.unwrap().unwrap(), ArrayD::from_elem(IxDyn(&[4, 4]), 7.0f32));
    assert_eq!(jan.get_attribute("month"), Some(Attr::Int64(1)));
    assert_eq!(jan.get_attribute("name"), Some(Attr::String("January".into())));
    assert_eq!(jan.get_attribute("active"), Some(Attr::Bool(true)));
    assert_eq!(jan.get_attribute("created"), Some(Attr::TimestampNanoseconds(1_700_000_000_000_000_000)));
    assert_eq!(jan.array_meta("temp").unwrap().chunk_shape, vec![2, 4]);
    assert_eq!(jan.array_meta("time").unwrap().chunk_shape, vec![100]);
    let ans = jan.read_array::<f32>("answer", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!((ans.ndim(), ans.iter().next().copied()), (0, Some(42.0)));
    assert_eq!(jan.array_meta("answer").unwrap().shape, Vec::<usize>::new());
    assert_eq!(jan.try_array_stats("answer").await.unwrap().unwrap().row_count, 1);
    assert_eq!(b.array_dtype("when"), Some(DType::TimestampNs));
    assert_eq!(jan.read_array::<TimestampNs>("when", vec![], vec![]).await.unwrap().unwrap()[[1]], TimestampNs(1_700_000_000_000_000_000));
    let s = jan.try_array_stats("temp").await.unwrap().unwrap();
    assert_eq!((s.row_count, s.min, s.max), (16, Some(StatValue::Float(42.0)), Some(StatValue::Float(42.0))));
    assert!(jan.try_array_stats("nope").await.unwrap().is_none());

    // delete one array and one dataset; compaction keeps the rest
    jan.delete_array("time").await.unwrap();
    b.delete_dataset("feb").await.unwrap();
    b.flush().await.unwrap();
    b.compact().await.unwrap();
    assert_eq!(jan.read_array::<f32>("temp", vec![], vec![]).await.unwrap().unwrap(), ArrayD::from_elem(IxDyn(&[4, 4]), 42.0f32));
    let c = Atlas::open_path(dir.path()).await.unwrap();
    assert_eq!(c.list_datasets(), vec!["jan"]);
    let jan = c.open_dataset("jan").await.unwrap();
    assert_eq!(jan.list_arrays(), vec!["temp", "answer", "when"]);
    assert_eq!(jan.get_attribute("month"), Some(Attr::Int64(1)));
    let files: Vec<String> =
        std::fs::read_dir(dir.path().join("temp")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(files, vec!["data.af", "data.stats"]);
}

#[tokio::test]
async fn invalid_names_are_rejected_everywhere() {
    let (_, mut a) = new_store().await;
    let mut d = a.create_dataset("ok").await.unwrap();
    for bad in ["", "_hidden", "a/b", "/abs", "..", "."] {
        assert!(matches!(a.create_dataset(bad).await, Err(Error::InvalidName(_))));
        assert!(matches!(d.define_array::<f32>(bad, dims(&["x"]), vec![1], None, None).await, Err(Error::InvalidName(_))));
    }
}

#[tokio::test]
async fn bulk_reads() {
    let (_, mut a) = new_store().await;
    let names: Vec<String> = (0..5).map(|i| format!("d{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        let mut d = a.create_dataset(n).await.unwrap();
        d.define_array::<f32>("v", dims(&["i"]), vec![4], Some(vec![2]), None).await.unwrap();
        d.write_array("v", vec![0], a1(&[i as f32, 1.0, 2.0, 3.0]).view()).await.unwrap();
    }
    a.create_dataset("other").await.unwrap();
    a.flush().await.unwrap();
    let mut asked = names.clone();
    asked.push("other".into());
    asked.push("missing".into());
    let parts = a.read_array_across::<f32>("v", &asked, vec![1], vec![2]).await.unwrap();
    assert_eq!(parts.len(), 7);
    assert_eq!(parts[3].as_ref().unwrap(), &a1(&[1.0f32, 2.0]));
    assert!(parts[5].is_none() && parts[6].is_none());
    assert!(matches!(a.read_array_across::<f32>("nope", &names, vec![], vec![]).await, Err(Error::ArrayNotFound(_))));
    let st = a.read_array_across_stacked::<f32>("v", &names, vec![], vec![]).await.unwrap();
    assert_eq!(st.shape(), &[5, 4]);
    assert_eq!(st[[4, 0]], 4.0);
    assert!(matches!(a.read_array_across_stacked::<f32>("v", &[], vec![], vec![]).await, Err(Error::ArrayNotFound(_))));
    assert!(matches!(a.read_array_across_stacked::<f32>("v", &asked, vec![], vec![]).await, Err(Error::ArrayNotFound(m)) if m.contains("other")));
}

#[tokio::test]
async fn strings_and_bools() {
    let (s, mut a) = new_store().await;
    let mut d = a.create_dataset("d").await.unwrap();
    d.define_array::<String>("s", dims(&["i"]), vec![5], Some(vec![2]), None).await.unwrap();
    let v: Vec<String> = ["cat", "", "elephant", "é", "x"].iter().map(|s| s.to_string()).collect();
    d.write_array("s", vec![0], a1(&v).view()).await.unwrap();
    d.write_array("s", vec![3], a1(&["dog".to_string()]).view()).await.unwrap();
    d.define_array::<bool>("b", dims(&["i"]), vec![3], None, None).await.unwrap();
    d.write_array("b", vec![0], a1(&[true, false, true]).view()).await.unwrap();
    a.flush().await.unwrap();
    let b = Atlas::open(s, Path::default()).await.unwrap();
    let d = b.open_dataset("d").await.unwrap();
    let got = d.read_array::<String>("s", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(got.iter().cloned().collect::<Vec<_>>(), vec!["cat", "", "elephant", "dog", "x"]);
    assert_eq!(d.read_array::<bool>("b", vec![], vec![]).await.unwrap().unwrap(), a1(&[true, false, true]));
    let st = d.try_array_stats("s").await.unwrap().unwrap();
    assert_eq!(st.min, Some(StatValue::Bytes(b"".to_vec())));
}
