//! The shared conformance suite: spec §1 semantics end to end, against whatever
//! object store the factory hands out. Every case takes a factory that returns a
//! fresh, empty location (store + prefix) on each call, and asserts concrete values.

use std::fmt::Debug;
use std::sync::Arc;

use atlasfs::store::meta::MetaFile;
use atlasfs::store::{ArrayElement, ArrayStats, Codec, DType, FillValue, MetaFormat, StatValue, TimestampNs};
use atlasfs::{Atlas, Attr, DatasetView, Error, ErrorDetail, StoreConfig};
use futures::TryStreamExt;
use ndarray::{ArrayD, Dimension, IxDyn};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// One location in a backend: a store and a prefix inside it.
#[derive(Clone)]
pub struct Loc {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

/// Hands out a fresh, empty location on every call.
pub type Make = Arc<dyn Fn() -> Loc + Send + Sync>;

impl Loc {
    pub async fn create(&self, config: StoreConfig) -> Atlas {
        Atlas::create(self.store.clone(), self.prefix.clone(), config).await.expect("Atlas::create")
    }

    pub async fn try_create(&self, config: StoreConfig) -> atlasfs::Result<Atlas> {
        Atlas::create(self.store.clone(), self.prefix.clone(), config).await
    }

    /// A fresh handle: sees only what was flushed.
    pub async fn open(&self) -> Atlas {
        Atlas::open(self.store.clone(), self.prefix.clone()).await.expect("Atlas::open")
    }

    /// The object path of `rel` (unencoded segments, '/'-separated) under the prefix.
    pub fn path(&self, rel: &str) -> Path {
        rel.split('/').fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    /// Every object under the prefix, relative to it, sorted (encoded form, as listed).
    pub async fn files(&self) -> Vec<String> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<_> = self.store.list(prefix).try_collect().await.expect("list store");
        let mut out: Vec<String> = metas
            .into_iter()
            .map(|m| m.location.prefix_match(&self.prefix).expect("listed under the prefix").map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .collect();
        out.sort();
        out
    }

    /// Objects inside one array directory (file names only), sorted.
    pub async fn array_dir(&self, dir_encoded: &str) -> Vec<String> {
        let pre = format!("{dir_encoded}/");
        self.files().await.into_iter().filter_map(|f| f.strip_prefix(&pre).map(str::to_string)).collect()
    }

    pub async fn get(&self, rel: &str) -> Vec<u8> {
        self.store.get(&self.path(rel)).await.expect("get").bytes().await.expect("body").to_vec()
    }
}

// ---------------------------------------------------------------- helpers

fn dims(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn arr<T>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape matches data")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    strings(v)
}

async fn define<T: ArrayElement>(ds: &DatasetView, array: &str, dim_names: &[&str], shape: &[usize], chunk: Option<&[usize]>, fill: Option<FillValue>) {
    ds.define_array_shared::<T>(array, dims(dim_names), shape.to_vec(), chunk.map(<[usize]>::to_vec), fill)
        .await
        .unwrap_or_else(|e| panic!("define_array {}/{array}: {e}", ds.name()));
}

async fn write<T: ArrayElement>(ds: &DatasetView, array: &str, start: &[usize], data: &ArrayD<T>) {
    ds.write_array_shared::<T>(array, start.to_vec(), data.view()).await.unwrap_or_else(|e| panic!("write_array {}/{array} at {start:?}: {e}", ds.name()));
}

/// A read that must find the array.
async fn read<T: ArrayElement>(ds: &DatasetView, array: &str, start: &[usize], shape: &[usize]) -> ArrayD<T> {
    ds.read_array::<T>(array, start.to_vec(), shape.to_vec())
        .await
        .unwrap_or_else(|e| panic!("read_array {}/{array} {start:?}+{shape:?}: {e}", ds.name()))
        .unwrap_or_else(|| panic!("read_array {}/{array}: Ok(None), array should be declared", ds.name()))
        .into_owned()
}

async fn read_all<T: ArrayElement>(ds: &DatasetView, array: &str) -> ArrayD<T> {
    read(ds, array, &[], &[]).await
}

async fn assert_reads<T: ArrayElement + PartialEq + Debug>(ds: &DatasetView, array: &str, want: &ArrayD<T>, when: &str) {
    let got = read_all::<T>(ds, array).await;
    assert_eq!(&got, want, "{when}: {}/{array}", ds.name());
}

async fn stats(ds: &DatasetView, array: &str) -> Option<ArrayStats> {
    ds.try_array_stats(array).await.unwrap_or_else(|e| panic!("array_stats {}/{array}: {e}", ds.name()))
}

fn stat_tuple(s: &ArrayStats) -> (u64, u64, Option<StatValue>, Option<StatValue>) {
    (s.row_count, s.null_count, s.min.clone(), s.max.clone())
}

async fn ds(a: &Atlas, name: &str) -> DatasetView {
    a.open_dataset(name).await.unwrap_or_else(|e| panic!("open_dataset {name}: {e}"))
}

/// A C-order model of an N-d array, for checking region reads and writes.
#[derive(Clone, Debug)]
struct Model<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Clone> Model<T> {
    fn new(shape: &[usize], fill: T) -> Self {
        Model { shape: shape.to_vec(), data: vec![fill; shape.iter().product()] }
    }

    fn index(&self, idx: &[usize]) -> usize {
        idx.iter().zip(&self.shape).fold(0, |acc, (&i, &n)| acc * n + i)
    }

    fn write(&mut self, start: &[usize], src: &ArrayD<T>) {
        for (idx, v) in src.indexed_iter() {
            let at: Vec<usize> = idx.slice().iter().zip(start).map(|(a, b)| a + b).collect();
            let k = self.index(&at);
            self.data[k] = v.clone();
        }
    }

    fn region(&self, start: &[usize], extent: &[usize]) -> ArrayD<T> {
        let out = ArrayD::from_shape_fn(IxDyn(extent), |idx| {
            let at: Vec<usize> = idx.slice().iter().zip(start).map(|(a, b)| a + b).collect();
            self.data[self.index(&at)].clone()
        });
        out
    }

