//! `.atlasfs/zarr/`: the store as zarr v3, read-only, so any zarr reader (and
//! xarray through it) opens it. See docs/zarr.md for the mapping as users see it.
//!
//! Design: nothing is stored; every file is rendered from the store on open.
//! - `<dataset>/` is a group; `_stacked/` (a name no dataset can have) is the whole
//!   store as one group. A group's model ([`Group`]) is built from metadata only
//!   (dataset metadata, plus each array's fill value from its array file's footers)
//!   and cached per store version, so lookups of many chunk keys cost a map lookup.
//! - The `zarr.json` of a group carries consolidated metadata (every array's
//!   `zarr.json` inline): opening a group is one read.
//! - Attributes follow atlas-python 0.10's xarray mapping (`atlas/xarray.py`):
//!   `_pyatlas_coords` becomes the CF `coordinates` group attribute, `{var}.{attr}`
//!   keys become the variable's attributes, `json:` values are decoded, explicit
//!   fills become `_FillValue` (read with `mask_and_scale=False`), timestamps are
//!   `int64` with CF `units`, strings are zarr's `string` type (`vlen-utf8`).
//! - Chunk keys `c/i/j/k` are atlas chunks one to one; a chunk no layer holds does
//!   not exist (readers use `fill_value`). Edge chunks, stored trimmed by atlas,
//!   are padded with the fill value to the full chunk shape, as zarr requires.
//! - `_stacked`: the first dataset (store order) is the template, as in
//!   `open_as_many_xarray_dataset`: its coordinates are kept as they are, each
//!   data variable gets a leading `dataset` axis (chunk 1 along it, so a chunk is
//!   one dataset's chunk) and a `dataset` coordinate lists the names. A dataset
//!   whose variable is missing or differs in dtype or shape from the template's is
//!   left out of the whole group (the axis is shared by all variables) and named in
//!   the `atlasfs_excluded_datasets` attribute — the rule of the `.npy` stacked view
//!   ([`stacked`](super::stacked)), applied to every variable at once.
//!
//! No FUSE here: the core's hooks call [`ZarrView`] and serve the bytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::error::{FsError, FsResult};
use crate::format::cells::fill_element;
use crate::format::grid::{Grid, for_each_run};
use crate::store::array_file::ArrayFile;
use crate::store::{ArraySchema, Atlas, Attr, Cells, DType, FillValue};

/// `.atlasfs/zarr`
pub const ZARR_DIR: &str = "zarr";
/// The whole-store group; `_` cannot start a dataset name.
pub const STACKED_GROUP: &str = "_stacked";
/// Attribute of `_stacked` naming the datasets left out of it.
pub const EXCLUDED_ATTR: &str = "atlasfs_excluded_datasets";
const COORDS_ATTR: &str = "_pyatlas_coords";
const NAT: i64 = i64::MIN;
const TIME_UNITS: &str = "nanoseconds since 1970-01-01";
/// serde_json cannot hold non-finite floats; they travel as these strings and are
/// replaced by the bare `NaN`/`Infinity`/`-Infinity` Python's json reads.
const NONFINITE: [(&str, &str); 3] = [("\"\\u0000NaN\\u0000\"", "NaN"), ("\"\\u0000Inf\\u0000\"", "Infinity"), ("\"\\u0000-Inf\\u0000\"", "-Infinity")];

/// What a path under `.atlasfs/zarr/` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ZNode {
    Root,
    Group(String),
    GroupJson(String),
    Array(String, String),
    ArrayJson(String, String),
    /// `c/` and the directories below it: the chunk coordinates so far.
    ChunkDir(String, String, Vec<u32>),
    Chunk(String, String, Vec<u32>),
}

impl ZNode {
    pub fn is_dir(&self) -> bool {
        matches!(self, ZNode::Root | ZNode::Group(_) | ZNode::Array(..) | ZNode::ChunkDir(..))
    }
}

/// Where an array's chunks come from.
#[derive(Debug, Clone)]
enum Source {
    /// The array of that name in one dataset.
    Plain(String),
    /// One dataset per index of the leading axis.
    Stacked(Arc<Vec<String>>),
    /// The `dataset` coordinate of `_stacked`.
    Names(Arc<Vec<String>>),
}

