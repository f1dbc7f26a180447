//! Two-way compatibility with the real peer, atlas-python 0.10.0.
//!
//! For each of the 3 block codecs × 6 metadata variants (json/msgpack × none/zstd/lz4):
//!
//! * `py_to_rust_*`: `tests/python/compat_py_write.py` writes a store with atlas-python
//!   (every dtype it supports, chunked with edge chunks, unchunked, 0-D, 3-D, fills
//!   incl. NaN and int fills, unwritten regions, four flushes, `delete_array`,
//!   `delete_dataset`, `compact()` and writes after it), reads it back with a fresh
//!   handle and dumps what it read. atlasfs then opens the store and must read the
//!   same: dataset order, array lists, dtypes, shapes, chunk shapes, dims, codecs,
//!   typed attributes, fill values, every value (NaN-aware), a clamped partial read,
//!   bulk reads across datasets, and stats.
//! * `rust_to_python_*`: atlasfs writes a store of the same variety (no `bool`: 0.10
//!   cannot read it), including deletes, re-defined arrays over deleted data (0.10's
//!   reader walks past tombstones, so unwritten chunks must not show old data), a
//!   re-created dataset, compaction and writes after it. It keeps a model of what every
//!   array holds (values and 0.10 stats) and writes expectations as JSON, for a
//!   snapshot taken before compaction and for the final store.
//!   `tests/python/compat_rs_read.py` checks both with atlas-python, then keeps writing
//!   to the final store (over atlasfs chunks, a shared-array delete, a new dataset),
//!   and dumps what it reads; atlasfs must then read the same.
//!
//! Expectation format and encodings: see `tests/python/compat_common.py`.

mod common;

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::path::Path;

use atlasfs::store::{ArrayElement, ArrayStats, Codec, DType, FillValue, MetaFormat, StatValue, TimestampNs};
use atlasfs::{Atlas, Attr, DatasetView, Error, StoreConfig};
use ndarray::{ArrayD, Dimension, IxDyn, Slice};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

// ------------------------------------------------------------------ elements

fn mix(i: usize, salt: u64) -> u64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03).wrapping_add(1);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// An element type the tests can generate, model and encode for the expectations file.
trait El: ArrayElement + std::fmt::Debug {
    /// Deterministic test data with edge values mixed in.
    fn sample(i: usize, salt: u64) -> Self;
    /// The expectations encoding (floats as bit patterns).
    fn enc(&self) -> Value;
    /// What an unwritten cell reads as, by 0.10's rules (§1.10).
    fn fill_el(f: Option<&FillValue>) -> Self;
    /// Whether stats count this element as null (§1.14).
    fn is_null(&self, f: Option<&FillValue>) -> bool;
    fn stat(&self) -> StatValue;
    fn order(&self, other: &Self) -> Ordering;
    /// Equality of two encoded values (NaN-aware for floats).
    fn same_enc(a: &Value, b: &Value) -> bool {
        a == b
    }
}

macro_rules! int_el {
    ($($t:ty),*) => {$(
        impl El for $t {
            fn sample(i: usize, salt: u64) -> Self {
                match (i + salt as usize) % 11 {
                    0 => <$t>::MIN,
                    1 => <$t>::MAX,
                    2 => 0,
                    _ => mix(i, salt) as $t,
                }
            }
            fn enc(&self) -> Value {
                json!(*self)
            }
            fn fill_el(f: Option<&FillValue>) -> Self {
                match f {
                    Some(FillValue::Int(x)) => *x as $t,
                    Some(FillValue::UInt(x)) => *x as $t,
                    Some(FillValue::Float(x)) => *x as $t,
                    _ => 0,
                }
            }
            fn is_null(&self, f: Option<&FillValue>) -> bool {
                match f {
                    Some(FillValue::Int(x)) => *x as $t == *self,
                    Some(FillValue::UInt(x)) => *x as $t == *self,
                    _ => false,
                }
            }
            #[allow(unused_comparisons)]
            fn stat(&self) -> StatValue {
                if <$t>::MIN < 0 as $t { StatValue::Int(*self as i64) } else { StatValue::UInt(*self as u64) }
            }
            fn order(&self, other: &Self) -> Ordering {
                self.cmp(other)
            }
        }
    )*};
}
int_el!(u8, u16, u32, u64, i8, i16, i32, i64);

fn f64_nan_bits(b: u64) -> bool {
    f64::from_bits(b).is_nan()
}

macro_rules! float_el {
    ($t:ty, $bits:ty) => {
        impl El for $t {
            fn sample(i: usize, salt: u64) -> Self {
                match (i + salt as usize) % 13 {
                    0 => -0.0,
                    1 => <$t>::INFINITY,
                    2 => <$t>::NEG_INFINITY,
                    3 => <$t>::NAN,
                    4 => <$t>::from_bits(1), // smallest subnormal
                    5 => <$t>::MAX,
                    6 => 0.1,
                    _ => ((mix(i, salt) % 2000) as $t - 1000.0) * 0.125,
                }
            }
            fn enc(&self) -> Value {
                json!(self.to_bits())
            }
            fn fill_el(f: Option<&FillValue>) -> Self {
                match f {
                    Some(FillValue::Float(x)) => *x as $t,
                    Some(FillValue::Int(x)) => *x as $t,
                    Some(FillValue::UInt(x)) => *x as $t,
                    _ => 0.0,
                }
            }
            fn is_null(&self, f: Option<&FillValue>) -> bool {
                match f {
                    Some(FillValue::Float(x)) => {
                        let x = *x as $t;
                        if x.is_nan() { self.is_nan() } else { *self == x }
                    }
                    _ => false,
                }
            }
            fn stat(&self) -> StatValue {
                StatValue::Float(*self as f64)
            }
            fn order(&self, other: &Self) -> Ordering {
                self.total_cmp(other)
            }
            fn same_enc(a: &Value, b: &Value) -> bool {
                match (a.as_u64(), b.as_u64()) {
                    (Some(x), Some(y)) => x == y || (<$t>::from_bits(x as $bits).is_nan() && <$t>::from_bits(y as $bits).is_nan()),
                    _ => a == b,
                }
            }
        }
    };
}
float_el!(f32, u32);
float_el!(f64, u64);