    fn full(&self) -> ArrayD<T> {
        arr(&self.shape, self.data.clone())
    }
}

fn matches_err(r: &atlasfs::Result<impl Debug>, what: &str, pred: impl Fn(&Error) -> bool) {
    match r {
        Err(e) if pred(e) => {}
        other => panic!("{what}: unexpected result {other:?}"),
    }
}

// ---------------------------------------------------------------- the cases

/// Opening an empty location, creating a store, refusing to create over one.
pub async fn empty_store(make: Make) {
    let loc = make();
    assert!(loc.files().await.is_empty(), "factory must give an empty location");
    let a = loc.open().await;
    assert!(a.list_datasets().is_empty());
    assert!(a.list_arrays().is_empty());
    assert!(!a.dataset_exists("x"));
    assert_eq!(a.meta_file().file_name(), "atlas.json", "an empty location opens as (Json, Uncompressed)");
    assert!(loc.files().await.is_empty(), "open must write nothing");

    let mut c = loc.create(StoreConfig::default()).await;
    assert!(c.list_datasets().is_empty());
    assert_eq!(c.codec(), Codec::Zstd);
    assert_eq!(loc.files().await, ["atlas.json"], "create writes the metadata file at once");
    assert_eq!(String::from_utf8(loc.get("atlas.json").await).unwrap(), "{\n  \"version\": 1,\n  \"codec\": \"Zstd\",\n  \"datasets\": {}\n}");

    // create refuses an existing store, whatever the config.
    matches_err(&loc.try_create(StoreConfig::default()).await.map(|_| ()), "create over a store", |e| matches!(e.detail(), Some(ErrorDetail::StoreAlreadyExists(_))));
    let other = StoreConfig { codec: Codec::Lz4, meta_format: MetaFormat::MsgPack, meta_compression: Codec::Zstd };
    matches_err(&loc.try_create(other).await.map(|_| ()), "create (msgpack) over a json store", |e| matches!(e.detail(), Some(ErrorDetail::StoreAlreadyExists(_))));
    assert_eq!(loc.files().await, ["atlas.json"], "a refused create writes nothing");

    // A store with data but no flush since create still refuses.
    let d = c.create_dataset("d").await.unwrap();
    define::<i32>(&d, "x", &["i"], &[2], None, None).await;
    write(&d, "x", &[0], &arr(&[2], vec![1, 2])).await;
    c.flush().await.unwrap();
    matches_err(&loc.try_create(StoreConfig::default()).await.map(|_| ()), "create over a store with data", |e| matches!(e.detail(), Some(ErrorDetail::StoreAlreadyExists(_))));
    let r = loc.open().await;
    assert_eq!(r.list_datasets(), ["d"]);
    assert_reads(&ds(&r, "d").await, "x", &arr(&[2], vec![1, 2]), "after refused create").await;

    // Orphan array files without a metadata file also count as a store.
    let loc2 = make();
    loc2.store.put(&loc2.path("x/data.1.af"), PutPayload::from_static(b"not really")).await.unwrap();
    matches_err(&loc2.try_create(StoreConfig::default()).await.map(|_| ()), "create over orphan array files", |e| matches!(e.detail(), Some(ErrorDetail::StoreAlreadyExists(_))));
    assert_eq!(loc2.files().await, ["x/data.1.af"]);
}

/// create/open/delete/list datasets; insertion order; names; persistence.
pub async fn dataset_lifecycle(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    for n in ["c", "a", "b"] {
        let v = a.create_dataset(n).await.unwrap();
        assert_eq!(v.name(), n);
        assert!(v.list_arrays().is_empty());
    }
    assert_eq!(a.list_datasets(), ["c", "a", "b"], "insertion order");
    assert!(a.dataset_exists("a"));
    matches_err(&a.create_dataset("a").await.map(|_| ()), "duplicate dataset", |e| matches!(e, Error::DatasetAlreadyExists(n) if n == "a"));
    matches_err(&a.open_dataset("nope").await.map(|_| ()), "open missing dataset", |e| matches!(e, Error::DatasetNotFound(n) if n == "nope"));
    matches_err(&a.delete_dataset("nope").await, "delete missing dataset", |e| matches!(e, Error::DatasetNotFound(n) if n == "nope"));
    for bad in ["", "a/b", "_x", "_", "..", ".", "/abs"] {
        matches_err(&a.create_dataset(bad).await.map(|_| ()), &format!("create_dataset({bad:?})"), |e| matches!(e, Error::InvalidName(_)));
    }
    for good in ["my-set", "lat.lon", "a..b", ".hidden", "with space", "ünï"] {
        a.create_dataset(good).await.unwrap_or_else(|e| panic!("create_dataset({good:?}): {e}"));
    }
    assert_eq!(a.list_datasets(), ["c", "a", "b", "my-set", "lat.lon", "a..b", ".hidden", "with space", "ünï"]);

    a.delete_dataset("a").await.unwrap();
    assert!(!a.dataset_exists("a"));
    assert_eq!(a.list_datasets(), ["c", "b", "my-set", "lat.lon", "a..b", ".hidden", "with space", "ünï"], "others keep their order");
    a.flush().await.unwrap();

    let mut r = loc.open().await;
    assert_eq!(r.list_datasets(), ["c", "b", "my-set", "lat.lon", "a..b", ".hidden", "with space", "ünï"]);
    assert!(!r.dataset_exists("a"));
    r.create_dataset("a").await.unwrap();
    r.delete_dataset("c").await.unwrap();
    assert_eq!(r.list_datasets(), ["b", "my-set", "lat.lon", "a..b", ".hidden", "with space", "ünï", "a"], "re-created name goes last");
    r.flush().await.unwrap();
    assert_eq!(loc.open().await.list_datasets(), ["b", "my-set", "lat.lon", "a..b", ".hidden", "with space", "ünï", "a"]);

    // A view of a deleted dataset refuses mutations (0.10 re-created it: D8).
    let mut v = ds(&r, "b").await;
    r.delete_dataset("b").await.unwrap();
    matches_err(&v.try_set_attribute("k", Attr::Int64(1)), "set_attribute on deleted dataset", |e| matches!(e, Error::DatasetNotFound(_)));
    matches_err(&v.define_array::<f32>("x", dims(&["i"]), vec![2], None, None).await, "define_array on deleted dataset", |e| matches!(e, Error::DatasetNotFound(_)));
    assert!(!r.dataset_exists("b"), "a stale view must not resurrect its dataset");
}

/// Every supported element type, chunked with edge chunks, before and after flush+reopen.
pub async fn dtypes_roundtrip(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();

    let f32v = arr(&[5, 7], (0..35).map(|i| i as f32 * 0.5 - 3.25).collect());
    let f64v = arr(&[4, 4], (0..16).map(|i| (i as f64).sqrt() * 1e300 - 7.0).collect());
    let i32v = arr(&[10], vec![i32::MIN, -5, -1, 0, 1, 2, 3, 1_000_000, 42, i32::MAX]);
    let u8v = arr(&[3, 3, 3], (0..27u8).map(|i| i.wrapping_mul(37)).collect());
    let i64v = arr(&[6], vec![i64::MIN, -1, 0, 1, 1 << 40, i64::MAX]);
    let tsv = arr(&[4], vec![TimestampNs(1_700_000_000_000_000_000), TimestampNs(-1), TimestampNs(i64::MIN), TimestampNs(0)]);
    let sv = arr(&[5], strings(&["cat", "", "elephant", "ünïcødé ✓", &"x".repeat(100)]));
    let s2v = arr(&[2, 3], strings(&["a", "bb", "ccc", "", "ee", "f f"]));
    let bv = arr(&[2, 5], vec![true, false, false, true, true, false, true, false, true, true]);

    define::<f32>(&d, "f32", &["y", "x"], &[5, 7], Some(&[2, 3]), None).await;
    define::<f64>(&d, "f64", &["y", "x"], &[4, 4], Some(&[3, 3]), None).await;
    define::<i32>(&d, "i32", &["i"], &[10], Some(&[4]), None).await;
    define::<u8>(&d, "u8", &["a", "b", "c"], &[3, 3, 3], Some(&[2, 2, 2]), None).await;
    define::<i64>(&d, "i64", &["i"], &[6], None, None).await;
    define::<TimestampNs>(&d, "time", &["t"], &[4], Some(&[3]), None).await;
    define::<String>(&d, "names", &["i"], &[5], Some(&[2]), None).await;
    define::<String>(&d, "grid_s", &["y", "x"], &[2, 3], Some(&[1, 2]), None).await;
    define::<bool>(&d, "flags", &["y", "x"], &[2, 5], Some(&[2, 2]), None).await;

    write(&d, "f32", &[0, 0], &f32v).await;
    write(&d, "f64", &[0, 0], &f64v).await;
    write(&d, "i32", &[0], &i32v).await;
    write(&d, "u8", &[0, 0, 0], &u8v).await;
    write(&d, "i64", &[0], &i64v).await;
    write(&d, "time", &[0], &tsv).await;
    write(&d, "names", &[0], &sv).await;
    write(&d, "grid_s", &[0, 0], &s2v).await;
    write(&d, "flags", &[0, 0], &bv).await;

    let order = ["f32", "f64", "i32", "u8", "i64", "time", "names", "grid_s", "flags"];
    for (pass, a) in [
        ("before flush", a.clone()),
        ("after flush+reopen", {
            a.flush().await.unwrap();
            loc.open().await
        }),
    ] {
        let mut d = ds(&a, "d").await;
        assert_eq!(d.list_arrays(), order, "{pass}: dataset arrays in insertion order");
        assert_eq!(a.list_arrays(), ["f32", "f64", "flags", "grid_s", "i32", "i64", "names", "time", "u8"], "{pass}: store arrays sorted");
        assert_reads(&d, "f32", &f32v, pass).await;
        assert_reads(&d, "f64", &f64v, pass).await;
        assert_reads(&d, "i32", &i32v, pass).await;
        assert_reads(&d, "u8", &u8v, pass).await;
        assert_reads(&d, "i64", &i64v, pass).await;
        assert_reads(&d, "time", &tsv, pass).await;
        assert_reads(&d, "names", &sv, pass).await;
        assert_reads(&d, "grid_s", &s2v, pass).await;
        assert_reads(&d, "flags", &bv, pass).await;
        // An edge-chunk region of the chunked 2-D array.
        assert_eq!(read::<f32>(&d, "f32", &[4, 5], &[1, 2]).await, arr(&[1, 2], vec![f32v[[4, 5]], f32v[[4, 6]]]), "{pass}: edge chunk");
        assert_eq!(read::<String>(&d, "names", &[1], &[3]).await, arr(&[3], strings(&["", "elephant", "ünïcødé ✓"])), "{pass}: string region");

        let want: [(&str, DType, Vec<usize>, Vec<usize>, Vec<&str>); 9] = [
            ("f32", DType::Float32, vec![5, 7], vec![2, 3], vec!["y", "x"]),
            ("f64", DType::Float64, vec![4, 4], vec![3, 3], vec!["y", "x"]),
            ("i32", DType::Int32, vec![10], vec![4], vec!["i"]),
            ("u8", DType::UInt8, vec![3, 3, 3], vec![2, 2, 2], vec!["a", "b", "c"]),
            ("i64", DType::Int64, vec![6], vec![6], vec!["i"]),
            ("time", DType::TimestampNs, vec![4], vec![3], vec!["t"]),
            ("names", DType::String, vec![5], vec![2], vec!["i"]),
            ("grid_s", DType::String, vec![2, 3], vec![1, 2], vec!["y", "x"]),
            ("flags", DType::Bool, vec![2, 5], vec![2, 2], vec!["y", "x"]),
        ];
        for (name, dtype, shape, chunk, dn) in want {
            let m = d.array_meta(name).unwrap_or_else(|| panic!("{pass}: array_meta({name})"));
            assert_eq!(m.dtype, dtype, "{pass}: {name} dtype");
            assert_eq!(m.shape, shape, "{pass}: {name} shape");
            assert_eq!(m.chunk_shape, chunk, "{pass}: {name} chunk_shape (defaults to shape)");
            assert_eq!(m.dimension_names, dn, "{pass}: {name} dims");
            assert_eq!(m.codec, Codec::Zstd, "{pass}: {name} codec");
            assert_eq!(a.array_dtype(name), Some(dtype), "{pass}: array_dtype({name})");
        }
        assert!(d.array_meta("nope").is_none());
        assert!(a.array_dtype("nope").is_none());
        assert!(d.read_array::<f32>("nope", vec![], vec![]).await.unwrap().is_none(), "{pass}: unknown array reads as None");

        // dtype must match exactly.
        matches_err(&d.read_array::<f64>("f32", vec![], vec![]).await, "read f32 as f64", |e| matches!(e.detail(), Some(ErrorDetail::DTypeMismatch { .. })));
        matches_err(&d.read_array::<i64>("time", vec![], vec![]).await, "read timestamps as i64", |e| matches!(e.detail(), Some(ErrorDetail::DTypeMismatch { .. })));
        matches_err(&d.write_array::<i32>("f32", vec![0, 0], arr(&[1, 1], vec![1]).view()).await, "write i32 into f32", |e| {
            matches!(e.detail(), Some(ErrorDetail::DTypeMismatch { .. }))
        });
    }
}

/// Partial writes (read-modify-write) before and after a flush; the read-region convention.
pub async fn partial_writes_and_regions(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    let shape = [6usize, 8];
    define::<f64>(&d, "v", &["y", "x"], &shape, Some(&[4, 3]), Some(FillValue::Float(-1.0))).await;
    let mut model = Model::new(&shape, -1.0f64);
    assert_reads(&d, "v", &model.full(), "fresh array is all fill").await;

    let block = |base: f64, sh: &[usize]| arr(sh, (0..sh.iter().product::<usize>()).map(|i| base + i as f64).collect::<Vec<f64>>());
    let w1 = block(100.0, &[2, 5]);
    write(&d, "v", &[1, 2], &w1).await;
    model.write(&[1, 2], &w1);
    let w2 = block(200.0, &[3, 3]);
    write(&d, "v", &[0, 0], &w2).await;
    model.write(&[0, 0], &w2);
    assert_reads(&d, "v", &model.full(), "two overlapping pending writes").await;

    a.flush().await.unwrap();
    let flushed = model.clone();
    assert_reads(&d, "v", &model.full(), "after flush").await;
    // Partial chunks over committed data: the rest of each chunk must survive.
    let w3 = block(300.0, &[2, 3]);
    write(&d, "v", &[4, 5], &w3).await;
    model.write(&[4, 5], &w3);
    let w4 = block(999.0, &[1, 1]);
    write(&d, "v", &[5, 7], &w4).await;
    model.write(&[5, 7], &w4);
    let w5 = block(400.0, &[1, 8]);
    write(&d, "v", &[2, 0], &w5).await;
    model.write(&[2, 0], &w5);
    assert_reads(&d, "v", &model.full(), "partial writes over committed layer").await;
    assert_reads(&ds(&loc.open().await, "d").await, "v", &flushed.full(), "fresh open sees only the first flush").await;
    a.flush().await.unwrap();
    let r = loc.open().await;
    let mut rd = ds(&r, "d").await;
    assert_reads(&rd, "v", &model.full(), "after second flush + reopen").await;

    // Empty writes do nothing.
    rd.write_array::<f64>("v", vec![0, 0], ArrayD::<f64>::zeros(IxDyn(&[0, 3])).view()).await.unwrap();
    // Out-of-bounds and wrong-rank writes are errors and change nothing.
    matches_err(&rd.write_array::<f64>("v", vec![5, 6], block(0.0, &[2, 2]).view()).await, "out-of-bounds write", |e| matches!(e.detail(), Some(ErrorDetail::Invalid(_))));
    matches_err(&rd.write_array::<f64>("v", vec![0], block(0.0, &[2]).view()).await, "rank-1 write into rank 2", |e| matches!(e.detail(), Some(ErrorDetail::Invalid(_))));
    matches_err(&rd.write_array::<f64>("nope", vec![0, 0], block(0.0, &[1, 1]).view()).await, "write undeclared", |e| matches!(e, Error::ArrayNotFound(_)));
    assert_reads(&rd, "v", &model.full(), "after refused writes").await;

    // Region reads: start/shape convention with clamping (§1.10).
    let cases: [(&[usize], &[usize], Vec<usize>, Vec<usize>); 8] = [
        (&[1, 2], &[2, 4], vec![1, 2], vec![2, 4]),   // plain sub-box
        (&[4, 6], &[10, 10], vec![4, 6], vec![2, 2]), // oversized: clamped
        (&[7, 0], &[1, 1], vec![6, 0], vec![0, 1]),   // start past the end: zero-length axis
        (&[1], &[2, 2], vec![0, 0], vec![2, 2]),      // wrong-rank start: zeros
        (&[], &[], vec![0, 0], vec![6, 8]),           // both empty: everything
        (&[2, 3], &[], vec![2, 3], vec![4, 5]),       // start only: to the end
        (&[1, 1], &[2], vec![1, 1], vec![5, 7]),      // wrong-rank shape: full extent from start
        (&[0, 7], &[6, 1], vec![0, 7], vec![6, 1]),   // one column across chunk rows
    ];
    for (start, sh, lo, ext) in cases {
        let got = read::<f64>(&rd, "v", start, sh).await;
        assert_eq!(got, model.region(&lo, &ext), "read start {start:?} shape {sh:?}");
    }
}

/// 0-D arrays: shape [], one element, stats row_count 1.
pub async fn zero_d(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    define::<f32>(&d, "answer", &[], &[], None, None).await;
    define::<String>(&d, "station", &[], &[], None, None).await;
    define::<i64>(&d, "unset", &[], &[], None, Some(FillValue::Int(-9))).await;
    write(&d, "answer", &[], &ndarray::arr0(42.0f32).into_dyn()).await;
    write(&d, "station", &[], &ndarray::arr0("KNMI".to_string()).into_dyn()).await;
    assert!(stats(&d, "answer").await.is_none(), "no stats before a flush");
    a.flush().await.unwrap();
    for (pass, a) in [("same handle", a.clone()), ("reopened", loc.open().await)] {
        let d = ds(&a, "d").await;
        let v = read_all::<f32>(&d, "answer").await;
        assert_eq!(v.ndim(), 0, "{pass}");
        assert_eq!(v, ndarray::arr0(42.0f32).into_dyn(), "{pass}");
        assert_eq!(read_all::<String>(&d, "station").await, ndarray::arr0("KNMI".to_string()).into_dyn(), "{pass}");
        assert_eq!(read_all::<i64>(&d, "unset").await, ndarray::arr0(-9i64).into_dyn(), "{pass}: unwritten 0-D reads the fill");
        let m = d.array_meta("answer").unwrap();
        assert_eq!((m.shape.len(), m.chunk_shape.len(), m.dimension_names.len()), (0, 0, 0), "{pass}");
        let s = stats(&d, "answer").await.unwrap_or_else(|| panic!("{pass}: stats of a written 0-D array"));
        assert_eq!(stat_tuple(&s), (1, 0, Some(StatValue::Float(42.0)), Some(StatValue::Float(42.0))), "{pass}");
    }
}

/// Unwritten cells read as the fill (cast per dtype family), before and after persistence.
pub async fn fill_values(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    define::<i32>(&d, "i32", &["i"], &[6], Some(&[2]), Some(FillValue::Int(-1))).await;
    define::<u8>(&d, "u8", &["i"], &[4], Some(&[2]), Some(FillValue::UInt(255))).await;
    define::<f32>(&d, "f32nan", &["i"], &[4], Some(&[2]), Some(FillValue::Float(f64::NAN))).await;
    define::<f64>(&d, "f64int", &["i"], &[3], Some(&[1]), Some(FillValue::Int(7))).await;
    define::<i64>(&d, "nofill", &["i"], &[3], Some(&[2]), None).await;
    define::<TimestampNs>(&d, "nat", &["t"], &[3], Some(&[1]), Some(FillValue::TimestampNs(i64::MIN))).await;
    define::<String>(&d, "s", &["i"], &[3], Some(&[1]), Some(FillValue::String("zz".into()))).await;
    define::<bool>(&d, "b", &["i"], &[3], Some(&[2]), Some(FillValue::Bool(true))).await;
    define::<u8>(&d, "u8bool", &["i"], &[2], None, Some(FillValue::Bool(true))).await;
    define::<i32>(&d, "i32float", &["i"], &[2], None, Some(FillValue::Float(2.9))).await;

    write(&d, "i32", &[2], &arr(&[2], vec![5, 6])).await;
    write(&d, "u8", &[0], &arr(&[1], vec![7u8])).await;
    write(&d, "f32nan", &[3], &arr(&[1], vec![1.5f32])).await;
    write(&d, "nofill", &[2], &arr(&[1], vec![4i64])).await;
    write(&d, "nat", &[1], &arr(&[1], vec![TimestampNs(5)])).await;
    write(&d, "s", &[0], &arr(&[1], strings(&["here"]))).await;
    write(&d, "b", &[2], &arr(&[1], vec![false])).await;

    let check = |pass: &'static str, a: Atlas| async move {
        let d = ds(&a, "d").await;
        assert_reads(&d, "i32", &arr(&[6], vec![-1, -1, 5, 6, -1, -1]), pass).await;
        assert_reads(&d, "u8", &arr(&[4], vec![7u8, 255, 255, 255]), pass).await;
        let f = read_all::<f32>(&d, "f32nan").await;
        assert!(f.iter().take(3).all(|x| x.is_nan()) && f[[3]] == 1.5, "{pass}: f32 NaN fill: got {f:?}");
        assert_reads(&d, "f64int", &arr(&[3], vec![7.0f64; 3]), pass).await;
        assert_reads(&d, "nofill", &arr(&[3], vec![0i64, 0, 4]), pass).await;
        assert_reads(&d, "nat", &arr(&[3], vec![TimestampNs(i64::MIN), TimestampNs(5), TimestampNs(i64::MIN)]), pass).await;
        assert_reads(&d, "s", &arr(&[3], strings(&["here", "", ""])), &format!("{pass} (string fills are ignored by reads)")).await;
        assert_reads(&d, "b", &arr(&[3], vec![true, true, false]), pass).await;
        assert_reads(&d, "u8bool", &arr(&[2], vec![1u8, 1]), pass).await;
        assert_reads(&d, "i32float", &arr(&[2], vec![2i32, 2]), pass).await;

        let fv = |x: &str| {
            let d = d.clone();
            let x = x.to_string();
            async move { d.array_fill_value(&x).await.unwrap_or_else(|e| panic!("array_fill_value {x}: {e}")) }
        };
        assert_eq!(fv("i32").await, Some(FillValue::Int(-1)), "{pass}");
        assert_eq!(fv("u8").await, Some(FillValue::UInt(255)), "{pass}");
        assert_eq!(fv("f32nan").await, Some(FillValue::Float(f64::NAN)), "{pass} (NaN equals NaN by bits)");
        assert_eq!(fv("nat").await, Some(FillValue::TimestampNs(i64::MIN)), "{pass}");
        assert_eq!(fv("s").await, Some(FillValue::String("zz".into())), "{pass}");
        assert_eq!(fv("b").await, Some(FillValue::Bool(true)), "{pass}");
        assert_eq!(fv("nofill").await, None, "{pass}");
        assert_eq!(fv("f64int").await, Some(FillValue::Int(7)), "{pass}: fill of a never-written array");
        assert_eq!(fv("undeclared").await, None, "{pass}");
    };
    check("before flush", a.clone()).await;
    a.flush().await.unwrap();
    check("after flush", a.clone()).await;
    check("after reopen", loc.open().await).await;
}

/// All five attribute kinds, order, overwrite, removal; persistence; JSON limits.
pub async fn attributes(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    let e = a.create_dataset("e").await.unwrap();
    assert_eq!(d.get_attribute("missing"), None);
    let ts = 1_700_000_000_123_456_789i64;
    let set = |k: &str, v: Attr| d.try_set_attribute(k, v).unwrap_or_else(|e| panic!("set_attribute {k}: {e}"));
    set("flag", Attr::Bool(true));
    set("when", Attr::TimestampNanoseconds(ts));
    set("station", Attr::String("KNMI".into()));
    set("month", Attr::Int64(1));
    set("scale", Attr::Float64(0.5));
    set("whole", Attr::Float64(2.0));
    set("min", Attr::Int64(i64::MIN));
    set("gone", Attr::String("soon".into()));
    set("looks_like_time", Attr::String("2023-11-14T22:13:20Z".into()));
    set("month", Attr::Int64(2)); // overwrite keeps the position
    assert_eq!(d.remove_attribute("gone").unwrap(), true);
    assert_eq!(d.remove_attribute("gone").unwrap(), false);
    e.try_set_attribute("only_e", Attr::Bool(false)).unwrap();
    matches_err(
        &d.try_set_attribute("nan", Attr::Float64(f64::NAN)),
        "NaN attribute in a JSON store",
        |e| matches!(e.detail(), Some(ErrorDetail::NonFiniteAttribute(k)) if k == "nan"),
    );
    matches_err(&d.try_set_attribute("inf", Attr::Float64(f64::INFINITY)), "Inf attribute in a JSON store", |e| matches!(e.detail(), Some(ErrorDetail::NonFiniteAttribute(_))));
    assert_eq!(d.get_attribute("month"), Some(Attr::Int64(2)));

    let before: Vec<(String, Attr)> = vec![
        ("flag".into(), Attr::Bool(true)),
        ("when".into(), Attr::TimestampNanoseconds(ts)),
        ("station".into(), Attr::String("KNMI".into())),
        ("month".into(), Attr::Int64(2)),
        ("scale".into(), Attr::Float64(0.5)),
        ("whole".into(), Attr::Float64(2.0)),
        ("min".into(), Attr::Int64(i64::MIN)),
        ("looks_like_time".into(), Attr::String("2023-11-14T22:13:20Z".into())),
    ];
    assert_eq!(d.attributes().into_iter().collect::<Vec<_>>(), before, "in memory");
    assert_eq!(d.meta().attributes.into_iter().collect::<Vec<_>>(), before, "meta() in memory");
    a.flush().await.unwrap();

    let mut r = loc.open().await;
    let rd = ds(&r, "d").await;
    let mut after = before.clone();
    // §1.5: an RFC 3339 string reloads as a timestamp (0.10's untagged order).
    after[7].1 = Attr::TimestampNanoseconds(1_700_000_000_000_000_000);
    assert_eq!(rd.attributes().into_iter().collect::<Vec<_>>(), after, "after reopen");
    assert_eq!(rd.get_attribute("whole"), Some(Attr::Float64(2.0)), "2.0 stays a float");
    assert_eq!(ds(&r, "e").await.attributes().into_iter().collect::<Vec<_>>(), vec![("only_e".to_string(), Attr::Bool(false))]);

    // A change after reopen persists too.
    rd.try_set_attribute("scale", Attr::Float64(-0.25)).unwrap();
    rd.remove_attribute("flag").unwrap();
    r.flush().await.unwrap();
    let rd2 = ds(&loc.open().await, "d").await;
    assert_eq!(rd2.get_attribute("scale"), Some(Attr::Float64(-0.25)));
    assert_eq!(rd2.get_attribute("flag"), None);
    assert_eq!(rd2.attributes().keys().next().map(String::as_str), Some("when"));
}

/// Nothing is persisted without a flush; a flush persists meta and data.
pub async fn flush_boundary(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    for n in ["one", "two"] {
        let d = a.create_dataset(n).await.unwrap();
        define::<f32>(&d, "temp", &["y", "x"], &[4, 4], Some(&[2, 2]), None).await;
        write(&d, "temp", &[0, 0], &arr(&[4, 4], vec![if n == "one" { 42.0f32 } else { 7.0 }; 16])).await;
        d.try_set_attribute("month", Attr::Int64(1)).unwrap();
    }
    assert!(a.has_pending().await);
    let fresh = loc.open().await;
    assert!(fresh.list_datasets().is_empty(), "unflushed datasets must not be visible");
    assert!(fresh.list_arrays().is_empty());
    let files = loc.files().await;
    assert_eq!(files, ["atlas.json"], "nothing but the metadata written by create before a flush");

    // Also from an empty location opened (not created): nothing at all is written.
    let loc2 = make();
    let mut b = loc2.open().await;
    let d = b.create_dataset("x").await.unwrap();
    define::<i32>(&d, "v", &["i"], &[3], None, None).await;
    write(&d, "v", &[0], &arr(&[3], vec![1, 2, 3])).await;
    assert!(loc2.open().await.list_datasets().is_empty());
    assert!(
        !loc2.files().await.iter().any(|f| f.starts_with("atlas.") || f.ends_with(".stats") || f.contains("data.1")),
        "no metadata, sidecar or stats before a flush: {:?}",
        loc2.files().await
    );
    drop(b); // dropped without flush: abandoned
    assert!(loc2.open().await.list_datasets().is_empty());

    a.flush().await.unwrap();
    assert!(!a.has_pending().await);
    let r = loc.open().await;
    assert_eq!(r.list_datasets(), ["one", "two"]);
    assert_eq!(r.list_arrays(), ["temp"]);
    for (n, v) in [("one", 42.0f32), ("two", 7.0)] {
        let d = ds(&r, n).await;
        assert_reads(&d, "temp", &arr(&[4, 4], vec![v; 16]), "after flush").await;
        assert_eq!(d.get_attribute("month"), Some(Attr::Int64(1)));
        let m = d.array_meta("temp").unwrap();
        assert_eq!((m.dtype, m.shape, m.chunk_shape, m.dimension_names), (DType::Float32, vec![4, 4], vec![2, 2], dims(&["y", "x"])));
    }
    // Unflushed changes on top of flushed state stay invisible.
    ds(&a, "one").await.write_array::<f32>("temp", vec![0, 0], arr(&[1, 1], vec![-1.0f32]).view()).await.unwrap();
    a.create_dataset("three").await.unwrap();
    let r2 = loc.open().await;
    assert_eq!(r2.list_datasets(), ["one", "two"]);
    assert_reads(&ds(&r2, "one").await, "temp", &arr(&[4, 4], vec![42.0f32; 16]), "unflushed overwrite").await;
}

/// Stats: None before a flush, the 0.10 definitions after, surviving reopen.
pub async fn stats_after_flush(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    define::<f32>(&d, "f32", &["i"], &[4], None, None).await;
    define::<i32>(&d, "i32fill", &["i"], &[6], Some(&[4]), Some(FillValue::Int(-1))).await;
    define::<i32>(&d, "i32", &["i"], &[4], None, None).await;
    define::<f64>(&d, "f64nan", &["i"], &[4], None, Some(FillValue::Float(f64::NAN))).await;
    define::<i64>(&d, "time", &["t"], &[3], None, None).await;
    define::<u8>(&d, "u8", &["i"], &[3], None, None).await;
    define::<TimestampNs>(&d, "ts", &["t"], &[2], None, None).await;
    define::<String>(&d, "s", &["i"], &[3], None, None).await;
    define::<f64>(&d, "half", &["y", "x"], &[4, 6], Some(&[2, 6]), None).await;
    define::<f64>(&d, "never", &["i"], &[5], None, None).await;
    write(&d, "f32", &[0], &arr(&[4], vec![1.0f32, 3.0, 2.0, 4.0])).await;
    write(&d, "i32fill", &[0], &arr(&[6], vec![5, -1, 7, -1, 2, 9])).await;
    write(&d, "i32", &[0], &arr(&[4], vec![5, -1, 7, 9])).await;
    write(&d, "f64nan", &[0], &arr(&[4], vec![1.0, f64::NAN, 3.0, f64::NAN])).await;
    write(&d, "time", &[0], &arr(&[3], vec![100i64, 300, 200])).await;
    write(&d, "u8", &[0], &arr(&[3], vec![9u8, 3, 200])).await;
    write(&d, "ts", &[0], &arr(&[2], vec![TimestampNs(50), TimestampNs(-50)])).await;
    write(&d, "s", &[0], &arr(&[3], strings(&["pear", "apple", "zoo"]))).await;
    write(&d, "half", &[0, 0], &arr(&[2, 6], (1..=12).map(f64::from).collect())).await;
    assert!(stats(&d, "f32").await.is_none(), "stats are None before the first flush");
    assert!(stats(&d, "undeclared").await.is_none());
    a.flush().await.unwrap();

    let want: Vec<(&str, (u64, u64, Option<StatValue>, Option<StatValue>))> = vec![
        ("f32", (4, 0, Some(StatValue::Float(1.0)), Some(StatValue::Float(4.0)))),
        ("i32fill", (6, 2, Some(StatValue::Int(2)), Some(StatValue::Int(9)))),
        ("i32", (4, 0, Some(StatValue::Int(-1)), Some(StatValue::Int(9)))),
        ("f64nan", (4, 2, Some(StatValue::Float(1.0)), Some(StatValue::Float(3.0)))),
        ("time", (3, 0, Some(StatValue::Int(100)), Some(StatValue::Int(300)))),
        ("u8", (3, 0, Some(StatValue::UInt(3)), Some(StatValue::UInt(200)))),
        ("ts", (2, 0, Some(StatValue::TimestampNs(-50)), Some(StatValue::TimestampNs(50)))),
        ("s", (3, 0, Some(StatValue::Bytes(b"apple".to_vec())), Some(StatValue::Bytes(b"zoo".to_vec())))),
        ("half", (24, 12, Some(StatValue::Float(1.0)), Some(StatValue::Float(12.0)))),
    ];
    for (pass, a) in [("after flush", a.clone()), ("after reopen", loc.open().await)] {
        let d = ds(&a, "d").await;
        for (name, w) in &want {
            let s = stats(&d, name).await.unwrap_or_else(|| panic!("{pass}: stats of {name}"));
            assert_eq!(&stat_tuple(&s), w, "{pass}: stats of {name}");
            assert_eq!(s.name, "d", "{pass}: stats entries are named after the dataset");
        }
        assert!(stats(&d, "never").await.is_none(), "{pass}: defined but never written: no stats until compact");
        assert!(stats(&d, "undeclared").await.is_none(), "{pass}");
    }

    // Stats follow later flushes.
    write(&d, "f32", &[1], &arr(&[1], vec![-8.0f32])).await;
    assert_eq!(stat_tuple(&stats(&d, "f32").await.unwrap()).2, Some(StatValue::Float(1.0)), "stale between write and flush");
    a.flush().await.unwrap();
    assert_eq!(stat_tuple(&stats(&d, "f32").await.unwrap()), (4, 0, Some(StatValue::Float(-8.0)), Some(StatValue::Float(4.0))));
    let r = loc.open().await;
    assert_eq!(stat_tuple(&stats(&ds(&r, "d").await, "f32").await.unwrap()), (4, 0, Some(StatValue::Float(-8.0)), Some(StatValue::Float(4.0))));
}

/// delete_array: gone at once, persists, others intact; re-definition starts clean.
pub async fn delete_array_persists(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let mut d = a.create_dataset("d").await.unwrap();
    define::<i32>(&d, "keep", &["i"], &[4], Some(&[2]), None).await;
    define::<i32>(&d, "drop", &["i"], &[4], Some(&[2]), Some(FillValue::Int(-1))).await;
    write(&d, "keep", &[0], &arr(&[4], vec![1, 2, 3, 4])).await;
    write(&d, "drop", &[0], &arr(&[4], vec![5, 6, 7, 8])).await;
    a.flush().await.unwrap();

    d.delete_array("drop").await.unwrap();
    assert_eq!(d.list_arrays(), ["keep"]);
    assert!(d.array_meta("drop").is_none());
    assert!(d.read_array::<i32>("drop", vec![], vec![]).await.unwrap().is_none(), "deleted array reads as None at once");
    assert_eq!(a.list_arrays(), ["keep"]);
    matches_err(&d.delete_array("drop").await, "delete twice", |e| matches!(e, Error::ArrayNotFound(_)));
    matches_err(&d.delete_array("never").await, "delete unknown", |e| matches!(e, Error::ArrayNotFound(_)));
    assert_eq!(loc.open().await.list_arrays(), ["drop", "keep"], "the delete is not persisted before a flush");
    a.flush().await.unwrap();

    let mut r = loc.open().await;
    let mut rd = ds(&r, "d").await;
    assert_eq!(rd.list_arrays(), ["keep"]);
    assert_eq!(r.list_arrays(), ["keep"]);
    assert!(rd.read_array::<i32>("drop", vec![], vec![]).await.unwrap().is_none());
    assert_reads(&rd, "keep", &arr(&[4], vec![1, 2, 3, 4]), "other array after delete").await;

    // Re-define the same name: no resurrection of the old chunks (D1), no orphan clash (D3).
    define::<i32>(&rd, "drop", &["i"], &[4], Some(&[2]), Some(FillValue::Int(-1))).await;
    write(&rd, "drop", &[0], &arr(&[2], vec![9, 9])).await;
    assert_reads(&rd, "drop", &arr(&[4], vec![9, 9, -1, -1]), "re-defined array before flush").await;
    r.flush().await.unwrap();
    assert_reads(&ds(&loc.open().await, "d").await, "drop", &arr(&[4], vec![9, 9, -1, -1]), "re-defined array after flush + reopen").await;

    // Delete + re-define in the same session, with a different dtype.
    rd.delete_array("drop").await.unwrap();
    define::<f64>(&rd, "drop", &["i"], &[3], None, None).await;
    assert_reads(&rd, "drop", &arr(&[3], vec![0.0f64; 3]), "re-defined with another dtype").await;
    r.flush().await.unwrap();
    let rd3 = ds(&loc.open().await, "d").await;
    assert_eq!(rd3.array_meta("drop").unwrap().dtype, DType::Float64);
    assert_reads(&rd3, "drop", &arr(&[3], vec![0.0f64; 3]), "re-defined with another dtype, reopened").await;
}

/// delete_dataset: other datasets sharing arrays keep theirs; persists; the name can be reused.
pub async fn delete_dataset_persists(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    for (n, v) in [("a", 1.0f32), ("b", 2.0), ("c", 3.0)] {
        let d = a.create_dataset(n).await.unwrap();
        define::<f32>(&d, "temp", &["i"], &[3], None, None).await;
        write(&d, "temp", &[0], &arr(&[3], vec![v; 3])).await;
        d.try_set_attribute("v", Attr::Float64(v as f64)).unwrap();
    }
    let only_a = ds(&a, "a").await;
    define::<i32>(&only_a, "only_a", &["i"], &[2], None, None).await;
    write(&only_a, "only_a", &[0], &arr(&[2], vec![4, 5])).await;
    a.flush().await.unwrap();
    assert_eq!(a.list_arrays(), ["only_a", "temp"]);

    a.delete_dataset("a").await.unwrap();
    assert_eq!(a.list_datasets(), ["b", "c"]);
    assert_eq!(a.list_arrays(), ["temp"], "arrays only 'a' declared disappear");
    a.flush().await.unwrap();

    let mut r = loc.open().await;
    assert_eq!(r.list_datasets(), ["b", "c"]);
    assert_eq!(r.list_arrays(), ["temp"]);
    assert_reads(&ds(&r, "b").await, "temp", &arr(&[3], vec![2.0f32; 3]), "sibling after delete_dataset").await;
    assert_reads(&ds(&r, "c").await, "temp", &arr(&[3], vec![3.0f32; 3]), "sibling after delete_dataset").await;
    assert_eq!(ds(&r, "c").await.get_attribute("v"), Some(Attr::Float64(3.0)));

    // Re-create "a": its arrays start empty (no resurrection, no orphan clash).
    let na = r.create_dataset("a").await.unwrap();
    assert!(na.list_arrays().is_empty());
    assert!(na.attributes().is_empty());
    define::<f32>(&na, "temp", &["i"], &[3], None, Some(FillValue::Float(-5.0))).await;
    define::<i32>(&na, "only_a", &["i"], &[2], None, None).await;
    assert_reads(&na, "temp", &arr(&[3], vec![-5.0f32; 3]), "re-created dataset").await;
    assert_reads(&na, "only_a", &arr(&[2], vec![0i32; 2]), "re-created dataset").await;
    r.flush().await.unwrap();
    let mut r2 = loc.open().await;
    assert_eq!(r2.list_datasets(), ["b", "c", "a"]);
    assert_reads(&ds(&r2, "a").await, "temp", &arr(&[3], vec![-5.0f32; 3]), "re-created dataset, reopened").await;
    assert_reads(&ds(&r2, "a").await, "only_a", &arr(&[2], vec![0i32; 2]), "re-created dataset, reopened").await;
    assert_reads(&ds(&r2, "b").await, "temp", &arr(&[3], vec![2.0f32; 3]), "sibling, reopened").await;

    // Same-session delete + re-create without a flush in between.
    r2.delete_dataset("b").await.unwrap();
    let nb = r2.create_dataset("b").await.unwrap();
    define::<f32>(&nb, "temp", &["i"], &[3], None, None).await;
    assert_reads(&nb, "temp", &arr(&[3], vec![0.0f32; 3]), "same-session re-create").await;
    r2.flush().await.unwrap();
    assert_reads(&ds(&loc.open().await, "b").await, "temp", &arr(&[3], vec![0.0f32; 3]), "same-session re-create, reopened").await;
}

/// Compaction keeps values and leaves one base file plus stats per array directory.
pub async fn compaction(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let x = a.create_dataset("x").await.unwrap();
    let y = a.create_dataset("y").await.unwrap();
    let z = a.create_dataset("z").await.unwrap();
    for d in [&x, &y, &z] {
        define::<i32>(d, "v", &["i"], &[6], Some(&[2]), Some(FillValue::Int(-1))).await;
    }
    define::<String>(&x, "s", &["i"], &[3], Some(&[2]), None).await;
    define::<f64>(&y, "w", &["y", "x"], &[3, 3], Some(&[2, 2]), None).await;
    write(&x, "v", &[0], &arr(&[6], vec![1, 2, 3, 4, 5, 6])).await;
    write(&y, "v", &[0], &arr(&[2], vec![10, 11])).await;
    write(&z, "v", &[4], &arr(&[2], vec![20, 21])).await;
    write(&x, "s", &[0], &arr(&[3], strings(&["a", "bb", "ccc"]))).await;
    write(&y, "w", &[0, 0], &arr(&[3, 3], (0..9).map(f64::from).collect())).await;
    a.flush().await.unwrap();
    write(&x, "v", &[1], &arr(&[2], vec![-7, -8])).await;
    write(&y, "w", &[2, 2], &arr(&[1, 1], vec![99.0])).await;
    a.flush().await.unwrap();
    write(&y, "v", &[3], &arr(&[1], vec![12])).await;
    a.delete_dataset("z").await.unwrap();
    a.flush().await.unwrap();

    let vx = arr(&[6], vec![1, -7, -8, 4, 5, 6]);
    let vy = arr(&[6], vec![10, 11, -1, 12, -1, -1]);
    let s = arr(&[3], strings(&["a", "bb", "ccc"]));
    let mut w = (0..9).map(f64::from).collect::<Vec<_>>();
    w[8] = 99.0;
    let w = arr(&[3, 3], w);
    assert!(loc.array_dir("v").await.iter().any(|f| f == "data.3.af"), "three flushes touched v: {:?}", loc.array_dir("v").await);

    a.compact().await.unwrap();
    // Checked at the end, so that a listing problem does not hide value problems.
    let mut after_first_compact = vec![];
    for dir in ["v", "s", "w"] {
        after_first_compact.push((dir, loc.array_dir(dir).await));
    }
    assert_eq!(loc.files().await.iter().filter(|f| !f.contains('/')).collect::<Vec<_>>(), ["atlas.json"]);
    let check = |pass: &'static str, a: Atlas| {
        let (vx, vy, s, w) = (vx.clone(), vy.clone(), s.clone(), w.clone());
        async move {
            assert_eq!(a.list_datasets(), ["x", "y"], "{pass}");
            assert_reads(&ds(&a, "x").await, "v", &vx, pass).await;
            assert_reads(&ds(&a, "y").await, "v", &vy, pass).await;
            assert_reads(&ds(&a, "x").await, "s", &s, pass).await;
            assert_reads(&ds(&a, "y").await, "w", &w, pass).await;
            assert_eq!(stat_tuple(&stats(&ds(&a, "y").await, "v").await.unwrap()), (6, 3, Some(StatValue::Int(10)), Some(StatValue::Int(12))), "{pass}: stats of y/v");
            assert_eq!(stat_tuple(&stats(&ds(&a, "x").await, "v").await.unwrap()), (6, 0, Some(StatValue::Int(-8)), Some(StatValue::Int(6))), "{pass}: stats of x/v");
        }
    };
    check("after compact, same handle", a.clone()).await;
    check("after compact, reopened", loc.open().await).await;

