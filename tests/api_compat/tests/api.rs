//! A program written against atlas-rust 0.10.0's documented API, as its users write
//! one (`let mut` where 0.10 takes `&mut self`, `Vec` regions, `ArcArray` results),
//! compiled against atlasfs under the name `atlas`. It uses every public item of
//! 0.10, runs the doc examples of 0.10's `Atlas` and `DatasetView` methods and the
//! spec's §6 checklist. Where atlasfs fixes a 0.10 defect, the assertion is
//! atlasfs's and names the defect (D1–D12 of the spec's §7, docs/migrating.md).

use std::sync::Arc;

use atlas::{
    ArrayElement, ArraySchema, ArrayStats, Atlas, Attr, Codec, DType, DatasetMeta, DatasetView, DeltaCache, Error, FillValue, MergedArrayMeta, MetaFormat, Result, StatValue,
    StoreConfig, TimestampNs,
};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, local::LocalFileSystem};

fn mem() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

fn dims(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- doc examples

/// 0.10's crate-level quick start, verbatim but for the wrapper.
#[tokio::test]
async fn doc_quick_start() {
    let tmp = tempfile::tempdir().unwrap();

    // Create — codec persists in atlas.json so `open_path` doesn't need it.
    let mut s = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
    {
        let mut ds = s.create_dataset("jan_2024").await.unwrap();
        ds.define_array::<f32>(
            "temperature",
            vec!["lat".into(), "lon".into()],
            vec![4, 8],
            None, // chunk_shape — defaults to full shape (one chunk)
            None, // fill_value
        )
        .await
        .unwrap();
        let data = Array2::<f32>::from_elem([4, 8], 20.0).into_dyn();
        ds.write_array("temperature", vec![0, 0], data.view()).await.unwrap();
        ds.set_attribute("month", Attr::Int64(1));
    }
    s.flush().await.unwrap(); // single durability boundary

    // Reopen — no config needed.
    let s2 = Atlas::open_path(tmp.path()).await.unwrap();
    let ds2 = s2.open_dataset("jan_2024").await.unwrap();
    let temp = ds2.read_array::<f32>("temperature", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(temp.shape(), &[4, 8]);
    assert_eq!(temp[[0, 0]], 20.0);
}

/// `DatasetView::read_array`'s example: a full and a partial read.
#[tokio::test]
async fn doc_read_array() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
    {
        let mut ds = s.create_dataset("ds").await.unwrap();
        ds.define_array::<f32>("temp", vec!["x".into(), "y".into()], vec![4, 8], None, None).await.unwrap();
        let data = Array2::<f32>::from_elem([4, 8], 9.0).into_dyn();
        ds.write_array("temp", vec![0, 0], data.view()).await.unwrap();

        // Full read.
        let full = ds.read_array::<f32>("temp", vec![], vec![]).await.unwrap().unwrap();
        assert_eq!(full.shape(), &[4, 8]);

        // Partial read — a 2×4 sub-region.
        let part = ds.read_array::<f32>("temp", vec![1, 2], vec![2, 4]).await.unwrap().unwrap();
        assert_eq!(part.shape(), &[2, 4]);
    }
    s.flush().await.unwrap();
}

/// `Atlas::open_path`'s example.
#[tokio::test]
async fn doc_open_path() {
    let tmp = tempfile::tempdir().unwrap();
    // Create + flush a store so there's something to open.
    {
        let mut s = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
        s.create_dataset("ds1").await.unwrap();
        s.flush().await.unwrap();
    }
    let s = Atlas::open_path(tmp.path()).await.unwrap();
    assert!(s.dataset_exists("ds1"));
}

/// `Atlas::create_path`'s example.
#[tokio::test]
async fn doc_create_path() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
    assert!(s.list_datasets().is_empty());
}

// ---------------------------------------------------------------- §6: names, Send/Sync

#[tokio::test]
async fn names_and_send_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Atlas>();
    send_sync::<DatasetView>();
    send_sync::<Error>();

    let mut a = Atlas::create(mem(), Path::from(""), StoreConfig::default()).await.unwrap();
    for bad in ["", "_hidden", "_", "a/b", "/abs", "..", "."] {
        assert!(matches!(a.create_dataset(bad).await, Err(Error::InvalidName(_))), "{bad:?}");
    }
    let mut ds = a.create_dataset("ds").await.unwrap();
    for good in ["temperature", "my-array", "x1", "lat.lon", "a"] {
        ds.define_array::<f32>(good, dims(&["i"]), vec![1], None, None).await.unwrap();
    }
    assert!(matches!(ds.define_array::<f32>("a/b", dims(&["i"]), vec![1], None, None).await, Err(Error::InvalidName(_))));
}