impl El for TimestampNs {
    fn sample(i: usize, salt: u64) -> Self {
        TimestampNs(match (i + salt as usize) % 9 {
            0 => i64::MIN, // NaT
            1 => i64::MAX,
            2 => -1,
            3 => -1_500_000_000,
            _ => 1_700_000_000_000_000_000 + (mix(i, salt) % 1_000_000_000_000) as i64,
        })
    }
    fn enc(&self) -> Value {
        json!(self.0)
    }
    fn fill_el(f: Option<&FillValue>) -> Self {
        match f {
            Some(FillValue::TimestampNs(x)) | Some(FillValue::Int(x)) => TimestampNs(*x),
            _ => TimestampNs(0),
        }
    }
    fn is_null(&self, f: Option<&FillValue>) -> bool {
        matches!(f, Some(FillValue::TimestampNs(x)) | Some(FillValue::Int(x)) if *x == self.0)
    }
    fn stat(&self) -> StatValue {
        StatValue::TimestampNs(self.0)
    }
    fn order(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
}

const STRING_POOL: [&str; 10] =
    ["", "a", "héllo wörld", "日本語テキスト", "emoji 🎉🚀", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "tab\tand\nnewline", "nul\0inside", "zz", "Zebra"];

impl El for String {
    fn sample(i: usize, salt: u64) -> Self {
        let k = i + salt as usize;
        let mut s = STRING_POOL[k % STRING_POOL.len()].to_string();
        if k % 3 == 0 {
            s.push_str(&i.to_string());
        }
        s
    }
    fn enc(&self) -> Value {
        json!(self)
    }
    fn fill_el(_: Option<&FillValue>) -> Self {
        String::new() // 0.10 ignores string fills on read
    }
    fn is_null(&self, f: Option<&FillValue>) -> bool {
        matches!(f, Some(FillValue::String(s)) if s.as_bytes() == self.as_bytes())
    }
    fn stat(&self) -> StatValue {
        StatValue::Bytes(self.as_bytes().to_vec())
    }
    fn order(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// Runs `$body` with `$T` bound to the element type of a dtype.
macro_rules! with_el {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            DType::UInt8 => {
                type $T = u8;
                $body
            }
            DType::UInt16 => {
                type $T = u16;
                $body
            }
            DType::UInt32 => {
                type $T = u32;
                $body
            }
            DType::UInt64 => {
                type $T = u64;
                $body
            }
            DType::Int8 => {
                type $T = i8;
                $body
            }
            DType::Int16 => {
                type $T = i16;
                $body
            }
            DType::Int32 => {
                type $T = i32;
                $body
            }
            DType::Int64 => {
                type $T = i64;
                $body
            }
            DType::Float32 => {
                type $T = f32;
                $body
            }
            DType::Float64 => {
                type $T = f64;
                $body
            }
            DType::TimestampNs => {
                type $T = TimestampNs;
                $body
            }
            DType::String => {
                type $T = String;
                $body
            }
            other => panic!("no element type for {other:?} in this suite"),
        }
    };
}

const DTYPES: [DType; 12] = [
    DType::UInt8,
    DType::UInt16,
    DType::UInt32,
    DType::UInt64,
    DType::Int8,
    DType::Int16,
    DType::Int32,
    DType::Int64,
    DType::Float32,
    DType::Float64,
    DType::TimestampNs,
    DType::String,
];

fn dtype_named(name: &str) -> DType {
    DTYPES.iter().find(|d| d.name() == name).cloned().unwrap_or_else(|| panic!("unknown dtype {name}"))
}

// ------------------------------------------------------------------ encodings

fn enc_stat(s: &StatValue) -> (&'static str, Value) {
    match s {
        StatValue::Int(i) => ("Int", json!(i)),
        StatValue::UInt(u) => ("UInt", json!(u)),
        StatValue::Float(f) => ("Float", json!(f.to_bits())),
        StatValue::Bytes(b) => ("Bytes", json!(b)),
        StatValue::TimestampNs(t) => ("TimestampNs", json!(t)),
    }
}

/// The StatValue variant 0.10 uses for a dtype (§1.14).
fn stat_kind(dt: &DType) -> &'static str {
    match dt {
        DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64 => "Int",
        DType::UInt8 | DType::UInt16 | DType::UInt32 | DType::UInt64 | DType::Bool => "UInt",
        DType::Float32 | DType::Float64 => "Float",
        DType::TimestampNs => "TimestampNs",
        _ => "Bytes",
    }
}

fn enc_fill(f: &FillValue) -> Value {
    match f {
        FillValue::Bool(b) => json!({"kind": "bool", "value": b}),
        FillValue::Int(i) => json!({"kind": "int", "value": i}),
        FillValue::UInt(u) => json!({"kind": "uint", "value": u}),
        FillValue::Float(x) => json!({"kind": "float", "value": x.to_bits()}),
        FillValue::String(s) => json!({"kind": "string", "value": s}),
        FillValue::TimestampNs(t) => json!({"kind": "timestamp", "value": t}),
    }
}

fn enc_attr(a: &Attr) -> (&'static str, Value) {
    match a {
        Attr::Bool(b) => ("bool", json!(b)),
        Attr::Int64(i) => ("int", json!(i)),
        Attr::Float64(x) => ("float", json!(x.to_bits())),
        Attr::String(s) => ("string", json!(s)),
        Attr::TimestampNanoseconds(t) => ("timestamp", json!(t)),
    }
}

fn same_f64_enc(a: &Value, b: &Value) -> bool {
    a == b || matches!((a.as_u64(), b.as_u64()), (Some(x), Some(y)) if f64_nan_bits(x) && f64_nan_bits(y))
}

fn show(v: &Value, float: bool) -> String {
    match (float, v.as_u64()) {
        (true, Some(b)) => format!("{:?}", f64::from_bits(b)),
        _ => v.to_string(),
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().expect("string").to_string()).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_u64().expect("uint") as usize).collect()
}

// ------------------------------------------------------------------ checking a store with atlasfs