#[derive(Debug, Clone)]
struct ZArray {
    dtype: DType,
    shape: Vec<usize>,
    /// The atlas chunk shape (zarr's is the same, with 0 raised to 1).
    chunk: Vec<usize>,
    fill: Option<FillValue>,
    source: Source,
    /// Its `zarr.json` (shared: lookups clone the array's model).
    json: Arc<Value>,
}

impl ZArray {
    fn grid(&self) -> Grid {
        Grid::new(self.shape.clone(), self.chunk.clone())
    }
    fn zchunk(&self) -> Vec<usize> {
        self.chunk.iter().map(|&c| c.max(1)).collect()
    }
}

/// One group, rendered from metadata.
#[derive(Debug)]
struct Group {
    arrays: IndexMap<String, ZArray>,
    json: Vec<u8>,
}

/// The zarr view's state: group models cached per store version.
pub struct ZarrView {
    groups: Mutex<HashMap<String, (u64, Arc<Group>)>>,
    /// `STACK_CHUNK_BYTES` unless configured; 0 = one dataset per `_stacked` chunk.
    stack_chunk_bytes: usize,
}

impl Default for ZarrView {
    fn default() -> Self {
        ZarrView::new(STACK_CHUNK_BYTES)
    }
}

impl ZarrView {
    pub fn new(stack_chunk_bytes: usize) -> Self {
        ZarrView { groups: Default::default(), stack_chunk_bytes }
    }
}

fn nonfinite(x: f64) -> Value {
    if x.is_nan() {
        Value::String("\0NaN\0".into())
    } else if x > 0.0 {
        Value::String("\0Inf\0".into())
    } else {
        Value::String("\0-Inf\0".into())
    }
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or_else(|| nonfinite(x))
}

/// JSON text with the non-finite placeholders replaced.
fn render(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).expect("json");
    if s.contains("\\u0000") {
        for (from, to) in NONFINITE {
            s = s.replace(from, to);
        }
    }
    s.push('\n');
    s.into_bytes()
}

/// An atlas attribute as atlas-python returns it (timestamps as int nanoseconds),
/// with its `json:` values decoded as `_decode_attr_value` does.
fn attr_json(a: &Attr) -> Value {
    match a {
        Attr::Bool(b) => Value::Bool(*b),
        Attr::TimestampNanoseconds(n) | Attr::Int64(n) => json!(n),
        Attr::Float64(x) => float(*x),
        Attr::String(s) => match s.strip_prefix("json:") {
            Some(j) => serde_json::from_str(j).unwrap_or_else(|_| Value::String(s.clone())),
            None => Value::String(s.clone()),
        },
    }
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The zarr v3 `data_type` of an atlas dtype; `None` if it has no zarr form here.
fn data_type(d: &DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "bool",
        DType::Int8 => "int8",
        DType::Int16 => "int16",
        DType::Int32 => "int32",
        DType::Int64 | DType::TimestampNs => "int64",
        DType::UInt8 => "uint8",
        DType::UInt16 => "uint16",
        DType::UInt32 => "uint32",
        DType::UInt64 => "uint64",
        DType::Float32 => "float32",
        DType::Float64 => "float64",
        DType::String => "string",
        _ => return None,
    })
}

