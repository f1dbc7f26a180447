//! The JSON metadata file, encoded from the datasets that changed.
//!
//! A flush rewrites the whole `atlas.json` (atlas 0.10's format: one pretty-printed
//! file), and in a store of 50,000 datasets serialising it took most of a one-array
//! save. Datasets are `Arc`s that a change replaces (never mutates in place while
//! shared), so a dataset whose `Arc` is the one encoded last time has the same
//! text: [`JsonFragments`] keeps the last file and where each dataset's text is in it,
//! matched by pointer, and a flush serialises only the new and changed ones and copies the
//! rest. The output is byte for byte `serde_json::to_vec_pretty` of the whole
//! metadata (tested below), which atlas-python writes and reads too.

use std::ops::Range;
use std::sync::Arc;

use super::meta::{DatasetMeta, StoreMeta};

/// The last encoded file and, for each dataset in it (in file order), its `Arc`
/// and where its text lies in the file.
#[derive(Default)]
pub(crate) struct JsonFragments {
    file: bytes::Bytes,
    entries: Vec<(Arc<DatasetMeta>, Range<usize>)>,
}

/// serde_json's pretty printer indents by two spaces a level; datasets sit at
/// level 2 (`{ "datasets": { name: … } }`).
const DATASET_INDENT: &[u8] = b"\n    ";

impl JsonFragments {
    pub(crate) fn encode(&mut self, meta: &StoreMeta) -> serde_json::Result<bytes::Bytes> {
        // Everything but the datasets, with an empty map where they go.
        let shell = serde_json::to_vec_pretty(&StoreMeta { version: meta.version, codec: meta.codec, datasets: Default::default(), generation: meta.generation })?;
        const EMPTY: &[u8] = b"\"datasets\": {}";
        let at = shell.windows(EMPTY.len()).position(|w| w == EMPTY).expect("the datasets key is always written") + EMPTY.len() - 1;
        let mut out = Vec::with_capacity(self.file.len() + 4096);
        out.extend_from_slice(&shell[..at]);
        let mut entries = Vec::with_capacity(meta.datasets.len());
        // A change keeps the order of the others (datasets are appended, replaced
        // in place or removed), so the same position in the last file is checked
        // first, then the next few (after a removal); a pointer match is the same
        // dataset: a changed one is a new `Arc`, and the name is the map's key.
        let mut cursor = 0;
        for (i, (name, ds)) in meta.datasets.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
            serde_json::to_writer(&mut out, name)?;
            out.extend_from_slice(b": ");
            let found = (cursor..(cursor + 8).min(self.entries.len())).find(|&j| Arc::ptr_eq(&self.entries[j].0, ds));
            let from = out.len();
            match found {
                Some(j) => {
                    out.extend_from_slice(&self.file[self.entries[j].1.clone()]);
                    cursor = j + 1;
                }
                None => indent_into(&serde_json::to_vec_pretty(&**ds)?, &mut out),
            }
            entries.push((ds.clone(), from..out.len()));
        }
        if !meta.datasets.is_empty() {
            out.extend_from_slice(b"\n  ");
        }
        out.extend_from_slice(&shell[at..]);
        self.file = out.into();
        self.entries = entries;
        Ok(self.file.clone())
    }
}

/// Appends `text` (pretty JSON at level 0) moved to level 2. JSON strings hold no
/// raw newline (it is escaped), so every newline is a line break of the printer's.
fn indent_into(text: &[u8], out: &mut Vec<u8>) {
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(DATASET_INDENT);
        }
        out.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::super::attr::Attr;
    use super::super::meta::{ArraySchema, StoreMeta};
    use super::*;
    use crate::format::{Codec, DType};

    fn dataset(n: usize) -> Arc<DatasetMeta> {
        let mut d = DatasetMeta::default();
        d.attributes.insert(format!("note \"{n}\"\nline"), Attr::String("é ✓".into()));
        d.attributes.insert("n".into(), Attr::Int64(n as i64));
        if n % 2 == 0 {
            d.arrays.insert(
                format!("a{n}"),
                ArraySchema { dtype: DType::Float32, shape: vec![n, 3], chunk_shape: vec![n.max(1), 3], dimension_names: vec!["t".into(), "x".into()], codec: Codec::Lz4 },
            );
        }
        Arc::new(d)
    }

    #[test]
    fn fragments_encode_exactly_what_serde_json_pretty_prints() {
        let mut meta = StoreMeta::new(Codec::Zstd);
        let mut frags = JsonFragments::default();
        // Empty, then growing, then changed, removed and reordered datasets.
        assert_eq!(frags.encode(&meta).unwrap(), serde_json::to_vec_pretty(&meta).unwrap());
        for n in 0..6 {
            meta.datasets.insert(format!("ds{n} \"q\""), dataset(n));
            meta.generation = n as u64;
            assert_eq!(frags.encode(&meta).unwrap(), serde_json::to_vec_pretty(&meta).unwrap());
        }
        meta.datasets.insert("ds2 \"q\"".into(), dataset(20));
        meta.datasets.shift_remove("ds4 \"q\"");
        meta.datasets.insert("new".into(), Arc::new(DatasetMeta::default()));
        assert_eq!(frags.encode(&meta).unwrap(), serde_json::to_vec_pretty(&meta).unwrap());
        meta.datasets.swap_indices(0, 3);
        assert_eq!(frags.encode(&meta).unwrap(), serde_json::to_vec_pretty(&meta).unwrap());
        assert_eq!(frags.entries.len(), meta.datasets.len(), "removed datasets are forgotten");
    }
}