/// Cells of the region `start .. start+extent` of a C-order flat list of `shape`.
fn region_of(flat: &[Value], shape: &[usize], start: &[usize], extent: &[usize]) -> Vec<Value> {
    let n: usize = extent.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; extent.len()];
    for _ in 0..n {
        let mut off = 0;
        for i in 0..shape.len() {
            off = off * shape[i] + start[i] + idx[i];
        }
        out.push(flat[off].clone());
        for i in (0..idx.len()).rev() {
            idx[i] += 1;
            if idx[i] < extent[i] {
                break;
            }
            idx[i] = 0;
        }
    }
    out
}

fn diff_values<T: El>(want: &[Value], got: &[Value]) -> Vec<String> {
    if want.len() != got.len() {
        return vec![format!("{} values expected, {} read", want.len(), got.len())];
    }
    let float = matches!(T::DTYPE, DType::Float32 | DType::Float64);
    let mut out = vec![];
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if !T::same_enc(w, g) {
            let (w, g) = if float && T::DTYPE == DType::Float32 {
                (format!("{:?}", f32::from_bits(w.as_u64().unwrap() as u32)), format!("{:?}", f32::from_bits(g.as_u64().unwrap_or(0) as u32)))
            } else {
                (show(w, float), show(g, float))
            };
            out.push(format!("flat index {i}: expected {w}, atlasfs read {g}"));
            if out.len() >= 6 {
                out.push("...".into());
                break;
            }
        }
    }
    out
}

fn check_stats(dt: &DType, want: &Value, got: Option<ArrayStats>) -> Option<String> {
    match (want.is_null(), got) {
        (true, None) => None,
        (true, Some(g)) => Some(format!("stats {g:?}, expected none")),
        (false, None) => Some(format!("no stats, expected {want}")),
        (false, Some(g)) => {
            let mut ok = g.row_count == want["row_count"].as_u64().unwrap() && g.null_count == want["null_count"].as_u64().unwrap();
            for (k, v) in [("min", &g.min), ("max", &g.max)] {
                ok &= match (&want[k], v) {
                    (Value::Null, None) => true,
                    (w, Some(s)) if !w.is_null() => {
                        let (kind, e) = enc_stat(s);
                        kind == stat_kind(dt) && if kind == "Float" { same_f64_enc(w, &e) } else { w == &e }
                    }
                    _ => false,
                };
            }
            (!ok).then(|| format!("stats {g:?}, expected {want}"))
        }
    }
}

fn check_array<T: El>(rt: &Runtime, view: &DatasetView, name: &str, exp: &Value, errs: &mut Vec<String>) {
    let at = format!("{}/{name}", view.name());
    let shape = usizes(&exp["shape"]);
    let want: &Vec<Value> = exp["values"].as_array().expect("values");
    // fill value: variant and value
    match rt.block_on(view.array_fill_value(name)) {
        Err(e) => errs.push(format!("{at}: array_fill_value: {e}")),
        Ok(f) => {
            let got = f.as_ref().map(enc_fill).unwrap_or(Value::Null);
            let w = &exp["fill"];
            let same = got == *w || (got["kind"] == "float" && w["kind"] == "float" && same_f64_enc(&got["value"], &w["value"]));
            if !same {
                errs.push(format!("{at}: fill value {f:?} ({got}), expected {w}"));
            }
        }
    }
    // every value
    match rt.block_on(view.read_array::<T>(name, vec![], vec![])) {
        Err(e) => errs.push(format!("{at}: read_array: {e}")),
        Ok(None) => errs.push(format!("{at}: read_array gave None")),
        Ok(Some(a)) => {
            if a.shape() != shape.as_slice() {
                errs.push(format!("{at}: read shape {:?}, expected {shape:?}", a.shape()));
            } else {
                let got: Vec<Value> = a.iter().map(El::enc).collect();
                errs.extend(diff_values::<T>(want, &got).into_iter().map(|d| format!("{at}: {d}")));
            }
        }
    }
    // a partial read from a third of the way in, over-sized (clamped to the end)
    if !shape.is_empty() {
        let start: Vec<usize> = shape.iter().map(|s| s / 3).collect();
        let extent: Vec<usize> = shape.iter().zip(&start).map(|(s, a)| s - a).collect();
        match rt.block_on(view.read_array::<T>(name, start.to_vec(), shape.to_vec())) {
            Ok(Some(a)) if a.shape() == extent.as_slice() => {
                let got: Vec<Value> = a.iter().map(El::enc).collect();
                let w = region_of(want, &shape, &start, &extent);
                errs.extend(diff_values::<T>(&w, &got).into_iter().map(|d| format!("{at} from {start:?}: {d}")));
            }
            Ok(Some(a)) => errs.push(format!("{at}: read from {start:?} has shape {:?}, expected {extent:?}", a.shape())),
            other => errs.push(format!("{at}: partial read gave {:?}", other.map(|o| o.map(|a| a.shape().to_vec())))),
        }
    }
    // stats
    match rt.block_on(view.try_array_stats(name)) {
        Err(e) => errs.push(format!("{at}: array_stats: {e}")),
        Ok(s) => errs.extend(check_stats(&T::DTYPE, &exp["stats"], s).map(|d| format!("{at}: {d}"))),
    }
}

fn check_across<T: El>(rt: &Runtime, atlas: &Atlas, name: &str, datasets: &[String], exp: &Value, errs: &mut Vec<String>) {
    let parts = match rt.block_on(atlas.read_array_across::<T>(name, datasets, vec![], vec![])) {
        Ok(p) => p,
        Err(e) => return errs.push(format!("read_array_across({name}): {e}")),
    };
    for (ds, part) in datasets.iter().zip(parts) {
        let want = &exp["data"][ds.as_str()]["meta"][name];
        match (want.is_null(), part) {
            (true, None) => {}
            (false, Some(a)) => {
                let got: Vec<Value> = a.iter().map(El::enc).collect();
                let w = want["values"].as_array().unwrap();
                errs.extend(diff_values::<T>(w, &got).into_iter().map(|d| format!("read_array_across({name})[{ds}]: {d}")));
            }
            (true, Some(_)) => errs.push(format!("read_array_across({name})[{ds}]: data for a dataset without the array")),
            (false, None) => errs.push(format!("read_array_across({name})[{ds}]: None")),
        }
    }
}