#[tokio::test]
async fn create_flush_open_path_lists_array() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut atlas = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
        {
            let mut view = atlas.create_dataset("ds").await.unwrap();
            view.define_array::<f32>("temp", vec!["x".into()], vec![4], None, None).await.unwrap();
        }
        atlas.flush().await.unwrap();
    }
    let atlas = Atlas::open_path(tmp.path()).await.unwrap();
    let view = atlas.open_dataset("ds").await.unwrap();
    assert_eq!(view.list_arrays(), vec!["temp".to_string()]);
}

// ---------------------------------------------------------------- §6: store

#[tokio::test]
async fn store_datasets() {
    let mut a = Atlas::create(mem(), Path::from("pre"), StoreConfig::default()).await.unwrap();
    assert!(a.list_datasets().is_empty() && a.list_arrays().is_empty() && !a.dataset_exists("x"));
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
    let mut names = a.list_datasets();
    assert_eq!(names, ["c", "a", "b"], "insertion order");
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}

#[tokio::test]
async fn list_arrays_sorted_and_deduplicated_after_reopen() {
    let store = mem();
    let mut a = Atlas::create(store.clone(), Path::from(""), StoreConfig::default()).await.unwrap();
    {
        let mut d1 = a.create_dataset("d1").await.unwrap();
        d1.define_array::<f32>("shared", dims(&["i"]), vec![2], None, None).await.unwrap();
        d1.define_array::<f32>("only_a", dims(&["i"]), vec![2], None, None).await.unwrap();
        let mut d2 = a.create_dataset("d2").await.unwrap();
        d2.define_array::<i16>("shared", dims(&["i"]), vec![2], None, None).await.unwrap();
    }
    a.flush().await.unwrap();
    let b = Atlas::open(store, Path::from("")).await.unwrap();
    assert_eq!(b.list_arrays(), ["only_a", "shared"]);
    assert_eq!(b.array_dtype("shared"), Some(DType::Float32), "from the first dataset declaring it");
    assert_eq!(b.array_dtype("nope"), None);
}