    // Writes after compaction go to data.1.af again; a second compaction keeps the
    // newest bytes (0.10 served stale cached blocks here: D2).
    write(&y, "v", &[0], &arr(&[2], vec![2, 2])).await;
    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("v").await, ["data.1.af", "data.af", "data.stats"]);
    let vy2 = arr(&[6], vec![2, 2, -1, 12, -1, -1]);
    assert_reads(&y, "v", &vy2, "write after compact").await;
    a.compact().await.unwrap();
    assert_eq!(loc.array_dir("v").await, ["data.af", "data.stats"]);
    assert_reads(&y, "v", &vy2, "second compact, same handle").await;
    let mut r = loc.open().await;
    assert_reads(&ds(&r, "y").await, "v", &vy2, "second compact, reopened").await;
    assert_reads(&ds(&r, "x").await, "v", &vx, "second compact, reopened").await;
    // A defined-but-never-written entry gets stats at compact: all null (§1.14).
    let e = r.create_dataset("e").await.unwrap();
    define::<i32>(&e, "v", &["i"], &[5], None, None).await;
    r.flush().await.unwrap();
    assert!(stats(&e, "v").await.is_none(), "never written: no stats before compact");
    r.compact().await.unwrap();
    assert_eq!(stat_tuple(&stats(&e, "v").await.expect("stats of a never-written entry after compact")), (5, 5, None, None));
    assert_eq!(stat_tuple(&stats(&ds(&loc.open().await, "e").await, "v").await.expect("after reopen")), (5, 5, None, None));

    for (dir, files) in after_first_compact {
        assert_eq!(files, ["data.af", "data.stats"], "{dir}/ after the first compact (same handle that flushed)");
    }
}

