//! The store metadata file: `atlas.{json,msgpack}[.zst|.lz4]` at the store root.
//!
//! One file holds every dataset, its arrays' schemas and its attributes, in
//! insertion order. `open` picks the first of the six names present, in a fixed
//! priority order; saves go back to the same name in one PUT.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::attr::Attr;
pub(crate) use super::meta_json::JsonFragments;
use super::{Error, ErrorDetail, Result};
use crate::format::{Codec, DType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetaFormat {
    #[default]
    Json,
    MsgPack,
}

impl MetaFormat {
    pub fn parse(s: &str) -> Option<MetaFormat> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(MetaFormat::Json),
            "msgpack" | "mp" => Some(MetaFormat::MsgPack),
            _ => None,
        }
    }
}

/// Which metadata file a store uses: format plus compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaFile {
    pub format: MetaFormat,
    pub compression: Codec,
}

/// Uncompressed JSON: the format of a store with no metadata file yet.
impl Default for MetaFile {
    fn default() -> Self {
        MetaFile::new(MetaFormat::Json, Codec::Uncompressed)
    }
}

impl MetaFile {
    pub const fn new(format: MetaFormat, compression: Codec) -> Self {
        MetaFile { format, compression }
    }

    /// The six names in the priority order `open` checks them.
    pub const ALL: [MetaFile; 6] = [
        MetaFile::new(MetaFormat::Json, Codec::Uncompressed),
        MetaFile::new(MetaFormat::Json, Codec::Zstd),
        MetaFile::new(MetaFormat::Json, Codec::Lz4),
        MetaFile::new(MetaFormat::MsgPack, Codec::Uncompressed),
        MetaFile::new(MetaFormat::MsgPack, Codec::Zstd),
        MetaFile::new(MetaFormat::MsgPack, Codec::Lz4),
    ];

    pub fn file_name(&self) -> &'static str {
        match (self.format, self.compression) {
            (MetaFormat::Json, Codec::Uncompressed) => "atlas.json",
            (MetaFormat::Json, Codec::Zstd) => "atlas.json.zst",
            (MetaFormat::Json, Codec::Lz4) => "atlas.json.lz4",
            (MetaFormat::MsgPack, Codec::Uncompressed) => "atlas.msgpack",
            (MetaFormat::MsgPack, Codec::Zstd) => "atlas.msgpack.zst",
            (MetaFormat::MsgPack, Codec::Lz4) => "atlas.msgpack.lz4",
        }
    }

    pub fn from_file_name(name: &str) -> Option<MetaFile> {
        MetaFile::ALL.into_iter().find(|m| m.file_name() == name)
    }

    pub fn encode(&self, meta: &StoreMeta) -> Result<bytes::Bytes> {
        self.encode_with(meta, &mut JsonFragments::default())
    }

    /// `encode`, reusing the JSON text of datasets unchanged since the last call
    /// with the same `fragments` (see [`JsonFragments`]). `Bytes`, so an
    /// uncompressed file is the buffer the fragments keep, not a copy of it.
    pub(crate) fn encode_with(&self, meta: &StoreMeta, fragments: &mut JsonFragments) -> Result<bytes::Bytes> {
        let err = |e: &dyn std::fmt::Display| Error::from(ErrorDetail::MetaFile { path: self.file_name().into(), msg: e.to_string() });
        let raw = match self.format {
            MetaFormat::Json => fragments.encode(meta).map_err(|e| err(&e))?,
            MetaFormat::MsgPack => rmp_serde::to_vec_named(meta).map_err(|e| err(&e))?.into(),
        };
        Ok(match self.compression {
            Codec::Uncompressed => raw,
            c => c.compress_meta(&raw).into(),
        })
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<StoreMeta> {
        let err = |msg: String| Error::from(ErrorDetail::MetaFile { path: self.file_name().into(), msg });
        let raw = self.compression.decompress_meta(bytes).map_err(|e| err(e.to_string()))?;
        match self.format {
            MetaFormat::Json => serde_json::from_slice(&raw).map_err(|e| err(e.to_string())),
            MetaFormat::MsgPack => rmp_serde::from_slice(&raw).map_err(|e| err(e.to_string())),
        }
    }
}