/// The zarr `fill_value`: what atlas reads where no chunk is stored.
fn fill_json(d: &DType, fill: Option<&FillValue>) -> Value {
    if matches!(d, DType::String) {
        // 0.10 ignores fills of variable-length types: unwritten cells read "".
        return Value::String(String::new());
    }
    let e = fill_element(d, fill);
    let f32_ = |x: f32| {
        if x.is_finite() {
            float(x as f64)
        } else {
            Value::String(
                if x.is_nan() {
                    "NaN"
                } else if x > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        }
    };
    let f64_ = |x: f64| {
        if x.is_finite() {
            float(x)
        } else {
            Value::String(
                if x.is_nan() {
                    "NaN"
                } else if x > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        }
    };
    match d {
        DType::Bool => Value::Bool(e[0] != 0),
        DType::Int8 => json!(e[0] as i8),
        DType::UInt8 => json!(e[0]),
        DType::Int16 => json!(i16::from_le_bytes(e[..2].try_into().unwrap())),
        DType::UInt16 => json!(u16::from_le_bytes(e[..2].try_into().unwrap())),
        DType::Int32 => json!(i32::from_le_bytes(e[..4].try_into().unwrap())),
        DType::UInt32 => json!(u32::from_le_bytes(e[..4].try_into().unwrap())),
        DType::Int64 | DType::TimestampNs => json!(i64::from_le_bytes(e[..8].try_into().unwrap())),
        DType::UInt64 => json!(u64::from_le_bytes(e[..8].try_into().unwrap())),
        DType::Float32 => f32_(f32::from_le_bytes(e[..4].try_into().unwrap())),
        DType::Float64 => f64_(f64::from_le_bytes(e[..8].try_into().unwrap())),
        _ => Value::Null,
    }
}

/// The `_FillValue` attribute atlas-python's `open_as_xarray_dataset` gives a
/// variable, encoded as xarray's zarr backend decodes it (floats as base64 of the
/// little-endian f64); `None` where it gives none (no fill, NaN, "", NaT) and for
/// strings.
fn fill_attr(d: &DType, fill: Option<&FillValue>) -> Option<Value> {
    let fv = fill?;
    let is_float = matches!(d, DType::Float32 | DType::Float64);
    let v = match fv {
        FillValue::Float(x) if x.is_nan() => return None,
        // xarray's zarr reader cannot decode a `_FillValue` of its `string` type
        // (it raises): a string variable's explicit fill is left out (docs/zarr.md).
        FillValue::String(_) => return None,
        FillValue::Int(NAT) | FillValue::TimestampNs(NAT) if matches!(d, DType::TimestampNs) => return None,
        FillValue::Float(x) => {
            if is_float {
                Value::String(b64(&x.to_le_bytes()))
            } else {
                float(*x)
            }
        }
        FillValue::Int(i) | FillValue::TimestampNs(i) => {
            if is_float {
                Value::String(b64(&(*i as f64).to_le_bytes()))
            } else {
                json!(i)
            }
        }
        FillValue::UInt(u) => {
            if is_float {
                Value::String(b64(&(*u as f64).to_le_bytes()))
            } else {
                json!(u)
            }
        }
        FillValue::Bool(b) => Value::Bool(*b),
    };
    Some(v)
}

fn array_json(dtype: &DType, shape: &[usize], zchunk: &[usize], dims: &[String], fill: Option<&FillValue>, attrs: Map<String, Value>) -> Value {
    let codecs =
        if matches!(dtype, DType::String) { json!([{"name": "vlen-utf8", "configuration": {}}]) } else { json!([{"name": "bytes", "configuration": {"endian": "little"}}]) };
    json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": data_type(dtype),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": zchunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_json(dtype, fill),
        "codecs": codecs,
        "attributes": attrs,
        "dimension_names": dims,
    })
}

/// Coordinates, per-variable attributes and dataset attributes of one dataset,
/// split as atlas-python's `_view_to_xarray` splits them.
struct Split {
    coords: HashSet<String>,
    per_var: HashMap<String, Map<String, Value>>,
    attrs: Map<String, Value>,
}