/// Opens `path` with atlasfs and compares everything with the expectations; returns the mismatches.
fn check_store(rt: &Runtime, path: &Path, codec: Codec, exp: &Value) -> Vec<String> {
    let label = exp["label"].as_str().unwrap_or("?").to_string();
    let mut errs: Vec<String> = vec![];
    let atlas = match rt.block_on(Atlas::open_path(path)) {
        Ok(a) => a,
        Err(e) => return vec![format!("[{label}] atlasfs cannot open the store: {e}")],
    };
    if let Some(m) = exp["meta_file"].as_str() {
        if atlas.meta_file().file_name() != m {
            errs.push(format!("metadata file detected as {}, expected {m}", atlas.meta_file().file_name()));
        }
    }
    if atlas.codec() != codec {
        errs.push(format!("store codec {:?}, expected {codec:?}", atlas.codec()));
    }
    let datasets = strs(&exp["datasets"]);
    if atlas.list_datasets() != datasets {
        errs.push(format!("list_datasets {:?}, expected {datasets:?}", atlas.list_datasets()));
    }
    if atlas.list_arrays() != strs(&exp["arrays"]) {
        errs.push(format!("list_arrays {:?}, expected {:?}", atlas.list_arrays(), strs(&exp["arrays"])));
    }
    for ds in exp["absent_datasets"].as_array().into_iter().flatten() {
        let ds = ds.as_str().unwrap();
        if atlas.dataset_exists(ds) || !matches!(rt.block_on(atlas.open_dataset(ds)), Err(Error::DatasetNotFound(_))) {
            errs.push(format!("deleted dataset {ds} is still there"));
        }
    }
    for pair in exp["absent"].as_array().into_iter().flatten() {
        let (ds, name) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        if let Ok(v) = rt.block_on(atlas.open_dataset(ds)) {
            if v.array_meta(name).is_some() || !matches!(rt.block_on(v.read_cells(name, &[], &[])), Ok(None)) {
                errs.push(format!("{ds}/{name}: deleted array is still readable"));
            }
        }
    }
    for (ds, dexp) in exp["data"].as_object().expect("data") {
        let view = match rt.block_on(atlas.open_dataset(ds)) {
            Ok(v) => v,
            Err(e) => {
                errs.push(format!("open_dataset({ds}): {e}"));
                continue;
            }
        };
        // attributes, in order, typed
        let got = view.attributes();
        let want = dexp["attributes"].as_array().unwrap();
        let want_keys: Vec<&str> = want.iter().map(|a| a[0].as_str().unwrap()).collect();
        let got_keys: Vec<&str> = got.keys().map(String::as_str).collect();
        if got_keys != want_keys {
            errs.push(format!("{ds}: attribute keys {got_keys:?}, expected {want_keys:?}"));
        }
        for w in want {
            let key = w[0].as_str().unwrap();
            let Some(g) = got.get(key) else { continue };
            let (kind, value) = enc_attr(g);
            let same = kind == w[1] && if kind == "float" { same_f64_enc(&value, &w[2]) } else { value == w[2] };
            if !same {
                errs.push(format!("{ds}: attribute {key}: atlasfs read {g:?}, expected {} {}", w[1], show(&w[2], w[1] == "float")));
            }
        }
        if view.list_arrays() != strs(&dexp["arrays"]) {
            errs.push(format!("{ds}: list_arrays {:?}, expected {:?}", view.list_arrays(), strs(&dexp["arrays"])));
        }
        for (name, aexp) in dexp["meta"].as_object().unwrap() {
            let Some(schema) = view.array_meta(name) else {
                errs.push(format!("{ds}/{name}: not declared"));
                continue;
            };
            let want_dt = dtype_named(aexp["dtype"].as_str().unwrap());
            let got_m = (schema.dtype.name(), &schema.shape, &schema.chunk_shape, &schema.dimension_names, schema.codec);
            let want_m = (want_dt.name(), &usizes(&aexp["shape"]), &usizes(&aexp["chunk_shape"]), &strs(&aexp["dims"]), codec);
            if got_m != want_m {
                errs.push(format!("{ds}/{name}: schema {got_m:?}, expected {want_m:?}"));
                continue;
            }
            with_el!(&schema.dtype, T => check_array::<T>(rt, &view, name, aexp, &mut errs));
        }
    }
    // array_dtype (first declaring dataset) and bulk reads across every dataset
    for name in strs(&exp["arrays"]) {
        let dts: Vec<DType> = datasets.iter().filter_map(|d| exp["data"][d.as_str()]["meta"][name.as_str()]["dtype"].as_str()).map(dtype_named).collect();
        let Some(first) = dts.first().cloned() else { continue };
        if atlas.array_dtype(&name) != Some(first.clone()) {
            errs.push(format!("array_dtype({name}) = {:?}, expected {first:?}", atlas.array_dtype(&name)));
        }
        if dts.iter().all(|d| *d == first) {
            with_el!(&first, T => check_across::<T>(rt, &atlas, &name, &datasets, exp, &mut errs));
        }
    }
    errs.into_iter().map(|e| format!("[{label}] {e}")).collect()
}

fn assert_clean(errs: Vec<String>, what: &str) {
    assert!(errs.is_empty(), "{what}: {} mismatch(es):\n  {}", errs.len(), errs.iter().take(60).cloned().collect::<Vec<_>>().join("\n  "));
}

// ------------------------------------------------------------------ combos

fn codec_named(s: &str) -> Codec {
    match s {
        "zstd" => Codec::Zstd,
        "lz4" => Codec::Lz4,
        "none" => Codec::Uncompressed,
        _ => unreachable!(),
    }
}

fn meta_file_name(fmt: &str, comp: &str) -> String {
    format!(
        "atlas.{}{}",
        if fmt == "msgpack" { "msgpack" } else { "json" },
        match comp {
            "none" => "",
            "zstd" => ".zst",
            _ => ".lz4",
        }
    )
}

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ------------------------------------------------------------------ 1. Python -> Rust