/// Minimal: an array flushed once by this handle, then compacted by the same handle.
pub async fn compact_after_single_flush(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    define::<i32>(&d, "x", &["i"], &[2], None, None).await;
    write(&d, "x", &[0], &arr(&[2], vec![1, 2])).await;
    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.af", "data.stats"]);
    a.compact().await.unwrap();
    assert_reads(&d, "x", &arr(&[2], vec![1, 2]), "after compact").await;
    assert_reads(&ds(&loc.open().await, "d").await, "x", &arr(&[2], vec![1, 2]), "after compact, reopened").await;
    assert_eq!(loc.array_dir("x").await, ["data.af", "data.stats"], "x/ after flush + compact on one handle");
}

/// read_array_across and read_array_across_stacked.
pub async fn bulk_reads(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    for (i, n) in ["d0", "d1", "d2"].into_iter().enumerate() {
        let d = a.create_dataset(n).await.unwrap();
        define::<f32>(&d, "t", &["y", "x"], &[2, 3], Some(&[1, 2]), None).await;
        write(&d, "t", &[0, 0], &arr(&[2, 3], (0..6).map(|k| (i * 10 + k) as f32).collect())).await;
    }
    let odd = a.create_dataset("odd").await.unwrap();
    define::<f32>(&odd, "t", &["i"], &[4], None, None).await;
    let other = a.create_dataset("other").await.unwrap();
    define::<i32>(&other, "u", &["i"], &[1], None, None).await;
    let wrongtype = a.create_dataset("wrongtype").await.unwrap();
    define::<f64>(&wrongtype, "t", &["y", "x"], &[2, 3], None, None).await;
    a.flush().await.unwrap();
    let r = loc.open().await;
    let row = |i: usize| arr(&[2, 3], (0..6).map(|k| (i * 10 + k) as f32).collect::<Vec<_>>());

    for (pass, a) in [("same handle", a.clone()), ("reopened", r)] {
        let owned = |v: Vec<Option<ndarray::ArcArray<f32, IxDyn>>>| v.into_iter().map(|o| o.map(|a| a.into_owned())).collect::<Vec<_>>();
        let got = owned(a.read_array_across::<f32>("t", &names(&["d2", "missing", "d0", "other", "d1"]), vec![], vec![]).await.unwrap());
        assert_eq!(got, vec![Some(row(2)), None, Some(row(0)), None, Some(row(1))], "{pass}: across, input order, None for absent");
        let got = owned(a.read_array_across::<f32>("t", &names(&["d1", "d0"]), vec![1, 1], vec![5, 5]).await.unwrap());
        assert_eq!(got, vec![Some(arr(&[1, 2], vec![14.0, 15.0])), Some(arr(&[1, 2], vec![4.0, 5.0]))], "{pass}: across, clamped region");
        matches_err(&a.read_array_across::<f32>("t", &names(&["missing", "other"]), vec![], vec![]).await, "across with no qualifying dataset", |e| {
            matches!(e, Error::ArrayNotFound(_))
        });
        matches_err(&a.read_array_across::<f32>("t", &names(&["d0", "wrongtype"]), vec![], vec![]).await, "across with a dtype clash", |e| {
            matches!(e.detail(), Some(ErrorDetail::DTypeMismatch { .. }))
        });

        let st = a.read_array_across_stacked::<f32>("t", &names(&["d0", "d1", "d2"]), vec![], vec![]).await.unwrap();
        let mut want = vec![];
        for i in 0..3 {
            want.extend(row(i).iter().copied());
        }
        assert_eq!(st, arr(&[3, 2, 3], want), "{pass}: stacked");
        let st = a.read_array_across_stacked::<f32>("t", &names(&["d2", "d0"]), vec![0, 2], vec![2, 1]).await.unwrap();
        assert_eq!(st, arr(&[2, 2, 1], vec![22.0, 25.0, 2.0, 5.0]), "{pass}: stacked region");
        matches_err(&a.read_array_across_stacked::<f32>("t", &[], vec![], vec![]).await, "stacked, no names", |e| matches!(e, Error::ArrayNotFound(_)));
        matches_err(
            &a.read_array_across_stacked::<f32>("t", &names(&["d0", "other"]), vec![], vec![]).await,
            "stacked, dataset lacks the array",
            |e| matches!(e, Error::ArrayNotFound(m) if m.contains("other")),
        );
        matches_err(&a.read_array_across_stacked::<f32>("t", &names(&["d0", "missing"]), vec![], vec![]).await, "stacked, unknown dataset", |e| {
            matches!(e, Error::ArrayNotFound(_))
        });
        matches_err(&a.read_array_across_stacked::<f32>("t", &names(&["d0", "odd"]), vec![], vec![]).await, "stacked, shapes differ (0.10 panicked: D9)", |e| {
            matches!(e.detail(), Some(ErrorDetail::Invalid(_)))
        });
    }
}