fn split(arrays: &IndexMap<String, ArraySchema>, attributes: &IndexMap<String, Attr>) -> Split {
    let coords: HashSet<String> = match attributes.get(COORDS_ATTR) {
        Some(Attr::String(s)) => serde_json::from_str::<Vec<String>>(s).map(|v| v.into_iter().collect()).unwrap_or_default(),
        _ => arrays.iter().filter(|(n, s)| s.dimension_names.len() == 1 && &s.dimension_names[0] == *n).map(|(n, _)| n.clone()).collect(),
    };
    let mut per_var: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut attrs = Map::new();
    for (k, v) in attributes {
        if k == COORDS_ATTR {
            continue;
        }
        if let Some((var, rest)) = k.split_once('.')
            && arrays.contains_key(var)
        {
            per_var.entry(var.to_string()).or_default().insert(rest.to_string(), attr_json(v));
            continue;
        }
        attrs.insert(k.clone(), attr_json(v));
    }
    // Coordinates that are not dimension coordinates: CF's `coordinates` attribute
    // is how xarray's zarr reader learns them (`decode_coords`).
    let mut extra: Vec<&String> = arrays.iter().filter(|(n, s)| coords.contains(*n) && !(s.dimension_names.len() == 1 && &s.dimension_names[0] == *n)).map(|(n, _)| n).collect();
    extra.sort();
    if !extra.is_empty() {
        attrs.insert("coordinates".into(), Value::String(extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
    }
    Split { coords, per_var, attrs }
}

/// The attributes of one variable: atlas-python's, plus CF time units.
fn var_attrs(split: &Split, name: &str, dtype: &DType, fill: Option<&FillValue>) -> Map<String, Value> {
    let mut a = split.per_var.get(name).cloned().unwrap_or_default();
    if let Some(f) = fill_attr(dtype, fill) {
        a.insert("_FillValue".into(), f);
    }
    if matches!(dtype, DType::TimestampNs) {
        a.insert("units".into(), Value::String(TIME_UNITS.into()));
        a.insert("calendar".into(), Value::String("proleptic_gregorian".into()));
    }
    a
}

fn group_json(attrs: Map<String, Value>, arrays: &IndexMap<String, ZArray>) -> Vec<u8> {
    let meta: Map<String, Value> = arrays.iter().map(|(n, a)| (n.clone(), (*a.json).clone())).collect();
    render(&json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attrs,
        "consolidated_metadata": {"kind": "inline", "must_understand": false, "metadata": meta},
    }))
}

async fn fill_of(atlas: &Atlas, ds: &str, arr: &str) -> FsResult<Option<FillValue>> {
    Ok(atlas.open_dataset(ds).await?.array_fill_value(arr).await?)
}

/// The group of one dataset.
async fn dataset_group(atlas: &Atlas, ds: &str) -> FsResult<Option<Group>> {
    let Some(meta) = atlas.dataset_meta(ds) else { return Ok(None) };
    let sp = split(&meta.arrays, &meta.attributes);
    let mut arrays = IndexMap::new();
    for (name, s) in &meta.arrays {
        if data_type(&s.dtype).is_none() {
            tracing::debug!(dataset = ds, array = %name, dtype = %s.dtype.name(), "no zarr form for this dtype; left out of the zarr view");
            continue;
        }
        let fill = fill_of(atlas, ds, name).await?;
        let mut a =
            ZArray { dtype: s.dtype.clone(), shape: s.shape.clone(), chunk: s.chunk_shape.clone(), fill, source: Source::Plain(ds.to_string()), json: Arc::new(Value::Null) };
        a.json = Arc::new(array_json(&a.dtype, &a.shape, &a.zchunk(), &s.dimension_names, a.fill.as_ref(), var_attrs(&sp, name, &a.dtype, a.fill.as_ref())));
        arrays.insert(name.clone(), a);
    }
    let json = group_json(sp.attrs, &arrays);
    Ok(Some(Group { arrays, json }))
}

/// Bytes a `_stacked` chunk aims at: as many datasets' chunks as fit (at least one).
/// zarr-python and dask pay ~1-3 ms per chunk file and task, the daemon ~0.3 ms per
/// dataset chunk read on its own, but one pass for many: 1,000 small datasets read
/// as 9 files of 4 MiB rather than 1,000 of 33 kB (docs/zarr.md, "Speed").
pub const STACK_CHUNK_BYTES: usize = 4 << 20;
/// Bytes assumed per string element when sizing a `_stacked` chunk of strings.
const STRING_ESTIMATE: usize = 16;

/// How many datasets one `_stacked` chunk spans along the `dataset` axis
/// (`target` bytes' worth; 0 = one).
fn stack_depth(dtype: &DType, chunk: &[usize], n: usize, target: usize) -> usize {
    let one = chunk.iter().map(|&c| c.max(1)).product::<usize>() * dtype.element_size().unwrap_or(STRING_ESTIMATE);
    (target / one.max(1)).clamp(1, n.max(1))
}