fn py_to_rust(codec: &str, fmt: &str, comp: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let exp_path = tmp.path().join("expect.json");
    common::run_python_checked_once("compat_py_write.py", &[store.to_str().unwrap(), codec, fmt, comp, exp_path.to_str().unwrap()]);
    // The scenario really left sidecars, an uncompacted orphan and a compacted base.
    let meta = meta_file_name(fmt, comp);
    assert!(store.join(&meta).is_file(), "atlas-python did not write {meta}");
    for f in ["u_int16/data.1.af", "u_int16/data.2.af", "c_float64/data.1.af", "c_float64/data.stats"] {
        assert!(store.join(f).is_file(), "expected atlas-python to leave {f}");
    }
    assert!(std::fs::metadata(store.join("c_float64/data.af")).unwrap().len() > 108, "c_float64/data.af should be a compacted base");

    let exp = read_json(&exp_path);
    assert_eq!(exp["meta_file"], json!(meta));
    let n: usize = exp["data"].as_object().unwrap().values().map(|d| d["meta"].as_object().unwrap().len()).sum();
    assert!(n >= 45, "only {n} arrays in the expectations");
    let rt = rt();
    assert_clean(check_store(&rt, &store, codec_named(codec), &exp), &format!("atlasfs reading an atlas-python 0.10 store ({codec}, {fmt}, {comp})"));
}

// ------------------------------------------------------------------ 2 + 3. Rust -> Python -> Rust

trait DynCase {
    fn ds(&self) -> &str;
    fn name(&self) -> &str;
    fn define(&mut self, rt: &Runtime, view: &DatasetView);
    fn write(&mut self, rt: &Runtime, view: &DatasetView, start: &[usize], extent: &[usize], salt: u64);
    fn flushed(&mut self);
    fn compacted(&mut self);
    fn expect(&self) -> Value;
}

/// One array as atlasfs should store it: values, and which chunks hold data (stats
/// count only those, §1.14).
struct Case<T: El> {
    ds: String,
    name: String,
    dims: Vec<String>,
    shape: Vec<usize>,
    chunk: Vec<usize>,
    fill: Option<FillValue>,
    model: ArrayD<T>,
    touched: BTreeSet<Vec<usize>>,
    dirty: bool,
    has_stats: bool,
    /// Re-defined over a committed older version: atlasfs writes fill chunks for every
    /// chunk the new version did not write (its D1 fix), so all chunks hold data.
    shadows: bool,
}

fn chunks_in(start: &[usize], extent: &[usize], chunk: &[usize]) -> Vec<Vec<usize>> {
    if extent.contains(&0) {
        return vec![];
    }
    let mut out = vec![vec![]];
    for i in 0..start.len() {
        let (lo, hi) = (start[i] / chunk[i], (start[i] + extent[i] - 1) / chunk[i]);
        out = out.into_iter().flat_map(|p| (lo..=hi).map(move |c| [p.clone(), vec![c]].concat())).collect();
    }
    out
}

impl<T: El> DynCase for Case<T> {
    fn ds(&self) -> &str {
        &self.ds
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn define(&mut self, rt: &Runtime, view: &DatasetView) {
        rt.block_on(view.define_array_shared::<T>(&self.name, self.dims.clone(), self.shape.clone(), Some(self.chunk.clone()), self.fill.clone()))
            .unwrap_or_else(|e| panic!("define {}/{}: {e}", self.ds, self.name));
    }
    fn write(&mut self, rt: &Runtime, view: &DatasetView, start: &[usize], extent: &[usize], salt: u64) {
        let n: usize = extent.iter().product();
        let data = ArrayD::from_shape_vec(IxDyn(extent), (0..n).map(|i| T::sample(i, salt)).collect()).unwrap();
        rt.block_on(view.write_array_shared::<T>(&self.name, start.to_vec(), data.view())).unwrap_or_else(|e| panic!("write {}/{} at {start:?}: {e}", self.ds, self.name));
        self.model.slice_each_axis_mut(|ax| Slice::from(start[ax.axis.index()]..start[ax.axis.index()] + extent[ax.axis.index()])).assign(&data);
        self.touched.extend(chunks_in(start, extent, &self.chunk));
        self.dirty = true;
    }
    fn flushed(&mut self) {
        if self.shadows {
            self.touched.extend(chunks_in(&vec![0; self.shape.len()], &self.shape, &self.chunk));
            self.shadows = false;
            self.dirty = true;
        }
        if self.dirty {
            self.has_stats = true;
            self.dirty = false;
        }
    }
    fn compacted(&mut self) {
        // 0.10 recomputes stats of every live entry on compaction, so an entry that
        // was never written then has stats (no min/max, all null), §1.14.
        self.has_stats = true;
    }
    fn expect(&self) -> Value {
        let stats = if self.has_stats {
            let rows: u64 = self.shape.iter().product::<usize>() as u64;
            let (mut n, mut lo, mut hi) = (0u64, None::<&T>, None::<&T>);
            for (idx, v) in self.model.indexed_iter() {
                let coord: Vec<usize> = idx.slice().iter().zip(&self.chunk).map(|(a, c)| a / c).collect();
                if !self.touched.contains(&coord) || v.is_null(self.fill.as_ref()) {
                    continue;
                }
                n += 1;
                if lo.is_none_or(|l| v.order(l) == Ordering::Less) {
                    lo = Some(v);
                }
                if hi.is_none_or(|h| v.order(h) == Ordering::Greater) {
                    hi = Some(v);
                }
            }
            json!({"row_count": rows, "null_count": rows - n, "min": lo.map(|v| enc_stat(&v.stat()).1), "max": hi.map(|v| enc_stat(&v.stat()).1)})
        } else {
            Value::Null
        };
        json!({
            "dtype": T::DTYPE.name(), "shape": self.shape, "chunk_shape": self.chunk, "dims": self.dims,
            "fill": self.fill.as_ref().map(enc_fill), "stats": stats,
            "values": self.model.iter().map(El::enc).collect::<Vec<_>>(),
        })
    }
}

/// atlasfs writing a store while keeping the model of what it should hold.
struct Writer<'r> {
    rt: &'r Runtime,
    atlas: Atlas,
    cases: Vec<Box<dyn DynCase>>,
    /// Dataset -> attributes (as they reload), in order.
    attrs: Vec<(String, Vec<(String, Attr)>)>,
    absent: Vec<(String, String)>,
    absent_datasets: Vec<String>,
}