async fn round_trip<T: ArrayElement + PartialEq + std::fmt::Debug>(config: StoreConfig, data: Vec<T>) {
    let store = mem();
    let mut a = Atlas::create(store.clone(), Path::from("s"), config.clone()).await.unwrap();
    {
        let mut d = a.create_dataset("d").await.unwrap();
        d.define_array::<T>("v", dims(&["i"]), vec![data.len()], None, None).await.unwrap();
        d.write_array("v", vec![0], Array1::from(data.clone()).into_dyn().view()).await.unwrap();
    }
    a.flush().await.unwrap();
    let b = Atlas::open(store, Path::from("s")).await.unwrap();
    let got = b.open_dataset("d").await.unwrap().read_array::<T>("v", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(got.iter().cloned().collect::<Vec<T>>(), data, "{config:?}");
    assert_eq!(b.open_dataset("d").await.unwrap().array_meta("v").unwrap().codec, config.codec);
}

#[tokio::test]
async fn codecs_and_meta_formats() {
    round_trip(StoreConfig { codec: Codec::Lz4, ..Default::default() }, vec![1.0f32, 2.0, 3.0, 4.0]).await;
    round_trip(StoreConfig { codec: Codec::Uncompressed, ..Default::default() }, vec![10i32, 20, 30]).await;
    round_trip(StoreConfig { codec: Codec::Zstd, meta_format: MetaFormat::MsgPack, meta_compression: Codec::Zstd }, vec![1u64, 2]).await;
    let d = StoreConfig::default();
    assert_eq!((d.codec, d.meta_format, d.meta_compression), (Codec::Zstd, MetaFormat::Json, Codec::Uncompressed));
    assert_eq!((Codec::default(), MetaFormat::default()), (Codec::Zstd, MetaFormat::Json));
    assert_eq!(serde_json::to_string(&Codec::Lz4).unwrap(), "\"Lz4\"");
    assert_eq!(serde_json::from_str::<Codec>("\"Uncompressed\"").unwrap(), Codec::Uncompressed);
}

#[tokio::test]
async fn meta_file_names_on_disk() {
    for (format, compression, name) in [
        (MetaFormat::Json, Codec::Uncompressed, "atlas.json"),
        (MetaFormat::MsgPack, Codec::Uncompressed, "atlas.msgpack"),
        (MetaFormat::MsgPack, Codec::Zstd, "atlas.msgpack.zst"),
        (MetaFormat::Json, Codec::Lz4, "atlas.json.lz4"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/c");
        let mut a = Atlas::create_path(&path, StoreConfig { codec: Codec::Zstd, meta_format: format, meta_compression: compression }).await.unwrap();
        let files: Vec<String> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(files.contains(&name.to_string()), "{name}: create writes the metadata file at once: {files:?}");
        {
            let mut d = a.create_dataset("d").await.unwrap();
            d.define_array::<f64>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
            d.write_array("x", vec![0], Array1::from(vec![1.5, 2.5]).into_dyn().view()).await.unwrap();
        }
        a.flush().await.unwrap();
        let metas: Vec<String> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.starts_with("atlas.")).collect();
        assert!(metas.contains(&name.to_string()) && !metas.iter().any(|n| n.starts_with("atlas.json") && !name.starts_with("atlas.json")), "{metas:?}");
        let b = Atlas::open_path(&path).await.unwrap();
        let x = b.open_dataset("d").await.unwrap().read_array::<f64>("x", vec![], vec![]).await.unwrap().unwrap();
        assert_eq!(x.into_owned().into_raw_vec_and_offset().0, vec![1.5, 2.5]);
    }
}

#[tokio::test]
async fn nothing_is_flushed_implicitly() {
    let store = mem();
    let mut a = Atlas::create(store.clone(), Path::from(""), StoreConfig::default()).await.unwrap();
    a.create_dataset("pending").await.unwrap();
    drop(a);
    let b = Atlas::open(store, Path::from("")).await.unwrap();
    assert!(b.list_datasets().is_empty());
}

// ---------------------------------------------------------------- §6: DatasetView

#[tokio::test]
async fn dataset_view() {
    let mut a = Atlas::create(mem(), Path::from(""), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    assert_eq!(d.name(), "d");
    assert_eq!(d.get_attribute("missing"), None);
    d.set_attribute("k", Attr::String("v".into()));
    assert_eq!(d.get_attribute("k"), Some(Attr::String("v".into())));
    d.set_attribute("k", Attr::Bool(true));
    assert_eq!(d.get_attribute("k"), Some(Attr::Bool(true)));
    assert!(d.list_arrays().is_empty());
    assert!(d.read_array::<f32>("unknown", vec![], vec![]).await.unwrap().is_none());
    assert!(d.array_meta("unknown").is_none());

    d.define_array::<f32>("m", dims(&["x", "y"]), vec![4, 8], Some(vec![2, 2]), None).await.unwrap();
    d.define_array::<i32>("n", dims(&["i"]), vec![10], None, None).await.unwrap();
    assert_eq!(d.list_arrays(), ["m", "n"]);
    assert!(matches!(d.define_array::<f32>("m", dims(&["i"]), vec![1], None, None).await, Err(Error::ArrayAlreadyExists(_))));
    let meta: DatasetMeta = d.meta();
    let m: &ArraySchema = &meta.arrays["m"];
    assert_eq!((m.dtype.clone(), m.shape.clone(), m.chunk_shape.clone(), m.dimension_names.clone()), (DType::Float32, vec![4, 8], vec![2, 2], dims(&["x", "y"])));
    assert_eq!(meta.arrays["n"].chunk_shape, vec![10], "chunk shape defaults to the shape");
    assert_eq!(meta.arrays["n"].dtype, DType::Int32);
    assert_eq!(meta.attributes["k"], Attr::Bool(true));

    // Written data reads back before any flush.
    let block = ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).map(|v| v as f32).collect()).unwrap();
    d.write_array("m", vec![1, 2], block.view()).await.unwrap();
    let r = d.read_array::<f32>("m", vec![1, 2], vec![2, 3]).await.unwrap().unwrap();
    assert_eq!(r, block.into_shared());
    // The region convention: oversized requests are clamped.
    assert_eq!(d.read_array::<f32>("m", vec![3, 7], vec![10, 10]).await.unwrap().unwrap().shape(), &[1, 1]);

    d.delete_array("n").await.unwrap();
    assert_eq!(d.list_arrays(), ["m"]);
    assert!(!d.meta().arrays.contains_key("n"));
    assert!(matches!(d.delete_array("n").await, Err(Error::ArrayNotFound(_))));
    assert_eq!(d.array_fill_value("m").await.unwrap(), None);
    assert_eq!(d.array_fill_value("unknown").await.unwrap(), None);

    // Two views of one dataset see the same data.
    let other = a.open_dataset("d").await.unwrap();
    assert_eq!(other.read_array::<f32>("m", vec![1, 2], vec![1, 1]).await.unwrap().unwrap()[[0, 0]], 0.0);
    a.flush().await.unwrap();
}