/// The whole metadata file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreMeta {
    pub version: u32,
    /// Codec for new arrays' blocks.
    #[serde(default)]
    pub codec: Codec,
    /// Shared per dataset: the flush's snapshot, the merge base and the live
    /// metadata are clones of this map, and in a store of 50,000 datasets a deep
    /// clone was 750,000 allocations; with `Arc`s an unchanged dataset is one
    /// pointer in all three and compares equal without being encoded.
    pub datasets: IndexMap<String, Arc<DatasetMeta>>,
    /// Bumped by every metadata write from atlasfs, so that the file (and its ETag,
    /// which other handles watch) changes with every flush, even one that only added
    /// array data. atlas 0.10 ignores keys it does not know.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StoreMeta {
    /// What `open` sees when there is no metadata file (version 0, empty).
    pub fn empty_default() -> Self {
        StoreMeta { version: 0, codec: Codec::Zstd, datasets: IndexMap::new(), generation: 0 }
    }

    pub fn new(codec: Codec) -> Self {
        StoreMeta { version: 1, codec, datasets: IndexMap::new(), generation: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DatasetMeta {
    #[serde(default)]
    pub arrays: IndexMap<String, ArraySchema>,
    #[serde(default)]
    pub attributes: IndexMap<String, Attr>,
}

/// What `atlas.json` records about one dataset's array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArraySchema {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub chunk_shape: Vec<usize>,
    pub dimension_names: Vec<String>,
    pub codec: Codec,
}

impl ArraySchema {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n_ds: usize, n_arr: usize) -> StoreMeta {
        let mut m = StoreMeta::new(Codec::Zstd);
        for d in 0..n_ds {
            let mut ds = DatasetMeta::default();
            for a in 0..n_arr {
                ds.arrays.insert(
                    format!("array_{a}"),
                    ArraySchema { dtype: DType::Float32, shape: vec![100, 200], chunk_shape: vec![50, 50], dimension_names: vec!["lat".into(), "lon".into()], codec: Codec::Zstd },
                );
            }
            ds.attributes.insert("month".into(), Attr::Int64(d as i64));
            ds.attributes.insert("when".into(), Attr::TimestampNanoseconds(1_700_000_000_000_000_000));
            m.datasets.insert(format!("dataset_{d}"), Arc::new(ds));
        }
        m
    }

    #[test]
    fn empty_store_json_is_55_bytes() {
        let b = MetaFile::default().encode(&StoreMeta::new(Codec::Zstd)).unwrap();
        assert_eq!(String::from_utf8(b.to_vec()).unwrap(), "{\n  \"version\": 1,\n  \"codec\": \"Zstd\",\n  \"datasets\": {}\n}");
    }

    #[test]
    fn all_six_variants_round_trip_and_compress() {
        let m = sample(30, 5);
        let json = MetaFile::ALL[0].encode(&m).unwrap().len();
        let mp = MetaFile::ALL[3].encode(&m).unwrap().len();
        assert!(mp < json);
        for f in MetaFile::ALL {
            let b = f.encode(&m).unwrap();
            assert_eq!(f.decode(&b).unwrap(), m, "{}", f.file_name());
            assert_eq!(MetaFile::from_file_name(f.file_name()), Some(f));
            if f.compression != Codec::Uncompressed {
                let plain = MetaFile::new(f.format, Codec::Uncompressed).encode(&m).unwrap().len();
                assert!(b.len() < plain, "{} does not shrink", f.file_name());
            }
        }
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let m: StoreMeta = serde_json::from_str(r#"{"version":1,"datasets":{"a":{}},"extra":3}"#).unwrap();
        assert_eq!(m.codec, Codec::Zstd);
        assert!(m.datasets["a"].arrays.is_empty());
        assert!(serde_json::from_str::<StoreMeta>(r#"{"datasets":{}}"#).is_err());
    }

    #[test]
    fn schema_round_trips() {
        let s = ArraySchema { dtype: DType::UInt16, shape: vec![3], chunk_shape: vec![3], dimension_names: vec!["i".into()], codec: Codec::Lz4 };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("u_int16") && j.contains("\"Lz4\""));
        assert_eq!(serde_json::from_str::<ArraySchema>(&j).unwrap(), s);
    }
}

/// Datasets compared by their encoded bytes (so a NaN attribute equals itself);
/// one shared `Arc` is equal without encoding.
fn same(a: Option<&Arc<DatasetMeta>>, b: Option<&Arc<DatasetMeta>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || rmp_serde::to_vec_named(&**a).ok() == rmp_serde::to_vec_named(&**b).ok(),
        _ => false,
    }
}

/// Whether dataset `name` is the same (or absent) in both.
pub fn same_dataset(a: &StoreMeta, b: &StoreMeta, name: &str) -> bool {
    same(a.datasets.get(name), b.datasets.get(name))
}

/// Names of datasets whose metadata differs between `a` and `b`.
pub fn changed_datasets(a: &StoreMeta, b: &StoreMeta) -> Vec<String> {
    // A flush changes a few datasets of many, in place or at the end, so the two
    // usually agree entry by entry (same name, same `Arc`) for most of their length:
    // that prefix is skipped without hashing a name (50,000 lookups per flush in a
    // big store otherwise). Its names are in both, so the rest is compared as before.
    let common = a.datasets.iter().zip(b.datasets.iter()).take_while(|((na, da), (nb, db))| na == nb && Arc::ptr_eq(da, db)).count();
    let (a_rest, b_rest) = (a.datasets.get_range(common..).into_iter().flatten(), b.datasets.get_range(common..).into_iter().flatten());
    let mut names: Vec<String> = a_rest.filter(|(n, d)| !same(Some(d), b.datasets.get(*n))).map(|(n, _)| n.clone()).collect();
    names.extend(b_rest.map(|(n, _)| n).filter(|n| !a.datasets.contains_key(*n)).cloned());
    names.sort();
    names
}

/// Three-way merge of the metadata file: `theirs` (what another writer stored) plus
/// every dataset `ours` changed relative to `base`. A dataset changed on both sides
/// to different results is a conflict; `Err` lists those datasets.
pub fn merge(base: &StoreMeta, ours: &StoreMeta, theirs: &StoreMeta) -> Result<StoreMeta, Vec<String>> {
    merge_inner(base, ours, theirs, false)
}

/// As [`merge`], but a dataset changed on both sides keeps our version (used when
/// refreshing a view: the conflict, if real, surfaces at the next flush).
pub fn merge_keep_ours(base: &StoreMeta, ours: &StoreMeta, theirs: &StoreMeta) -> StoreMeta {
    merge_inner(base, ours, theirs, true).expect("no conflicts when keeping ours")
}

fn merge_inner(base: &StoreMeta, ours: &StoreMeta, theirs: &StoreMeta, keep_ours: bool) -> Result<StoreMeta, Vec<String>> {
    let mut out = theirs.clone();
    let mut conflicts = vec![];
    for name in changed_datasets(base, ours) {
        let (b, o, t) = (base.datasets.get(&name), ours.datasets.get(&name), theirs.datasets.get(&name));
        if !keep_ours && !same(t, b) && !same(t, o) {
            conflicts.push(name);
            continue;
        }
        match o {
            Some(d) => {
                out.datasets.insert(name, d.clone());
            }
            None => {
                out.datasets.shift_remove(&name);
            }
        }
    }
    if conflicts.is_empty() { Ok(out) } else { Err(conflicts) }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn with(names: &[(&str, i64)]) -> StoreMeta {
        let mut m = StoreMeta::new(Codec::Zstd);
        for (n, v) in names {
            let mut d = DatasetMeta::default();
            d.attributes.insert("v".into(), Attr::Int64(*v));
            m.datasets.insert(n.to_string(), Arc::new(d));
        }
        m
    }

    #[test]
    fn disjoint_changes_merge() {
        let base = with(&[("a", 1), ("b", 1)]);
        let ours = with(&[("a", 2), ("b", 1), ("c", 1)]);
        let theirs = with(&[("a", 1), ("d", 1)]); // b deleted, d added
        let m = merge(&base, &ours, &theirs).unwrap();
        assert_eq!(m.datasets.keys().cloned().collect::<Vec<_>>(), vec!["a", "d", "c"]);
        assert_eq!(m.datasets["a"].attributes["v"], Attr::Int64(2));
    }

    #[test]
    fn changed_datasets_after_a_shared_prefix() {
        let a = with(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let mut b = a.clone(); // the same Arcs: nothing changed
        assert!(changed_datasets(&a, &b).is_empty());
        b.datasets.insert("e".into(), with(&[("e", 1)]).datasets["e"].clone()); // added at the end
        b.datasets.insert("b".into(), with(&[("b", 2)]).datasets["b"].clone()); // replaced in place
        b.datasets.shift_remove("c"); // removed
        assert_eq!(changed_datasets(&a, &b), vec!["b", "c", "e"]);
        assert_eq!(changed_datasets(&b, &a), vec!["b", "c", "e"]);
        // Equal content under a new Arc is no change; a reordering alone neither.
        let mut c = a.clone();
        c.datasets.insert("a".into(), with(&[("a", 1)]).datasets["a"].clone());
        c.datasets.swap_indices(1, 3);
        assert!(changed_datasets(&a, &c).is_empty());
    }

    #[test]
    fn same_dataset_changed_on_both_sides_conflicts() {
        let base = with(&[("a", 1)]);
        assert_eq!(merge(&base, &with(&[("a", 2)]), &with(&[("a", 3)])), Err(vec!["a".to_string()]));
        // the same change on both sides is no conflict
        assert!(merge(&base, &with(&[("a", 2)]), &with(&[("a", 2)])).is_ok());
        // a delete against an edit is
        assert!(merge(&base, &with(&[]), &with(&[("a", 5)])).is_err());
    }
}