/// Each flush with pending changes adds the next numbered sidecar.
pub async fn sidecar_numbering(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    define::<i64>(&d, "x", &["i"], &[4], Some(&[2]), None).await;
    define::<i64>(&d, "t[K]", &["i"], &[1], None, None).await; // directory name is percent-encoded
    write(&d, "x", &[0], &arr(&[4], vec![1i64, 2, 3, 4])).await;
    write(&d, "t[K]", &[0], &arr(&[1], vec![5i64])).await;
    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.af", "data.stats"]);
    assert_eq!(loc.array_dir("t%5BK%5D").await, ["data.1.af", "data.af", "data.stats"], "files: {:?}", loc.files().await);

    write(&d, "x", &[2], &arr(&[1], vec![30i64])).await;
    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.2.af", "data.af", "data.stats"]);
    assert_eq!(loc.array_dir("t%5BK%5D").await, ["data.1.af", "data.af", "data.stats"], "untouched array gets no sidecar");

    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.2.af", "data.af", "data.stats"], "nothing pending: no sidecar");
    d.try_set_attribute("k", Attr::Int64(1)).unwrap();
    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.2.af", "data.af", "data.stats"], "metadata-only flush: no sidecar");

    write(&d, "x", &[3], &arr(&[1], vec![40i64])).await;
    a.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.2.af", "data.3.af", "data.af", "data.stats"]);

    // Numbering continues in a new session.
    let mut r = loc.open().await;
    let rd = ds(&r, "d").await;
    assert_reads(&rd, "x", &arr(&[4], vec![1i64, 2, 30, 40]), "across three sidecars").await;
    assert_reads(&rd, "t[K]", &arr(&[1], vec![5i64]), "percent-encoded array").await;
    write(&rd, "x", &[0], &arr(&[1], vec![10i64])).await;
    r.flush().await.unwrap();
    assert_eq!(loc.array_dir("x").await, ["data.1.af", "data.2.af", "data.3.af", "data.4.af", "data.af", "data.stats"]);
    assert_reads(&ds(&loc.open().await, "d").await, "x", &arr(&[4], vec![10i64, 2, 30, 40]), "after sidecar 4").await;
}