/// The whole store as one group (see the module note).
async fn stacked_group(atlas: &Atlas, target: usize) -> FsResult<Group> {
    let names = atlas.list_datasets();
    let mut arrays = IndexMap::new();
    let Some(first) = names.first().and_then(|n| atlas.dataset_meta(n).map(|m| (n.clone(), m))) else {
        return Ok(Group { json: group_json(Map::new(), &arrays), arrays });
    };
    let (template, meta) = first;
    let sp = split(&meta.arrays, &meta.attributes);
    let vars: Vec<(&String, &ArraySchema)> = meta.arrays.iter().filter(|(n, s)| !sp.coords.contains(*n) && data_type(&s.dtype).is_some()).collect();
    let mut included = vec![];
    let mut excluded = vec![];
    for n in &names {
        let Some(m) = atlas.dataset_meta(n) else { continue };
        let fits = vars.iter().all(|(v, s)| m.arrays.get(*v).is_some_and(|o| o.dtype == s.dtype && o.shape == s.shape));
        if fits { included.push(n.clone()) } else { excluded.push(n.clone()) }
    }
    let included = Arc::new(included);
    for (name, s) in &meta.arrays {
        if data_type(&s.dtype).is_none() {
            continue;
        }
        let fill = fill_of(atlas, &template, name).await?;
        let attrs = var_attrs(&sp, name, &s.dtype, fill.as_ref());
        let mut a = if sp.coords.contains(name) {
            ZArray { dtype: s.dtype.clone(), shape: s.shape.clone(), chunk: s.chunk_shape.clone(), fill, source: Source::Plain(template.clone()), json: Arc::new(Value::Null) }
        } else {
            let shape = std::iter::once(included.len()).chain(s.shape.iter().copied()).collect();
            let chunk = std::iter::once(stack_depth(&s.dtype, &s.chunk_shape, included.len(), target)).chain(s.chunk_shape.iter().copied()).collect();
            ZArray { dtype: s.dtype.clone(), shape, chunk, fill, source: Source::Stacked(included.clone()), json: Arc::new(Value::Null) }
        };
        let dims: Vec<String> = match a.source {
            Source::Stacked(_) => std::iter::once("dataset".to_string()).chain(s.dimension_names.iter().cloned()).collect(),
            _ => s.dimension_names.clone(),
        };
        a.json = Arc::new(array_json(&a.dtype, &a.shape, &a.zchunk(), &dims, a.fill.as_ref(), attrs));
        arrays.insert(name.clone(), a);
    }
    let mut d = ZArray {
        dtype: DType::String,
        shape: vec![included.len()],
        chunk: vec![included.len().max(1)],
        fill: None,
        source: Source::Names(included.clone()),
        json: Arc::new(Value::Null),
    };
    d.json = Arc::new(array_json(&d.dtype, &d.shape, &d.zchunk(), &["dataset".to_string()], None, Map::new()));
    arrays.insert("dataset".into(), d);
    let mut attrs = sp.attrs;
    if !excluded.is_empty() {
        tracing::info!(excluded = excluded.len(), "zarr _stacked: datasets whose variables differ from {template}'s are left out");
        attrs.insert(EXCLUDED_ATTR.into(), json!(excluded));
    }
    Ok(Group { json: group_json(attrs, &arrays), arrays })
}

/// `n` C-order cells of `a`'s full chunk shape, all the fill value.
fn filled_chunk(a: &ZArray, fill: Option<&FillValue>) -> Cells {
    let n = a.zchunk().iter().product();
    Cells::filled(&a.dtype, fill, n)
}

/// Places a stored (edge-trimmed) chunk of `extent` into a full chunk of the fill.
fn pad(a: &ZArray, fill: Option<&FillValue>, stored: Cells, extent: &[usize]) -> Cells {
    let full = a.zchunk();
    if extent == full.as_slice() {
        return stored;
    }
    let mut out = filled_chunk(a, fill);
    let zero = vec![0; full.len()];
    match (&mut out, &stored) {
        (Cells::Fixed { elsize, bytes }, Cells::Fixed { bytes: src, .. }) => {
            let el = *elsize;
            for_each_run(extent, &zero, &full, &zero, extent, |s, d, n| bytes[d * el..(d + n) * el].copy_from_slice(&src[s * el..(s + n) * el]));
        }
        (Cells::Var(dst), Cells::Var(src)) => for_each_run(extent, &zero, &full, &zero, extent, |s, d, n| dst[d..d + n].clone_from_slice(&src[s..s + n])),
        _ => {}
    }
    out
}