#[tokio::test]
async fn statistics() {
    let mut a = Atlas::create(mem(), Path::from(""), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    d.define_array::<f32>("f", dims(&["i"]), vec![4], None, None).await.unwrap();
    d.define_array::<i32>("i", dims(&["i"]), vec![6], None, Some(FillValue::Int(-1))).await.unwrap();
    d.define_array::<i32>("j", dims(&["i"]), vec![4], None, None).await.unwrap();
    d.define_array::<f64>("n", dims(&["i"]), vec![4], None, Some(FillValue::Float(f64::NAN))).await.unwrap();
    d.write_array("f", vec![0], Array1::from(vec![1.0f32, 3.0, 2.0, 4.0]).into_dyn().view()).await.unwrap();
    d.write_array("i", vec![0], Array1::from(vec![5, -1, 7, -1, 2, 9]).into_dyn().view()).await.unwrap();
    d.write_array("j", vec![0], Array1::from(vec![5, -1, 7, 9]).into_dyn().view()).await.unwrap();
    d.write_array("n", vec![0], Array1::from(vec![1.0, f64::NAN, 3.0, f64::NAN]).into_dyn().view()).await.unwrap();
    assert!(d.array_stats("unknown").await.is_none());
    assert!(d.array_stats("f").await.is_none(), "no stats before a flush");
    a.flush().await.unwrap();

    let s: ArrayStats = d.array_stats("f").await.unwrap();
    assert_eq!((s.name.as_str(), s.row_count, s.null_count), ("d", 4, 0));
    assert_eq!((s.min, s.max), (Some(StatValue::Float(1.0)), Some(StatValue::Float(4.0))));
    let s = d.array_stats("i").await.unwrap();
    assert_eq!((s.row_count, s.null_count, s.min, s.max), (6, 2, Some(StatValue::Int(2)), Some(StatValue::Int(9))));
    assert_eq!(d.array_fill_value("i").await.unwrap(), Some(FillValue::Int(-1)));
    let s = d.array_stats("j").await.unwrap();
    assert_eq!((s.null_count, s.min), (0, Some(StatValue::Int(-1))));
    let s = d.array_stats("n").await.unwrap();
    assert_eq!((s.null_count, s.min.clone(), s.max.clone()), (2, Some(StatValue::Float(1.0)), Some(StatValue::Float(3.0))));
    match s.max {
        Some(StatValue::Int(_) | StatValue::UInt(_) | StatValue::Bytes(_) | StatValue::TimestampNs(_)) | None => panic!("float stats"),
        Some(StatValue::Float(x)) => assert_eq!(x, 3.0),
    }
}

// ---------------------------------------------------------------- §6: integration

#[tokio::test]
async fn integration_local_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    let prefix = Path::from_absolute_path(tmp.path()).unwrap();
    let mut atlas = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
    {
        let mut ds = atlas.create_dataset("jan").await.unwrap();
        ds.define_array::<f32>("temp", dims(&["lat", "lon"]), vec![4, 4], Some(vec![2, 4]), None).await.unwrap();
        ds.write_array("temp", vec![0, 0], ArrayD::<f32>::from_elem(vec![4, 4], 42.0).view()).await.unwrap();
        ds.define_array::<i64>("time", dims(&["t"]), vec![100], None, None).await.unwrap();
        ds.define_array::<f32>("answer", vec![], vec![], None, None).await.unwrap();
        ds.write_array("answer", vec![], ndarray::arr0(42.0f32).into_dyn().view()).await.unwrap();
        ds.define_array::<TimestampNs>("event", dims(&["e"]), vec![2], None, None).await.unwrap();
        let ts = vec![TimestampNs(1_700_000_000_000_000_000), TimestampNs::new(1)];
        ds.write_array("event", vec![0], Array1::from(ts).into_dyn().view()).await.unwrap();
        ds.define_array::<String>("label", dims(&["e"]), vec![2], None, None).await.unwrap();
        ds.write_array("label", vec![0], Array1::from(vec!["a".to_string(), "bé".to_string()]).into_dyn().view()).await.unwrap();
        ds.define_array::<Vec<u8>>("blob", dims(&["e"]), vec![2], None, None).await.unwrap();
        ds.write_array("blob", vec![0], Array1::from(vec![vec![1u8, 2], vec![]]).into_dyn().view()).await.unwrap();
        ds.set_attribute("month", Attr::Int64(1));
        ds.set_attribute("site", Attr::String("ABC".into()));
        ds.set_attribute("scale", Attr::Float64(0.5));
        ds.set_attribute("at", Attr::TimestampNanoseconds(1_700_000_000_000_000_000));
        let mut feb = atlas.create_dataset("feb").await.unwrap();
        feb.define_array::<f32>("temp", dims(&["lat", "lon"]), vec![4, 4], None, None).await.unwrap();
        let mut gone = atlas.create_dataset("gone").await.unwrap();
        gone.define_array::<f32>("temp", dims(&["lat", "lon"]), vec![4, 4], None, None).await.unwrap();
    }
    atlas.flush().await.unwrap();
    atlas.delete_dataset("gone").await.unwrap();
    atlas.flush().await.unwrap();
    atlas.compact().await.unwrap();

    let b = Atlas::open(store, prefix).await.unwrap();
    let mut names = b.list_datasets();
    names.sort();
    assert_eq!(names, ["feb", "jan"]);
    let ds = b.open_dataset("jan").await.unwrap();
    assert_eq!(ds.read_array::<f32>("temp", vec![], vec![]).await.unwrap().unwrap(), ArrayD::<f32>::from_elem(vec![4, 4], 42.0).into_shared());
    let zero_d = ds.read_array::<f32>("answer", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!((zero_d.ndim(), zero_d[[]]), (0, 42.0));
    assert_eq!(ds.array_meta("answer").unwrap().dimension_names, Vec::<String>::new());
    assert_eq!(ds.array_meta("time").unwrap().chunk_shape, vec![100]);
    assert_eq!(ds.array_meta("event").unwrap().dtype, DType::TimestampNs);
    let ev = ds.read_array::<TimestampNs>("event", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(ev[[0]].nanos(), 1_700_000_000_000_000_000);
    assert_eq!(i64::from(ev[[1]]), 1);
    assert_eq!(ds.read_array::<String>("label", vec![1], vec![1]).await.unwrap().unwrap()[[0]], "bé");
    assert_eq!(ds.read_array::<Vec<u8>>("blob", vec![], vec![]).await.unwrap().unwrap()[[0]], vec![1u8, 2]);
    for (k, v) in [("month", Attr::Int64(1)), ("site", Attr::String("ABC".into())), ("scale", Attr::Float64(0.5)), ("at", Attr::TimestampNanoseconds(1_700_000_000_000_000_000))] {
        assert_eq!(ds.get_attribute(k), Some(v));
    }
    let s = ds.array_stats("temp").await.unwrap();
    assert_eq!((s.row_count, s.min.clone()), (16, Some(StatValue::Float(42.0))));
    assert_eq!(ds.array_stats("answer").await.unwrap().row_count, 1);

    // Bulk reads.
    let names = vec!["jan".to_string(), "nope".to_string(), "feb".to_string()];
    let across = b.read_array_across::<f32>("temp", &names, vec![0, 0], vec![1, 2]).await.unwrap();
    assert_eq!(across.len(), 3);
    assert!(across[1].is_none());
    assert_eq!(across[0].as_ref().unwrap().shape(), &[1, 2]);
    let stacked: ndarray::Array<f32, IxDyn> = b.read_array_across_stacked::<f32>("temp", &["jan".into(), "feb".into()], vec![], vec![]).await.unwrap();
    assert_eq!(stacked.shape(), &[2, 4, 4]);
    assert!(matches!(b.read_array_across_stacked::<f32>("temp", &[], vec![], vec![]).await, Err(Error::ArrayNotFound(_))));
    assert!(matches!(b.read_array_across::<f32>("nope", &names, vec![], vec![]).await, Err(Error::ArrayNotFound(_))));
}

/// 0.10's lifecycle example, condensed: deletes leave the rest intact, compaction
/// keeps data, reopen shows the survivors.
#[tokio::test]
async fn lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Atlas::create_path(tmp.path(), StoreConfig::default()).await.unwrap();
    for name in ["keep", "drop"] {
        let mut ds = s.create_dataset(name).await.unwrap();
        for arr in ["a", "b"] {
            ds.define_array::<f64>(arr, dims(&["i"]), vec![3], None, None).await.unwrap();
            ds.write_array(arr, vec![0], Array1::from(vec![1.0, 2.0, 3.0]).into_dyn().view()).await.unwrap();
        }
        ds.set_attribute("name", Attr::String(name.into()));
    }
    s.flush().await.unwrap();
    let mut keep = s.open_dataset("keep").await.unwrap();
    keep.delete_array("b").await.unwrap();
    assert!(keep.read_array::<f64>("a", vec![], vec![]).await.unwrap().is_some());
    s.delete_dataset("drop").await.unwrap();
    s.flush().await.unwrap();
    s.compact().await.unwrap();
    assert_eq!(keep.read_array::<f64>("a", vec![], vec![]).await.unwrap().unwrap().iter().copied().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
    let r = Atlas::open_path(tmp.path()).await.unwrap();
    assert_eq!(r.list_datasets(), ["keep"]);
    let k = r.open_dataset("keep").await.unwrap();
    assert_eq!(k.list_arrays(), ["a"]);
    assert_eq!(k.get_attribute("name"), Some(Attr::String("keep".into())));
}

// ---------------------------------------------------------------- types

/// A caller's own element type: 0.10's trait has exactly these required items.
#[derive(Clone, Debug, PartialEq)]
struct Celsius(f32);

impl ArrayElement for Celsius {
    const DTYPE: DType = DType::Float32;
    fn encode_chunk(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|c| c.0.to_le_bytes()).collect()
    }
    fn decode_chunk(bytes: &[u8]) -> Vec<Self> {
        bytes.chunks_exact(4).map(|b| Celsius(f32::from_le_bytes(b.try_into().unwrap()))).collect()
    }
    fn fill_element(fill: Option<&FillValue>) -> Self {
        Celsius(match fill {
            Some(FillValue::Float(v)) => *v as f32,
            _ => -273.15,
        })
    }
}

#[tokio::test]
async fn own_element_type_and_trait_items() {
    let mut a = Atlas::create(mem(), Path::from(""), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    d.define_array::<Celsius>("t", dims(&["i"]), vec![3], None, Some(FillValue::Float(-1.0))).await.unwrap();
    d.write_array("t", vec![0], Array1::from(vec![Celsius(20.5), Celsius(21.0)]).into_dyn().view()).await.unwrap();
    let got = d.read_array::<Celsius>("t", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(got.iter().cloned().collect::<Vec<_>>(), vec![Celsius(20.5), Celsius(21.0), Celsius(-1.0)]);
    assert_eq!(d.read_array::<f32>("t", vec![2], vec![1]).await.unwrap().unwrap()[[0]], -1.0);

    assert_eq!(<f32 as ArrayElement>::DTYPE, DType::Float32);
    assert_eq!(f64::decode_chunk(&f64::encode_chunk(&[1.5, -2.0])), vec![1.5, -2.0]);
    assert_eq!(String::decode_chunk(&String::encode_chunk(&["x".to_string(), String::new()])), vec!["x".to_string(), String::new()]);
    assert_eq!(u8::fill_element(Some(&FillValue::Bool(true))), 1);
    assert_eq!(i16::fill_element(None), 0);
    assert_eq!(TimestampNs::fill_element(Some(&FillValue::TimestampNs(7))), TimestampNs(7));
    assert_eq!(String::fill_element(Some(&FillValue::String("ignored".into()))), "");
}

#[test]
fn reexported_types() {
    let all = [
        DType::Bool,
        DType::Int8,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::UInt8,
        DType::UInt16,
        DType::UInt32,
        DType::UInt64,
        DType::Float32,
        DType::Float64,
        DType::String,
        DType::Binary,
        DType::FixedSizeList { child: Box::new(DType::Int16), size: 3 },
        DType::List { child: Box::new(DType::UInt8) },
        DType::TimestampNs,
    ];
    let sizes: Vec<Option<usize>> = all.iter().map(DType::element_size).collect();
    assert_eq!(sizes, [Some(1), Some(1), Some(2), Some(4), Some(8), Some(1), Some(2), Some(4), Some(8), Some(4), Some(8), None, None, Some(6), None, Some(8)]);
    assert!(DType::String.is_variable_length() && !DType::Float32.is_variable_length());

    let fills = [FillValue::Bool(true), FillValue::Int(-1), FillValue::UInt(1), FillValue::Float(f64::NAN), FillValue::String("s".into()), FillValue::TimestampNs(0)];
    assert_eq!(fills[3], FillValue::Float(f64::NAN), "fill equality is bitwise");
    assert_eq!(fills.clone().len(), 6);

    let stats = ArrayStats { name: "d".into(), min: Some(StatValue::Bytes(b"a".to_vec())), max: Some(StatValue::UInt(2)), null_count: 0, row_count: 1 };
    assert_eq!(stats.clone(), stats);
    assert_ne!(StatValue::TimestampNs(1), StatValue::Int(1));

    const TS: TimestampNs = TimestampNs::new(5);
    const NS: i64 = TS.nanos();
    let ts = TS;
    assert_eq!(NS, 5);
    assert_eq!((ts.nanos(), ts.0, TimestampNs::from(5i64), i64::from(ts)), (5, 5, ts, 5));
    assert!(TimestampNs::default() < ts);

    let merged = MergedArrayMeta { name: "d".into(), dtype: DType::Float32, shape: vec![4], chunk_shape: vec![2], dimension_names: vec!["i".into()], fill_value: None };
    assert_eq!(format!("{:?}", merged.clone()).contains("Float32"), true);
    let cache = DeltaCache::new(256 << 20, 64 << 20);
    let _shared = cache.clone();

    let schema = ArraySchema { dtype: DType::UInt16, shape: vec![10, 20], chunk_shape: vec![5, 5], dimension_names: dims(&["a", "b"]), codec: Codec::Lz4 };
    let back: ArraySchema = serde_json::from_str(&serde_json::to_string(&schema).unwrap()).unwrap();
    assert_eq!(back, schema);
    let mut meta = DatasetMeta::default();
    meta.arrays.insert("x".into(), schema);
    meta.attributes.insert("k".into(), Attr::Int64(1));
    let back: DatasetMeta = serde_json::from_str(&serde_json::to_string(&meta).unwrap()).unwrap();
    assert_eq!(back.arrays.len() + back.attributes.len(), 2);
}

#[test]
fn attr_json_forms() {
    for (a, json) in [
        (Attr::Bool(true), "true"),
        (Attr::Int64(42), "42"),
        (Attr::Float64(1.5), "1.5"),
        (Attr::String("x".into()), "\"x\""),
        (Attr::TimestampNanoseconds(1_700_000_000_000_000_000), "\"2023-11-14T22:13:20Z\""),
    ] {
        assert_eq!(serde_json::to_string(&a).unwrap(), json);
        assert_eq!(serde_json::from_str::<Attr>(json).unwrap(), a);
    }
    assert_eq!(serde_json::from_str::<Attr>("\"not-a-date\"").unwrap(), Attr::String("not-a-date".into()));
}

/// Every 0.10 variant of `Error`, matched exhaustively as a 0.10 caller may match
/// them (no `_` arm: atlasfs's `Error` has exactly 0.10's variants), and the `?`
/// conversions. Failures 0.10 has no variant for arrive as `Error::Io` with an
/// `io::ErrorKind` (docs/migrating.md).
#[tokio::test]
async fn errors() {
    fn kind(e: &Error) -> &'static str {
        match e {
            Error::DatasetNotFound(_) => "dataset not found",
            Error::DatasetAlreadyExists(_) => "dataset exists",
            Error::ArrayNotFound(_) => "array not found",
            Error::ArrayAlreadyExists(_) => "array exists",
            Error::StoreNotFound => "store not found",
            Error::InvalidName(_) => "invalid name",
            Error::ArrayFormat(_) => "array format",
            Error::Io(_) => "io",
            Error::Meta(_) => "meta",
            Error::MetaEncode(_) => "meta encode",
            Error::MetaDecode(_) => "meta decode",
            Error::MetaLz4Decompress(_) => "lz4",
            Error::ObjectStore(_) => "object store",
        }
    }
    fn parse(s: &str) -> Result<u32> {
        Ok(serde_json::from_str::<u32>(s)?)
    }
    fn read(p: &std::path::Path) -> Result<Vec<u8>> {
        Ok(std::fs::read(p)?)
    }
    assert_eq!(kind(&parse("x").unwrap_err()), "meta");
    assert_eq!(kind(&read(std::path::Path::new("/nonexistent/x")).unwrap_err()), "io");
    assert_eq!(Error::DatasetNotFound("d".into()).to_string(), "dataset not found: d");
    assert_eq!(Error::DatasetAlreadyExists("d".into()).to_string(), "dataset already exists: d");
    assert_eq!(Error::ArrayNotFound("a".into()).to_string(), "array not found: a");
    assert_eq!(Error::ArrayAlreadyExists("a".into()).to_string(), "array already exists: a");
    assert_eq!(Error::StoreNotFound.to_string(), "store not found at path");
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::InvalidName("_x".into()));
    assert!(e.to_string().starts_with("invalid name '_x'"));

    // A missing directory: 0.10 said ObjectStore ("Unable to canonicalize"); atlasfs
    // uses the variant 0.10 declared for it.
    let err = Atlas::open_path("/nonexistent/atlas/store").await.err().unwrap();
    assert_eq!(kind(&err), "store not found");
    // An existing empty directory opens as an empty store.
    let tmp = tempfile::tempdir().unwrap();
    assert!(Atlas::open_path(tmp.path()).await.unwrap().list_datasets().is_empty());
    let mut a = Atlas::create(mem(), Path::from(""), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    d.define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await.unwrap();
    assert!(matches!(d.write_array("nope", vec![0], Array1::from(vec![1.0f32]).into_dyn().view()).await, Err(Error::ArrayNotFound(_))));
    let oob = d.write_array("x", vec![1], Array1::from(vec![1.0f32, 2.0]).into_dyn().view()).await.err().expect("out of bounds writes error, as in 0.10");
    assert!(matches!(&oob, Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput), "{oob:?}");
    assert!(oob.to_string().starts_with("I/O error: invalid argument: "), "{oob}");
    let mismatch = d.read_array::<f64>("x", vec![], vec![]).await.err().expect("dtype mismatch");
    assert_eq!(kind(&mismatch), "io");
    assert!(matches!(&mismatch, Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput), "{mismatch:?}");
    // Creating over an existing store (0.10 reset it, D6).
    let dir = tempfile::tempdir().unwrap();
    Atlas::create_path(dir.path(), StoreConfig::default()).await.unwrap();
    let again = Atlas::create_path(dir.path(), StoreConfig::default()).await.err().expect("create over a store");
    assert!(matches!(&again, Error::Io(e) if e.kind() == std::io::ErrorKind::AlreadyExists), "{again:?}");
}

/// A 0.10 program holding `&mut Atlas` while views are alive, and views used from
/// several tasks at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mut_atlas_with_live_views() {
    async fn add(atlas: &mut Atlas, name: &str) -> Result<DatasetView> {
        let mut v = atlas.create_dataset(name).await?;
        v.define_array::<i64>("x", vec!["i".into()], vec![8], Some(vec![2]), None).await?;
        Ok(v)
    }
    let mut atlas = Atlas::create(mem(), Path::from(""), StoreConfig::default()).await.unwrap();
    let v1 = add(&mut atlas, "one").await.unwrap();
    let v2 = add(&mut atlas, "two").await.unwrap();
    Atlas::flush(&mut atlas).await.unwrap();
    let tasks: Vec<_> = [v1, v2]
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            tokio::spawn(async move {
                v.write_array("x", vec![0], Array1::from(vec![i as i64; 8]).into_dyn().view()).await.unwrap();
                v
            })
        })
        .collect();
    let mut views = vec![];
    for t in tasks {
        views.push(t.await.unwrap());
    }
    atlas.flush().await.unwrap();
    atlas.compact().await.unwrap();
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.read_array::<i64>("x", vec![], vec![]).await.unwrap().unwrap().sum(), 8 * i as i64);
    }
}