/// Every metadata variant (json/msgpack × none/zstd/lz4) writes its own file and reopens.
pub async fn meta_variants(make: Make) {
    let variants = [
        (MetaFormat::Json, Codec::Uncompressed, "atlas.json", Codec::Zstd),
        (MetaFormat::Json, Codec::Zstd, "atlas.json.zst", Codec::Lz4),
        (MetaFormat::Json, Codec::Lz4, "atlas.json.lz4", Codec::Uncompressed),
        (MetaFormat::MsgPack, Codec::Uncompressed, "atlas.msgpack", Codec::Lz4),
        (MetaFormat::MsgPack, Codec::Zstd, "atlas.msgpack.zst", Codec::Zstd),
        (MetaFormat::MsgPack, Codec::Lz4, "atlas.msgpack.lz4", Codec::Uncompressed),
    ];
    for (format, compression, file, codec) in variants {
        let what = format!("{file} with {codec:?} blocks");
        let loc = make();
        let mut a = loc.create(StoreConfig { codec, meta_format: format, meta_compression: compression }).await;
        assert_eq!(a.meta_file(), MetaFile::new(format, compression), "{what}");
        assert_eq!(loc.files().await, [file], "{what}: create writes only its own metadata file");
        let d = a.create_dataset("d").await.unwrap();
        define::<f32>(&d, "f", &["i"], &[4], Some(&[3]), None).await;
        define::<String>(&d, "s", &["i"], &[2], None, None).await;
        write(&d, "f", &[0], &arr(&[4], vec![1.0f32, 2.0, 3.0, 4.0])).await;
        write(&d, "s", &[0], &arr(&[2], strings(&["x", "yz"]))).await;
        d.try_set_attribute("n", Attr::Int64(-3)).unwrap();
        d.try_set_attribute("t", Attr::TimestampNanoseconds(1_500_000_000)).unwrap();
        d.try_set_attribute("b", Attr::Bool(false)).unwrap();
        d.try_set_attribute("s", Attr::String("str".into())).unwrap();
        d.try_set_attribute("x", Attr::Float64(0.125)).unwrap();
        if format == MetaFormat::MsgPack {
            d.try_set_attribute("nan", Attr::Float64(f64::NAN)).unwrap();
        }
        a.flush().await.unwrap();
        let top: Vec<String> = loc.files().await.into_iter().filter(|f| !f.contains('/')).collect();
        assert_eq!(top, [file], "{what}: flush rewrites the same metadata file only");

        let mut r = loc.open().await;
        assert_eq!(r.meta_file(), MetaFile::new(format, compression), "{what}: detected format");
        assert_eq!(r.codec(), codec, "{what}: store codec");
        let rd = ds(&r, "d").await;
        assert_eq!(rd.array_meta("f").unwrap().codec, codec, "{what}");
        assert_reads(&rd, "f", &arr(&[4], vec![1.0f32, 2.0, 3.0, 4.0]), &what).await;
        assert_reads(&rd, "s", &arr(&[2], strings(&["x", "yz"])), &what).await;
        let attrs: Vec<(String, Attr)> = rd.attributes().into_iter().filter(|(k, _)| k != "nan").collect();
        assert_eq!(
            attrs,
            vec![
                ("n".to_string(), Attr::Int64(-3)),
                ("t".to_string(), Attr::TimestampNanoseconds(1_500_000_000)),
                ("b".to_string(), Attr::Bool(false)),
                ("s".to_string(), Attr::String("str".into())),
                ("x".to_string(), Attr::Float64(0.125)),
            ],
            "{what}"
        );
        if format == MetaFormat::MsgPack {
            assert!(matches!(rd.get_attribute("nan"), Some(Attr::Float64(x)) if x.is_nan()), "{what}: msgpack keeps NaN");
        }
        // A second round trip through the reopened handle.
        rd.try_set_attribute("n", Attr::Int64(4)).unwrap();
        r.flush().await.unwrap();
        assert_eq!(ds(&loc.open().await, "d").await.get_attribute("n"), Some(Attr::Int64(4)), "{what}");
        matches_err(&loc.try_create(StoreConfig::default()).await.map(|_| ()), &format!("create over {file}"), |e| matches!(e.detail(), Some(ErrorDetail::StoreAlreadyExists(_))));
    }
}