impl<'r> Writer<'r> {
    fn view(&self, ds: &str) -> DatasetView {
        self.rt.block_on(self.atlas.open_dataset(ds)).unwrap()
    }
    fn create_dataset(&mut self, ds: &str) {
        self.rt.block_on(self.atlas.create_dataset(ds)).unwrap();
        self.attrs.push((ds.to_string(), vec![]));
        self.absent_datasets.retain(|d| d != ds);
    }
    fn delete_dataset(&mut self, ds: &str) {
        self.rt.block_on(self.atlas.delete_dataset(ds)).unwrap();
        self.cases.retain(|c| c.ds() != ds);
        self.attrs.retain(|(d, _)| d != ds);
        self.absent_datasets.push(ds.to_string());
    }
    /// Sets `written`; the store should reload it as `reloads`.
    fn attr_as(&mut self, ds: &str, key: &str, written: Attr, reloads: Attr) {
        self.view(ds).try_set_attribute(key, written).unwrap();
        let list = &mut self.attrs.iter_mut().find(|(d, _)| d == ds).unwrap().1;
        match list.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = reloads,
            None => list.push((key.to_string(), reloads)),
        }
    }
    fn attr(&mut self, ds: &str, key: &str, a: Attr) {
        self.attr_as(ds, key, a.clone(), a);
    }
    #[allow(clippy::too_many_arguments)]
    fn define(&mut self, ds: &str, name: &str, dt: &DType, dims: &[&str], shape: &[usize], chunk: Option<&[usize]>, fill: Option<FillValue>, shadows: bool) {
        let chunk = chunk.unwrap_or(shape).to_vec();
        let mut case: Box<dyn DynCase> = with_el!(dt, T => Box::new(Case::<T> {
            ds: ds.into(),
            name: name.into(),
            dims: dims.iter().map(|s| s.to_string()).collect(),
            shape: shape.to_vec(),
            chunk,
            model: ArrayD::from_elem(IxDyn(shape), T::fill_el(fill.as_ref())),
            fill,
            touched: BTreeSet::new(),
            dirty: false,
            has_stats: false,
            shadows,
        }));
        case.define(self.rt, &self.view(ds));
        self.cases.push(case);
        self.absent.retain(|(d, n)| !(d == ds && n == name));
    }
    fn write(&mut self, ds: &str, name: &str, start: &[usize], extent: &[usize], salt: u64) {
        let view = self.view(ds);
        let case = self.cases.iter_mut().find(|c| c.ds() == ds && c.name() == name).unwrap_or_else(|| panic!("no case {ds}/{name}"));
        case.write(self.rt, &view, start, extent, salt);
    }
    fn delete_array(&mut self, ds: &str, name: &str) {
        self.rt.block_on(self.view(ds).delete_array(name)).unwrap();
        self.cases.retain(|c| !(c.ds() == ds && c.name() == name));
        self.absent.push((ds.to_string(), name.to_string()));
    }
    fn flush(&mut self) {
        self.rt.block_on(self.atlas.flush()).unwrap();
        self.cases.iter_mut().for_each(|c| c.flushed());
    }
    fn compact(&mut self) {
        self.rt.block_on(self.atlas.compact()).unwrap(); // flushes first
        self.cases.iter_mut().for_each(|c| {
            c.flushed();
            c.compacted();
        });
    }
    fn expectations(&self, label: &str, meta_file: &str) -> Value {
        let datasets: Vec<&String> = self.attrs.iter().map(|(d, _)| d).collect();
        let arrays: BTreeSet<&str> = self.cases.iter().map(|c| c.name()).collect();
        let mut data = serde_json::Map::new();
        for (ds, attrs) in &self.attrs {
            let cases: Vec<&Box<dyn DynCase>> = self.cases.iter().filter(|c| c.ds() == ds).collect();
            let meta: serde_json::Map<String, Value> = cases.iter().map(|c| (c.name().to_string(), c.expect())).collect();
            let attributes: Vec<Value> = attrs
                .iter()
                .map(|(k, a)| {
                    let (kind, v) = enc_attr(a);
                    json!([k, kind, v])
                })
                .collect();
            data.insert(ds.clone(), json!({"attributes": attributes, "arrays": cases.iter().map(|c| c.name()).collect::<Vec<_>>(), "meta": meta}));
        }
        json!({
            "label": label, "meta_file": meta_file, "datasets": datasets, "arrays": arrays,
            "absent": self.absent.iter().filter(|(d, _)| !self.absent_datasets.contains(d)).map(|(d, n)| json!([d, n])).collect::<Vec<_>>(),
            "absent_datasets": self.absent_datasets, "data": data,
        })
    }
}

fn c_fill(dt: &DType) -> Option<FillValue> {
    Some(match dt {
        DType::UInt8 => FillValue::UInt(200),
        DType::UInt16 => FillValue::UInt(65535),
        DType::UInt32 => FillValue::UInt(7),
        DType::UInt64 => FillValue::UInt(u64::MAX),
        DType::Int8 => FillValue::Int(-128),
        DType::Int16 => FillValue::Int(-1),
        DType::Int32 => FillValue::Int(i32::MIN as i64),
        DType::Int64 => FillValue::Int(i64::MAX),
        DType::Float32 | DType::Float64 => FillValue::Float(f64::NAN),
        DType::TimestampNs => FillValue::TimestampNs(i64::MIN),
        _ => FillValue::String("zz".into()),
    })
}