/// A chunk's bytes: fixed-width elements as they are (little-endian, C order), or
/// strings in `vlen-utf8` (u32 count, then u32 length + UTF-8 bytes each).
fn encode(c: Cells) -> Vec<u8> {
    match c {
        Cells::Fixed { bytes, .. } => bytes,
        Cells::Var(items) => {
            let mut out = Vec::with_capacity(4 + items.iter().map(|i| 4 + i.len()).sum::<usize>());
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for i in items {
                out.extend_from_slice(&(i.len() as u32).to_le_bytes());
                out.extend_from_slice(&i);
            }
            out
        }
    }
}

/// Whether chunk `coord` (trailing axes) of a `_stacked` variable exists for the
/// datasets `group`: it does unless every one of them reads the template's fill
/// there (chunked like the template, that fill, and no layer holding the chunk).
fn stacked_chunk_present(f: &ArrayFile, a: &ZArray, group: &[String], coord: &[u32]) -> FsResult<bool> {
    for ds in group {
        let spec = f.entry_spec(ds).ok_or_else(|| FsError::noent(format!("{ds}/{}", f.array)))?;
        if spec.chunk_shape != a.chunk[1..] || spec.fill != a.fill || f.holds_chunk(ds, coord)? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl ZarrView {
    async fn group(&self, atlas: &Atlas, name: &str) -> FsResult<Option<Arc<Group>>> {
        let version = atlas.version();
        if let Some((v, g)) = self.groups.lock().get(name)
            && *v == version
        {
            return Ok(Some(g.clone()));
        }
        let g = if name == STACKED_GROUP {
            stacked_group(atlas, self.stack_chunk_bytes).await?
        } else {
            match dataset_group(atlas, name).await? {
                Some(g) => g,
                None => return Ok(None),
            }
        };
        let g = Arc::new(g);
        let mut groups = self.groups.lock();
        groups.retain(|_, (v, _)| *v == version);
        groups.insert(name.to_string(), (version, g.clone()));
        Ok(Some(g))
    }

    async fn array(&self, atlas: &Atlas, group: &str, arr: &str) -> FsResult<Option<ZArray>> {
        Ok(self.group(atlas, group).await?.and_then(|g| g.arrays.get(arr).cloned()))
    }

    /// The node a path (components under `.atlasfs/zarr/`) names, if it exists.
    /// Chunk files exist only where a layer holds the chunk.
    pub async fn resolve(&self, atlas: &Atlas, path: &[String]) -> FsResult<Option<ZNode>> {
        let Some((g, rest)) = path.split_first() else { return Ok(Some(ZNode::Root)) };
        if g != STACKED_GROUP && !atlas.dataset_exists(g) {
            return Ok(None);
        }
        let Some((arr, rest)) = rest.split_first() else { return Ok(Some(ZNode::Group(g.clone()))) };
        if arr == "zarr.json" {
            return Ok(rest.is_empty().then(|| ZNode::GroupJson(g.clone())));
        }
        let Some(a) = self.array(atlas, g, arr).await? else { return Ok(None) };
        let Some((c, rest)) = rest.split_first() else { return Ok(Some(ZNode::Array(g.clone(), arr.clone()))) };
        if c == "zarr.json" {
            return Ok(rest.is_empty().then(|| ZNode::ArrayJson(g.clone(), arr.clone())));
        }
        if c != "c" || rest.len() > a.shape.len() {
            return Ok(None);
        }
        let mut coord = vec![];
        let per_axis = a.grid().chunks_per_axis();
        for (i, s) in rest.iter().enumerate() {
            match s.parse::<u32>() {
                Ok(n) if n.to_string() == *s && (n as usize) < per_axis[i] => coord.push(n),
                _ => return Ok(None),
            }
        }
        if coord.len() < a.shape.len() {
            return Ok(Some(ZNode::ChunkDir(g.clone(), arr.clone(), coord)));
        }
        Ok(self.chunk_bytes(atlas, &a, arr, &coord, true).await?.map(|_| ZNode::Chunk(g.clone(), arr.clone(), coord)))
    }

    /// Bytes of a chunk, `None` if no layer holds it. With `probe`, only whether it
    /// exists is worked out where that needs no decoding (the bytes are then empty).
    async fn chunk_bytes(&self, atlas: &Atlas, a: &ZArray, arr: &str, coord: &[u32], probe: bool) -> FsResult<Option<Vec<u8>>> {
        match &a.source {
            Source::Names(names) => Ok(Some(encode(pad(a, None, Cells::Var(names.iter().map(|n| n.as_bytes().to_vec()).collect()), &[names.len()])))),
            Source::Plain(ds) => {
                let view = atlas.open_dataset(ds).await?;
                if probe {
                    return Ok(view.holds_chunk(arr, coord).await?.then(Vec::new));
                }
                let (_, extent) = a.grid().chunk_box(coord);
                Ok(view.read_stored_chunk(arr, coord).await?.map(|c| encode(pad(a, a.fill.as_ref(), c, &extent))))
            }
            Source::Stacked(names) => {
                let k = a.chunk[0].max(1);
                let i0 = coord[0] as usize * k;
                let group = names.get(i0..(i0 + k).min(names.len())).filter(|g| !g.is_empty()).ok_or_else(|| FsError::noent(format!("chunk {coord:?} of {arr}")))?;
                let (start, extent) = a.grid().chunk_box(coord);
                let (start, extent) = (start[1..].to_vec(), extent[1..].to_vec());
                let file = atlas.file(arr).await?;
                if probe {
                    return Ok(stacked_chunk_present(&*file.read().await, a, group, &coord[1..])?.then(Vec::new));
                }
                let mut ext = vec![group.len()];
                ext.extend_from_slice(&extent);
                let cells = match a.dtype.element_size() {
                    Some(el) => {
                        // Every dataset's box straight into one buffer, each block behind
                        // them loaded once (the `.npy` stack's read); each dataset's own
                        // fill and chunking are applied by the store.
                        let parts: Vec<(&str, &[usize], &[usize])> = group.iter().map(|n| (n.as_str(), &start[..], &extent[..])).collect();
                        // Read-ahead: the next group's blocks decode (on other cores)
                        // while this chunk is read and handed to the reader.
                        if let Some(next) = names.get(i0 + k..(i0 + 2 * k).min(names.len())) {
                            file.read().await.prefetch_many(next.iter().map(|n| (n.as_str(), &start[..], &extent[..])));
                        }
                        let mut bytes = vec![0u8; ext.iter().product::<usize>() * el];
                        let res = file.read().await.read_regions_into(&parts, &mut bytes, atlas.read_concurrency()).await;
                        if let Err(e) = &res
                            && matches!(e.detail(), Some(crate::store::ErrorDetail::Stale(_)))
                        {
                            // Another writer replaced a layer: reload it, then read again.
                            file.write().await.refresh().await?;
                            file.read().await.read_regions_into(&parts, &mut bytes, atlas.read_concurrency()).await?;
                        } else {
                            res?;
                        }
                        Cells::Fixed { elsize: el, bytes }
                    }
                    None => {
                        let mut items = Vec::with_capacity(ext.iter().product());
                        for ds in group {
                            match atlas.open_dataset(ds).await?.read_region_exact(arr, &start, &extent).await? {
                                Cells::Var(v) => items.extend(v),
                                Cells::Fixed { .. } => return Err(FsError::new(libc::EIO, format!("{ds}/{arr}: fixed-width cells in a string array"))),
                            }
                        }
                        Cells::Var(items)
                    }
                };
                Ok(Some(encode(pad(a, a.fill.as_ref(), cells, &ext))))
            }
        }
    }

    /// Size of a file node (directories: 0).
    pub async fn size(&self, atlas: &Atlas, node: &ZNode) -> FsResult<u64> {
        match node {
            ZNode::Chunk(g, arr, _) => {
                let a = self.array(atlas, g, arr).await?.ok_or_else(|| FsError::noent(format!("{g}/{arr}")))?;
                if let Some(el) = a.dtype.element_size() {
                    return Ok((a.zchunk().iter().product::<usize>() * el) as u64);
                }
                Ok(self.read(atlas, node).await?.0.len() as u64)
            }
            ZNode::GroupJson(_) | ZNode::ArrayJson(..) => Ok(self.read(atlas, node).await?.0.len() as u64),
            _ => Ok(0),
        }
    }

    /// The whole content of a file node, and whether its size follows from metadata
    /// that cannot change without the chunk grid changing (fixed-width chunks), so
    /// the kernel may serve it through its page cache.
    pub async fn read(&self, atlas: &Atlas, node: &ZNode) -> FsResult<(Vec<u8>, bool)> {
        let gone = || FsError::noent(format!(".atlasfs/{ZARR_DIR}: {node:?}"));
        match node {
            ZNode::GroupJson(g) => Ok((self.group(atlas, g).await?.ok_or_else(gone)?.json.clone(), false)),
            ZNode::ArrayJson(g, arr) => Ok((render(&self.array(atlas, g, arr).await?.ok_or_else(gone)?.json), false)),
            ZNode::Chunk(g, arr, coord) => {
                let a = self.array(atlas, g, arr).await?.ok_or_else(gone)?;
                Ok((self.chunk_bytes(atlas, &a, arr, coord, false).await?.ok_or_else(gone)?, a.dtype.element_size().is_some()))
            }
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// Entries of a directory node: (name, is_dir).
    pub async fn list(&self, atlas: &Atlas, node: &ZNode) -> FsResult<Vec<(String, bool)>> {
        let mut out = vec![];
        match node {
            ZNode::Root => {
                out.push((STACKED_GROUP.to_string(), true));
                out.extend(atlas.list_datasets().into_iter().map(|n| (n, true)));
            }
            ZNode::Group(g) => {
                let grp = self.group(atlas, g).await?.ok_or_else(|| FsError::noent(g))?;
                out.push(("zarr.json".into(), false));
                out.extend(grp.arrays.keys().map(|n| (n.clone(), true)));
            }
            ZNode::Array(g, arr) => {
                let a = self.array(atlas, g, arr).await?.ok_or_else(|| FsError::noent(arr))?;
                out.push(("zarr.json".into(), false));
                if a.shape.is_empty() {
                    if self.chunk_bytes(atlas, &a, arr, &[], true).await?.is_some() {
                        out.push(("c".into(), false));
                    }
                } else if a.grid().chunks_per_axis().iter().all(|&n| n > 0) {
                    out.push(("c".into(), true));
                }
            }
            ZNode::ChunkDir(g, arr, coord) => {
                let a = self.array(atlas, g, arr).await?.ok_or_else(|| FsError::noent(arr))?;
                let n = a.grid().chunks_per_axis()[coord.len()];
                let last = coord.len() + 1 == a.shape.len();
                for i in 0..n as u32 {
                    if last {
                        let mut c = coord.clone();
                        c.push(i);
                        if self.chunk_bytes(atlas, &a, arr, &c, true).await?.is_none() {
                            continue;
                        }
                    }
                    out.push((i.to_string(), !last));
                }
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_a_double() {
        // struct.pack("<d", 1.5) → b"\x00\x00\x00\x00\x00\x00\xf8?"
        assert_eq!(b64(&1.5f64.to_le_bytes()), "AAAAAAAA+D8=");
        assert_eq!(b64(b"ab"), "YWI=");
    }

    #[test]
    fn nonfinite_attributes_render_as_python_reads_them() {
        let v = json!({"a": float(f64::NAN), "b": float(f64::INFINITY), "c": float(f64::NEG_INFINITY), "d": 1.5});
        let s = String::from_utf8(render(&v)).unwrap();
        assert!(s.contains("\"a\": NaN") && s.contains("\"b\": Infinity") && s.contains("\"c\": -Infinity") && s.contains("\"d\": 1.5"), "{s}");
    }
}