/// Array files are opened lazily; define/declare errors; array names.
pub async fn laziness_and_arrays(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    for n in ["p", "q"] {
        let d = a.create_dataset(n).await.unwrap();
        for arr_name in ["x", "y", "z"] {
            define::<u8>(&d, arr_name, &["i"], &[2], None, None).await;
            write(&d, arr_name, &[0], &arr(&[2], vec![1u8, 2])).await;
        }
    }
    a.flush().await.unwrap();
    let mut r = loc.open().await;
    assert!(r.loaded_arrays().is_empty(), "open loads no array file");
    assert_eq!(r.list_arrays(), ["x", "y", "z"]);
    let mut p = ds(&r, "p").await;
    let _ = p.meta();
    let _ = p.array_meta("y");
    assert!(r.loaded_arrays().is_empty(), "metadata calls load no array file");
    assert_reads(&p, "x", &arr(&[2], vec![1u8, 2]), "lazy").await;
    assert_reads(&ds(&r, "q").await, "x", &arr(&[2], vec![1u8, 2]), "lazy").await;
    assert_eq!(r.loaded_arrays(), ["x"], "reading x from two datasets loads only x");

    // define_array errors.
    matches_err(&p.define_array::<u8>("x", dims(&["i"]), vec![2], None, None).await, "duplicate array", |e| matches!(e, Error::ArrayAlreadyExists(n) if n == "x"));
    for bad in ["", "a/b", "_x", ".."] {
        matches_err(&p.define_array::<u8>(bad, dims(&["i"]), vec![2], None, None).await, &format!("define_array({bad:?})"), |e| matches!(e, Error::InvalidName(_)));
    }
    matches_err(&p.define_array::<u8>("r", dims(&["i", "j"]), vec![2], None, None).await, "dims of the wrong rank", |e| matches!(e.detail(), Some(ErrorDetail::Invalid(_))));
    matches_err(&p.define_array::<u8>("r", dims(&["i"]), vec![2], Some(vec![1, 1]), None).await, "chunk of the wrong rank", |e| {
        matches!(e.detail(), Some(ErrorDetail::Invalid(_)))
    });
    matches_err(&p.define_array::<u8>("r", dims(&["i"]), vec![2], Some(vec![0]), None).await, "zero chunk", |e| matches!(e.detail(), Some(ErrorDetail::Invalid(_))));
    assert_eq!(p.list_arrays(), ["x", "y", "z"], "refused definitions leave no trace");

    // Shared array name, different dtypes per dataset (§1.10).
    let s = r.create_dataset("s").await.unwrap();
    define::<i64>(&s, "x", &["i", "j"], &[1, 2], None, None).await;
    write(&s, "x", &[0, 0], &arr(&[1, 2], vec![-1i64, -2])).await;
    r.flush().await.unwrap();
    let r2 = loc.open().await;
    assert_eq!(r2.array_dtype("x"), Some(DType::UInt8), "dtype of the first dataset declaring it");
    assert_reads(&ds(&r2, "s").await, "x", &arr(&[1, 2], vec![-1i64, -2]), "shared name, other dtype").await;
    assert_reads(&ds(&r2, "p").await, "x", &arr(&[2], vec![1u8, 2]), "shared name, first dtype").await;
}

/// Two handles on one store (two machines on one bucket) changing different
/// datasets of a shared array: after both flush, both sets are there.
pub async fn two_writers_disjoint(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let base = a.create_dataset("base").await.unwrap();
    define::<f32>(&base, "x", &["i"], &[4], Some(&[2]), None).await;
    write(&base, "x", &[0], &arr(&[4], vec![1f32, 2., 3., 4.])).await;
    a.flush().await.unwrap();

    let (mut h1, mut h2) = (loc.open().await, loc.open().await);
    let p = h1.create_dataset("p").await.unwrap();
    define::<f32>(&p, "x", &["i"], &[2], None, None).await;
    write(&p, "x", &[0], &arr(&[2], vec![10f32, 11.])).await;
    p.try_set_attribute("who", Attr::String("h1".into())).unwrap();
    let q = h2.create_dataset("q").await.unwrap();
    define::<f32>(&q, "x", &["i"], &[3], None, None).await;
    write(&q, "x", &[0], &arr(&[3], vec![20f32, 21., 22.])).await;
    q.try_set_attribute("who", Attr::String("h2".into())).unwrap();
    // h2 also edits the shared base dataset's attributes, h1 the base array: still disjoint.
    ds(&h2, "base").await.try_set_attribute("edited_by", Attr::String("h2".into())).unwrap();
    h1.flush().await.expect("first writer flushes");
    h2.flush().await.expect("second writer merges and flushes");

    let r = loc.open().await;
    assert_eq!(r.list_datasets(), ["base", "p", "q"], "both writers' datasets");
    assert_reads(&ds(&r, "p").await, "x", &arr(&[2], vec![10f32, 11.]), "first writer's data").await;
    assert_reads(&ds(&r, "q").await, "x", &arr(&[3], vec![20f32, 21., 22.]), "second writer's data").await;
    assert_reads(&ds(&r, "base").await, "x", &arr(&[4], vec![1f32, 2., 3., 4.]), "untouched data").await;
    assert_eq!(ds(&r, "p").await.get_attribute("who"), Some(Attr::String("h1".into())));
    assert_eq!(ds(&r, "q").await.get_attribute("who"), Some(Attr::String("h2".into())));
    assert_eq!(ds(&r, "base").await.get_attribute("edited_by"), Some(Attr::String("h2".into())));
    // The second writer's handle now sees the first's dataset too (merged in at flush).
    assert!(h2.dataset_exists("p"), "merged metadata is visible to the writer that merged");
    // And the first writer catches up on refresh.
    assert_eq!(h1.refresh().await.unwrap(), ["base", "q"], "refresh names what the other writer changed");
    assert!(h1.dataset_exists("q"));
    assert_reads(&ds(&h1, "q").await, "x", &arr(&[3], vec![20f32, 21., 22.]), "refreshed handle reads the other writer's sidecar").await;
    assert_eq!(h1.refresh().await.unwrap(), Vec::<String>::new(), "nothing changed since");
}