fn u_fill(dt: &DType) -> Option<FillValue> {
    match dt {
        DType::UInt16 => Some(FillValue::Int(7)), // another variant than Python writes; honoured on read
        DType::UInt32 => Some(FillValue::UInt(3)),
        DType::Int64 => Some(FillValue::Int(-9)),
        DType::Float32 => Some(FillValue::Float(1.5)),
        DType::Float64 => Some(FillValue::Int(7)), // read as 7.0, but not a null in stats (§1.14)
        DType::TimestampNs => Some(FillValue::Int(5)),
        _ => None,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn rust_to_python(codec: &str, fmt: &str, comp: &str) {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let (store, snap) = (tmp.path().join("store"), tmp.path().join("snapshot"));
    let meta = meta_file_name(fmt, comp);
    let config = StoreConfig { codec: codec_named(codec), meta_format: if fmt == "msgpack" { MetaFormat::MsgPack } else { MetaFormat::Json }, meta_compression: codec_named(comp) };
    let atlas = rt.block_on(Atlas::create_path(&store, config)).unwrap();
    let mut w = Writer { rt: &rt, atlas, cases: vec![], attrs: vec![], absent: vec![], absent_datasets: vec![] };
    for ds in ["alpha", "beta", "gamma", "delta"] {
        w.create_dataset(ds);
    }
    let ts = |ns| Attr::TimestampNanoseconds(ns);
    w.attr("alpha", "flag", Attr::Bool(true));
    w.attr("alpha", "count", Attr::Int64(42));
    w.attr("alpha", "neg", Attr::Int64(i64::MIN));
    w.attr("alpha", "ratio", Attr::Float64(0.1));
    w.attr("alpha", "whole", Attr::Float64(2.0));
    w.attr("alpha", "tiny", Attr::Float64(5e-324));
    w.attr("alpha", "huge", Attr::Float64(f64::MAX));
    w.attr("alpha", "name", Attr::String("KNMI — station ü".into()));
    w.attr("alpha", "empty", Attr::String(String::new()));
    w.attr("alpha", "created", ts(1_700_000_000_123_456_789));
    w.attr("alpha", "epochish", ts(-1_500_000_000));
    w.attr_as("alpha", "ts_like", Attr::String("2023-11-14T22:13:20Z".into()), ts(1_700_000_000_000_000_000));
    w.attr("alpha", "off", Attr::Bool(false));
    if fmt == "msgpack" {
        w.attr("alpha", "nan_attr", Attr::Float64(f64::NAN));
        w.attr("alpha", "ninf_attr", Attr::Float64(f64::NEG_INFINITY));
    }
    w.attr("beta", "idx", Attr::Int64(1));
    w.attr("beta", "label", Attr::String("beta".into()));
    w.attr("gamma", "doomed", Attr::Bool(true));

    for dt in &DTYPES {
        let n = dt.name();
        w.define("alpha", &format!("c_{n}"), dt, &["row", "col"], &[5, 7], Some(&[2, 3]), c_fill(dt), false);
        w.define("alpha", &format!("u_{n}"), dt, &["t"], &[6], None, u_fill(dt), false);
        w.define("alpha", &format!("z_{n}"), dt, &[], &[], None, None, false);
    }
    w.define("alpha", "never_written", &DType::Float32, &["x"], &[3], Some(&[2]), Some(FillValue::Float(f64::NAN)), false);
    w.define("alpha", "z_unwritten", &DType::Int16, &[], &[], None, Some(FillValue::Int(11)), false);
    w.define("alpha", "cube_u16", &DType::UInt16, &["a", "b", "c"], &[3, 4, 5], Some(&[2, 3, 2]), Some(FillValue::UInt(1)), false);
    w.define("beta", "c_float64", &DType::Float64, &["y", "x"], &[4, 4], Some(&[3, 3]), Some(FillValue::Float(-1.5)), false);
    w.define("beta", "c_int32", &DType::Int32, &["i"], &[3], Some(&[2]), None, false);
    w.define("beta", "mixed", &DType::Int16, &["i"], &[5], None, None, false);
    w.define("beta", "c_float32", &DType::Float32, &["a", "b"], &[2, 2], Some(&[1, 1]), Some(FillValue::Float(f64::NAN)), false);
    w.define("gamma", "c_float64", &DType::Float64, &["p", "q"], &[3, 3], Some(&[2, 2]), Some(FillValue::Float(f64::NAN)), false);
    w.define("gamma", "gamma_only", &DType::Int64, &["i"], &[4], Some(&[2]), None, false);
    w.define("delta", "mixed", &DType::String, &["k"], &[3], None, None, false); // beta's is int16
    w.define("delta", "u_float32", &DType::Float32, &["t"], &[10], Some(&[4]), Some(FillValue::Float(1.5)), false);

    // flush 1: partial writes that leave unwritten chunks
    for (k, dt) in DTYPES.iter().enumerate() {
        let (n, k) = (dt.name(), k as u64);
        w.write("alpha", &format!("c_{n}"), &[0, 0], &[3, 5], 1 + k);
        w.write("alpha", &format!("u_{n}"), &[1], &[4], 2 + k);
        if *dt != DType::UInt32 {
            w.write("alpha", &format!("z_{n}"), &[], &[], 3 + k); // z_uint32 stays unwritten
        }
    }
    w.write("alpha", "cube_u16", &[1, 1, 1], &[2, 2, 3], 4);
    w.write("beta", "c_float64", &[1, 1], &[3, 3], 5);
    w.write("beta", "c_int32", &[0], &[3], 6);
    w.write("beta", "mixed", &[0], &[5], 7);
    w.write("beta", "c_float32", &[0, 0], &[2, 2], 8);
    w.write("gamma", "c_float64", &[0, 0], &[3, 3], 9);
    w.write("gamma", "gamma_only", &[0], &[4], 10);
    w.write("delta", "mixed", &[0], &[3], 11);
    w.write("delta", "u_float32", &[2], &[5], 12);
    w.flush();

    // flush 2: overlapping writes across chunk boundaries (read-modify-write over sidecar 1)
    for (k, dt) in DTYPES.iter().enumerate() {
        let (n, k) = (dt.name(), k as u64);
        w.write("alpha", &format!("c_{n}"), &[2, 4], &[2, 2], 20 + k);
        w.write("alpha", &format!("u_{n}"), &[0], &[2], 40 + k);
    }
    w.write("alpha", "cube_u16", &[0, 2, 3], &[3, 2, 2], 14);
    w.attr("alpha", "count", Attr::Int64(43)); // keeps its position
    w.write("delta", "u_float32", &[6], &[4], 13);
    w.flush();

    // flush 3: deletes
    w.delete_array("alpha", "u_int16"); // its only user
    w.delete_array("beta", "c_float32"); // shared with alpha
    w.delete_array("alpha", "c_int64"); // re-defined after this flush
    w.delete_dataset("gamma");
    w.flush();

    // flush 4: re-defines over deleted, committed data; 0.10 readers walk past
    // tombstones, so unwritten chunks must hold fill chunks, not the old data (D1)
    let i64_ = DType::Int64;
    w.define("alpha", "c_int64", &i64_, &["row", "col"], &[5, 7], Some(&[2, 3]), Some(FillValue::Int(-5)), true);
    w.write("alpha", "c_int64", &[0, 0], &[1, 1], 30); // read-modify-write of a fresh chunk
    w.delete_array("alpha", "u_int32"); // delete and re-define in one pending layer
    w.define("alpha", "u_int32", &DType::Int32, &["t"], &[8], Some(&[3]), Some(FillValue::Int(77)), true);
    w.write("alpha", "u_int32", &[3], &[2], 31);
    w.create_dataset("gamma"); // re-created: old attributes and arrays are gone
    w.attr("gamma", "reborn", Attr::Bool(true));
    w.define("gamma", "c_float64", &DType::Float64, &["p", "q"], &[3, 3], Some(&[2, 2]), Some(FillValue::Float(f64::NAN)), true);
    w.write("gamma", "c_float64", &[0, 0], &[1, 1], 32);
    w.define("gamma", "gamma_only", &i64_, &["i"], &[4], Some(&[2]), Some(FillValue::Int(-1)), true); // never written
    w.flush();
    copy_dir(&store, &snap);
    let snap_exp = w.expectations(&format!("atlasfs-written before compaction {codec}/{fmt}/{comp}"), &meta);

    // compaction, then more writes (sidecars again) and a new dataset
    w.compact();
    for (k, dt) in DTYPES.iter().enumerate() {
        let (n, k) = (dt.name(), k as u64);
        w.write("alpha", &format!("c_{n}"), &[4, 0], &[1, 7], 60 + k);
        w.write("alpha", &format!("c_{n}"), &[1, 1], &[1, 1], 80 + k);
    }
    w.create_dataset("epsilon");
    w.attr("epsilon", "after_compact", Attr::Bool(true));
    w.attr("delta", "note", Attr::String("set after compaction".into()));
    w.define("epsilon", "c_uint8", &DType::UInt8, &["a", "b"], &[2, 2], Some(&[1, 2]), Some(FillValue::UInt(9)), false);
    w.define("epsilon", "c_string", &DType::String, &["a", "b"], &[3, 2], Some(&[2, 2]), None, false);
    w.define("epsilon", "post_compact_unwritten", &DType::Int8, &["i"], &[4], Some(&[3]), Some(FillValue::Int(-3)), false);
    w.write("epsilon", "c_uint8", &[0, 0], &[1, 2], 90);
    w.write("epsilon", "c_string", &[0, 0], &[3, 2], 91);
    w.flush();
    let final_exp = w.expectations(&format!("atlasfs-written after compaction {codec}/{fmt}/{comp}"), &meta);
    drop(w);

    // Does atlasfs agree with the model? Printed now, asserted after atlas-python has
    // had its say, so a failure shows both views.
    let c = codec_named(codec);
    let own = [check_store(&rt, &snap, c, &snap_exp), check_store(&rt, &store, c, &final_exp)].concat();
    if !own.is_empty() {
        eprintln!("atlasfs disagrees with the model of what it wrote:\n  {}", own.join("\n  "));
    }
    assert!(store.join(&meta).is_file() && snap.join("c_int64/data.4.af").is_file(), "expected {meta} and sidecars in the snapshot");

    let p = |n: &str| tmp.path().join(n);
    std::fs::write(p("snap.json"), serde_json::to_vec(&snap_exp).unwrap()).unwrap();
    std::fs::write(p("final.json"), serde_json::to_vec(&final_exp).unwrap()).unwrap();
    let s = |q: &Path| q.to_str().unwrap().to_string();
    common::run_python_checked_once("compat_rs_read.py", &[&s(&snap), &s(&p("snap.json")), &s(&store), &s(&p("final.json")), &s(&p("after_python.json"))]);
    assert_clean(own, "atlasfs reading back the store it wrote");

    // 3. atlasfs reads what atlas-python wrote into the atlasfs store
    let after = read_json(&p("after_python.json"));
    assert!(after["datasets"].as_array().unwrap().iter().any(|d| d == "from_python"));
    assert_clean(check_store(&rt, &store, c, &after), &format!("atlasfs reading an atlasfs store after atlas-python wrote to it ({codec}, {fmt}, {comp})"));
}

macro_rules! combos {
    ($($name:ident: $codec:literal, $fmt:literal, $comp:literal;)*) => {
        mod python_writes_rust_reads {
            $( #[test] fn $name() { super::py_to_rust($codec, $fmt, $comp) } )*
        }
        mod rust_writes_python_reads_and_writes {
            $( #[test] fn $name() { super::rust_to_python($codec, $fmt, $comp) } )*
        }
    };
}

combos! {
    zstd_json: "zstd", "json", "none";
    zstd_json_zstd: "zstd", "json", "zstd";
    zstd_json_lz4: "zstd", "json", "lz4";
    zstd_msgpack: "zstd", "msgpack", "none";
    zstd_msgpack_zstd: "zstd", "msgpack", "zstd";
    zstd_msgpack_lz4: "zstd", "msgpack", "lz4";
    lz4_json: "lz4", "json", "none";
    lz4_json_zstd: "lz4", "json", "zstd";
    lz4_json_lz4: "lz4", "json", "lz4";
    lz4_msgpack: "lz4", "msgpack", "none";
    lz4_msgpack_zstd: "lz4", "msgpack", "zstd";
    lz4_msgpack_lz4: "lz4", "msgpack", "lz4";
    none_json: "none", "json", "none";
    none_json_zstd: "none", "json", "zstd";
    none_json_lz4: "none", "json", "lz4";
    none_msgpack: "none", "msgpack", "none";
    none_msgpack_zstd: "none", "msgpack", "zstd";
    none_msgpack_lz4: "none", "msgpack", "lz4";
}
