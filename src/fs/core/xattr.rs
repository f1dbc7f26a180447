//! Extended attributes: dataset attributes (`user.atlas.attr.<key>`, settable) and
//! read-only array facts (`user.atlas.<fact>`).

use super::*;

/// Extended attribute prefixes.
pub const XATTR_ATTR: &str = "user.atlas.attr.";
pub const XATTR_ARRAY: &str = "user.atlas.";
pub(super) const ARRAY_XATTRS: [&str; 7] = ["dtype", "shape", "chunk_shape", "dimension_names", "codec", "fill_value", "stats"];

pub(super) fn fill_json(f: Option<&crate::format::FillValue>) -> serde_json::Value {
    use crate::format::FillValue as F;
    match f {
        None => serde_json::Value::Null,
        Some(F::Bool(b)) => serde_json::json!(b),
        Some(F::Int(i)) | Some(F::TimestampNs(i)) => serde_json::json!(i),
        Some(F::UInt(u)) => serde_json::json!(u),
        Some(F::Float(x)) if x.is_finite() => serde_json::json!(x),
        Some(F::Float(x)) => serde_json::json!(x.to_string()),
        Some(F::String(s)) => serde_json::json!(s),
    }
}

pub(super) fn stat_json(s: Option<&crate::format::StatValue>) -> serde_json::Value {
    use crate::format::StatValue as S;
    match s {
        None => serde_json::Value::Null,
        Some(S::Int(i)) | Some(S::TimestampNs(i)) => serde_json::json!(i),
        Some(S::UInt(u)) => serde_json::json!(u),
        Some(S::Float(x)) if x.is_finite() => serde_json::json!(x),
        Some(S::Float(x)) => serde_json::json!(x.to_string()),
        Some(S::Bytes(b)) => serde_json::json!(String::from_utf8_lossy(b)),
    }
}

impl AtlasFs {
    /// Names of a node's extended attributes.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        Ok(match self.key(ino)? {
            NodeKey::Dataset(ds) => self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?.attributes.keys().map(|k| format!("{XATTR_ATTR}{k}")).collect(),
            NodeKey::File(ds, name) => match array_of(&name).and_then(|a| self.schema(&ds, a)) {
                Some(_) => ARRAY_XATTRS.iter().map(|k| format!("{XATTR_ARRAY}{k}")).collect(),
                None => vec![],
            },
            _ => vec![],
        })
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        let nodata = || FsError::new(libc::ENODATA, format!("no attribute {name}"));
        match self.key(ino)? {
            NodeKey::Dataset(ds) => {
                let key = name.strip_prefix(XATTR_ATTR).ok_or_else(nodata)?;
                let v = self.atlas.dataset_meta(&ds).ok_or_else(|| FsError::noent(&ds))?.attributes.get(key).cloned().ok_or_else(nodata)?;
                Ok(serde_json::to_vec(&v).map_err(|e| FsError::io(e.to_string()))?)
            }
            NodeKey::File(ds, fname) => {
                let key = name.strip_prefix(XATTR_ARRAY).ok_or_else(nodata)?;
                let arr = array_of(&fname).ok_or_else(nodata)?;
                let s = self.schema(&ds, arr).ok_or_else(nodata)?;
                let view = self.atlas.open_dataset(&ds).await?;
                let json = match key {
                    "dtype" => serde_json::json!(s.dtype.name()),
                    "shape" => serde_json::json!(s.shape),
                    "chunk_shape" => serde_json::json!(s.chunk_shape),
                    "dimension_names" => serde_json::json!(s.dimension_names),
                    "codec" => serde_json::json!(format!("{:?}", s.codec)),
                    "fill_value" => fill_json(view.array_fill_value(arr).await?.as_ref()),
                    "stats" => match view.try_array_stats(arr).await? {
                        None => serde_json::Value::Null,
                        Some(st) => {
                            serde_json::json!({"row_count": st.row_count, "null_count": st.null_count, "min": stat_json(st.min.as_ref()), "max": stat_json(st.max.as_ref())})
                        }
                    },
                    _ => return Err(nodata()),
                };
                Ok(json.to_string().into_bytes())
            }
            _ => Err(nodata()),
        }
    }

    /// Sets a dataset attribute. The value is JSON (`1`, `2.5`, `true`, `"text"`,
    /// `"2024-01-01T00:00:00Z"`); anything that is not JSON is stored as a string.
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8]) -> FsResult<()> {
        self.refuse_zarr_write(ino, None, "setxattr")?;
        self.writable()?;
        match self.key(ino)? {
            NodeKey::Dataset(ds) => {
                let key = name.strip_prefix(XATTR_ATTR).ok_or_else(|| FsError::new(libc::ENOTSUP, format!("dataset attributes are named {XATTR_ATTR}<key>")))?;
                if key.is_empty() {
                    return Err(FsError::inval("empty attribute key"));
                }
                let text = std::str::from_utf8(value).map_err(|_| FsError::inval("attribute values must be UTF-8"))?;
                let attr = match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Bool(b)) => Attr::Bool(b),
                    Ok(serde_json::Value::Number(n)) => n.as_i64().map(Attr::Int64).unwrap_or_else(|| Attr::Float64(n.as_f64().unwrap_or(f64::NAN))),
                    Ok(serde_json::Value::String(s)) => Attr::parse_timestamp(&s).map(Attr::TimestampNanoseconds).unwrap_or(Attr::String(s)),
                    Ok(_) => return Err(FsError::inval("attribute values are a bool, number or string")),
                    Err(_) => Attr::String(text.to_string()),
                };
                self.atlas.open_dataset(&ds).await?.try_set_attribute(key, attr)?;
                Ok(())
            }
            NodeKey::File(..) => Err(FsError::new(libc::EPERM, "array facts are read-only")),
            _ => Err(FsError::new(libc::ENOTSUP, "no attributes here")),
        }
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        self.refuse_zarr_write(ino, None, "removexattr")?;
        self.writable()?;
        match self.key(ino)? {
            NodeKey::Dataset(ds) => {
                let key = name.strip_prefix(XATTR_ATTR).ok_or_else(|| FsError::new(libc::ENODATA, format!("no attribute {name}")))?;
                if self.atlas.open_dataset(&ds).await?.remove_attribute(key)? { Ok(()) } else { Err(FsError::new(libc::ENODATA, format!("no attribute {name}"))) }
            }
            NodeKey::File(..) => Err(FsError::new(libc::EPERM, "array facts are read-only")),
            _ => Err(FsError::new(libc::ENODATA, format!("no attribute {name}"))),
        }
    }
}