/// Two handles changing the same dataset: the second flush fails with a conflict,
/// the first writer's values stand, and the loser keeps its changes in memory.
pub async fn two_writers_conflict(make: Make) {
    let loc = make();
    let mut a = loc.create(StoreConfig::default()).await;
    let d = a.create_dataset("d").await.unwrap();
    define::<i32>(&d, "x", &["i"], &[4], Some(&[2]), None).await;
    write(&d, "x", &[0], &arr(&[4], vec![1i32, 2, 3, 4])).await;
    a.flush().await.unwrap();
    // The conflicted copies of `d` in a store, oldest first.
    let copies = |h: &Atlas| h.list_datasets().into_iter().filter(|n| n.starts_with("d.conflict-")).collect::<Vec<_>>();

    // Same array entry on both sides: the second flush fails, and loses nothing.
    let (mut h1, mut h2) = (loc.open().await, loc.open().await);
    write(&ds(&h1, "d").await, "x", &[0], &arr(&[2], vec![10i32, 11])).await;
    write(&ds(&h2, "d").await, "x", &[2], &arr(&[2], vec![30i32, 31])).await;
    h1.flush().await.expect("first writer wins");
    matches_err(&h2.flush().await, "second writer of the same dataset", |e| matches!(e.detail(), Some(ErrorDetail::Conflict(m)) if m.contains("d.conflict-")));
    let r = loc.open().await;
    assert_reads(&ds(&r, "d").await, "x", &arr(&[4], vec![10i32, 11, 3, 4]), "the first writer's version stands").await;
    let c = copies(&r);
    assert_eq!(c.len(), 1, "one conflicted copy: {:?}", r.list_datasets());
    assert_reads(&ds(&r, &c[0]).await, "x", &arr(&[4], vec![1i32, 2, 30, 31]), "the copy holds the second writer's whole version").await;
    // The loser sees the same as everyone, and has nothing left to flush.
    assert_reads(&ds(&h2, "d").await, "x", &arr(&[4], vec![10i32, 11, 3, 4]), "the loser now shows the winner's version").await;
    h2.flush().await.expect("nothing is left pending after the conflicted copy");
    assert_eq!(copies(&loc.open().await), c, "a retried flush makes no second copy");

    // A refresh that loads the other writer's layer while ours is unflushed still
    // ends in a copy at the next flush, not in ours shadowing theirs.
    let (mut h5, mut h6) = (loc.open().await, loc.open().await);
    write(&ds(&h6, "d").await, "x", &[0], &arr(&[1], vec![60i32])).await;
    write(&ds(&h5, "d").await, "x", &[0], &arr(&[1], vec![50i32])).await;
    h5.flush().await.unwrap();
    assert_eq!(h6.refresh().await.unwrap(), ["d"]);
    matches_err(&h6.flush().await, "flush after a refresh that saw the other writer", |e| matches!(e.detail(), Some(ErrorDetail::Conflict(_))));
    let r = loc.open().await;
    assert_reads(&ds(&r, "d").await, "x", &arr(&[4], vec![50i32, 11, 3, 4]), "the first writer's value stands").await;
    let c2 = copies(&r);
    assert_eq!(c2.len(), 2, "a second copy: {:?}", r.list_datasets());
    let newest = c2.iter().find(|n| !c.contains(n)).unwrap();
    assert_reads(&ds(&r, newest).await, "x", &arr(&[4], vec![60i32, 11, 3, 4]), "the second copy holds the other side's value").await;

    // Same dataset's attributes on both sides: a metadata conflict, copied too.
    let (mut h3, mut h4) = (loc.open().await, loc.open().await);
    ds(&h3, "d").await.try_set_attribute("k", Attr::Int64(3)).unwrap();
    ds(&h4, "d").await.try_set_attribute("k", Attr::Int64(4)).unwrap();
    h3.flush().await.unwrap();
    matches_err(&h4.flush().await, "second attribute writer", |e| matches!(e.detail(), Some(ErrorDetail::Conflict(_))));
    let r = loc.open().await;
    assert_eq!(ds(&r, "d").await.get_attribute("k"), Some(Attr::Int64(3)));
    assert_reads(&ds(&r, "d").await, "x", &arr(&[4], vec![50i32, 11, 3, 4]), "data unchanged by the failed flush").await;
    let c3 = copies(&r);
    let newest = c3.iter().find(|n| !c2.contains(n)).expect("a third copy");
    assert_eq!(ds(&r, newest).await.get_attribute("k"), Some(Attr::Int64(4)), "the copy keeps the other side's attribute");
    assert_reads(&ds(&r, newest).await, "x", &arr(&[4], vec![50i32, 11, 3, 4]), "and the dataset's arrays").await;
    // The winner can keep writing.
    ds(&h3, "d").await.try_set_attribute("k", Attr::Int64(5)).unwrap();
    h3.flush().await.unwrap();
    assert_eq!(ds(&loc.open().await, "d").await.get_attribute("k"), Some(Attr::Int64(5)));
}

/// Another writer's whole flush landing inside ours, between our check for
/// conflicts and our metadata file (injected with `HookPut` at our first sidecar
/// PUT): whichever side the race makes lose, both versions of the dataset survive,
/// one in the dataset and one in a conflicted copy, and the other dataset our flush
/// carried is written. Before staged sidecars, the loser's sidecar shadowed the
/// winner's acknowledged chunk, or its retried metadata overwrote their attribute.
pub async fn conflict_race_inside_flush(make: Make) {
    use crate::faults::{HookPut, HookWhen};
    for when in [HookWhen::Before, HookWhen::After] {
        let loc = make();
        let mut a = loc.create(StoreConfig::default()).await;
        for name in ["d", "e"] {
            let d = a.create_dataset(name).await.unwrap();
            define::<i32>(&d, "x", &["i"], &[4], Some(&[2]), None).await;
            write(&d, "x", &[0], &arr(&[4], vec![1i32, 2, 3, 4])).await;
        }
        a.flush().await.unwrap();

        // The same chunk and the same attribute of `d` on both sides; `e` only here.
        let other = loc.open().await;
        write(&ds(&other, "d").await, "x", &[0], &arr(&[2], vec![10i32, 11])).await;
        ds(&other, "d").await.try_set_attribute("k", Attr::Int64(1)).unwrap();
        let flushed = Arc::new(parking_lot::Mutex::new(None));
        let (mut o, f) = (other.clone(), flushed.clone());
        let sidecar = |p: &Path| p.filename().is_some_and(|n| n.starts_with("data.") && n.ends_with(".af") && n != "data.af");
        let hooked = HookPut::new(
            loc.store.clone(),
            sidecar,
            when,
            Box::new(move || {
                Box::pin(async move {
                    *f.lock() = Some(o.flush().await);
                })
            }),
        );
        let mut here = Atlas::open(hooked.clone(), loc.prefix.clone()).await.unwrap();
        write(&ds(&here, "d").await, "x", &[0], &arr(&[2], vec![20i32, 21])).await;
        ds(&here, "d").await.try_set_attribute("k", Attr::Int64(2)).unwrap();
        write(&ds(&here, "e").await, "x", &[2], &arr(&[2], vec![50i32, 51])).await;
        let mine = here.flush().await;
        assert!(hooked.fired.lock().is_some(), "{when:?}: the other writer's flush ran inside ours");
        let theirs = flushed.lock().take().expect("the hook ran the other flush");

        let r = loc.open().await;
        let copies: Vec<String> = r.list_datasets().into_iter().filter(|n| n.starts_with("d.conflict-")).collect();
        assert_eq!(copies.len(), 1, "{when:?}: one conflicted copy: {:?} (ours {mine:?}, theirs {theirs:?})", r.list_datasets());
        // Exactly one flush lost the race, and its version is the copy.
        let conflict = |r: &atlasfs::Result<()>| matches!(r.as_ref().err().and_then(|e| e.detail()), Some(ErrorDetail::Conflict(_)));
        let (kept, copied, want_d, want_c) = match (&mine, &theirs) {
            (m, Ok(())) if conflict(m) => ("other", "here", vec![10i32, 11, 3, 4], vec![20i32, 21, 3, 4]),
            (Ok(()), t) if conflict(t) => ("here", "other", vec![20i32, 21, 3, 4], vec![10i32, 11, 3, 4]),
            other => panic!("{when:?}: exactly one flush must report the conflict: {other:?}"),
        };
        let key = |w: &str| Attr::Int64(if w == "other" { 1 } else { 2 });
        for h in [&r, &loc.open().await] {
            assert_reads(&ds(h, "d").await, "x", &arr(&[4], want_d.clone()), &format!("{when:?}: d holds the winner's ({kept}) chunk")).await;
            assert_eq!(ds(h, "d").await.get_attribute("k"), Some(key(kept)), "{when:?}: d keeps the winner's attribute");
            assert_reads(&ds(h, &copies[0]).await, "x", &arr(&[4], want_c.clone()), &format!("{when:?}: the copy holds the loser's ({copied}) version")).await;
            assert_eq!(ds(h, &copies[0]).await.get_attribute("k"), Some(key(copied)), "{when:?}: the copy keeps the loser's attribute");
            assert_reads(&ds(h, "e").await, "x", &arr(&[4], vec![1i32, 2, 50, 51]), &format!("{when:?}: e, written only here, is flushed")).await;
        }
        // Both handles agree with a fresh one after a refresh, and have nothing left.
        for (w, h) in [("here", &here), ("other", &other)] {
            h.refresh().await.unwrap();
            assert_reads(&ds(h, "d").await, "x", &arr(&[4], want_d.clone()), &format!("{when:?}: {w} after a refresh")).await;
            h.flush_shared().await.unwrap_or_else(|e| panic!("{when:?}: {w} flushes again cleanly: {e}"));
        }
        assert_eq!(r.list_datasets().len(), loc.open().await.list_datasets().len(), "{when:?}: no further copies");
        // Compaction keeps the same picture (a withdrawn sidecar left behind would show here).
        here.compact().await.unwrap();
        let c = loc.open().await;
        assert_reads(&ds(&c, "d").await, "x", &arr(&[4], want_d), &format!("{when:?}: d after compaction")).await;
        assert_reads(&ds(&c, &copies[0]).await, "x", &arr(&[4], want_c), &format!("{when:?}: the copy after compaction")).await;
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        /// Case names, in run order.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        pub async fn run_case(name: &str, make: Make) {
            match name {
                $(stringify!($case) => $case(make).await,)*
                other => panic!("unknown conformance case {other}"),
            }
        }
    };
}

suite!(
    empty_store,
    dataset_lifecycle,
    dtypes_roundtrip,
    partial_writes_and_regions,
    zero_d,
    fill_values,
    attributes,
    flush_boundary,
    stats_after_flush,
    delete_array_persists,
    delete_dataset_persists,
    compaction,
    compact_after_single_flush,
    bulk_reads,
    sidecar_numbering,
    meta_variants,
    laziness_and_arrays,
    two_writers_disjoint,
    two_writers_conflict,
    conflict_race_inside_flush,
);
